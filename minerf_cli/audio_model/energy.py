"""A speech-energy envelope blended into the predicted jawOpen (docs/audio.md, "within-clip jawOpen").

On the real clips a one-number feature, the mean of the clip-normalised log-mel bands 5-39 over
the 5 mel steps around a frame's instant, follows the tracked jawOpen within a clip about as
well as the trained model (per-clip r ~0.4), and their errors differ: adding it to the model's
jawOpen (both standardised over the clip) raised the whole-unseen-clip correlation on every
seed tried. :func:`energy_envelope` computes it from the model's own input windows and
:func:`blend_energy` adds it to one output column.
"""

from __future__ import annotations

import numpy as np

ENERGY_BANDS = (5, 40)  # mel bands [5, 40): ~150 Hz .. ~1.7 kHz (voicing and first formant)
ENERGY_HALF_STEPS = 2  # mel steps each side of the centre step (+-20 ms)
DEFAULT_BETA = 0.25


def energy_envelope(windows: np.ndarray, bands: tuple[int, int] = ENERGY_BANDS,
                    half_steps: int = ENERGY_HALF_STEPS) -> np.ndarray:
    """(N, T, K) log-mel windows (T odd, centre step T // 2 = the frame's instant) -> (N,) mean
    of bands[0]..bands[1]-1 over the steps centre - half_steps .. centre + half_steps."""
    w = np.asarray(windows, np.float32)
    if w.ndim != 3:
        raise ValueError(f"expected (N, T, K) windows, got shape {w.shape}")
    t = w.shape[1]
    c = t // 2
    a, b = max(0, c - int(half_steps)), min(t, c + int(half_steps) + 1)
    lo, hi = int(bands[0]), int(bands[1])
    if not 0 <= lo < hi <= w.shape[2]:
        raise ValueError(f"bands {bands} outside 0..{w.shape[2]}")
    return w[:, a:b, lo:hi].mean((1, 2)).astype(np.float32)


def blend_energy(pred: np.ndarray, energy: np.ndarray, beta: float = DEFAULT_BETA) -> np.ndarray:
    """pred (N,) + beta * std(pred) * z(energy): the standardised envelope added at ``beta``
    times the prediction's own spread (its mean is unchanged, and its correlation with any
    target equals that of z(pred) + beta * z(energy)). Fewer than 3 values, or a constant pred
    or energy: pred unchanged."""
    p = np.asarray(pred, np.float64)
    e = np.asarray(energy, np.float64)
    if p.shape != e.shape or p.ndim != 1:
        raise ValueError(f"pred and energy must be equal-length 1-D arrays (got {p.shape}, {e.shape})")
    sp, se = p.std(), e.std()
    if len(p) < 3 or beta == 0 or sp < 1e-8 or se < 1e-8:
        return np.asarray(pred, np.float32).copy()
    return (p + beta * sp * (e - e.mean()) / se).astype(np.float32)
