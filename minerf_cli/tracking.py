"""Fitting the ICT face model to mediapipe landmarks (``minerf fit3dmm``).

Unknowns: one identity (I,) per clip, one pinhole focal per clip (principal point at
the crop centre), per frame a camera-from-head rotation + translation and E blendshape
weights in [0, 1]. Each mediapipe landmark corresponds to a fixed point on the ICT
surface (a triangle and barycentric weights, built by rendering the ICT mesh and running
the face mesh on it, see scripts/build_correspondence.py), so the model's landmarks are
linear in identity and expression:

    X_l(id, ex) = mean_l + id . ID_l + ex . EX_l          (L, 3) in head space

and the data term is the pixel reprojection error, robustified (Huber) and weighted per
landmark. Priors: ||id||^2, an L1 sparsity on the (non-negative) blendshapes, and
temporal smoothness on the pose (second differences) and on the expression (first
differences, much weaker on the mouth and jaw so speech motion is kept).
Everything is vectorised over frames: after a per-frame PnP initialisation, batched
Gauss-Newton steps solve each frame's pose + blendshapes (a box-constrained quadratic
per frame, solved by projected Gauss-Seidel), alternating on a subset of frames with
Gauss-Newton steps on the clip's identity and focal; then all frames are solved with
the clip's identity and focal fixed (from the second pass on with a prior that keeps the
neck's top on a smooth vertical path, so a nod is not taken for a vertical shift), and pose
and expression are smoothed in time.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from .facemodel import FaceModel, data_path, load_face_model
from .geometry import FLIP, axis_angle_to_matrix, intrinsics, matrix_to_axis_angle, rigid


@dataclass(frozen=True)
class Correspondence:
    """Mediapipe landmark -> ICT surface point (plus a learnt offset that depends on the identity)."""

    landmark: np.ndarray  # (L,) int32 mediapipe indices
    tri_vertices: np.ndarray  # (L, 3) int32 ICT vertex indices
    bary: np.ndarray  # (L, 3) float32 barycentric weights
    weight: np.ndarray  # (L,) float32 data-term weight per landmark
    offset: np.ndarray | None = None  # (L,3) float32 head-space offset (cm) added to the surface point
    identity_offset: np.ndarray | None = None  # (I,L,3) float32 offset (cm) per identity coefficient
    expression_offset: np.ndarray | None = None  # (E,L,3) float32 offset (cm) per blendshape weight
    pose_offset: np.ndarray | None = None  # (K,L,3) float32 offset (cm) per view feature (view_features)
    identity_rotation: np.ndarray | None = None  # (1+I,3) float32 pose correction (rad): constant, per identity coefficient


@functools.lru_cache(maxsize=1)
def load_correspondence() -> Correspondence:
    with data_path("mediapipe_ict_correspondence.npz").open("rb") as fh:
        d = np.load(fh)
        return Correspondence(
            landmark=d["landmark"].astype(np.int64),
            tri_vertices=d["tri_vertices"].astype(np.int64),
            bary=d["bary"].astype(np.float32),
            weight=d["weight"].astype(np.float32),
            offset=d["offset"].astype(np.float32) if "offset" in d else None,
            identity_offset=d["identity_offset"].astype(np.float32) if "identity_offset" in d else None,
            expression_offset=d["expression_offset"].astype(np.float32) if "expression_offset" in d else None,
            pose_offset=d["pose_offset"].astype(np.float32) if "pose_offset" in d else None,
            identity_rotation=d["identity_rotation"].astype(np.float32) if "identity_rotation" in d else None,
        )


def view_features(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Where the camera sits as seen from the head: rotations (N,3,3), translations (N,3) -> (N,2).

    The unit vector from the head origin to the camera in head space, v = -R^T t / |t|, is
    (0, 0, 1) for a head facing the camera; the features are (v_x, v_y) (about the sines
    of yaw and pitch relative to the viewing ray). Mediapipe's landmarks lean towards a
    frontal face, so the correspondence may add offsets linear in these.
    """
    v = -np.einsum("nji,nj->ni", R, t) / np.linalg.norm(t, axis=-1, keepdims=True)
    return v[:, :2]


def landmark_basis(model: FaceModel, corr: Correspondence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model restricted to the landmarks: mean (L,3), identity (I,L,3), expression (E,L,3).

    Mediapipe's landmarks follow a face's shape only partly, so the correspondence adds a
    constant offset and one linear in the identity (learnt on synthetic renders) to the
    surface points: the effective landmark identity basis differs from the surface's.
    """

    def at(arr: np.ndarray) -> np.ndarray:  # (..., V, 3) -> (..., L, 3)
        return (arr[..., corr.tri_vertices, :] * corr.bary[..., None]).sum(-2)

    mean, ident = at(model.neutral), at(model.identity_modes)
    if corr.offset is not None:
        mean = mean + corr.offset
    if corr.identity_offset is not None:
        ident = ident + corr.identity_offset
    expr = at(model.expression_modes)
    if corr.expression_offset is not None:
        expr = expr + corr.expression_offset
    return mean, ident, expr



@dataclass
class FitConfig:
    focal: float | None = None  # pixels of the crop; None = estimate
    rounds: int = 4  # identity/focal rounds on the key frames
    iterations: int = 2  # per-frame Gauss-Newton iterations on all frames
    key_frames: int = 40
    identity_reg: float = 0.02  # weight of ||id||^2 against the mean squared px error (was 0.05)
    expression_l1: float = 0.2  # L1 on the blendshapes (they are >= 0), same units
    huber_px: float = 3.0
    # blendshapes not fitted (kept 0): gaze moves the eyeballs, which landmarks do not see
    fixed: tuple[str, ...] = ("eyeLookDown_L", "eyeLookDown_R", "eyeLookIn_L", "eyeLookIn_R",
                              "eyeLookOut_L", "eyeLookOut_R", "eyeLookUp_L", "eyeLookUp_R",
                              "cheekPuff_L", "cheekPuff_R")
    smooth_pose_s: float = 0.04  # Gaussian sigma (seconds) on pose
    smooth_expression_s: float = 0.04  # on eye/brow/other blendshapes
    smooth_mouth_s: float = 0.0  # on mouth/jaw blendshapes (0 = keep speech motion as tracked)
    # Neck-pivot prior (pitch vs vertical translation): a head nods about the neck, whose top
    # moves slowly. After the first pass on all frames, the head-space point `pivot` (cm, top
    # of the neck, as in minerf_cli.synth_head.PIVOT) is held near its own path smoothed over
    # pivot_smooth_s (Gaussian sigma) in the later passes: 1 px of image displacement from that
    # path costs pivot_weight x (1 px)^2 of mean landmark error. Only its vertical camera axis
    # by default (pivot_axes: x, y, z weights): sideways sway is quicker (andrew's yaw
    # correlation 0.979 -> 0.957 with all axes) and depth is not ambiguous with pitch.
    pivot: tuple[float, float, float] = (0.0, -9.0, -1.5)
    pivot_smooth_s: float = 0.3
    pivot_weight: float = 0.03  # 0 = off
    pivot_axes: tuple[float, float, float] = (0.0, 1.0, 0.0)


@dataclass
class FitResult:
    intrinsics: np.ndarray  # (3,3)
    camera_from_head: np.ndarray  # (N,4,4)
    expression: np.ndarray  # (N,E)
    identity: np.ndarray  # (I,)
    fit_error: np.ndarray  # (N,) mean landmark reprojection error in px (NaN if invalid)
    focal: float


def _pnp(points3d: np.ndarray, points2d: np.ndarray, valid: np.ndarray, K: np.ndarray,
         errors: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame PnP of fixed model points (L,3) on pixels (N,L,2) -> rvec, tvec (N,3), err (N,).

    Each frame starts from the previous frame's pose; ``err`` (mean px) only if ``errors``.
    """
    n = points2d.shape[0]
    rvecs, tvecs, errs = np.zeros((n, 3)), np.zeros((n, 3)), np.full(n, np.inf)
    obj = points3d.astype(np.float64)
    last = None
    for i in np.flatnonzero(valid):
        img = points2d[i].astype(np.float64)
        if last is None:
            ok, rvec, tvec = cv2.solvePnP(obj, img, K, None, flags=cv2.SOLVEPNP_EPNP)
            if ok:
                ok, rvec, tvec = cv2.solvePnP(obj, img, K, None, rvec, tvec, True, flags=cv2.SOLVEPNP_ITERATIVE)
        else:
            rvec, tvec = last[0].copy(), last[1].copy()
            ok, rvec, tvec = cv2.solvePnP(obj, img, K, None, rvec, tvec, True, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok or tvec[2, 0] <= 0:
            last = None
            continue
        last = (rvec, tvec)
        if errors:
            proj, _ = cv2.projectPoints(obj, rvec, tvec, K, None)
            errs[i] = np.linalg.norm(proj[:, 0] - img, axis=-1).mean()
        rvecs[i], tvecs[i] = rvec[:, 0], tvec[:, 0]
    return rvecs, tvecs, errs


def _correct_rotation(R: np.ndarray, t: np.ndarray, rotation: np.ndarray, ident: np.ndarray,
                      mean: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fitted pose R (N,3,3), t (N,3) less the rotation the fit is known to make for this
    identity: w = rotation[0] + ident . rotation[1:] (head-space rotation vector, learnt by
    scripts/build_correspondence.py as fitted-from-true), turned back about the landmarks'
    centroid (from the mean landmarks (L,3)) so the head stays where it is in the image.

    The landmarks cannot tell a face's profile slope from its pitch; this is the regression
    of the fit's error on the identity it finds.
    """
    w = rotation[0].astype(np.float64) + ident.astype(np.float64) @ rotation[1:]
    back = axis_angle_to_matrix(-w[None])[0]  # true-from-fitted head frame
    c = np.average(mean, axis=0, weights=np.maximum(weight, 1e-6))
    R2 = R.astype(np.float64) @ back
    t2 = t + (R.astype(np.float64) @ c) - (R2 @ c)
    return R2.astype(np.float32), t2.astype(np.float32)


def _fill_invalid(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear interpolation over frames where ``valid`` is False (nearest at the ends)."""
    idx = np.flatnonzero(valid)
    out = values.copy()
    if len(idx) == 0 or len(idx) == len(valid):
        return out
    flat = out.reshape(len(valid), -1)
    for j in range(flat.shape[1]):
        flat[:, j] = np.interp(np.arange(len(valid)), idx, flat[idx, j])
    return flat.reshape(values.shape)


# focal / crop size tried by estimate_focal_pnp: 15 steps of 15.5% from 0.8 to 6 (was 7 steps
# of about 40%, which left the estimate on a grid value: the later Gauss-Newton steps on the
# focal hardly move it, face depth and focal trading off)
FOCAL_GRID = tuple(float(x) for x in np.geomspace(0.8, 6.0, 15))


def estimate_focal_pnp(mean: np.ndarray, lm2d: np.ndarray, valid: np.ndarray, size: int) -> float:
    """Coarse focal (px) by PnP of the mean shape on up to 15 frames: the median reprojection
    error over a log grid (FOCAL_GRID), its minimum refined by a parabola in log focal."""
    frames = np.flatnonzero(valid)
    frames = frames[np.linspace(0, len(frames) - 1, min(15, len(frames))).astype(int)]
    errs = []
    for factor in FOCAL_GRID:
        K = intrinsics(factor * size, size / 2, size / 2).astype(np.float64)
        _, _, e = _pnp(mean, lm2d[frames], np.ones(len(frames), bool), K, errors=True)
        errs.append(float(np.median(e)))
    k = int(np.argmin(errs))
    logf = np.log(np.array(FOCAL_GRID) * size)
    return float(np.exp(logf[k] + parabola_vertex(errs, k) * (logf[1] - logf[0])))


def parabola_vertex(values, k: int) -> float:
    """Offset (in grid steps, within [-0.5, 0.5]) of the minimum of the parabola through
    values[k-1], values[k], values[k+1] on an even grid; 0 at the ends or if not convex."""
    if not 0 < k < len(values) - 1:
        return 0.0
    y0, y1, y2 = values[k - 1], values[k], values[k + 1]
    den = y0 - 2 * y1 + y2
    if not den > 0:
        return 0.0
    return float(np.clip(0.5 * (y0 - y2) / den, -0.5, 0.5))


def _skew(v: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3) with skew(a) @ b = a x b."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    o = np.zeros_like(x)
    return np.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*v.shape, 3)


def _diag_add(A: np.ndarray, d: np.ndarray) -> np.ndarray:
    """A (..., P, P) + diag(d) with d (..., P) or (P,), without building the diagonal matrices."""
    A = A.copy()
    idx = np.arange(A.shape[-1])
    A[..., idx, idx] += d
    return A


def solve_spd(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched solve of A x = b for symmetric positive definite A (B,P,P), b (B,P) -> x (B,P).

    Cholesky factorisation, then forward and back substitution vectorised over the batch.
    Same result as ``np.linalg.solve``, which for many small systems runs LAPACK's LU with
    threaded BLAS per matrix: on a busy 2-core machine that thread hand-off made it 10-40x
    slower than this. Falls back to ``np.linalg.solve`` if A is not numerically SPD.
    """
    try:
        L = np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        return np.linalg.solve(A, b[..., None])[..., 0]
    P = A.shape[-1]
    y = np.empty(b.shape, L.dtype)
    for i in range(P):  # L y = b
        y[:, i] = (b[:, i] - np.einsum("bk,bk->b", L[:, i, :i], y[:, :i])) / L[:, i, i]
    x = np.empty_like(y)
    for i in range(P - 1, -1, -1):  # L^T x = y
        x[:, i] = (y[:, i] - np.einsum("bk,bk->b", L[:, i + 1:, i], x[:, i + 1:])) / L[:, i, i]
    return x


def box_qp(A: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray, iterations: int = 6) -> np.ndarray:
    """Batched min q(x) = 1/2 x'Ax + b'x s.t. lo <= x <= hi (projected Newton, active sets).

    A (B,P,P) SPD, b/lo/hi (B,P) -> x (B,P). Each iteration solves the Newton system on the
    variables not held at a bound, projects onto the box and backtracks until q decreases.
    """

    def q(x):
        return 0.5 * np.einsum("bp,bp->b", x, (A @ x[..., None])[..., 0]) + np.einsum("bp,bp->b", b, x)

    x = np.clip(np.zeros_like(b), lo, hi)
    qx = q(x)
    for _ in range(iterations):
        g = (A @ x[..., None])[..., 0] + b
        held = ((x <= lo + 1e-9) & (g > 0)) | ((x >= hi - 1e-9) & (g < 0))
        free = (~held).astype(A.dtype)
        M = _diag_add(A * free[:, :, None] * free[:, None, :], 1 - free)
        d = solve_spd(M, -g * free)
        step = np.ones_like(qx)
        accepted = np.zeros(len(qx), bool)
        x_best, q_best = x, qx
        for _ in range(6):
            cand = np.clip(x + step[:, None] * d, lo, hi)
            qc = q(cand)
            better = (qc < q_best - 1e-12) & ~accepted
            x_best = np.where(better[:, None], cand, x_best)
            q_best = np.where(better, qc, q_best)
            accepted |= better
            if accepted.all():
                break
            step = np.where(accepted, step, step * 0.5)
        if not accepted.any():
            break
        x, qx = x_best, q_best
    return x


class _Problem:
    """Landmark reprojection problem for a set of frames (numpy).

    Residuals and Jacobians are float32 (the bulk of the work, memory-bound); the small
    normal-equation systems are solved in float64.
    """

    def __init__(self, mean, id_basis, ex_basis, weights, obs, valid, center, cfg: FitConfig, active,
                 view_basis=None):
        f32 = np.float32
        self.mean, self.idb, self.exb = mean.astype(f32), id_basis.astype(f32), ex_basis.astype(f32)
        self.vb = None if view_basis is None else view_basis.astype(f32)  # (K,L,3) per view feature
        self.w = np.asarray(weights, f32)
        self.obs, self.valid = obs.astype(f32), valid.astype(f32)
        self.center = np.asarray(center, f32)
        self.active = np.asarray(active, f32)  # (E,) 1 = fitted, 0 = held at 0
        self.cfg = cfg
        L, E, I = ex_basis.shape[1], ex_basis.shape[0], id_basis.shape[0]
        self.ex_flat = np.ascontiguousarray(self.exb.transpose(2, 1, 0).reshape(3, L * E))
        self.id_flat = np.ascontiguousarray(self.idb.transpose(2, 1, 0).reshape(3, L * I))

    def points(self, ident, ex, R=None, t=None):
        """Model landmarks (N,L,3) in head space; with the pose R (N,3,3), t (N,3), plus the
        view-dependent offsets (held fixed within a Gauss-Newton step)."""
        base = self.mean + (ident @ self.idb.reshape(len(ident), -1)).reshape(-1, 3)
        P = base[None] + (ex @ self.exb.reshape(ex.shape[1], -1)).reshape(len(ex), -1, 3)
        if self.vb is not None and R is not None:
            P = P + (view_features(R, t).astype(np.float32) @ self.vb.reshape(len(self.vb), -1)).reshape(P.shape)
        return P

    def project(self, cam, f):
        """cam (N,L,3) -> uv (N,L,2), and the rows of d uv / d cam as (a, x/z, y/z) with
        d u = a * (d x - x/z d z), d v = a * (d y - y/z d z), a = f / z."""
        iz = 1.0 / np.maximum(cam[..., 2], 1e-3)
        uv = f * cam[..., :2] * iz[..., None] + self.center
        return uv.astype(np.float32), (f * iz, cam[..., 0] * iz, cam[..., 1] * iz)

    @staticmethod
    def chain(jac, dcam):
        """d uv / d params (N, 2L, P) from the projection rows and dcam (N,L,3,P)."""
        a, xz, yz = jac
        J = np.empty((*a.shape, 2, dcam.shape[-1]), np.float32)
        J[..., 0, :] = a[..., None] * (dcam[..., 0, :] - xz[..., None] * dcam[..., 2, :])
        J[..., 1, :] = a[..., None] * (dcam[..., 1, :] - yz[..., None] * dcam[..., 2, :])
        return J.reshape(a.shape[0], -1, dcam.shape[-1])

    def irls(self, res, frames):
        """Per-residual weights (N,L): landmark weight x Huber x valid, normalised per frame."""
        d = np.linalg.norm(res, axis=-1)
        h = self.cfg.huber_px
        w = self.w[None] * np.where(d <= h, 1.0, h / np.maximum(d, 1e-9))
        w = w * self.valid[frames, None]
        return (w / self.w.sum()).astype(np.float32)

    @staticmethod
    def _normal_equations(J, res, w):
        """J (N,2L,P), res (N,L,2), w (N,L) -> A (N,P,P), b (N,P) float64 of 1/2 sum w |res + J d|^2."""
        Jw = J * np.repeat(w, 2, axis=1)[..., None]
        Jwt = Jw.transpose(0, 2, 1)
        A = (Jwt @ J).astype(np.float64)
        b = (Jwt @ res.reshape(len(J), -1, 1))[..., 0].astype(np.float64)
        return A, b

    def frame_step(self, R, t, ex, ident, f, frames, fix_pose: bool = False, pivot_target=None):
        """One joint Gauss-Newton step on each frame's pose (6) and blendshapes (E, in [0, 1]).

        With ``fix_pose`` the pose is held (a huge damping on its 6 unknowns). With
        ``pivot_target`` (N,3) camera-space positions of the head-space point cfg.pivot, a
        quadratic prior pulls R pivot + t towards them (weight cfg.pivot_weight per px^2).
        """
        P = self.points(ident, ex, R, t)
        Rp = P @ R.transpose(0, 2, 1)
        uv, jac = self.project(Rp + t[:, None], f)
        res = uv - self.obs[frames]
        n, L = P.shape[:2]
        E = ex.shape[1]
        dcam = np.empty((n, L, 3, 6 + E), np.float32)
        dcam[..., :3] = -_skew(Rp)
        if self.vb is not None:  # the view-dependent offsets turn with the head: d v / d rot = -R^T [t/|t|]x
            dv = -R.transpose(0, 2, 1) @ _skew(t / np.linalg.norm(t, axis=-1, keepdims=True))  # (N,3,3)
            K = len(self.vb)  # R_n @ sum_k vb[k, l] dv[n, k], as two batched matmuls: (N,L,3,3)
            dcam[..., :3] += R[:, None] @ (self.vb.transpose(1, 2, 0)[None] @ dv[:, None, :K])
        dcam[..., 3:6] = np.eye(3, dtype=np.float32)
        # R @ EX_l for every landmark in one batched matmul: (N,3,3) @ (3, L*E)
        dcam[..., 6:] = (R @ self.ex_flat).reshape(n, 3, L, E).transpose(0, 2, 1, 3)
        A, b = self._normal_equations(self.chain(jac, dcam), res, self.irls(res, frames))
        b[:, 6:] += 0.5 * self.cfg.expression_l1 * self.active
        if pivot_target is not None and self.cfg.pivot_weight > 0:
            Rc = R @ np.asarray(self.cfg.pivot, np.float32)  # (N,3)
            Jp = np.concatenate([-_skew(Rc), np.broadcast_to(np.eye(3), (n, 3, 3))], -1).astype(np.float64)
            lam = self.cfg.pivot_weight * (f / np.maximum(t[:, 2], 1e-3)) ** 2  # cm -> px
            r = (Rc + t - pivot_target).astype(np.float64)
            ax = np.asarray(self.cfg.pivot_axes, np.float64)
            A[:, :6, :6] += lam[:, None, None] * Jp.transpose(0, 2, 1) @ (ax[None, :, None] * Jp)
            b[:, :6] += lam[:, None] * np.einsum("nij,ni->nj", Jp, ax * r)
        A = _diag_add(A, np.concatenate([np.full(6, 1e12 if fix_pose else 1e-6), 1e-4 + 1e6 * (1 - self.active)]))
        big = np.full((n, 6), 1e30)
        ex64 = ex.astype(np.float64)
        delta = box_qp(A, b, np.concatenate([-big, -ex64], 1), np.concatenate([big, 1 - ex64], 1))
        ex = (np.clip(ex64 + delta[:, 6:], 0, 1) * self.active).astype(np.float32)
        R = (axis_angle_to_matrix(delta[:, :3]) @ R).astype(np.float32)
        return R, (t + delta[:, 3:6]).astype(np.float32), ex

    def global_step(self, R, t, ex, ident, log_f, frames, fit_focal):
        """One Gauss-Newton step on the identity (and log focal) over ``frames``."""
        f = math.exp(log_f)
        P = self.points(ident, ex, R, t)
        uv, jac = self.project(P @ R.transpose(0, 2, 1) + t[:, None], f)
        res = uv - self.obs[frames]
        w = self.irls(res, frames) / len(R)
        n, L = P.shape[:2]
        I = ident.shape[0]
        dcam = (R @ self.id_flat).reshape(n, 3, L, I).transpose(0, 2, 1, 3)
        J = self.chain(jac, dcam)  # (N, 2L, I)
        if fit_focal:
            J = np.concatenate([J, (uv - self.center).reshape(n, -1, 1)], -1)
        Jw = (J * np.repeat(w, 2, axis=1)[..., None]).reshape(-1, J.shape[-1])
        J = J.reshape(-1, J.shape[-1])
        A = (Jw.T @ J).astype(np.float64)
        b = (Jw.T @ res.reshape(-1)).astype(np.float64)
        reg = np.zeros(A.shape[0])
        reg[:I] = self.cfg.identity_reg / I
        b[:I] += reg[:I] * ident
        delta = np.linalg.solve(_diag_add(A, reg + 1e-9), -b)
        ident = (ident + delta[:I]).astype(np.float32)
        if fit_focal:
            log_f = log_f + float(np.clip(delta[I], -0.3, 0.3))
        return ident, log_f

    def errors(self, R, t, ex, ident, f, frames):
        uv, _ = self.project(self.points(ident, ex, R, t) @ R.transpose(0, 2, 1) + t[:, None], f)
        d = np.linalg.norm(uv - self.obs[frames], axis=-1)
        used = (self.w > 0).astype(d.dtype)
        return (d * used).sum(-1) / used.sum()


def _solve_frames(prob: _Problem, R, t, ex, ident, f, frames, iterations: int, chunk: int = 64,
                  fix_pose: bool = False, pivot_target=None):
    """Gauss-Newton iterations on every frame's pose and blendshapes, in chunks of frames
    (small chunks keep the (chunk, 2L, 6+E) Jacobians in cache)."""
    R, t, ex = R.copy(), t.copy(), ex.copy()
    for start in range(0, len(frames), chunk):
        sl = slice(start, start + chunk)
        Rc, tc, exc, fr = R[sl], t[sl], ex[sl], frames[sl]
        for _ in range(iterations):
            Rc, tc, exc = prob.frame_step(Rc, tc, exc, ident, f, fr, fix_pose,
                                          None if pivot_target is None else pivot_target[sl])
        R[sl], t[sl], ex[sl] = Rc, tc, exc
    return R, t, ex


def _smooth(values: np.ndarray, sigma_frames: float) -> np.ndarray:
    if sigma_frames <= 0.05 or len(values) < 3:
        return values
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(values, sigma_frames, axis=0, mode="nearest")


def fit(landmarks: np.ndarray, valid: np.ndarray, size: int, fps: float = 25.0,
        config: FitConfig | None = None, model: FaceModel | None = None,
        corr: Correspondence | None = None, progress=None) -> FitResult:
    """Fit the face model to landmarks (N,478,>=2) in crop pixels of a size x size crop.

    ``progress(done, total)`` is called after each stage step if given.
    """
    cfg = config or FitConfig()
    model = model or load_face_model()
    corr = corr or load_correspondence()
    valid = np.asarray(valid, bool)
    n = landmarks.shape[0]
    if not valid.any():
        raise ValueError("no frame has landmarks")
    # invalid frames may hold NaN landmarks: zero them (their weight is 0 everywhere)
    lm2d = np.nan_to_num(np.asarray(landmarks[:, corr.landmark, :2], np.float64))  # (N,L,2)
    mean, id_basis, ex_basis = landmark_basis(model, corr)
    center = np.array([size / 2, size / 2])
    total = cfg.rounds + cfg.iterations
    done = 0

    focal0 = cfg.focal if cfg.focal else estimate_focal_pnp(mean, lm2d, valid, size)
    K0 = intrinsics(focal0, size / 2, size / 2).astype(np.float64)
    rvec, tvec, _ = _pnp(mean, lm2d, valid, K0)
    rvec, tvec = _fill_invalid(rvec, valid), _fill_invalid(tvec, valid)

    active = np.array([0.0 if nm in cfg.fixed else 1.0 for nm in model.expression_names], np.float32)
    prob = _Problem(mean, id_basis, ex_basis, corr.weight, lm2d, valid, center, cfg, active, corr.pose_offset)
    R_all = axis_angle_to_matrix(rvec).astype(np.float32)
    t_all = tvec.astype(np.float32)
    ex_all = np.tile(0.02 * active, (n, 1))
    ident = np.zeros(id_basis.shape[0], np.float32)
    log_f = math.log(focal0)

    # 1) identity and focal on key frames, alternating with their per-frame solves
    vidx = np.flatnonzero(valid)
    keys = vidx[np.linspace(0, len(vidx) - 1, min(cfg.key_frames, len(vidx))).astype(int)]
    Rk, tk, exk = R_all[keys], t_all[keys], ex_all[keys]
    for _ in range(cfg.rounds):
        Rk, tk, exk = _solve_frames(prob, Rk, tk, exk, ident, math.exp(log_f), keys, 2)
        ident, log_f = prob.global_step(Rk, tk, exk, ident, log_f, keys, cfg.focal is None)
        done += 1
        if progress:
            progress(done, total)

    # 2) every frame with identity and focal fixed; warm start from the PnP poses with the
    #    distance scaled to the new focal (keeps each head's image position and size)
    f = math.exp(log_f)
    t_all = (t_all * (f / focal0)).astype(np.float32)
    #    from the second pass on, the neck pivot is held near its smoothed path (FitConfig.pivot)
    frames = np.arange(n)
    pivot_target = None
    for k in range(cfg.iterations):
        if k > 0 and cfg.pivot_weight > 0:
            pv = R_all.astype(np.float64) @ np.asarray(cfg.pivot) + t_all
            pivot_target = _smooth(_fill_invalid(pv, valid), cfg.pivot_smooth_s * fps).astype(np.float32)
        R_all, t_all, ex_all = _solve_frames(prob, R_all, t_all, ex_all, ident, f, frames, 1,
                                             pivot_target=pivot_target)
        done += 1
        if progress:
            progress(done, total)

    # 3) invalid frames interpolated; the pose smoothed in time, then the blendshapes refit
    #    to the smoothed pose (one step) and all but the mouth's smoothed (speech kept sharp).
    #    Rotations relative to a frontal head (FLIP) stay far from 180 degrees: safe to average.
    rot = _fill_invalid(matrix_to_axis_angle(FLIP @ R_all.astype(np.float64)), valid)
    rot = _smooth(rot, cfg.smooth_pose_s * fps)
    trans = _smooth(_fill_invalid(t_all.astype(np.float64), valid), cfg.smooth_pose_s * fps)
    R_all = (FLIP @ axis_angle_to_matrix(rot)).astype(np.float32)
    trans = trans.astype(np.float32)
    _, _, ex_all = _solve_frames(prob, R_all, trans, ex_all, ident, f, frames, 1, fix_pose=True)
    ex_np = _fill_invalid(ex_all.astype(np.float64), valid)
    mouth = np.array([nm.startswith(("mouth", "jaw")) for nm in model.expression_names])
    ex_np[:, ~mouth] = _smooth(ex_np[:, ~mouth], cfg.smooth_expression_s * fps)
    ex_np[:, mouth] = _smooth(ex_np[:, mouth], cfg.smooth_mouth_s * fps)
    ex_np = np.clip(ex_np, 0, 1).astype(np.float32)
    err = prob.errors(R_all, trans.astype(np.float32), ex_np, ident, f, frames)
    err[~valid] = np.nan
    if corr.identity_rotation is not None:
        R_all, trans = _correct_rotation(R_all, trans, corr.identity_rotation, ident, mean, corr.weight)
    return FitResult(
        intrinsics=intrinsics(f, size / 2, size / 2),
        camera_from_head=rigid(R_all, trans),
        expression=ex_np,
        identity=ident.astype(np.float32),
        fit_error=err.astype(np.float32),
        focal=f,
    )
