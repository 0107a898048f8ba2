"""Per-video-frame windows of log-mel frames, centred on each video frame.

Convention: video frame n of a clip at ``fps`` is the instant ``t_n = n / fps`` seconds
from the first stored frame (the store's /frames convention: frame i shows source time
start_time + i / fps, and /audio/pcm sample s is time s / 16000 from that frame). Mel frame
j is centred at ``j * hop_s`` (:mod:`minerf_cli.mel`, hop 10 ms).

The window of frame n has T = 2 h + 1 mel steps (odd, so it is exactly symmetric), with
``h = round(window_frames / fps / 2 / hop_s)``: it spans ``window_frames`` video frames
(16 by default, like AD-NeRF's 16-step windows) rounded to whole 10 ms hops; e.g. T = 65
at 25 fps and T = 55 at 30 fps. Step k (0 <= k < T) is the log-mel spectrum at time
``t_n + (k - h) * hop_s``, linearly interpolated between the two neighbouring mel frames
when t_n is not on the 10 ms grid (30 fps), so the centre step k = h is always exactly t_n.
Beyond the ends of the audio, steps hold the log-mel of digital silence
(``mel.SILENCE_LOG``): the clip is padded with silence, not with its edge values.
"""

from __future__ import annotations

import numpy as np

from .mel import HOP_S, SILENCE_LOG

DEFAULT_WINDOW_FRAMES = 16


def half_steps(fps: float, window_frames: int = DEFAULT_WINDOW_FRAMES, hop_s: float = HOP_S) -> int:
    """h: the number of mel steps each side of the centre step."""
    return max(1, int(round(window_frames / float(fps) / 2.0 / hop_s)))


def window_steps(fps: float, window_frames: int = DEFAULT_WINDOW_FRAMES, hop_s: float = HOP_S) -> int:
    """T = 2 h + 1: mel steps per window."""
    return 2 * half_steps(fps, window_frames, hop_s) + 1


def centre_positions(fps: float, frames: np.ndarray, hop_s: float = HOP_S) -> np.ndarray:
    """Fractional mel-frame index of each video frame's instant n / fps (snapped to integers
    within 1e-9 so on-grid rates like 25 fps need no interpolation)."""
    pos = np.asarray(frames, np.float64) / float(fps) / hop_s
    near = np.round(pos)
    return np.where(np.abs(pos - near) < 1e-9, near, pos)


def frame_windows(mel: np.ndarray, fps: float, start: int, stop: int,
                  window_frames: int = DEFAULT_WINDOW_FRAMES, hop_s: float = HOP_S,
                  pad_value: float = SILENCE_LOG) -> np.ndarray:
    """Windows of video frames start..stop-1: (stop - start, T, K) float32 (vectorised)."""
    mel = np.asarray(mel, np.float32)
    m, k = mel.shape
    h = half_steps(fps, window_frames, hop_s)
    t = 2 * h + 1
    pos = centre_positions(fps, np.arange(start, stop), hop_s)[:, None] + np.arange(-h, h + 1)[None, :]
    lo = np.floor(pos)
    w = (pos - lo).astype(np.float32)[..., None]
    lo = lo.astype(np.int64)
    # pad the mel frames with silence rows so every index (lo and lo + 1) is valid
    pad = h + 2
    padded = np.full((m + 2 * pad, k), pad_value, np.float32)
    padded[pad:pad + m] = mel
    i0 = np.clip(lo + pad, 0, len(padded) - 1)
    i1 = np.clip(lo + 1 + pad, 0, len(padded) - 1)
    out = padded[i0]
    if np.any(w):
        out = out * (1.0 - w) + padded[i1] * w
    return out.reshape(stop - start, t, k).astype(np.float32, copy=False)
