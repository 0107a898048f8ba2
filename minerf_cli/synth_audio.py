"""Speech-like synthetic audio (16 kHz mono) with the articulation that produced it.

Not speech, but it has speech's structure: syllables at ~3-5 Hz grouped in phrases with
pauses; each syllable is a vowel (a voiced harmonic source at a varying pitch of 100-220 Hz,
shaped by formant resonances F1/F2/F3) with an optional noise burst (a consonant) before it.
Alongside the waveform come per-sample articulation tracks (how open, rounded and spread
the mouth is), so rendered faces move their mouth with the sound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

RATE = 16000

# vowel: F1, F2 (Hz), jaw openness, funnel (o-like), pucker (u-like), spread (i-like)
VOWELS = {
    "a": (730, 1090, 1.00, 0.0, 0.0, 0.2),
    "e": (530, 1840, 0.60, 0.0, 0.0, 0.6),
    "i": (300, 2290, 0.35, 0.0, 0.0, 1.0),
    "o": (570, 840, 0.75, 0.9, 0.3, 0.0),
    "u": (320, 870, 0.40, 0.3, 1.0, 0.0),
}
TRACKS = ("open", "funnel", "pucker", "spread", "loud")


@dataclass(frozen=True)
class Speech:
    """pcm (S,) float32 in [-1, 1] at ``rate``; tracks: name -> (S,) float32 in [0, 1].

    Tracks: open (jaw openness x loudness), funnel / pucker / spread (lip shape x loudness),
    loud (the syllable loudness envelope).
    """

    pcm: np.ndarray
    rate: int
    tracks: dict

    def per_frame(self, name: str, fps: float, n_frames: int) -> np.ndarray:
        """Mean of a track over each video frame's audio window [k/fps, (k+1)/fps): (N,)."""
        return frame_means(self.tracks[name], self.rate, fps, n_frames)


def frame_means(x: np.ndarray, rate: int, fps: float, n_frames: int) -> np.ndarray:
    """Mean of a per-sample signal (S,) over each frame window: (n_frames,) float32."""
    edges = np.round(np.arange(n_frames + 1) * rate / fps).astype(np.int64)
    edges = np.minimum(edges, len(x))
    c = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    width = np.maximum(edges[1:] - edges[:-1], 1)
    return ((c[edges[1:]] - c[edges[:-1]]) / width).astype(np.float32)


def frame_rms(pcm: np.ndarray, rate: int, fps: float, n_frames: int) -> np.ndarray:
    """RMS of the waveform over each video frame's window: (n_frames,) float32."""
    return np.sqrt(frame_means(np.asarray(pcm, np.float64) ** 2, rate, fps, n_frames))


def _window(n: int, attack: float, release: float) -> np.ndarray:
    """(n,) envelope: raised-cosine attack/release (fractions of n) around a flat top."""
    t = (np.arange(n) + 0.5) / n
    up = np.clip(t / max(attack, 1e-6), 0, 1)
    down = np.clip((1 - t) / max(release, 1e-6), 0, 1)
    return (np.sin(0.5 * np.pi * np.minimum(up, down)) ** 2).astype(np.float64)


def _smooth_noise(n: int, rate: int, rng: np.random.Generator, period_s: float) -> np.ndarray:
    """(n,) smooth random values in [-1, 1], one random knot every ``period_s`` seconds."""
    knots = int(np.ceil(n / (period_s * rate))) + 2
    xk = np.arange(knots) * period_s * rate
    yk = rng.uniform(-1, 1, knots)
    return np.interp(np.arange(n), xk, yk)


def speech(seconds: float, rng: np.random.Generator, f0: float = 150.0, rate: int = RATE) -> Speech:
    """Synthesize ``seconds`` of speech-like audio with a base pitch ``f0`` (Hz)."""
    n = int(round(seconds * rate))
    tracks = {k: np.zeros(n, np.float64) for k in TRACKS}
    voiced = np.zeros(n, np.float64)
    # pitch contour: base, slow wander, per-phrase declination; within 100-220 Hz
    pitch = f0 * (1 + 0.12 * _smooth_noise(n, rate, rng, 0.35))
    pitch_mod = np.ones(n)

    syllables = []  # (start, length, vowel, amplitude)
    t = rng.uniform(0.1, 0.35)
    while t < seconds - 0.15:
        n_syl = int(rng.integers(2, 9))
        phrase_start = t
        for _ in range(n_syl):
            dur = rng.uniform(0.13, 0.28)
            if t + dur > seconds - 0.05:
                break
            syllables.append((t, dur, str(rng.choice(list(VOWELS))), rng.uniform(0.45, 1.0)))
            t += dur + rng.uniform(0.0, 0.06)
        a, b = int(phrase_start * rate), min(int(t * rate), n)
        if b > a:
            pitch_mod[a:b] = np.linspace(1.08, 0.9, b - a)
        t += rng.uniform(0.25, 0.8)  # pause between phrases
    pitch = np.clip(pitch * pitch_mod, 100.0, 220.0)

    phase = 2 * np.pi * np.cumsum(pitch) / rate
    source = np.zeros(n, np.float64)
    for k in range(1, int(3800 // 220) + 1):  # band-limited sawtooth-like source
        source += np.sin(k * phase) / k
    pcm = np.zeros(n, np.float64)

    for start, dur, vowel, amp in syllables:
        f1, f2, openness, funnel, pucker, spread = VOWELS[vowel]
        a = int(start * rate)
        length = min(int(dur * rate), n - a)
        if length < 16:
            continue
        env = _window(length, 0.25, 0.4) * amp
        loud = 0.55 + 0.45 * openness  # open vowels are louder
        x = source[a:a + length] * env
        y = np.zeros(length)
        for freq, gain, q in ((f1, 1.0, 6.0), (f2, 0.6, 10.0), (2600.0, 0.25, 12.0)):
            b_, a_ = signal.iirpeak(freq, q, fs=rate)
            y += gain * signal.lfilter(b_, a_, x)
        y += 0.05 * x
        voiced[a:a + length] += loud * y
        sl = slice(a, a + length)
        tracks["loud"][sl] = np.maximum(tracks["loud"][sl], env)
        for name, w in (("open", openness), ("funnel", funnel), ("pucker", pucker), ("spread", spread)):
            tracks[name][sl] = np.maximum(tracks[name][sl], env * w)
        if rng.random() < 0.6:  # consonant: a short noise burst just before the vowel
            blen = int(rng.uniform(0.03, 0.08) * rate)
            b0 = max(a - int(0.7 * blen), 0)
            blen = min(blen, n - b0)
            if blen > 8:
                lo = rng.uniform(1800, 3000)
                sos = signal.butter(2, [lo, min(lo + rng.uniform(1500, 3500), 7500)], btype="band", fs=rate,
                                    output="sos")
                burst = signal.sosfilt(sos, rng.standard_normal(blen)) * _window(blen, 0.2, 0.5)
                pcm[b0:b0 + blen] += rng.uniform(0.15, 0.35) * amp * burst

    peak = np.abs(voiced).max() if np.any(voiced) else 1.0
    pcm = pcm * (0.35 / max(np.abs(pcm).max(), 1e-9)) * (np.abs(pcm).max() > 0)
    pcm += 0.6 * voiced / peak
    pcm += 1e-3 * rng.standard_normal(n)  # room noise floor
    pcm = np.clip(pcm, -1, 1).astype(np.float32)
    return Speech(pcm=pcm, rate=rate, tracks={k: v.astype(np.float32) for k, v in tracks.items()})
