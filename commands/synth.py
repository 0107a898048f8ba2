"""`minerf synth -o DIR`: render synthetic talking heads with exactly known ground truth."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from minerf_cli.errors import UsageError
from minerf_cli.output import command, emit_json, progress_bar


@command
def synth(
    output: Path = typer.Option(..., "--output", "-o", help="Directory to create (or an empty one)."),
    ids: int = typer.Option(2, "--ids", min=1, help="Number of identities (one clip each)."),
    seconds: float = typer.Option(4.0, "--seconds", min=0.04, help="Length of each clip in seconds."),
    size: int = typer.Option(512, "--size", min=32, help="Frame width and height in pixels."),
    fps: float = typer.Option(25.0, "--fps", min=1.0, help="Frame rate."),
    seed: int = typer.Option(0, "--seed", help="Master seed: the same seed gives the same clips."),
    force: bool = typer.Option(False, "--force", help="Write into an existing non-empty directory, replacing clips."),
) -> None:
    """Render synthetic talking heads: one clip per identity, with audio and ground truth.

    Each clip is idNN.mp4 (H.264 + AAC), idNN.wav (16 kHz mono) and idNN_gt.npz:
    camera intrinsics, per-frame camera-from-head pose, ICT expression weights and
    identity (its README entry states the conventions). The faces are ICT face-model
    heads with random identity, skin, hair and backdrop; head motion, blinks and a
    speech-like audio track that drives the jaw and lips are random but seeded.

    Example: minerf synth -o synth/ --ids 4 --seconds 10 | jq -r '.clips[].video'
    """
    if output.exists() and not output.is_dir():
        raise UsageError(f"{output}: exists and is not a directory")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise UsageError(f"{output}: directory is not empty (use --force to write into it)")
    if not output.parent.exists():
        raise UsageError(f"{output}: directory {output.parent} does not exist")
    from minerf_cli.synth import synthesize  # heavy (scipy): imported only when the command runs

    total = ids * max(int(round(seconds * fps)), 1)
    t0 = time.perf_counter()
    with progress_bar("synth", total) as bar:
        task = bar.add_task("synth", total=total, info="")

        def progress(done: int) -> None:
            if done % 5 == 0 or done == total:
                rate = done / max(time.perf_counter() - t0, 1e-9)
                bar.update(task, completed=done, info=f"{rate:.0f} frames/s")

        clips = synthesize(output, ids=ids, seconds=seconds, size=size, fps=fps, seed=seed, force=force,
                           progress=progress)
    elapsed = time.perf_counter() - t0
    frames = sum(c["frames"] for c in clips)
    emit_json({
        "command": "synth",
        "output": str(output),
        "clips": [{k: c[k] for k in ("video", "audio", "gt", "frames", "identity_seed")} for c in clips],
        "ids": ids,
        "seconds": seconds,
        "size": size,
        "fps": fps,
        "seed": seed,
        "frames_per_second": round(frames / max(elapsed, 1e-9), 1),
    })


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
