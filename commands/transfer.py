"""`minerf transfer RUN --id NAME --from STORE -o OUT.mp4`: expression transfer / reconstruction."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from minerf_cli.output import command, emit_json
from minerf_cli.commands import render_options as opt


@command
def transfer(
    run: Path = typer.Argument(..., help="A run directory written by `minerf train` (or personalize)."),
    name: str = typer.Option(..., "--id", help="The identity to render (a store's file stem in the run)."),
    source: Path = typer.Option(..., "--from", help="Tracked store whose expressions drive NAME; NAME's own store reconstructs its held-out frames."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="mp4 to write (H.264, with the source's audio)."),
    png_dir: Optional[Path] = opt.PNG_DIR,
    store_out: Optional[Path] = typer.Option(None, "--store", help="Also write the frames as a minerf store (for `minerf evaluate`)."),
    frames: Optional[str] = typer.Option(None, "--frames", help="Source frames A:B (B exclusive) [default: all; own store: the held-out 10%]."),
    pose: str = typer.Option("target", "--pose", help="Head pose from NAME's own clip (target) or from the source (source)."),
    side_by_side: bool = typer.Option(False, "--side-by-side", help="Write source | result side by side."),
    speech: Optional[Path] = typer.Option(None, "--audio", help="Joint driving: the mouth and jaw come from this speech (with --audio-model), the rest from the source."),
    audio_model: Optional[Path] = typer.Option(None, "--audio-model", help="Audio model directory (`minerf encode-audio --fit`) for --audio."),
    target_store: Optional[Path] = opt.TARGET_STORE,
    latent: str = opt.LATENT,
    march_steps: Optional[int] = opt.MARCH_STEPS,
    device: str = opt.DEVICE,
    precision: str = opt.PRECISION,
    jpeg_quality: Optional[int] = opt.JPEG_QUALITY,
    crf: int = opt.CRF,
    force: bool = opt.FORCE,
) -> None:
    """Render identity NAME with the expressions of another clip, on NAME's own background.

    NAME's clip supplies the torso and backdrop of each output frame, the head pose (unless
    --pose source) and the latent code; its frames are walked back and forth when the
    source is longer. Driving NAME with its own store re-renders its held-out frames. With
    --audio and --audio-model (joint driving) the mouth and jaw follow the speech instead.

    Example: minerf transfer runs/multi --id ana --from stores/bob.h5 -o ana_as_bob.mp4 --side-by-side
    """
    from minerf_cli.transfer import transfer as run_transfer

    emit_json(run_transfer(run, name, source, output=output, png_dir=png_dir, store_out=store_out, frames=frames,
                           pose=pose, side_by_side=side_by_side, target_override=target_store, latent=latent, march_steps=march_steps, device=device,
                           precision=precision, force=force, crf=crf, jpeg_quality=jpeg_quality,
                           speech=speech, audio_model=audio_model))


def register(app: typer.Typer) -> None:
    app.command("transfer")(transfer)
