"""Lip metrics of ``minerf evaluate``: M-LMD (mouth landmark distance) from mediapipe landmarks.

M-LMD (the mouth part of the landmark distance of Chen et al. 2018, "Lip movements
generation at a glance"): for each frame t that has a face in both the generated and the
reference frame,

    d_t = mean over the 40 lip points p of || g_t[p] - r_t[p] ||  /  iod_t

where g, r are mediapipe face-mesh landmarks (x, y in pixels of the frame; mediapipe's
relative z is left out), the lip points are mediapipe's ``FACEMESH_LIPS`` (outer and inner
lip contours, :data:`MOUTH_LANDMARKS`) and the face size iod_t is the REFERENCE frame's
inter-ocular distance, between the outer eye corners (points 33 and 263). M-LMD is the mean
of d_t over those frames; frames without landmarks in either (or a degenerate face size)
are skipped and counted. No alignment is applied: generated and reference frames are
compared in the same pixel frame (paired evaluation). A value of 0.05 means the lips are off
by 5% of the eye distance on average (about 3 px on a 256 px face crop).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# mediapipe's FACEMESH_LIPS (face_mesh_connections), its 40 distinct points: outer lip
# contour (61 ... 291 ... 146) and inner contour (78 ... 308 ... 95)
MOUTH_LANDMARKS = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181,
                   185, 191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402,
                   405, 409, 415)
EYE_CORNERS = (33, 263)  # outer corners of the right and left eye (the face size)
NORMALISER = "reference inter-ocular distance (outer eye corners, mediapipe points 33 and 263), per frame"


@dataclass
class LmdResult:
    value: float  # M-LMD (fraction of the inter-ocular distance); nan when no frame is usable
    value_px: float  # the same without the normalisation, in pixels
    frames: int  # frames used
    skipped: int  # frames without landmarks in the generated or the reference frame
    per_frame: np.ndarray  # (N,) d_t, nan where skipped


def _usable(lm: np.ndarray) -> np.ndarray:
    return np.isfinite(lm[..., :2]).all(axis=(-1, -2))


def mouth_lmd(gen_landmarks: np.ndarray, ref_landmarks: np.ndarray) -> LmdResult:
    """M-LMD of generated vs. reference landmarks, both (N, 478, 3) (NaN rows = no face)."""
    g = np.asarray(gen_landmarks, np.float64)
    r = np.asarray(ref_landmarks, np.float64)
    if g.shape != r.shape or g.ndim != 3 or g.shape[1] < 478 or g.shape[2] < 2:
        raise ValueError(f"m_lmd: expected two (N, 478, 3) landmark arrays, got {g.shape} and {r.shape}")
    n = len(g)
    iod = np.linalg.norm(r[:, EYE_CORNERS[0], :2] - r[:, EYE_CORNERS[1], :2], axis=-1)
    ok = _usable(g) & _usable(r)
    ok &= np.where(ok, iod, 0.0) > 1e-6
    idx = list(MOUTH_LANDMARKS)
    per_px = np.full(n, np.nan)
    if ok.any():
        per_px[ok] = np.linalg.norm(g[ok][:, idx, :2] - r[ok][:, idx, :2], axis=-1).mean(axis=1)
    per = np.full(n, np.nan)
    per[ok] = per_px[ok] / iod[ok]
    used = int(ok.sum())
    return LmdResult(value=float(per[ok].mean()) if used else float("nan"),
                     value_px=float(per_px[ok].mean()) if used else float("nan"),
                     frames=used, skipped=int(n - used), per_frame=per)


def m_lmd(gen_landmarks: np.ndarray, ref_landmarks: np.ndarray) -> float:
    """M-LMD (see the module docstring): mean over frames of the mean lip-point distance,
    normalised by the reference frame's inter-ocular distance; nan if no frame is usable."""
    return mouth_lmd(gen_landmarks, ref_landmarks).value
