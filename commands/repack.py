"""`minerf repack STORE -o OUT.h5`: copy a store with its frames re-encoded (JPEG or lossless)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from minerf_cli.output import command, emit_json


@command
def repack(
    store: Path = typer.Argument(..., help="A store to copy (it is not modified)."),
    output: Path = typer.Option(..., "--output", "-o", help="The store to create (HDF5, e.g. clip_q90.h5)."),
    jpeg_quality: Optional[int] = typer.Option(
        None, "--jpeg-quality", metavar="Q", help="Quality of the JPEG frames, 1-100 (4:4:4 chroma; default 90)."),
    lossless: bool = typer.Option(False, "--lossless", help="Store the frames lossless (gzip) instead of JPEG."),
    max_frames: Optional[int] = typer.Option(
        None, "--max-frames", help="Keep only the first N frames, and N / fps seconds of audio."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Copy a store with its frames re-encoded as JPEG (or lossless), optionally cut to its first frames.

    Every other node is copied unchanged, attributes included. With --max-frames every per-frame
    dataset (frames, landmarks, masks, per-frame tracking, audio features) keeps its first N rows
    and /audio/pcm its first N / fps seconds. Frames already stored in the requested encoding are
    copied as they are. Prints sizes before and after and the PSNR of the new frames against the
    old ones (mean over frames, in dB).

    Example: minerf repack clip.h5 -o clip_q90.h5 --jpeg-quality 90 | jq '{bytes_out, psnr_db}'
    """
    from minerf_cli.errors import UsageError
    from minerf_cli.repack import DEFAULT_QUALITY, RepackOptions, repack as run_repack

    if lossless and jpeg_quality is not None:
        raise UsageError("--lossless and --jpeg-quality exclude each other")
    quality = None if lossless else (DEFAULT_QUALITY if jpeg_quality is None else jpeg_quality)
    opts = RepackOptions(jpeg_quality=quality, max_frames=max_frames, force=force)
    emit_json(run_repack(store, output, opts))


def register(app: typer.Typer) -> None:
    app.command("repack")(repack)
