"""Rotations, rigid transforms and pinhole intrinsics (numpy).

Conventions: head space = ICT model space (cm, +y up, +z towards the viewer);
camera = OpenCV (x right, y down, z forward); ``camera_from_head`` is a 4x4 rigid
transform, x_cam = R x_head + t. A head looking straight at the camera has R = FLIP.
"""

from __future__ import annotations

import numpy as np

FLIP = np.diag([1.0, -1.0, -1.0]).astype(np.float32)  # head space (y up, z to viewer) -> OpenCV


def axis_angle_to_matrix(r: np.ndarray) -> np.ndarray:
    """Rodrigues: (..., 3) axis-angle -> (..., 3, 3) rotation matrices (exact near 0)."""
    r = np.asarray(r)
    theta2 = (r * r).sum(-1, keepdims=True)
    theta = np.sqrt(theta2)
    small = theta2 < 1e-8
    safe = np.where(small, 1.0, theta)
    a = np.where(small, 1 - theta2 / 6, np.sin(safe) / safe)
    b = np.where(small, 0.5 - theta2 / 24, (1 - np.cos(safe)) / (safe * safe))
    x, y, z = r[..., 0], r[..., 1], r[..., 2]
    o = np.zeros_like(x)
    k = np.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*r.shape[:-1], 3, 3)
    return np.eye(3, dtype=r.dtype) + a[..., None] * k + b[..., None] * (k @ k)


def matrix_to_axis_angle(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations -> (..., 3) axis-angle (numpy; via scipy)."""
    from scipy.spatial.transform import Rotation

    shape = m.shape[:-2]
    return Rotation.from_matrix(m.reshape(-1, 3, 3)).as_rotvec().reshape(*shape, 3)


def euler_pitch_yaw_roll(camera_from_head: np.ndarray) -> np.ndarray:
    """Head rotation as (pitch, yaw, roll) radians, (..., 4, 4) -> (..., 3).

    The rotation is expressed in a y-up, z-towards-camera frame (R_gl = FLIP @ R) and
    decomposed as R_gl = Rz(roll) @ Ry(yaw) @ Rx(pitch), the convention of
    Deep3DFaceRecon's ``angles`` (rotations about x, y, z), so the two can be compared.
    """
    from scipy.spatial.transform import Rotation

    r = np.asarray(camera_from_head)[..., :3, :3]
    shape = r.shape[:-2]
    r_gl = FLIP @ r.reshape(-1, 3, 3)
    # extrinsic x, then y, then z == R = Rz @ Ry @ Rx
    ang = Rotation.from_matrix(r_gl).as_euler("xyz", degrees=False)
    return ang.reshape(*shape, 3)


def relative_to_ray(camera_from_head: np.ndarray) -> np.ndarray:
    """Head rotation relative to the camera ray through the head origin, (..., 4, 4) -> same.

    A head that moves across the image while keeping its orientation in the camera frame
    is seen from a changing direction; face-crop trackers (e.g. Deep3DFaceRecon, which
    re-centres every frame) report the pose relative to that viewing ray. This removes the
    rotation taking the optical axis onto the ray (minimal rotation), keeping translation.
    """
    from scipy.spatial.transform import Rotation

    M = np.asarray(camera_from_head, np.float64)
    shape = M.shape[:-2]
    M = M.reshape(-1, 4, 4)
    t = M[:, :3, 3]
    d = t / np.linalg.norm(t, axis=1, keepdims=True)
    axis = np.cross(np.array([0.0, 0.0, 1.0]), d)
    s = np.linalg.norm(axis, axis=1, keepdims=True)
    angle = np.arctan2(s, d[:, 2:3])
    look = Rotation.from_rotvec(axis / np.maximum(s, 1e-12) * angle).as_matrix()
    out = M.copy()
    out[:, :3, :3] = np.einsum("nji,njk->nik", look, M[:, :3, :3])
    return out.reshape(*shape, 4, 4).astype(np.float32)


def rigid(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """(..., 3, 3) + (..., 3) -> (..., 4, 4) rigid transforms."""
    shape = rotation.shape[:-2]
    out = np.zeros((*shape, 4, 4), dtype=np.float32)
    out[..., :3, :3] = rotation
    out[..., :3, 3] = translation
    out[..., 3, 3] = 1.0
    return out


def intrinsics(focal: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[focal, 0, cx], [0, focal, cy], [0, 0, 1]], dtype=np.float32)
