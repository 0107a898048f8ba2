"""`minerf synth -o DIR`: render synthetic talking heads with exactly known ground truth."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

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
    as_store: bool = typer.Option(
        False, "--store",
        help="Write ready-to-train stores synth_idNN.h5 (ground-truth landmarks, masks, background and "
        "tracking) instead of mp4 + wav + ground-truth files: no prep or fit3dmm needed."),
    jobs: int = typer.Option(
        1, "--jobs", "-j", min=0, help="With --store: identities rendered at once, one process each (0: one per CPU core)."),
    jpeg_quality: Optional[int] = typer.Option(
        None, "--jpeg-quality", metavar="Q",
        help="With --store: store the frames as JPEG of this quality (1-100) instead of lossless."),
) -> None:
    """Render synthetic talking heads: one clip per identity, with audio and ground truth.

    Each clip is idNN.mp4 (H.264 + AAC), idNN.wav (16 kHz mono) and idNN_gt.npz:
    camera intrinsics, per-frame camera-from-head pose, ICT expression weights and
    identity (its README entry states the conventions). The faces are ICT face-model
    heads with random identity, skin, hair and backdrop; head motion, blinks and a
    speech-like audio track that drives the jaw and lips are random but seeded.

    With --store each identity is instead one frame store, synth_idNN.h5 (the person of
    idNN.mp4), with every node prep and fit3dmm write, filled with the ground truth:
    frames, audio, the landmarks of the tracker's own model projected, person and head
    masks (prep's definition applied to the rendered head: face, hair and ears, not the
    neck), the rendered background plate and the true camera, pose, expression and
    identity. It needs neither ffmpeg nor mediapipe; minerf train takes the stores as they are.

    Example: minerf synth -o synth/ --ids 4 --seconds 10 | jq -r '.clips[].video'

    Example: minerf synth -o data/ --ids 8 --seconds 20 --store --jobs 4 && minerf train --ids data/ -o run/
    """
    if output.exists() and not output.is_dir():
        raise UsageError(f"{output}: exists and is not a directory")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise UsageError(f"{output}: directory is not empty (use --force to write into it)")
    if not output.parent.exists():
        raise UsageError(f"{output}: directory {output.parent} does not exist")
    if not as_store and (jobs != 1 or jpeg_quality is not None):
        raise UsageError("--jobs and --jpeg-quality go with --store")
    if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
        raise UsageError(f"--jpeg-quality must be in 1..100 (got {jpeg_quality})")
    # heavy (scipy, h5py): imported only when the command runs
    from minerf_cli.synth import synthesize
    from minerf_cli.synth_store import synthesize_stores

    total = ids * max(int(round(seconds * fps)), 1)
    t0 = time.perf_counter()
    with progress_bar("synth", total) as bar:
        task = bar.add_task("synth", total=total, info="")

        def progress(done: int) -> None:
            if done % 5 == 0 or done == total:
                rate = done / max(time.perf_counter() - t0, 1e-9)
                bar.update(task, completed=done, info=f"{rate:.0f} frames/s")

        if as_store:
            stores = synthesize_stores(output, ids=ids, seconds=seconds, size=size, fps=fps, seed=seed, jobs=jobs,
                                       jpeg_quality=jpeg_quality, force=force, progress=progress)
        else:
            clips = synthesize(output, ids=ids, seconds=seconds, size=size, fps=fps, seed=seed, force=force,
                               progress=progress)
    elapsed = time.perf_counter() - t0
    if as_store:
        frames = sum(c["frames"] for c in stores)
        emit_json({
            "command": "synth",
            "output": str(output),
            "stores": [{k: c[k] for k in ("store", "frames", "identity_seed")} for c in stores],
            "ids": ids,
            "seconds": seconds,
            "size": size,
            "fps": fps,
            "seed": seed,
            "jobs": jobs,
            "frames_codec": "lossless" if jpeg_quality is None else "jpeg",
            "frames_per_second": round(frames / max(elapsed, 1e-9), 1),
        })
        return
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
