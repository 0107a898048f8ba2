"""`minerf lipsync RUN --id NAME --audio SPEECH --audio-model DIR -o OUT.mp4`: dubbing."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from minerf_cli.output import command, emit_json
from minerf_cli.commands import render_options as opt


@command
def lipsync(
    run: Path = typer.Argument(..., help="A run directory written by `minerf train` (or personalize)."),
    name: str = typer.Option(..., "--id", help="The identity to render."),
    speech: Path = typer.Option(..., "--audio", help="Speech to lip-sync to: any audio or video file ffmpeg reads (resampled to 16 kHz mono)."),
    audio_model: Path = typer.Option(..., "--audio-model", help="Audio model directory written by `minerf encode-audio --fit`."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="mp4 to write (H.264 + the speech as AAC)."),
    png_dir: Optional[Path] = opt.PNG_DIR,
    store_out: Optional[Path] = typer.Option(None, "--store", help="Also write the frames (and what they were asked to show) as a minerf store."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Render at most this many frames (the speech is cut to them)."),
    target_store: Optional[Path] = opt.TARGET_STORE,
    latent: str = opt.LATENT,
    march_steps: Optional[int] = opt.MARCH_STEPS,
    device: str = opt.DEVICE,
    precision: str = opt.PRECISION,
    jpeg_quality: Optional[int] = opt.JPEG_QUALITY,
    crf: int = opt.CRF,
    force: bool = opt.FORCE,
) -> None:
    """Make identity NAME say new speech: mouth and jaw from the audio, the rest from NAME's clip.

    The audio model predicts the mouth and jaw blendshapes from the speech; NAME's own clip
    gives the other blendshapes, the head motion and the background, walked back and forth
    when the speech is longer than the clip. The mp4 carries the speech, and audio and video
    have the same length. The mouth follows the speech only if the run's field follows the
    expression, which takes training length: 16000 steps on one 18-s clip (fast field,
    --mouth-rays 0.3); 4000 were too few.

    Example: minerf lipsync runs/multi --id ana --audio dub_es.wav --audio-model audio_model/ -o ana_es.mp4
    """
    from minerf_cli.lipsync import lipsync as run_lipsync

    emit_json(run_lipsync(run, name, speech, audio_model, output=output, png_dir=png_dir, store_out=store_out,
                          target_override=target_store, latent=latent, march_steps=march_steps, device=device, precision=precision, force=force, crf=crf,
                          jpeg_quality=jpeg_quality, max_frames=max_frames))


def register(app: typer.Typer) -> None:
    app.command("lipsync")(lipsync)
