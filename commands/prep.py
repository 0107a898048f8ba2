"""`minerf prep VIDEO -o STORE.h5`: decode a talking-face video into a new frame store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from minerf_cli.output import command, emit_json


@command
def prep(
    video: Path = typer.Argument(..., help="Any video ffmpeg reads (mp4, mov, webm, mkv), with one talking face."),
    output: Path = typer.Option(..., "--output", "-o", help="The store to create (HDF5, e.g. clip.h5)."),
    size: int = typer.Option(512, "--size", help="Side of the square crop in pixels."),
    start: Optional[float] = typer.Option(None, "--start", help="Start time in seconds."),
    end: Optional[float] = typer.Option(None, "--end", help="End time in seconds."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Keep at most this many frames."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Resample to this frame rate (default: the source's)."),
    min_valid: float = typer.Option(
        0.9, "--min-valid", help="Refuse the clip when face landmarks are found on a smaller fraction of frames."),
    jpeg_quality: Optional[int] = typer.Option(
        None, "--jpeg-quality", metavar="Q",
        help="Store the frames as JPEG of this quality (1-100, 4:4:4 chroma) instead of lossless; "
        "90 made real 512x512 stores about 6x smaller at 45-49 dB PSNR."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Crop one talking face from a video; store frames, audio, landmarks, masks, background.

    One square head-and-shoulders crop for the whole clip (see minerf-store(5) for the layout).

    Refuses (exit 1) clips with no face, with two prominent faces, or with the face lost too often.

    Frames are stored lossless unless --jpeg-quality is given (`minerf repack` converts a store later).

    Example: minerf prep talk.mp4 -o talk.h5 --size 512 | jq .valid_fraction
    """
    from minerf_cli.prep import PrepOptions, prep as run_prep  # heavy imports: only when run

    opts = PrepOptions(size=size, start=start, end=end, max_frames=max_frames, fps=fps,
                       min_valid=min_valid, force=force, jpeg_quality=jpeg_quality)
    emit_json(run_prep(video, output, opts))


def register(app: typer.Typer) -> None:
    app.command("prep")(prep)
