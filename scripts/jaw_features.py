"""Experimental front-ends for scripts/jaw_experiments.py (not used by the shipped model; docs/audio.md).

Speed perturbation (audio resampled, targets time-warped) and pocketsphinx phone features
(optional: `pip install pocketsphinx`; its wheel bundles the en-us acoustic model). Both were
measured and did not raise the within-clip jawOpen correlation, so they stay out of minerf_cli.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np


def speed_ratio(s: float, max_denominator: int = 100) -> tuple[int, int]:
    """(up, down) with down / up == s (approximately, denominators <= ``max_denominator``)."""
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"speed factor must be positive (got {s})")
    f = Fraction(float(s)).limit_denominator(max_denominator)
    return f.denominator, f.numerator


def warp_targets(y: np.ndarray, s: float, n_out: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, M) per-frame targets -> (n_out, M) targets of the clip played ``s`` times faster and
    the (fractional) original frame index k * s of each new frame k. Linear interpolation; a
    new frame next to a NaN original frame (weight > 0) is NaN. ``n_out`` defaults to the new
    frames that fall inside the original clip: floor((N - 1) / s) + 1."""
    y = np.asarray(y, np.float64)
    squeeze = y.ndim == 1
    if squeeze:
        y = y[:, None]
    n = len(y)
    if n_out is None:
        n_out = int(np.floor((n - 1) / s + 1e-9)) + 1 if n else 0
    pos = np.arange(n_out) * float(s)
    lo = np.clip(np.floor(pos).astype(np.int64), 0, max(n - 1, 0))
    hi = np.clip(lo + 1, 0, max(n - 1, 0))
    w = np.clip(pos - lo, 0.0, 1.0)[:, None]
    a, b = y[lo], y[hi]
    out = np.where(w > 0, a * (1 - w) + b * w, a)
    out = np.where((w > 0) & ~np.isfinite(b), np.nan, out)
    out = out.astype(np.float32)
    return (out[:, 0] if squeeze else out), pos


def speed_perturb(pcm: np.ndarray, y: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Audio ``s`` times faster and its time-warped targets: (pcm, targets (n, M), n, original
    frame index of each new frame (n,)). ``s`` = 1 returns the inputs unchanged."""
    pcm = np.asarray(pcm, np.float32).reshape(-1)
    if s == 1.0:
        return pcm, np.asarray(y, np.float32), len(y), np.arange(len(y), dtype=np.float64)
    from scipy.signal import resample_poly

    up, down = speed_ratio(s)
    out = resample_poly(pcm, up, down).astype(np.float32)
    yw, pos = warp_targets(y, down / up)
    return out, yw, len(yw), pos


# CMU / pocketsphinx en-us phones; SIL last. Anything else the decoder emits (noise fillers
# such as +NSN+, +SPN+) counts as SIL.
PHONES = ("AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY",
          "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y",
          "Z", "ZH", "SIL")
# how far the jaw / lips open for each phone (0 closed .. 1 wide), a coarse viseme table:
# open vowels high, close vowels lower, bilabials 0, other consonants low
OPENNESS = {"AA": 1.0, "AE": 0.9, "AH": 0.75, "AO": 0.85, "AW": 0.9, "AY": 0.9, "EH": 0.65, "ER": 0.4,
            "EY": 0.55, "IH": 0.45, "IY": 0.3, "OW": 0.6, "OY": 0.65, "UH": 0.4, "UW": 0.3,
            "B": 0.0, "M": 0.0, "P": 0.0, "F": 0.1, "V": 0.1, "W": 0.15, "SIL": 0.0}
DEFAULT_OPENNESS = 0.25

_DECODER = None


def available() -> bool:
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return False
    return True


def _decoder():
    global _DECODER
    if _DECODER is None:
        import os

        from pocketsphinx import Decoder, get_model_path

        model = get_model_path()
        _DECODER = Decoder(hmm=os.path.join(model, "en-us", "en-us"),
                           allphone=os.path.join(model, "en-us", "en-us-phone.lm.bin"),
                           lw=2.0, pip=0.3, beam=1e-200, pbeam=1e-20, loglevel="ERROR")
    return _DECODER


def phone_segments(pcm16k: np.ndarray) -> list[tuple[str, int, int]]:
    """16 kHz mono float audio (-1..1) -> [(phone, first 10 ms frame, last frame inclusive)]."""
    x = np.clip(np.asarray(pcm16k, np.float32).reshape(-1) * 32767.0, -32768, 32767).astype(np.int16)
    if len(x) < 400:
        return []
    d = _decoder()
    d.start_utt()
    d.process_raw(x.tobytes(), full_utt=True)
    d.end_utt()
    return [(s.word, int(s.start_frame), int(s.end_frame)) for s in d.seg()]


def phone_frames(segments: list[tuple[str, int, int]], n_frames: int, kind: str = "onehot") -> np.ndarray:
    """Segments -> (n_frames, len(PHONES)) one-hot rows ("onehot"; frames no segment covers:
    SIL) or (n_frames, 1) openness values ("openness", :data:`OPENNESS`)."""
    sil = PHONES.index("SIL")
    ids = np.full(n_frames, sil, np.int64)
    for p, a, b in segments:
        i = PHONES.index(p) if p in PHONES else sil
        ids[max(a, 0):min(b + 1, n_frames)] = i
    if kind == "onehot":
        out = np.zeros((n_frames, len(PHONES)), np.float32)
        out[np.arange(n_frames), ids] = 1.0
        return out
    if kind == "openness":
        table = np.array([OPENNESS.get(p, DEFAULT_OPENNESS) for p in PHONES], np.float32)
        return table[ids][:, None]
    raise ValueError(f"kind must be 'onehot' or 'openness' (got {kind!r})")


def phone_windows(pcm16k: np.ndarray, fps: float, n: int, window_steps: int, kind: str = "onehot") -> np.ndarray:
    """(n, window_steps, K) windows of phone rows centred on each video frame n / fps (the same
    convention as the log-mel windows; beyond the audio: zeros)."""
    from minerf_cli.audio_windows import frame_windows
    from minerf_cli.mel import HOP_S, num_frames

    rows = phone_frames(phone_segments(pcm16k), num_frames(len(np.asarray(pcm16k).reshape(-1))), kind)
    half = (window_steps - 1) // 2
    w = frame_windows(rows, fps, 0, n, window_frames=(2 * half) * HOP_S * fps, hop_s=HOP_S, pad_value=0.0)
    assert w.shape[1] == window_steps, (w.shape, window_steps)
    return w


def phone_ids(segments: list[tuple[str, int, int]], n_frames: int) -> np.ndarray:
    """Segments -> (n_frames,) int8 indices into PHONES (uncovered frames and fillers: SIL)."""
    sil = PHONES.index("SIL")
    ids = np.full(n_frames, sil, np.int8)
    for p, a, b in segments:
        ids[max(a, 0):min(b + 1, n_frames)] = PHONES.index(p) if p in PHONES else sil
    return ids


def asr_phone_segments(pcm16k: np.ndarray) -> tuple[list[tuple[str, int, int]], str]:
    """pocketsphinx word recognition (bundled en-us model, LM and cmudict), each word's
    CMU-dict phones spread evenly over the word's frames: ([(phone, first, last)], text)."""
    import os

    from pocketsphinx import Decoder, get_model_path

    global _ASR, _LEX
    if _ASR is None:
        _ASR = Decoder(loglevel="ERROR")
        _LEX = {}
        for line in open(os.path.join(get_model_path(), "en-us", "cmudict-en-us.dict")):
            p = line.split()
            if p and p[0] not in _LEX:
                _LEX[p[0]] = p[1:]
    x = np.clip(np.asarray(pcm16k, np.float32).reshape(-1) * 32767.0, -32768, 32767).astype(np.int16)
    _ASR.start_utt()
    _ASR.process_raw(x.tobytes(), full_utt=True)
    _ASR.end_utt()
    segs, words = [], []
    for s in _ASR.seg():
        w = s.word.split("(")[0]
        words.append(w)
        ph = _LEX.get(w)
        if not ph:
            continue
        edges = np.linspace(s.start_frame, s.end_frame + 1, len(ph) + 1).round().astype(int)
        segs += [(p, int(a), int(b) - 1) for p, a, b in zip(ph, edges[:-1], edges[1:]) if b > a]
    return segs, " ".join(words)


_ASR = None
_LEX: dict = {}


def make_phone_cache(clips: list[dict], out) -> None:
    """{clip name: {"asr": ids, "allphone": ids, "text": str}} for jaw_experiments --phones."""
    import pickle
    from pathlib import Path

    from minerf_cli.mel import num_frames

    res = {}
    for c in clips:
        m = num_frames(len(c["pcm"]))
        segs, text = asr_phone_segments(c["pcm"])
        res[c["name"]] = {"asr": phone_ids(segs, m), "allphone": phone_ids(phone_segments(c["pcm"]), m), "text": text}
    Path(out).write_bytes(pickle.dumps(res))


# mediapipe lips (40) + chin / jaw-line points: the "visual oracle" and --aux landmark features
MOUTH_POINTS = [0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267,
                269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415, 152, 148, 377,
                176, 400]


def mouth_landmark_features(points: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(N, 478, >=2) mediapipe points -> (N, 90): the MOUTH_POINTS (x, y) minus the nose tip (1),
    over the inter-ocular distance (33-263); NaN rows where not valid."""
    lm = np.asarray(points, np.float64)[:, :, :2]
    io = np.linalg.norm(lm[:, 33] - lm[:, 263], axis=1)[:, None, None]
    x = ((lm[:, MOUTH_POINTS] - lm[:, [1]]) / io).reshape(len(lm), -1)
    x[~np.asarray(valid, bool)] = np.nan
    return x.astype(np.float32)


def make_landmark_cache(stores, out) -> None:
    """{store stem: mouth_landmark_features} for jaw_experiments --aux (--lm)."""
    import pickle
    from pathlib import Path

    import h5py

    res = {}
    for s in stores:
        with h5py.File(s) as f:
            res[Path(s).stem] = mouth_landmark_features(f["landmarks/points"][()], f["landmarks/valid"][()])
    Path(out).write_bytes(pickle.dumps(res))
