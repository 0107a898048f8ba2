"""SyncNet (Chung & Zisserman 2016) for LSE-D / LSE-C, in plain torch, from user-supplied weights.

The network is the public ``syncnet_python`` release (``SyncNetModel.S``): ``netcnnaud`` (a
conv2d stack over 13 MFCC x 20 steps = 0.2 s of audio) -> ``netfcaud`` -> 1024-d, and
``netcnnlip`` (conv3d + "2-D" conv3d stack over 5 consecutive 224 x 224 face crops, 3 colour
channels in OpenCV's BGR order, raw 0..255 values) -> ``netfclip`` -> 1024-d. Its
state-dict keys are syncnet_python's (``netcnnaud.0.weight`` ... ``netfclip.3.bias``), so
its ``data/syncnet_v2.model`` loads with :func:`load_syncnet` (``torch.load(...,
weights_only=True)``). There are NO built-in weights: without a file there is no LSE, and a
file whose BatchNorm statistics are still at their initial values (an untrained network
saved as is) is refused, so that LSE is never reported from random weights.

Scoring (:func:`lse`) follows ``SyncNetInstance.evaluate``: video at 25 fps, audio 16 kHz
as 16-bit sample values; MFCC as ``python_speech_features.mfcc`` with its defaults (13
coefficients, 25 ms window, 10 ms step, 26 mel filters, 512-point FFT, pre-emphasis 0.97,
cepstral lifter 22, c0 replaced by the log frame energy; :func:`mfcc`, numpy + scipy's DCT);
lip window v = frames v..v+4, audio window v = MFCC steps 4v..4v+19, for v in
0..min(frames, samples // 640) - 6; for every offset k in -15..15 the mean over v of the
Euclidean distance between lip feature v and audio feature v - k (zero features outside the
clip, as syncnet_python pads); LSE-D is the minimum of that mean distance over the offsets,
LSE-C the median minus the minimum, and the offset (``vshift - argmin``) is positive when
the video lags the audio (what Wav2Lip's ``calculate_scores_*`` scripts report).

Face crops (:func:`face_crops`): syncnet_python crops each frame around the S3FD face box of
its face track (box half-size s = max(w, h) / 2 and centre median-filtered over 13 frames,
crop_scale 0.4: rows cy - s .. cy + 1.8 s, columns cx - 1.4 s .. cx + 1.4 s, grey 110
outside the frame) and resizes the crop to 224 x 224. We approximate the S3FD box by the
bounding box of the 478 mediapipe landmarks, median-filter with edge replication (scipy's
medfilt zero-pads, which shrinks boxes at the ends of short tracks) and fill frames without
a face with the nearest frame's box. The whole (lower-face-weighted) crop is the input, as
in syncnet_python; SyncNet was trained on such crops, not on tight mouth crops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import cv2
import numpy as np

from .errors import FormatError, MinerfError

FPS = 25.0
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = 640  # 16000 / 25
MFCC_STEPS_PER_FRAME = 4  # 10 ms steps in a 40 ms frame
AUDIO_WINDOW = 20  # MFCC steps per audio window (0.2 s)
VIDEO_WINDOW = 5  # frames per lip window (0.2 s)
VSHIFT = 15  # offsets -15..15 frames
CROP_SIZE = 224
CROP_SCALE = 0.4  # syncnet_python run_pipeline --crop_scale
PAD_VALUE = 110
BOX_SMOOTH = 13  # frames of the median filter over the face box
EMBED = 1024


# ----------------------------------------------------------------------------- MFCC

def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mel_filterbank(nfilt: int = 26, nfft: int = 512, rate: int = SAMPLE_RATE, lowfreq: float = 0.0,
                   highfreq: float | None = None) -> np.ndarray:
    """(nfilt, nfft // 2 + 1) triangular filters on FFT bins, python_speech_features.get_filterbanks."""
    highfreq = highfreq or rate / 2
    mels = np.linspace(hz_to_mel(lowfreq), hz_to_mel(highfreq), nfilt + 2)
    bins = np.floor((nfft + 1) * mel_to_hz(mels) / rate)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        a, b, c = int(bins[j]), int(bins[j + 1]), int(bins[j + 2])
        for i in range(a, b):
            fb[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(b, c):
            fb[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    return fb


def frame_signal(x: np.ndarray, frame_len: int, step: int) -> np.ndarray:
    """(F, frame_len) frames, python_speech_features.framesig: 1 + ceil((S - L) / step) frames
    (at least 1), the last zero-padded."""
    n = len(x)
    count = 1 if n <= frame_len else 1 + int(np.ceil((n - frame_len) / step))
    padded = np.concatenate([x, np.zeros((count - 1) * step + frame_len - n)])
    idx = np.arange(frame_len)[None, :] + step * np.arange(count)[:, None]
    return padded[idx]


def mfcc(signal: np.ndarray, rate: int = SAMPLE_RATE, winlen: float = 0.025, winstep: float = 0.01,
         numcep: int = 13, nfilt: int = 26, nfft: int = 512, preemph: float = 0.97, ceplifter: int = 22,
         append_energy: bool = True) -> np.ndarray:
    """(F, numcep) MFCC of a mono signal, as ``python_speech_features.mfcc`` (rectangular
    window; 100 frames a second with the defaults). syncnet_python feeds it 16-bit sample
    values (a wav read by scipy), not [-1, 1] floats: see :func:`pcm_to_int16_scale`."""
    from scipy.fft import dct  # noqa: PLC0415

    eps = np.finfo(float).eps
    x = np.asarray(signal, np.float64).reshape(-1)
    if len(x) == 0:
        raise ValueError("mfcc: empty signal")
    x = np.append(x[0], x[1:] - preemph * x[:-1])
    frames = frame_signal(x, int(round(winlen * rate)), int(round(winstep * rate)))
    pspec = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = pspec.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    feat = pspec @ mel_filterbank(nfilt, nfft, rate).T
    feat = np.where(feat == 0, eps, feat)
    feat = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :numcep]
    if ceplifter > 0:
        feat *= 1 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(numcep) / ceplifter)
    if append_energy:
        feat[:, 0] = np.log(energy)
    return feat


def pcm_to_int16_scale(pcm: np.ndarray) -> np.ndarray:
    """[-1, 1] float samples -> the 16-bit integer values syncnet_python's wav holds (as float64)."""
    return np.clip(np.round(np.asarray(pcm, np.float64) * 32768.0), -32768, 32767)


# ----------------------------------------------------------------------------- the network

def _syncnet_class() -> type:
    import torch.nn as nn  # noqa: PLC0415

    def fc() -> nn.Sequential:
        return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, EMBED))

    class SyncNetS(nn.Module):
        """syncnet_python's ``S`` (num_layers_in_fc_layers = 1024): same modules, same indices."""

        def __init__(self) -> None:
            super().__init__()
            self.netcnnaud = nn.Sequential(
                nn.Conv2d(1, 64, (3, 3), (1, 1), (1, 1)), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d((1, 1), (1, 1)),
                nn.Conv2d(64, 192, (3, 3), (1, 1), (1, 1)), nn.BatchNorm2d(192), nn.ReLU(),
                nn.MaxPool2d((3, 3), (1, 2)),
                nn.Conv2d(192, 384, (3, 3), padding=(1, 1)), nn.BatchNorm2d(384), nn.ReLU(),
                nn.Conv2d(384, 256, (3, 3), padding=(1, 1)), nn.BatchNorm2d(256), nn.ReLU(),
                nn.Conv2d(256, 256, (3, 3), padding=(1, 1)), nn.BatchNorm2d(256), nn.ReLU(),
                nn.MaxPool2d((3, 3), (2, 2)),
                nn.Conv2d(256, 512, (5, 4), padding=(0, 0)), nn.BatchNorm2d(512), nn.ReLU(),
            )
            self.netfcaud = fc()
            self.netfclip = fc()
            self.netcnnlip = nn.Sequential(
                nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2), 0), nn.BatchNorm3d(96), nn.ReLU(),
                nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
                nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(),
                nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
                nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(),
                nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(),
                nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(),
                nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
                nn.Conv3d(256, 512, (1, 6, 6), padding=0), nn.BatchNorm3d(512), nn.ReLU(),
            )

        def forward_aud(self, x):  # (B, 1, 13, 20) -> (B, 1024)
            return self.netfcaud(self.netcnnaud(x).flatten(1))

        def forward_lip(self, x):  # (B, 3, 5, 224, 224) -> (B, 1024)
            return self.netfclip(self.netcnnlip(x).flatten(1))

    return SyncNetS


def syncnet_state_dict_template() -> dict:
    """The state dict a SyncNet weight file must match (keys and shapes; fresh values)."""
    return _syncnet_class()().state_dict()


def load_syncnet(path: Path, device: Any = "cpu") -> Any:
    """SyncNet from a user-supplied state dict (syncnet_python's ``syncnet_v2.model`` keys), in
    eval mode. FormatError (exit 3) naming the file for a missing / unexpected key, a wrongly
    shaped tensor, or BatchNorm statistics at their initial values (an untrained network)."""
    import torch  # noqa: PLC0415

    from .metrics import _load_weights  # noqa: PLC0415 - the same torch.load(weights_only=True) checks

    path = Path(path)
    src = _load_weights(path, "SyncNet")
    src = {k.removeprefix("__S__."): v for k, v in src.items()}
    net = _syncnet_class()()
    want = net.state_dict()
    optional = {k for k in want if k.endswith("num_batches_tracked")}
    missing = [k for k in want if k not in src and k not in optional]
    unexpected = [k for k in src if k not in want]
    if missing or unexpected:
        found = ", ".join(sorted(src)[:4]) + (", ..." if len(src) > 4 else "")
        what = (f"{len(missing)} key(s) missing, e.g. {missing[0]}" if missing
                else f"unexpected key(s), e.g. {unexpected[0]}")
        raise FormatError(f"{path}: not a syncnet_python SyncNet state dict (syncnet_v2.model): {what} "
                          f"(it has: {found or 'nothing'})")
    merged = {}
    for k, v in want.items():
        if k not in src:
            merged[k] = v
            continue
        if tuple(src[k].shape) != tuple(v.shape):
            raise FormatError(f"{path}: {k} has shape {tuple(src[k].shape)}, expected {tuple(v.shape)} "
                              "(not syncnet_python's SyncNet with 1024-d embeddings)")
        merged[k] = src[k].to(v.dtype)
        if not torch.isfinite(merged[k].float()).all():
            raise FormatError(f"{path}: {k} has non-finite values")
    means = [merged[k] for k in merged if k.endswith("running_mean")]
    variances = [merged[k] for k in merged if k.endswith("running_var")]
    if all(bool((m == 0).all()) for m in means) and all(bool((v == 1).all()) for v in variances):
        raise FormatError(f"{path}: its BatchNorm statistics are at their initial values: an untrained SyncNet; "
                          "LSE-D/LSE-C need the trained weights (syncnet_python's syncnet_v2.model)")
    net.load_state_dict(merged, strict=True)
    return net.eval().to(device)


# ----------------------------------------------------------------------------- face crops

def crop_params(landmarks: np.ndarray) -> np.ndarray:
    """(N, 478, 3) landmarks (NaN = no face) -> (N, 3) smoothed (cx, cy, s): box centre and
    half-size as syncnet_python's crop_video uses them (see the module docstring)."""
    from scipy.ndimage import median_filter  # noqa: PLC0415

    pts = np.asarray(landmarks, np.float64)[..., :2]
    ok = np.isfinite(pts).all(axis=(-1, -2))
    if not ok.any():
        raise MinerfError("SyncNet: no face landmarks on any generated frame; cannot place the face crops")
    lo = np.zeros((len(pts), 2))
    hi = np.zeros((len(pts), 2))
    lo[ok], hi[ok] = pts[ok].min(axis=1), pts[ok].max(axis=1)
    idx = np.flatnonzero(ok)
    for k in np.flatnonzero(~ok):
        j = idx[np.argmin(np.abs(idx - k))]
        lo[k], hi[k] = lo[j], hi[j]
    params = np.stack([(lo[:, 0] + hi[:, 0]) / 2, (lo[:, 1] + hi[:, 1]) / 2,
                       np.maximum(hi[:, 0] - lo[:, 0], hi[:, 1] - lo[:, 1]) / 2], axis=1)
    k = min(BOX_SMOOTH, len(params) if len(params) % 2 else len(params) - 1)
    if k > 1:
        params = median_filter(params, size=(k, 1), mode="nearest")
    return params


def face_crop(frame_rgb: np.ndarray, cx: float, cy: float, s: float) -> np.ndarray:
    """One (224, 224, 3) uint8 BGR crop, syncnet_python's crop_video geometry."""
    bsi = int(s * (1 + 2 * CROP_SCALE))
    bgr = cv2.cvtColor(np.ascontiguousarray(frame_rgb), cv2.COLOR_RGB2BGR)
    padded = cv2.copyMakeBorder(bgr, bsi, bsi, bsi, bsi, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    my, mx = cy + bsi, cx + bsi
    face = padded[int(my - s):int(my + s * (1 + 2 * CROP_SCALE)), int(mx - s * (1 + CROP_SCALE)):int(mx + s * (1 + CROP_SCALE))]
    if face.size == 0:
        face = np.full((CROP_SIZE, CROP_SIZE, 3), PAD_VALUE, np.uint8)
    return cv2.resize(face, (CROP_SIZE, CROP_SIZE))


def face_crops(frames: Iterable[np.ndarray], landmarks: np.ndarray) -> Iterator[np.ndarray]:
    """The SyncNet input crops of consecutive RGB frames with their (N, 478, 3) landmarks."""
    params = crop_params(landmarks)
    for k, frame in enumerate(frames):
        yield face_crop(frame, *params[k])


# ----------------------------------------------------------------------------- scoring

@dataclass
class LseResult:
    lse_d: float  # mean distance at the best offset (lower = better synced)
    lse_c: float  # median - min of the mean distance over the offsets (higher = more confident)
    offset: int  # frames; > 0: the video lags the audio
    windows: int  # 5-frame windows scored
    mean_dist: np.ndarray  # (2 * vshift + 1,) mean distance at offsets vshift..-vshift (syncnet's order)


def lse(net: Any, crops_bgr: np.ndarray, pcm16k: np.ndarray, vshift: int = VSHIFT, batch: int = 20) -> LseResult:
    """LSE-D / LSE-C of (T, 224, 224, 3) uint8 BGR face crops at 25 fps against 16 kHz audio in
    [-1, 1] that starts with frame 0 (syncnet_python's ``evaluate``, see the module docstring)."""
    import torch  # noqa: PLC0415

    crops = np.asarray(crops_bgr)
    if crops.ndim != 4 or crops.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
        raise ValueError(f"lse: expected (T, 224, 224, 3) crops, got {crops.shape}")
    pcm = np.asarray(pcm16k).reshape(-1)
    n = min(len(crops), len(pcm) // SAMPLES_PER_FRAME)
    last = n - VIDEO_WINDOW
    if last < 1:
        raise MinerfError(f"SyncNet needs at least {VIDEO_WINDOW + 1} frames with audio (0.24 s at 25 fps); "
                          f"got {len(crops)} frames and {len(pcm) / SAMPLE_RATE:.3f} s of audio")
    cc = mfcc(pcm_to_int16_scale(pcm)).T.astype(np.float32)  # (13, F)
    device = next(net.parameters()).device
    lip_feat, aud_feat = [], []
    with torch.inference_mode():
        for i in range(0, last, batch):
            vs = range(i, min(last, i + batch))
            lips = np.stack([crops[v:v + VIDEO_WINDOW] for v in vs])  # (B, 5, H, W, 3)
            lips_t = torch.from_numpy(lips).to(device).permute(0, 4, 1, 2, 3).float()
            lip_feat.append(net.forward_lip(lips_t).cpu())
            auds = np.stack([cc[:, v * MFCC_STEPS_PER_FRAME:v * MFCC_STEPS_PER_FRAME + AUDIO_WINDOW] for v in vs])
            aud_feat.append(net.forward_aud(torch.from_numpy(auds)[:, None].to(device)).cpu())
    im = torch.cat(lip_feat).double()
    au = torch.cat(aud_feat).double()
    win = 2 * vshift + 1
    aup = torch.nn.functional.pad(au, (0, 0, vshift, vshift))
    dists = torch.stack([torch.nn.functional.pairwise_distance(im[[i]].repeat(win, 1), aup[i:i + win])
                         for i in range(len(im))], 1)  # (win, windows)
    mdist = dists.mean(1)
    minval, minidx = torch.min(mdist, 0)
    return LseResult(lse_d=float(minval), lse_c=float(torch.median(mdist) - minval),
                     offset=int(vshift - int(minidx)), windows=len(im), mean_dist=mdist.numpy())
