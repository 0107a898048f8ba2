"""mediapipe's 478 face-mesh landmarks -> the 68-point (dlib / iBUG 300-W) layout -> JEAN's 51 points.

JEAN (sec. 3.1, suppl. 8.1) feeds its landmark autoencoder 68-point landmarks minus the 17
face-contour points (68-pt indices 0-16), i.e. 51 points: brows 17-26, nose 27-35, eyes
36-47 ("eye-nose", 31 points) and lips 48-67 ("mouth", the last 20 points).

The mediapipe -> 68 map below is the *commonly used mapping* (the list circulated in many
mediapipe-to-dlib-68 converters). We checked it against this repo's own data: put on the
ICT neutral head through ``data/mediapipe_ict_correspondence.npz``, every chosen mediapipe
point lies within 0.7 cm of the ICT model's own ``landmarks68`` vertex for eyes, nose and
lips (within 1.8 cm for brows / contour, whose 68-point definition is fuzzy; the head is
~15 cm wide); all 20 mouth points are in mediapipe's FACEMESH_LIPS set and the 12 eye points
in FACEMESH_LEFT_EYE / FACEMESH_RIGHT_EYE (tests/test_audio_model.py checks both).
The map only uses indices < 468, so it works on 468- (no irises) and 478-point meshes.

Normalisation (per frame, :func:`normalise_landmarks`): translate so that the midpoint of
the two eye centres (mean of 68-pt 36-41 and of 42-47) is the origin and divide by the
inter-ocular distance (distance between those eye centres). The eye centres barely move
when the mouth moves, so mouth motion is not leaked into the whole vector through the
centring (a mean over all points would shift with the jaw); the scale removes the face's
size / distance to camera. ``deroll=True`` also rotates each frame so that the eye line is
horizontal (x/y only), removing in-plane head roll. z (mediapipe's relative depth, in the
same pixel-like units as x) is scaled the same way and also centred on the eye midpoint.
JEAN itself used raw landmarks of a fixed 480x480 crop; its MEAD data are frontal, studio
videos, so normalisation is our addition to cope with varied in-the-wild crops.
"""

from __future__ import annotations

import numpy as np
import torch

# 68-point order: contour 0-16, right brow 17-21, left brow 22-26, nose bridge 27-30,
# lower nose 31-35, right eye 36-41, left eye 42-47, outer lips 48-59, inner lips 60-67
# ("right"/"left" = the subject's; mediapipe 33 is the subject's right eye outer corner).
MEDIAPIPE_TO_68: tuple[int, ...] = (
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,  # contour
    71, 63, 105, 66, 107,  # right brow
    336, 296, 334, 293, 301,  # left brow
    168, 197, 5, 4,  # nose bridge
    75, 97, 2, 326, 305,  # lower nose
    33, 160, 158, 133, 153, 144,  # right eye
    362, 385, 387, 263, 373, 380,  # left eye
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips
)
assert len(MEDIAPIPE_TO_68) == 68

CONTOUR_68 = tuple(range(0, 17))
KEPT_68 = tuple(range(17, 68))  # the 51 points JEAN uses
EYE_NOSE_68 = tuple(range(17, 48))  # brows, nose, eyes: 31 points
MOUTH_68 = tuple(range(48, 68))  # lips: 20 points
RIGHT_EYE_68 = tuple(range(36, 42))
LEFT_EYE_68 = tuple(range(42, 48))

NUM_POINTS = 51
# indices into the 51-point array
EYE_NOSE = tuple(i - 17 for i in EYE_NOSE_68)  # 0..30
MOUTH = tuple(i - 17 for i in MOUTH_68)  # 31..50 (the "last 20 points", suppl. 8.1.2)
RIGHT_EYE = tuple(i - 17 for i in RIGHT_EYE_68)
LEFT_EYE = tuple(i - 17 for i in LEFT_EYE_68)

MEDIAPIPE_TO_51: tuple[int, ...] = tuple(MEDIAPIPE_TO_68[i] for i in KEPT_68)


def mediapipe_to_68(landmarks):
    """(..., 468 or 478, D) mediapipe landmarks -> (..., 68, D) (numpy or torch, same type)."""
    if landmarks.shape[-2] < 468:
        raise ValueError(f"expected mediapipe landmarks (..., 468 or 478, D), got shape {tuple(landmarks.shape)}")
    return landmarks[..., list(MEDIAPIPE_TO_68), :]


def mediapipe_to_51(landmarks):
    """(..., 468 or 478, D) mediapipe landmarks -> (..., 51, D): the 68 points minus the contour."""
    if landmarks.shape[-2] < 468:
        raise ValueError(f"expected mediapipe landmarks (..., 468 or 478, D), got shape {tuple(landmarks.shape)}")
    return landmarks[..., list(MEDIAPIPE_TO_51), :]


def normalise_landmarks(points: np.ndarray, deroll: bool = False, eps: float = 1e-6) -> np.ndarray:
    """(..., 51, D) points (D = 2 or 3) -> the same, centred on the eye midpoint and divided by
    the inter-ocular distance (see the module docstring). float32."""
    p = np.asarray(points, np.float32)
    if p.shape[-2] != NUM_POINTS or p.shape[-1] not in (2, 3):
        raise ValueError(f"expected (..., {NUM_POINTS}, 2 or 3) points, got shape {p.shape}")
    right = p[..., list(RIGHT_EYE), :].mean(-2)
    left = p[..., list(LEFT_EYE), :].mean(-2)
    centre = 0.5 * (right + left)
    iod = np.linalg.norm((left - right)[..., :2], axis=-1)  # image-plane inter-ocular distance
    out = (p - centre[..., None, :]) / np.maximum(iod, eps)[..., None, None]
    if deroll:
        d = (left - right)[..., :2]
        ang = np.arctan2(d[..., 1], d[..., 0])  # rotate by -ang so the eye line is +x
        c, s = np.cos(ang)[..., None], np.sin(ang)[..., None]
        x, y = out[..., 0].copy(), out[..., 1].copy()
        out[..., 0] = c * x + s * y
        out[..., 1] = -s * x + c * y
    return out.astype(np.float32)


def landmark_vectors(mediapipe_landmarks: np.ndarray, dims: int = 2, deroll: bool = False) -> np.ndarray:
    """(N, 468|478, >=dims) mediapipe landmarks (pixels) -> (N, 51 * dims) normalised float32 vectors,
    laid out point-major: [x0, y0, (z0), x1, y1, ...] for the 51 points (mouth = the last 20 * dims)."""
    if dims not in (2, 3):
        raise ValueError("dims must be 2 or 3")
    lm = np.asarray(mediapipe_landmarks, np.float32)
    if lm.ndim != 3 or lm.shape[-1] < dims:
        raise ValueError(f"expected (N, 478, >={dims}) landmarks, got shape {lm.shape}")
    pts = normalise_landmarks(mediapipe_to_51(lm)[..., :dims], deroll=deroll)
    return pts.reshape(len(pts), NUM_POINTS * dims)


def point_columns(points: tuple[int, ...], dims: int = 2) -> list[int]:
    """Columns of a flattened (N, 51 * dims) vector holding the given 51-point indices."""
    return [p * dims + d for p in points for d in range(dims)]


def mouth_columns(dims: int = 2) -> list[int]:
    """Columns of the mouth points (the last 20) in a flattened (N, 51 * dims) vector."""
    return point_columns(MOUTH, dims)


def eye_nose_columns(dims: int = 2) -> list[int]:
    return point_columns(EYE_NOSE, dims)


def mouth_mask(dims: int = 2, device: torch.device | str | None = None) -> torch.Tensor:
    """(51 * dims,) bool tensor, True on mouth columns."""
    m = torch.zeros(NUM_POINTS * dims, dtype=torch.bool, device=device)
    m[mouth_columns(dims)] = True
    return m
