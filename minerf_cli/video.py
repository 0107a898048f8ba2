"""Video and audio I/O through the ffmpeg binary shipped by imageio-ffmpeg (no system install)."""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import imageio_ffmpeg
import numpy as np

from .errors import MinerfError
from .fsutil import require_file

AUDIO_RATE = 16000


class _DropResizeNotice(logging.Filter):
    """imageio-ffmpeg warns whenever the output size differs from the source's, which is
    what read_frames(filters=crop/scale) asks for on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is different from the source frame size" not in record.getMessage()


logging.getLogger("imageio_ffmpeg").addFilter(_DropResizeNotice())


def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    duration: float  # seconds (container's estimate)
    has_audio: bool
    codec: str

    @property
    def est_frames(self) -> int:
        return int(round(self.duration * self.fps))


def probe(path: Path) -> VideoInfo:
    """Read a video's size, fps, duration and whether it has an audio track.

    Raises MinerfError for a missing, empty, corrupt or video-less file.
    """
    path = require_file(Path(path), "video")
    try:
        gen = imageio_ffmpeg.read_frames(str(path))
        meta = next(gen)
        gen.close()
    except StopIteration:
        raise MinerfError(f"{path}: no video stream could be decoded") from None
    except (OSError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise MinerfError(f"{path}: cannot read video ({first[:200]})") from None
    size = meta.get("size") or (0, 0)
    fps = float(meta.get("fps") or 0.0)
    if size[0] <= 0 or size[1] <= 0 or fps <= 0:
        raise MinerfError(f"{path}: no usable video stream (size {size}, fps {fps})")
    return VideoInfo(
        width=int(size[0]), height=int(size[1]), fps=fps,
        duration=float(meta.get("duration") or 0.0),
        has_audio=bool(meta.get("audio_codec")), codec=str(meta.get("codec", "")),
    )


def _time_args(start: float | None, end: float | None) -> list[str]:
    args: list[str] = []
    if start:
        args += ["-ss", f"{start:.6f}"]
    if end is not None:
        args += ["-t", f"{max(end - (start or 0.0), 0.0):.6f}"]
    return args


def read_frames(
    path: Path,
    filters: str | None = None,
    out_size: tuple[int, int] | None = None,
    start: float | None = None,
    end: float | None = None,
    max_frames: int | None = None,
    fps: float | None = None,
) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames (H, W, 3), optionally through an ffmpeg filter chain.

    ``filters`` is an ffmpeg -vf chain (e.g. crop/scale) and ``out_size`` = (W, H) of its output;
    decoding and filtering run in the ffmpeg process, in parallel with the caller.
    """
    input_params = _time_args(start, None) if start else []
    output_params: list[str] = []
    if end is not None:
        output_params += ["-t", f"{max(end - (start or 0.0), 0.0):.6f}"]
    vf = []
    if fps:
        vf.append(f"fps={fps}")
    if filters:
        vf.append(filters)
    if vf:
        output_params += ["-vf", ",".join(vf)]
    if max_frames is not None:
        output_params += ["-frames:v", str(int(max_frames))]
    gen = imageio_ffmpeg.read_frames(str(path), input_params=input_params, output_params=output_params)
    try:
        meta = next(gen)
        w, h = out_size if out_size else meta["size"]
        for buf in gen:
            yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
    except (OSError, RuntimeError) as exc:
        raise MinerfError(f"{path}: video decoding failed ({str(exc).strip().splitlines()[-1][:200]})") from None
    finally:
        gen.close()


def read_audio(path: Path, start: float | None = None, end: float | None = None, rate: int = AUDIO_RATE) -> np.ndarray:
    """Decode the first audio track to mono float32 at ``rate`` Hz, shape (S,)."""
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", *(_time_args(start, None)), "-i", str(path)]
    if end is not None:
        cmd += ["-t", f"{max(end - (start or 0.0), 0.0):.6f}"]
    cmd += ["-map", "0:a:0", "-ac", "1", "-ar", str(rate), "-f", "f32le", "-"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise MinerfError(f"{path}: cannot decode audio ({(msg[-1] if msg else 'ffmpeg failed')[:200]})")
    return np.frombuffer(proc.stdout, np.float32).copy()


def write_video(
    path: Path,
    frames: Sequence[np.ndarray] | Iterator[np.ndarray],
    fps: float,
    audio_path: Path | None = None,
    crf: int = 18,
) -> int:
    """Encode RGB uint8 frames to H.264 mp4 (yuv420p), muxing ``audio_path`` (AAC) if given.

    Returns the number of frames written. The caller handles atomic renaming.
    """
    it = iter(frames)
    try:
        first = next(it)
    except StopIteration:
        raise MinerfError(f"{path}: no frames to write") from None
    h, w = first.shape[:2]
    out_params = ["-crf", str(crf), "-preset", "veryfast", "-movflags", "+faststart"]
    if audio_path is not None:
        out_params += ["-shortest"]
    writer = imageio_ffmpeg.write_frames(
        str(path), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1,
        quality=None, output_params=out_params, ffmpeg_log_level="error",
        audio_path=str(audio_path) if audio_path else None, audio_codec="aac" if audio_path else None,
    )
    writer.send(None)
    n = 0
    try:
        writer.send(np.ascontiguousarray(first))
        n += 1
        for frame in it:
            writer.send(np.ascontiguousarray(frame))
            n += 1
    finally:
        writer.close()
    return n
