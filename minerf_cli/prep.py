"""`minerf prep`: a talking-face video -> a new frame store (frames, audio, landmarks, masks).

Two passes over the video, both decoded by ffmpeg in its own process:

1. find the face: decode downscaled frames sampled at a few fps, run face detection,
   refuse clips with no face or with a second prominent face, choose ONE square crop
   box for the whole clip (minerf_cli.crop);
2. extract: ffmpeg crops and scales every frame to size x size; here the face mesh
   (landmarks) and selfie segmentation (person mask, in a helper thread) run on it, the
   head mask is built, frames and masks are deflated and written in a worker thread
   (minerf_cli.chunkio; with --jpeg-quality the frames are JPEG-encoded in a thread of
   store.FrameWriter instead) and a few frames are kept for the background plate.

The audio track is decoded to 16 kHz mono float32 and cut to the frames' duration.
Everything is written through store.create_store: a temporary file renamed into place
only on success.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from rich.markup import escape

from . import store
from .chunkio import DEFLATE_BACKEND, ChunkWriter, chunked_dataset
from .crop import CropBox, choose_crop
from .errors import MinerfError, UsageError
from .faces import Detection, FaceDetector, FaceMesh, PersonSegmenter, preload, quiet_native_stderr
from .fsutil import check_output, sha256_file
from .masks import PERSON_THRESHOLD, BackgroundPlate, head_mask, person_mask
from .output import log, progress_bar, state, warn
from .video import AUDIO_RATE, VideoInfo, probe, read_audio, read_frames

COMMAND = "prep"
# Pass 1: about this many sampled frames, but at least MIN_SAMPLE_FPS.
TARGET_SAMPLES = 64
MIN_SAMPLE_FPS = 1.0
# The full-range detector sees a 192x192 letterbox of the whole frame: decoding larger
# than this gains nothing.
DETECT_MAX_SIDE = 384
# A second face is "prominent" with at least this share of the main face's area and score.
SECOND_FACE_AREA = 0.5
SECOND_FACE_SCORE = 0.7
BACKGROUND_SAMPLES = 40


@dataclass(frozen=True)
class PrepOptions:
    size: int = 512
    start: float | None = None
    end: float | None = None
    max_frames: int | None = None
    fps: float | None = None  # None: the source's frame rate
    min_valid: float = 0.9
    force: bool = False
    jpeg_quality: int | None = None  # None: lossless frames

    def check(self) -> None:
        """Usage errors (exit 2) for impossible option values."""
        if self.size < 32 or self.size % 2:
            raise UsageError(f"--size must be an even number >= 32 (got {self.size})")
        if self.start is not None and self.start < 0:
            raise UsageError(f"--start must be >= 0 (got {self.start})")
        if self.end is not None and self.end <= (self.start or 0.0):
            raise UsageError(f"--end ({self.end}) must be after --start ({self.start or 0.0})")
        if self.max_frames is not None and self.max_frames < 1:
            raise UsageError(f"--max-frames must be >= 1 (got {self.max_frames})")
        if self.fps is not None and not 0 < self.fps <= 240:
            raise UsageError(f"--fps must be in (0, 240] (got {self.fps})")
        if not 0.0 <= self.min_valid <= 1.0:
            raise UsageError(f"--min-valid must be in [0, 1] (got {self.min_valid})")
        if self.jpeg_quality is not None:
            store.check_jpeg_quality(self.jpeg_quality)


@dataclass
class Timer:
    """Wall seconds per stage, and busy seconds per step inside the extraction loop."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, dt: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + dt


@dataclass(frozen=True)
class Window:
    """The part of the video to prep, in source seconds, and the stored frame rate.

    Frames are always resampled to a constant ``fps`` by ffmpeg's fps filter (a no-op for
    constant-rate sources), so stored frame i shows source time start + i / fps even for
    variable-frame-rate clips, and the audio stays aligned.
    """

    start: float
    end: float | None  # None: to the end of the video
    max_frames: int | None
    fps: float

    def end_time(self, info: VideoInfo) -> float | None:
        """Where the window ends (--end or --max-frames, the earlier), None: the video's end."""
        ends = [e for e in (self.end, None if self.max_frames is None else self.start + self.max_frames / self.fps)
                if e is not None]
        return min(ends) if ends else None

    def length(self, info: VideoInfo) -> float:
        end = self.end_time(info)
        if end is None or (info.duration > 0 and end > info.duration):
            end = info.duration
        return max(end - self.start, 0.0)


@dataclass
class FacePlan:
    """Result of pass 1."""

    crop: CropBox
    samples: int
    with_face: int
    sample_fps: float


def _runs(indices: list[int]) -> list[list[int]]:
    """[[first, last], ...] runs of consecutive values in sorted ints."""
    out: list[list[int]] = []
    for i in indices:
        if out and i - out[-1][1] == 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def _ranges(indices: list[int]) -> str:
    """'3, 10-14, 20' from sorted ints."""
    runs = _runs(indices)
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:6]) + (", ..." if len(runs) > 6 else "")


def _frame_ranges(sample_idx: list[int], sample_fps: float, fps: float) -> str:
    """Frame ranges (in stored-frame numbering) covered by runs of sampled frames."""
    runs = _runs(sample_idx)
    per = fps / sample_fps
    parts = []
    for a, b in runs[:6]:
        fa, fb = int(round(a * per)), int(round((b + 1) * per)) - 1
        parts.append(f"{fa}" if fb <= fa else f"{fa}-{fb}")
    return ", ".join(parts) + (", ..." if len(runs) > 6 else "")


def find_face(video: Path, info: VideoInfo, window: Window, min_valid: float, timer: Timer) -> FacePlan:
    """Pass 1: sampled, downscaled frames -> face boxes -> checks -> one crop box."""
    t0 = time.perf_counter()
    length = window.length(info)
    sample_fps = min(window.fps, max(MIN_SAMPLE_FPS, TARGET_SAMPLES / max(length, 1e-3)))
    scale = min(1.0, DETECT_MAX_SIDE / max(info.width, info.height))
    sw, sh = max(2, int(info.width * scale) // 2 * 2), max(2, int(info.height * scale) // 2 * 2)
    back = info.width / sw  # detection pixels -> source pixels (x); y uses its own factor
    back_y = info.height / sh
    end = window.end_time(info)
    mains: list[Detection | None] = []
    crowded: dict[int, int] = {}  # sample index -> number of prominent faces
    with FaceDetector() as detect:
        samples = read_frames(video, filters=f"scale={sw}:{sh}", out_size=(sw, sh),
                              start=window.start or None, end=end, fps=sample_fps)
        for k, img in enumerate(_prefetch(samples)):
            dets = detect(img)
            if not dets:
                mains.append(None)
                continue
            main = dets[0]
            others = [d for d in dets[1:] if d.area >= SECOND_FACE_AREA * main.area
                      and d.score >= SECOND_FACE_SCORE and d.iou(main) < 0.3]
            if others:
                crowded[k] = 1 + len(others)
            mains.append(Detection(main.x0 * back, main.y0 * back_y, main.x1 * back, main.y1 * back_y, main.score))
    timer.add("detect", time.perf_counter() - t0)

    n = len(mains)
    if n == 0:
        where = f" from {window.start:g} s" if window.start else ""
        if end is not None:
            where += f" to {end:g} s"
        raise MinerfError(f"{video}: no video frames could be decoded{where}")
    faces = [m for m in mains if m is not None]
    if not faces:
        raise MinerfError(f"{video}: no face found in the clip ({n} sampled frames)")
    # One sample with a second face in a longer clip is tolerated (a false detection, a
    # face on a poster flashing by); two or more are not.
    if len(crowded) >= 2 or (crowded and n < 10):
        count = max(crowded.values())
        frames = _frame_ranges(sorted(crowded), sample_fps, window.fps)
        raise MinerfError(f"{video}: {count} faces in frames {frames}; prep needs a clip with one talking face "
                          f"(cut it with --start/--end or crop it first)")
    frac = len(faces) / n
    if frac < min_valid / 2:
        missing = _frame_ranges([k for k, m in enumerate(mains) if m is None], sample_fps, window.fps)
        raise MinerfError(f"{video}: a face is visible in only {100 * frac:.0f}% of the clip (--min-valid "
                          f"{min_valid:g}); it is missing in frames {missing}")
    crop = choose_crop(faces, info.width, info.height)
    return FacePlan(crop=crop, samples=n, with_face=len(faces), sample_fps=sample_fps)


def _prefetch(frames: Iterator[np.ndarray], depth: int = 8) -> Iterator[np.ndarray]:
    """Read frames in a thread (pipe reads release the GIL) so decoding runs ahead."""
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def run() -> None:
        try:
            for frame in frames:
                while not stop.is_set():
                    try:
                        q.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            item: object = done
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            item = exc
        finally:
            close = getattr(frames, "close", None)
            if close:
                close()
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    thread = threading.Thread(target=run, name="minerf-frame-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


@dataclass
class Extracted:
    n: int
    valid: np.ndarray
    hole_fraction: float


def extract(video: Path, info: VideoInfo, window: Window, crop: CropBox, size: int, f, timer: Timer,
            jpeg_quality: int | None = None) -> Extracted:
    """Pass 2: write /frames, /landmarks, /masks and /background into the open store ``f``.

    Frames are lossless, or JPEG of ``jpeg_quality``.
    """
    t_start = time.perf_counter()
    est = max(1, int(round(window.length(info) * window.fps)))
    if window.max_frames is not None:
        est = min(est, window.max_frames)
    masks = f.create_group("masks")
    head_ds = chunked_dataset(masks, "head", (size, size), "uint8")
    person_ds = chunked_dataset(masks, "person", (size, size), "uint8")
    points: list[np.ndarray | None] = []
    background = BackgroundPlate(BACKGROUND_SAMPLES)
    bg_every = max(1, math.ceil(est / BACKGROUND_SAMPLES))
    busy = {"decode_wait": 0.0, "mesh": 0.0, "segment": 0.0, "masks": 0.0, "queue_wait": 0.0}

    def segment(frame: np.ndarray) -> np.ndarray:
        t = time.perf_counter()
        prob = segmenter(frame)
        busy["segment"] += time.perf_counter() - t
        return prob

    source = read_frames(video, filters=crop.ffmpeg_filter(size), out_size=(size, size),
                         start=window.start or None, end=window.end, max_frames=window.max_frames,
                         fps=window.fps)
    with FaceMesh() as mesh, PersonSegmenter() as segmenter, ThreadPoolExecutor(1) as pool, \
            ChunkWriter() as writer, \
            store.FrameWriter(f, size, size, jpeg_quality, chunk_writer=writer) as frames_out, \
            progress_bar("prep", est) as bar:
        task = bar.add_task("prep", total=est, info="")
        frames = _prefetch(source)
        i = 0
        t = time.perf_counter()
        for i, frame in enumerate(frames):
            t1 = time.perf_counter()
            busy["decode_wait"] += t1 - t
            pending = pool.submit(segment, frame)
            pts = mesh(frame)
            t2 = time.perf_counter()
            busy["mesh"] += t2 - t1
            prob = pending.result()
            t3 = time.perf_counter()
            person = person_mask(prob, size, size)
            head = head_mask(pts, person)
            points.append(pts)
            if i % bg_every == 0:
                background.add(frame, person)
            t4 = time.perf_counter()
            busy["masks"] += t4 - t3
            frames_out.put(i, frame)
            writer.put(head_ds, i, head)
            writer.put(person_ds, i, person)
            t = time.perf_counter()
            busy["queue_wait"] += t - t4
            if i % 8 == 0:
                bar.update(task, completed=i + 1, total=max(est, i + 1),
                           info=f"{(i + 1) / (t - t_start):.0f} frames/s")
        n = len(points)
        bar.update(task, completed=n, total=n)
    frames_out.trim(n)
    for ds in (head_ds, person_ds):
        ChunkWriter.trim(ds, n)
    t_loop = time.perf_counter()
    timer.add("extract", t_loop - t_start)
    for k, v in busy.items():
        timer.add(f"extract.{k}", v)
    timer.add("extract.compress", writer.seconds["compress"])
    timer.add("extract.write", writer.seconds["write"])
    if frames_out.codec == store.JPEG:
        timer.add("extract.jpeg", frames_out.seconds["encode"])
        timer.add("extract.jpeg_write", frames_out.seconds["write"])
    if n == 0:
        raise MinerfError(f"{video}: no video frames could be decoded in the chosen range")

    valid = np.array([p is not None for p in points], bool)
    pts_arr = np.full((n, FaceMesh.num_landmarks, 3), np.nan, np.float32)
    for k, p in enumerate(points):
        if p is not None:
            pts_arr[k] = p
    lm = f.create_group("landmarks")
    store.stamp(lm, COMMAND)
    lm.create_dataset("points", data=pts_arr, chunks=(min(n, 256), FaceMesh.num_landmarks, 3),
                      compression="gzip", compression_opts=1)
    lm.create_dataset("valid", data=valid)
    store.stamp(masks, COMMAND)
    masks.attrs["person_threshold"] = PERSON_THRESHOLD

    t_bg = time.perf_counter()
    plate, holes = background.plate()
    bg = f.create_dataset("background", data=plate)
    store.stamp(bg, COMMAND)
    bg.attrs["samples"] = background.count
    bg.attrs["inpainted_fraction"] = holes
    timer.add("background", time.perf_counter() - t_bg)
    timer.add("write_landmarks", t_bg - t_loop)
    return Extracted(n=n, valid=valid, hole_fraction=holes)


def _write_audio(video: Path, info: VideoInfo, window: Window, n: int, fps: float, f, timer: Timer) -> float | None:
    """/audio/pcm cut (or zero-padded) to exactly the frames' duration; None without audio."""
    if not info.has_audio:
        warn(f"{video}: no audio track; the store has no /audio group (lip-sync training needs one)")
        return None
    t0 = time.perf_counter()
    duration = n / fps
    pcm = read_audio(video, start=window.start or None, end=window.start + duration)
    want = int(round(duration * AUDIO_RATE))
    if len(pcm) < want:
        if want - len(pcm) > 0.1 * AUDIO_RATE:
            short = (want - len(pcm)) / AUDIO_RATE
            warn(f"{video}: the audio track is {short:.2f} s shorter than the video; padded with silence")
        pcm = np.pad(pcm, (0, want - len(pcm)))
    pcm = pcm[:want].astype(np.float32)
    audio = f.create_group("audio")
    store.stamp(audio, COMMAND)
    audio.attrs["sample_rate"] = AUDIO_RATE
    audio.create_dataset("pcm", data=pcm, chunks=(min(max(want, 1), 1 << 16),), compression="gzip", compression_opts=1)
    timer.add("audio", time.perf_counter() - t0)
    return duration


def _missing_ranges(valid: np.ndarray) -> str:
    return _ranges([int(i) for i in np.flatnonzero(~valid)])


def prep(video: Path, output: Path, opts: PrepOptions = PrepOptions()) -> dict:
    """Run the whole prep; returns the JSON summary. Raises MinerfError (one line) on failure."""
    video, output = Path(video), Path(output)
    opts.check()
    check_output(output, opts.force)
    timer = Timer()
    t0 = time.perf_counter()
    preload()  # import mediapipe (~0.5 s) while ffprobe runs
    info = probe(video)
    timer.add("probe", time.perf_counter() - t0)
    window = Window(start=opts.start or 0.0, end=opts.end, max_frames=opts.max_frames, fps=opts.fps or info.fps)

    with quiet_native_stderr(enabled=not state["debug"]):
        plan = find_face(video, info, window, opts.min_valid, timer)
        log(escape(f"{video.name}: {info.width}x{info.height} @ {info.fps:g} fps; face in {plan.with_face}/"
                   f"{plan.samples} sampled frames; crop [x0, y0, side] = {plan.crop.as_list()} "
                   f"-> {opts.size}x{opts.size}"))
        if plan.crop.side < opts.size:
            log(f"the crop is upscaled {opts.size / plan.crop.side:.2f}x (source face region is {plan.crop.side} px)")
        t = time.perf_counter()
        digest = sha256_file(video)
        timer.add("hash", time.perf_counter() - t)
        source = {"source_path": str(video.resolve()), "source_sha256": digest}
        with store.create_store(output, COMMAND, force=opts.force, source=source) as f:
            result = extract(video, info, window, plan.crop, opts.size, f, timer, opts.jpeg_quality)
            fraction = float(result.valid.mean())
            if fraction < opts.min_valid:
                raise MinerfError(
                    f"{video}: face landmarks found on only {100 * fraction:.1f}% of frames (--min-valid "
                    f"{opts.min_valid:g}); the face is lost in frames {_missing_ranges(result.valid)}")
            frames = f["frames"]
            store.stamp(frames, COMMAND)
            frames.attrs["fps"] = window.fps
            frames.attrs["crop_box"] = np.array(plan.crop.as_list(), np.int64)
            frames.attrs["source_size"] = np.array([info.width, info.height], np.int64)
            frames.attrs["source_fps"] = info.fps
            frames.attrs["start_time"] = window.start
            duration = _write_audio(video, info, window, result.n, window.fps, f, timer)
            t_close = time.perf_counter()
        timer.add("finalize", time.perf_counter() - t_close)
    total = time.perf_counter() - t0
    timer.add("total", total)
    if fraction < 1.0:
        log(f"landmarks missing on {result.n - int(result.valid.sum())} frames: {_missing_ranges(result.valid)}")
    secs = {k: round(v, 3) for k, v in timer.seconds.items()}
    stage_fps = {k.split(".", 1)[1]: round(result.n / v, 1) for k, v in timer.seconds.items()
                 if k.startswith("extract.") and v > 0 and k.split(".", 1)[1] not in ("decode_wait", "queue_wait")}
    return {
        "output": str(output),
        "source": str(video),
        "frames": result.n,
        "fps": window.fps,
        "size": opts.size,
        "crop_box": plan.crop.as_list(),
        "source_size": [info.width, info.height],
        "valid_fraction": round(fraction, 4),
        "has_audio": duration is not None,
        "background_inpainted_fraction": round(result.hole_fraction, 4),
        "seconds": secs,
        "frames_per_second": round(result.n / total, 1),
        "extract_frames_per_second": round(result.n / timer.seconds["extract"], 1),
        "stage_frames_per_second": stage_fps,
        "deflate": DEFLATE_BACKEND,
        "frames_codec": store.LOSSLESS if opts.jpeg_quality is None else store.JPEG,
        "jpeg_quality": opts.jpeg_quality,
    }
