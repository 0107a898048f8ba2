"""Log-mel spectrogram in pure numpy (no torchaudio / librosa).

Parameters (fixed; they define the "logmel80" feature kind stored in /audio_features):

- 16 kHz mono input in [-1, 1];
- a periodic Hann window of 400 samples (25 ms), hop 160 samples (10 ms), each windowed
  frame zero-padded to n_fft = 512 for the real FFT (257 bins); power spectrum |X|^2;
- 80 triangular mel filters from 0 to 8000 Hz on the *Slaney* mel scale (linear below
  1 kHz, logarithmic above; librosa's default ``htk=False``) with Slaney area
  normalisation (each filter scaled by 2 / its bandwidth in Hz);
- log: natural ``log(mel + 1e-6)`` per frame, with no clip-dependent clamp or rescaling
  (unlike Whisper's ``max - 8`` clamp), so a window's values do not depend on the rest of
  the clip; digital silence is ``log(1e-6)`` = :data:`SILENCE_LOG` (about -13.8).

Frame convention: mel frame j is *centred* at time ``j * hop / rate`` (j * 10 ms): the
signal is zero-padded by 200 samples on both sides and frame j covers samples
[j*160 - 200, j*160 + 200). A clip of S samples has ``1 + S // 160`` frames.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SAMPLE_RATE = 16000
WIN_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
N_FFT = 512
N_MELS = 80
FMIN = 0.0
FMAX = 8000.0
LOG_EPS = 1e-6
SILENCE_LOG = float(np.log(LOG_EPS))
KIND = "logmel80"
HOP_S = HOP_LENGTH / SAMPLE_RATE
# the Slaney mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(f):
    """Slaney mel scale: linear (3 mels per 200 Hz) below 1 kHz, log above."""
    f = np.asarray(f, np.float64)
    log = _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, log, f / _F_SP)


def mel_to_hz(m):
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, np.float64)
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(m, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(m >= _MIN_LOG_MEL, log, _F_SP * m)


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = SAMPLE_RATE,
                   fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) Slaney-normalised triangular filters (float64)."""
    fft_freqs = np.linspace(0.0, rate / 2, n_fft // 2 + 1)
    mel_points = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    hz = mel_to_hz(mel_points)
    fdiff = np.diff(hz)
    ramps = hz[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz[2:] - hz[:-2]))[:, None]
    return weights


def hann(n: int = WIN_LENGTH) -> np.ndarray:
    """Periodic Hann window (the STFT convention; scipy.signal.get_window('hann', n))."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def num_frames(n_samples: int) -> int:
    return 1 + int(n_samples) // HOP_LENGTH


_FILTERS: np.ndarray | None = None


def logmel(pcm: np.ndarray, block: int = 4096) -> np.ndarray:
    """(S,) float 16 kHz mono -> (1 + S // 160, 80) float32 log-mel frames (see module doc).

    Vectorised framing with stride tricks, processed ``block`` frames at a time so long
    clips do not need the whole complex spectrogram in memory.
    """
    global _FILTERS
    if _FILTERS is None:
        _FILTERS = mel_filterbank()
    x = np.asarray(pcm, np.float64).reshape(-1)
    half = WIN_LENGTH // 2
    padded = np.concatenate([np.zeros(half), x, np.zeros(half + HOP_LENGTH)])
    m = num_frames(len(x))
    frames = sliding_window_view(padded, WIN_LENGTH)[::HOP_LENGTH][:m]  # a view, no copy
    window = hann()
    out = np.empty((m, N_MELS), np.float32)
    for a in range(0, m, block):
        seg = frames[a:a + block] * window
        spec = np.fft.rfft(seg, n=N_FFT, axis=1)
        power = spec.real ** 2 + spec.imag ** 2
        out[a:a + block] = np.log(power @ _FILTERS.T + LOG_EPS)
    return out
