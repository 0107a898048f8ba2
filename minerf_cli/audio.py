"""Audio loading, checks and `minerf encode-audio` (per-frame log-mel windows).

Loading: :func:`load_audio` reads any file soundfile reads (wav, flac, ogg, ...) with
soundfile, mixes it down to mono (mean of the channels) and resamples it to 16 kHz with
``scipy.signal.resample_poly``; anything else (mp3, m4a, the audio of an mp4, ...) is
decoded by ffmpeg through :func:`minerf_cli.video.read_audio` (ffmpeg mixes and resamples).

Checks (:func:`check_audio`): non-finite samples and inputs shorter than one video frame are
errors; an all-silent input (peak below -60 dBFS) is an error unless allowed; clipping (more
than 1% of the samples at |x| >= 0.999) is a warning.

Encoding: :func:`encode_store` adds /audio_features to a prepped store from its /audio/pcm
and /frames fps; :func:`encode_file` turns a bare audio file into a small store holding only
/audio (the 16 kHz pcm, cut to N / fps seconds) and /audio_features. Features: for every
video frame, the (T, 80) window of :func:`minerf_cli.mel.logmel` frames centred on it
(:mod:`minerf_cli.audio_windows`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from . import mel as melmod
from . import store
from .audio_windows import DEFAULT_WINDOW_FRAMES, frame_windows, window_steps
from .errors import MinerfError, UsageError
from .fsutil import require_file, sha256_file
from .output import warn

SAMPLE_RATE = melmod.SAMPLE_RATE
COMMAND = "encode-audio"
SILENCE_PEAK = 10 ** (-60 / 20)  # -60 dBFS
CLIP_LEVEL = 0.999
CLIP_FRACTION = 0.01
MAX_FPS = 240.0
BLOCK_FRAMES = 1024  # video frames of features computed and written at a time


@dataclass
class Audio:
    pcm: np.ndarray  # (S,) float32 mono at ``rate``
    rate: int
    source_rate: int | None = None  # None where ffmpeg decoded (and resampled) the file
    channels: int | None = None
    reader: str = "soundfile"
    warnings: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.pcm) / self.rate


def resample(x: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly) along axis 0; float32 out.

    The output has ``ceil(len(x) * rate_out / rate_in)`` samples.
    """
    x = np.asarray(x, np.float32)
    rate_in, rate_out = int(rate_in), int(rate_out)
    if rate_in == rate_out:
        return x
    from scipy.signal import resample_poly  # noqa: PLC0415

    g = math.gcd(rate_in, rate_out)
    return resample_poly(x, rate_out // g, rate_in // g, axis=0).astype(np.float32)


def _clipping_fraction(x: np.ndarray) -> float:
    return float(np.mean(np.abs(x) >= CLIP_LEVEL)) if x.size else 0.0


def _ffmpeg_has_audio(path: Path) -> None:
    """MinerfError unless ffmpeg finds an audio stream in ``path`` (unreadable / no audio stream)."""
    import subprocess  # noqa: PLC0415

    from .video import ffmpeg_exe  # noqa: PLC0415

    proc = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", str(path)], capture_output=True)
    lines = proc.stderr.decode(errors="replace").splitlines()
    streams = [ln for ln in lines if ln.strip().startswith("Stream #")]
    if not streams:
        last = next((ln.strip() for ln in reversed(lines) if ln.strip() and "output file" not in ln), "no streams")
        if last.startswith(str(path)):
            last = last[len(str(path)):].lstrip(": ")
        raise MinerfError(f"{path}: not a readable audio or video file ({last[:200]})")
    if not any("Audio:" in ln for ln in streams):
        raise MinerfError(f"{path}: has no audio stream")


def read_wav_fallback(path: Path) -> tuple[np.ndarray, int] | None:
    """A plain wav (PCM 8/16/24/32-bit or float) -> ((S, C) float32 in [-1, 1], rate) without
    soundfile, by scipy.io.wavfile (24-bit comes left-justified in int32); None if it is not one."""
    import warnings as _w  # noqa: PLC0415

    from scipy.io import wavfile  # noqa: PLC0415

    try:
        with _w.catch_warnings():
            _w.simplefilter("ignore")
            sr, x = wavfile.read(str(path))
    except (ValueError, OSError, EOFError):
        return None
    x = np.asarray(x)
    if x.dtype.kind == "f":
        x = x.astype(np.float32)
    elif x.dtype == np.uint8:
        x = (x.astype(np.float32) - 128.0) / 128.0
    else:
        x = x.astype(np.float32) / float(2 ** (8 * x.dtype.itemsize - 1))
    return (x[:, None] if x.ndim == 1 else x), int(sr)


def load_audio(path: Path, rate: int = SAMPLE_RATE) -> Audio:
    """Any audio (or video-with-audio) file -> mono float32 at ``rate`` (MinerfError if unreadable)."""
    path = require_file(Path(path), "audio file")
    try:
        import soundfile as sf  # noqa: PLC0415
    except ImportError:  # a machine without libsndfile (e.g. the GPU image): plain PCM wav still works
        sf = None
    data, reader = None, "soundfile"
    if sf is not None:
        try:
            data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception:  # noqa: BLE001 - not a format libsndfile reads: let ffmpeg try
            data = None
    else:
        read = read_wav_fallback(path)
        if read is not None:
            data, sr = read
            reader = "wavfile"
    if data is not None:
        warnings = []
        clipped = _clipping_fraction(data)
        if clipped > CLIP_FRACTION:
            warnings.append(f"{path}: {100 * clipped:.1f}% of the samples are clipped (|x| >= {CLIP_LEVEL}); "
                            "features of clipped speech are distorted")
        mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
        return Audio(resample(mono, sr, rate), rate, int(sr), int(data.shape[1]), reader, warnings)
    try:
        from .video import read_audio  # noqa: PLC0415
    except ImportError:
        raise MinerfError(f"{path}: cannot decode it here (neither soundfile nor imageio-ffmpeg is installed; "
                          "give a plain PCM .wav)") from None

    _ffmpeg_has_audio(path)
    pcm = read_audio(path, rate=rate)
    warnings = []
    clipped = _clipping_fraction(pcm)
    if clipped > CLIP_FRACTION:
        warnings.append(f"{path}: {100 * clipped:.1f}% of the samples are clipped (|x| >= {CLIP_LEVEL}); "
                        "features of clipped speech are distorted")
    return Audio(pcm, rate, None, None, "ffmpeg", warnings)


def check_fps(fps: float | None) -> float:
    if fps is None:
        raise UsageError("--fps is required for a bare audio file (the video frame rate the features are for)")
    fps = float(fps)
    if not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
        raise UsageError(f"--fps must be a frame rate in (0, {MAX_FPS:g}] (got {fps:g})")
    return fps


def check_audio(pcm: np.ndarray, rate: int, fps: float, where: str, allow_silence: bool = False) -> list[str]:
    """Errors for unusable audio (MinerfError, exit 1); returns warnings for usable but odd audio."""
    pcm = np.asarray(pcm)
    if pcm.size and not np.isfinite(pcm).all():
        raise MinerfError(f"{where}: the audio has non-finite samples (NaN or inf)")
    frame_samples = rate / fps
    if pcm.size < frame_samples:
        raise MinerfError(f"{where}: the audio is too short ({pcm.size / rate * 1000:.1f} ms, "
                          f"less than one video frame of {1000 / fps:.1f} ms at {fps:g} fps)")
    warnings = []
    peak = float(np.max(np.abs(pcm)))
    if peak < SILENCE_PEAK:
        level = "digital silence" if peak == 0 else f"peak {20 * math.log10(peak):.0f} dBFS"
        if not allow_silence:
            raise MinerfError(f"{where}: the audio is silent ({level}); pass --allow-silence to encode it anyway")
        warnings.append(f"{where}: the audio is silent ({level}); encoding it as asked")
    clipped = _clipping_fraction(pcm)
    if clipped > CLIP_FRACTION:
        warnings.append(f"{where}: {100 * clipped:.1f}% of the samples are clipped (|x| >= {CLIP_LEVEL}); "
                        "features of clipped speech are distorted")
    return warnings


def frame_count(n_samples: int, rate: int, fps: float) -> int:
    """Whole video frames in ``n_samples`` of audio: floor(duration * fps) (1e-6 tolerance)."""
    return int(math.floor(n_samples / rate * fps + 1e-6))


def write_features(group: h5py.Group, pcm: np.ndarray, fps: float, n_frames: int,
                   window_frames: int = DEFAULT_WINDOW_FRAMES) -> dict:
    """Compute the log-mel windows of ``n_frames`` video frames and write group/features."""
    t0 = time.perf_counter()
    mel = melmod.logmel(pcm)
    t_mel = time.perf_counter()
    steps = window_steps(fps, window_frames)
    ds = group.create_dataset("features", shape=(n_frames, steps, melmod.N_MELS), dtype="float32",
                              chunks=(min(n_frames, 64), steps, melmod.N_MELS), compression="gzip",
                              compression_opts=1, shuffle=True)
    for a in range(0, n_frames, BLOCK_FRAMES):
        b = min(n_frames, a + BLOCK_FRAMES)
        ds[a:b] = frame_windows(mel, fps, a, b, window_frames)
    attrs = {
        "kind": melmod.KIND,
        "fps": float(fps),
        "window_frames": int(window_frames),
        "window_steps": int(steps),
        "hop_s": float(melmod.HOP_S),
        "window_s": float(steps * melmod.HOP_S),
        "sample_rate": int(melmod.SAMPLE_RATE),
        "n_fft": int(melmod.N_FFT),
        "win_length": int(melmod.WIN_LENGTH),
        "mel_scale": "slaney",
        "fmin": float(melmod.FMIN),
        "fmax": float(melmod.FMAX),
        "log": f"ln(mel_power + {melmod.LOG_EPS:g})",
        "pad_value": float(melmod.SILENCE_LOG),
        "centre": "step window_steps // 2 of frame n is the time n / fps",
    }
    for key, value in attrs.items():
        group.attrs[key] = value
    return {"mel": t_mel - t0, "windows": time.perf_counter() - t_mel, "steps": steps}


def _summary(output: Path, n: int, fps: float, window_frames: int, steps: int, duration: float, extra: dict,
             warnings: list[str], seconds: dict) -> dict:
    return {
        "output": str(output),
        "frames": n,
        "fps": fps,
        "kind": melmod.KIND,
        "window_frames": window_frames,
        "window_steps": steps,
        "features_shape": [n, steps, melmod.N_MELS],
        "audio_seconds": round(duration, 3),
        **extra,
        "warnings": warnings,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }


def _check_window_frames(window_frames: int) -> int:
    if not 1 <= int(window_frames) <= 256:
        raise UsageError(f"--window-frames must be in 1..256 (got {window_frames})")
    return int(window_frames)


def encode_store(path: Path, window_frames: int = DEFAULT_WINDOW_FRAMES, force: bool = False,
                 allow_silence: bool = False) -> dict:
    """Add /audio_features to a store from its /audio/pcm and /frames fps."""
    path = Path(path)
    window_frames = _check_window_frames(window_frames)
    t0 = time.perf_counter()
    with store.open_store(path, require=("frames",)) as f:
        fps = float(f["frames"].attrs["fps"])
        n = int(f["frames"].shape[0])
        if "audio" not in f:
            raise MinerfError(f"{path}: the clip had no audio track (the store has no /audio group); "
                              "nothing to encode")
        if "audio_features" in f and not force:
            raise UsageError(f"{path}: /audio_features exists (use --force to replace it)")
        rate = int(f["audio"].attrs["sample_rate"])
        pcm = f["audio/pcm"][()].astype(np.float32)
    if rate != SAMPLE_RATE:
        pcm = resample(pcm, rate, SAMPLE_RATE)
    warnings = check_audio(pcm, SAMPLE_RATE, fps, str(path), allow_silence)
    for w in warnings:
        warn(w)
    t_read = time.perf_counter()
    with store.add_node(path, "audio_features", COMMAND, force=force) as g:
        info = write_features(g, pcm, fps, n, window_frames)
    seconds = {"read": t_read - t0, "mel": info["mel"], "windows": info["windows"],
               "total": time.perf_counter() - t0}
    return _summary(path, n, fps, window_frames, info["steps"], len(pcm) / SAMPLE_RATE, {}, warnings, seconds)


def encode_file(audio_path: Path, output: Path, fps: float | None, window_frames: int = DEFAULT_WINDOW_FRAMES,
                force: bool = False, allow_silence: bool = False) -> dict:
    """A bare audio file -> a new store with only /audio and /audio_features (no /frames)."""
    audio_path, output = Path(audio_path), Path(output)
    fps = check_fps(fps)
    window_frames = _check_window_frames(window_frames)
    from .fsutil import check_output  # noqa: PLC0415

    check_output(output, force)
    t0 = time.perf_counter()
    audio = load_audio(audio_path)
    for w in audio.warnings:
        warn(w)
    warnings = list(audio.warnings)
    for w in check_audio(audio.pcm, audio.rate, fps, str(audio_path), allow_silence):
        if "clipped" in w and any("clipped" in v for v in warnings):
            continue  # already said for the source samples
        warn(w)
        warnings.append(w)
    n = frame_count(len(audio.pcm), audio.rate, fps)
    if n < 1:
        raise MinerfError(f"{audio_path}: the audio is too short (less than one video frame at {fps:g} fps)")
    keep = min(len(audio.pcm), int(round(n / fps * audio.rate)))
    pcm = audio.pcm[:keep]
    if keep < n / fps * audio.rate - 0.5:  # rounding left it a sample short
        pcm = np.concatenate([pcm, np.zeros(int(round(n / fps * audio.rate)) - keep, np.float32)])
    t_read = time.perf_counter()
    source = {"source_path": str(audio_path.resolve()), "source_sha256": sha256_file(audio_path)}
    with store.create_store(output, COMMAND, force=force, source=source) as f:
        g = f.create_group("audio")
        store.stamp(g, COMMAND)
        g.attrs["sample_rate"] = SAMPLE_RATE
        g.attrs["fps"] = fps  # the frame rate the features are for (no /frames in this store)
        if audio.source_rate is not None:
            g.attrs["source_rate"] = audio.source_rate
            g.attrs["source_channels"] = audio.channels
        g.create_dataset("pcm", data=pcm, chunks=(min(max(len(pcm), 1), 1 << 16),), compression="gzip",
                         compression_opts=1)
        fg = f.create_group("audio_features")
        store.stamp(fg, COMMAND)
        info = write_features(fg, pcm, fps, n, window_frames)
    seconds = {"read": t_read - t0, "mel": info["mel"], "windows": info["windows"],
               "total": time.perf_counter() - t0}
    extra = {"source": str(audio_path), "source_rate": audio.source_rate, "channels": audio.channels,
             "reader": audio.reader, "source_seconds": round(audio.duration, 3)}
    return _summary(output, n, fps, window_frames, info["steps"], len(pcm) / SAMPLE_RATE, extra, warnings, seconds)
