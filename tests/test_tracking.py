"""Face-model fitting: the math pieces and recovery of known parameters from landmarks."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from minerf_cli.facemodel import load_face_model
from minerf_cli.geometry import FLIP, axis_angle_to_matrix, euler_pitch_yaw_roll, rigid
from minerf_cli.tracking import (FOCAL_GRID, Correspondence, FitConfig, _correct_rotation, box_qp, fit, landmark_basis,
                                 parabola_vertex, solve_spd, view_features)


def test_axis_angle_matches_scipy():
    r = np.array([[0.3, -0.2, 0.1], [0.0, 0.0, 0.0], [1e-5, 2e-5, 0.0], [2.0, -1.0, 0.5]])
    ours = axis_angle_to_matrix(r)
    ref = Rotation.from_rotvec(r).as_matrix()
    assert np.abs(ours - ref).max() < 1e-10


def test_euler_convention_is_deep3d():
    # Deep3DFaceRecon: R = Rz(roll) Ry(yaw) Rx(pitch) in a y-up, z-to-camera frame.
    pitch, yaw, roll = 0.1, -0.3, 0.05
    c, s = np.cos, np.sin
    rx = np.array([[1, 0, 0], [0, c(pitch), -s(pitch)], [0, s(pitch), c(pitch)]])
    ry = np.array([[c(yaw), 0, s(yaw)], [0, 1, 0], [-s(yaw), 0, c(yaw)]])
    rz = np.array([[c(roll), -s(roll), 0], [s(roll), c(roll), 0], [0, 0, 1]])
    M = rigid((FLIP @ rz @ ry @ rx)[None], np.zeros((1, 3)))
    assert np.allclose(euler_pitch_yaw_roll(M)[0], [pitch, yaw, roll], atol=1e-6)


def test_view_features_and_rotation_correction():
    # frontal head 70 cm away: the camera straight ahead; turned (yaw) -> v_x follows the sine
    t = np.array([[0.0, 0.0, 70.0], [0.0, 0.0, 70.0]])
    R = np.stack([FLIP, FLIP @ axis_angle_to_matrix(np.array([0.0, 0.2, 0.0]))])
    v = view_features(R, t)
    assert np.abs(v[0]).max() < 1e-12 and abs(abs(v[1, 0]) - np.sin(0.2)) < 1e-9 and abs(v[1, 1]) < 1e-12
    # the correction turns the head by w about the landmarks' centroid, which stays put
    mean = np.random.default_rng(0).normal(size=(20, 3)) + np.array([0.0, 2.0, 5.0])
    weight = np.ones(20)
    rotation = np.zeros((3, 3))
    rotation[0] = [0.03, 0.0, 0.0]
    rotation[2] = [0.0, 0.01, 0.0]  # second identity coefficient
    ident = np.array([0.0, 1.0])
    R2, t2 = _correct_rotation(R, t, rotation, ident, mean, weight)
    c = mean.mean(0)
    assert np.allclose(np.einsum("nij,j->ni", R2, c) + t2, np.einsum("nij,j->ni", R, c) + t, atol=1e-4)
    w = Rotation.from_matrix(np.einsum("nji,njk->nik", R, R2.astype(np.float64))).as_rotvec()
    assert np.allclose(w, [[-0.03, -0.01, 0.0]] * 2, atol=1e-6)


def test_box_qp_matches_brute_force():
    rng = np.random.default_rng(1)
    B, P = 4, 3
    X = rng.normal(size=(B, P, P))
    A = X @ X.transpose(0, 2, 1) + 0.1 * np.eye(P)
    b = rng.normal(size=(B, P)) * 3
    lo, hi = np.zeros((B, P)), np.ones((B, P))
    x = box_qp(A, b, lo, hi, iterations=30)
    grid = np.stack(np.meshgrid(*[np.linspace(0, 1, 101)] * P, indexing="ij"), -1).reshape(-1, P)
    for k in range(B):
        q = 0.5 * np.einsum("gp,pq,gq->g", grid, A[k], grid) + grid @ b[k]
        qx = 0.5 * x[k] @ A[k] @ x[k] + x[k] @ b[k]
        assert qx <= q.min() + 1e-6
        assert (x[k] >= -1e-9).all() and (x[k] <= 1 + 1e-9).all()


def test_solve_spd_hand_computed():
    # A = [[4, 2], [2, 3]] (det 8, inverse [[3, -2], [-2, 4]] / 8): b = (2, 1) -> (0.5, 0), b = (0, 8) -> (-2, 4)
    A = np.array([[[4.0, 2.0], [2.0, 3.0]]] * 2)
    x = solve_spd(A, np.array([[2.0, 1.0], [0.0, 8.0]]))
    assert np.allclose(x, [[0.5, 0.0], [-2.0, 4.0]], atol=1e-12)
    # 3x3 diagonal with a huge entry (a held unknown, as box_qp's damping makes): x = b / diag
    D = np.diag([1e12, 2.0, 0.5])[None]
    assert np.allclose(solve_spd(D, np.array([[1e12, 4.0, 1.0]])), [[1.0, 2.0, 2.0]], atol=1e-12)
    # not positive definite: falls back to a general solve, [[0, 1], [1, 0]] x = (1, 2) -> (2, 1)
    assert np.allclose(solve_spd(np.array([[[0.0, 1.0], [1.0, 0.0]]]), np.array([[1.0, 2.0]])), [[2.0, 1.0]])
    # a batch of random SPD systems agrees with numpy
    rng = np.random.default_rng(3)
    X = rng.normal(size=(5, 7, 7))
    A = X @ X.transpose(0, 2, 1) + 0.1 * np.eye(7)
    b = rng.normal(size=(5, 7))
    assert np.allclose(solve_spd(A, b), np.linalg.solve(A, b[..., None])[..., 0], atol=1e-9)


def test_focal_grid_is_a_fine_log_grid():
    g = np.array(FOCAL_GRID)
    assert len(g) == 15 and abs(g[0] - 0.8) < 1e-12 and abs(g[-1] - 6.0) < 1e-12
    # constant ratio (6 / 0.8) ** (1 / 14) = 1.155 between neighbours
    assert np.allclose(g[1:] / g[:-1], 7.5 ** (1 / 14), rtol=1e-9)


def test_parabola_vertex():
    # through (-1, 3), (0, 1), (1, 2): y = 1.5 x^2 - 0.5 x + 1, minimum at x = 1/6
    assert abs(parabola_vertex([5.0, 3.0, 1.0, 2.0], 2) - 1 / 6) < 1e-12
    assert parabola_vertex([2.0, 1.0, 2.0], 1) == 0.0  # symmetric
    assert parabola_vertex([1.0, 2.0, 3.0], 0) == 0.0  # minimum at an end of the grid: kept
    assert parabola_vertex([1.0, 1.0, 1.0], 1) == 0.0  # flat: no curvature


def _synthetic_landmarks(n=60, size=512, noise=0.3, seed=0):
    """Project the model at known parameters through a random surface correspondence."""
    m = load_face_model()
    rng = np.random.default_rng(seed)
    face = np.flatnonzero(m.neutral[: m.face_region[1], 2] > np.median(m.neutral[: m.face_region[1], 2]))
    tris = m.triangles[np.isin(m.triangles[:, 0], face)]
    L = 300
    corr = Correspondence(np.arange(L), tris[rng.choice(len(tris), L, replace=False)],
                          rng.dirichlet([2, 2, 2], L).astype(np.float32), np.ones(L, np.float32))
    mean, idb, exb = landmark_basis(m, corr)
    t = np.arange(n) / 25
    ident = rng.normal(0, 0.5, m.num_identity).astype(np.float32)
    ex = np.zeros((n, m.num_expression), np.float32)
    ex[:, m.expression_index("jawOpen")] = np.clip(0.3 + 0.3 * np.sin(2 * np.pi * 2 * t), 0, 1)
    ex[:, m.expression_index("mouthSmile_L")] = 0.3 * (np.sin(2 * np.pi * 0.5 * t) > 0)
    ex[:, m.expression_index("eyeBlink_L")] = ex[:, m.expression_index("eyeBlink_R")] = (np.arange(n) % 30 < 4)
    angles = np.stack([0.1 * np.sin(t), 0.3 * np.sin(0.7 * t), 0.05 * np.cos(t)], 1)
    R = FLIP @ Rotation.from_euler("xyz", angles).as_matrix()
    trans = np.stack([np.sin(t), -2 + 0 * t, 60 + 2 * np.cos(t)], 1)
    pts = mean + np.einsum("i,ilc->lc", ident, idb) + np.einsum("ne,elc->nlc", ex, exb)
    cam = np.einsum("nij,nlj->nli", R, pts) + trans[:, None]
    f = 2.0 * size
    uv = cam[..., :2] / cam[..., 2:] * f + size / 2 + rng.normal(0, noise, (n, L, 2))
    lm = np.concatenate([uv, np.zeros((n, L, 1))], -1).astype(np.float32)
    return lm, corr, ex, angles, f


def test_fit_recovers_known_parameters():
    lm, corr, ex, angles, f = _synthetic_landmarks()
    valid = np.ones(len(lm), bool)
    valid[7] = False  # a missing frame is interpolated
    res = fit(lm, valid, 512, 25.0, FitConfig(), corr=corr)
    m = load_face_model()
    assert np.isnan(res.fit_error[7]) and np.nanmean(res.fit_error) < 1.0
    assert abs(res.focal - f) / f < 0.5  # focal and face depth are only weakly separable
    rot_err = np.degrees(np.abs(euler_pitch_yaw_roll(res.camera_from_head) - angles))
    assert rot_err.mean() < 1.0
    jaw = m.expression_index("jawOpen")
    assert np.abs(res.expression[:, jaw] - ex[:, jaw]).mean() < 0.05
    assert res.expression.min() >= 0 and res.expression.max() <= 1
    assert np.corrcoef(res.expression[:, jaw], ex[:, jaw])[0, 1] > 0.95


def test_pivot_prior_pulls_the_neck_onto_its_path():
    """With no landmark data, one frame step moves the pivot's vertical camera coordinate onto
    the target path (the default prior acts on the vertical axis only); weight 0 = no prior."""
    from minerf_cli.tracking import _Problem

    m = load_face_model()
    corr = Correspondence(np.arange(3), m.triangles[:3], np.full((3, 3), 1 / 3, np.float32), np.ones(3, np.float32))
    mean, idb, exb = landmark_basis(m, corr)
    n = 4
    obs, valid = np.zeros((n, 3, 2)), np.zeros(n)  # no frame has landmarks: only the prior acts
    R = np.tile((FLIP @ axis_angle_to_matrix(np.array([[0.1, 0.2, 0.0]]))[0]).astype(np.float32), (n, 1, 1))
    t = np.tile(np.array([0.0, 0.0, 60.0], np.float32), (n, 1))
    ex = np.zeros((n, exb.shape[0]), np.float32)
    ident = np.zeros(idb.shape[0], np.float32)
    step = np.array([0.3, 0.5, -0.4], np.float32)
    for pivot, weight in (((0.0, 0.0, 0.0), 0.03), (FitConfig().pivot, 0.03), ((0.0, 0.0, 0.0), 0.0)):
        cfg = FitConfig(pivot=pivot, pivot_weight=weight)
        p0 = R @ np.asarray(pivot, np.float32) + t
        prob = _Problem(mean, idb, exb, corr.weight, obs, valid, np.array([256.0, 256.0]), cfg,
                        np.ones(exb.shape[0], np.float32))
        R2, t2, _ = prob.frame_step(R, t, ex, ident, 1000.0, np.arange(n), pivot_target=p0 + step)
        p2 = R2 @ np.asarray(pivot, np.float32) + t2
        if weight == 0:
            np.testing.assert_allclose(p2, p0, atol=1e-4)
        elif not any(pivot):  # the head origin: a pure vertical translation, exactly
            np.testing.assert_allclose(p2 - p0, [[0.0, step[1], 0.0]] * n, atol=1e-3)
        else:  # the neck: part rotation, part translation (no data holds the rotation here)
            assert (np.abs(p2[:, 1] - p0[:, 1] - step[1]) < 0.3 * step[1]).all()
