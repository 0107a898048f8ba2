"""Build the mediapipe-landmark -> ICT-surface correspondence shipped as package data.

    python scripts/build_correspondence.py [--ids 200 --seconds 1 --seed 100 --ridge 0.1]

1. Render synthetic talking heads with known identity, pose and expression (minerf_cli.synth).
2. Run `prep` on them: the same face mesh, crop and landmark convention as on real video.
3. Seed: for each mediapipe landmark, the ICT surface point under it in the rendered
   frames (rasterizer triangle + barycentrics), median over frames, snapped to a vertex.
4. Refine: for each landmark, search the ICT surface near the seed (vertices within a
   radius, then barycentric grids in the triangles around the best vertex) for the point
   whose ground-truth projections best match the detected landmark over all frames.
5. Weight each landmark by its residual (silhouette points that slide with yaw get less
   weight).
6. Identity correction: mediapipe leans towards its own mean face, so the detected points
   move less with the identity than the surface points do. Fit, per landmark, a head-space
   offset = constant + linear in the identity coefficients (ridge least squares over all
   frames, many identities).
7. Expression and view correction: offsets linear in the blendshapes and in where the
   camera sits as seen from the head (tracking.view_features; mediapipe's landmarks lean
   towards a frontal face), jointly.
8. Rotation correction: fit every training clip as fit3dmm does and regress the fitted
   head's rotation error on the fitted identity (the landmarks hardly show a face's
   profile slope, so the pitch comes out off by a face-dependent 1-4 degrees); the fit
   turns its pose back by it. Write minerf_cli/data/mediapipe_ict_correspondence.npz.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import h5py
import numpy as np

from minerf_cli.facemodel import data_path, load_face_model
from minerf_cli.prep import PrepOptions, prep
from minerf_cli.raster import barycentric_at, project, rasterize
from minerf_cli.synth import synthesize
from minerf_cli.tracking import Correspondence, landmark_basis, view_features

NUM_MESH = 468  # mediapipe landmarks without the 10 iris points


def crop_intrinsics(K: np.ndarray, crop_box, size: int) -> np.ndarray:
    """Intrinsics of the source video mapped into prep's square crop."""
    x0, y0, side = (float(v) for v in crop_box)
    s = size / side
    Kc = K.astype(np.float64).copy()
    Kc[0, 0] *= s
    Kc[1, 1] *= s
    Kc[0, 2] = (K[0, 2] - x0) * s
    Kc[1, 2] = (K[1, 2] - y0) * s
    return Kc


def collect(ids: int, seconds: float, seed: int, size: int, workdir: Path):
    """Per valid frame: landmarks (F,468,2), projected posed vertices (F,V,2), raster seeds."""
    model = load_face_model()
    clips = synthesize(workdir, ids=ids, seconds=seconds, size=size, fps=25, seed=seed)
    lms, projs, seeds = [], [], []
    params = {"identity": [], "expression": [], "rotation": [], "translation": [], "K": []}
    for clip in clips:
        store_path = workdir / (Path(clip["video"]).stem + ".h5")
        prep(Path(clip["video"]), store_path, PrepOptions(size=size))
        gt = np.load(clip["gt"])
        with h5py.File(store_path, "r") as f:
            lm = f["landmarks/points"][:, :NUM_MESH, :2]
            valid = f["landmarks/valid"][...]
            crop_box = f["frames"].attrs["crop_box"]
        K = crop_intrinsics(gt["intrinsics"], crop_box, size)
        n = min(len(valid), len(gt["expression"]))
        verts = model.vertices(gt["identity"], gt["expression"][:n])  # (n,V,3)
        M = gt["camera_from_head"][:n]
        cam = np.einsum("nij,nvj->nvi", M[:, :3, :3], verts) + M[:, None, :3, 3]
        for i in np.flatnonzero(valid[:n]):
            px = project(cam[i], K)
            lms.append(lm[i])
            projs.append(px[:, :2].astype(np.float32))
            for key, value in zip(params, (gt["identity"], gt["expression"][i], M[i, :3, :3], M[i, :3, 3], K)):
                params[key].append(value)
            if i % 5 == 0:
                tri_id, _ = rasterize(px, model.triangles, size, size)
                pts = lm[i].astype(np.float64)
                ij = np.clip(np.floor(pts).astype(int), 0, size - 1)
                tids = tri_id[ij[:, 1], ij[:, 0]]
                ok = tids >= 0
                bary = np.zeros((NUM_MESH, 3))
                bary[ok] = barycentric_at(px, model.triangles, tids[ok], pts[ok])
                # the same surface point on the neutral mesh
                neutral = np.full((NUM_MESH, 3), np.nan)
                tv = model.triangles[tids[ok]]
                neutral[ok] = (model.neutral[tv] * bary[ok][..., None]).sum(1)
                seeds.append(neutral)
    return np.stack(lms), np.stack(projs), np.stack(seeds), {k: np.stack(v) for k, v in params.items()}


def refine(lms, projs, seeds, radius_cm: float = 1.5, grid: int = 8):
    """Best surface point per landmark -> tri_vertices (L,3), bary (L,3), rms (L,)."""
    model = load_face_model()
    tris = model.triangles
    neutral = model.neutral
    L = lms.shape[1]
    out_tv = np.zeros((L, 3), np.int64)
    out_b = np.zeros((L, 3), np.float32)
    rms = np.full(L, np.inf)
    # barycentric grid on the simplex
    g = np.array([(a, b, grid - a - b) for a in range(grid + 1) for b in range(grid + 1 - a)], np.float64) / grid
    for l in range(L):
        seed = np.nanmedian(seeds[:, l], axis=0)
        if not np.isfinite(seed).all():
            continue
        cand = np.flatnonzero(np.linalg.norm(neutral - seed, axis=1) < radius_cm)
        if len(cand) == 0:
            continue
        err = ((projs[:, cand, :] - lms[:, l, None, :]) ** 2).sum(-1).mean(0)
        best_v = cand[np.argmin(err)]
        adj = np.flatnonzero((tris == best_v).any(1))
        tv = tris[adj]  # (A,3)
        pts = np.einsum("gk,fakc->fagc", g, projs[:, tv, :])  # (F,A,G,2)
        e = ((pts - lms[:, l, None, None, :]) ** 2).sum(-1).mean(0)  # (A,G)
        a, gi = np.unravel_index(np.argmin(e), e.shape)
        out_tv[l], out_b[l], rms[l] = tv[a], g[gi], np.sqrt(e[a, gi])
    return out_tv, out_b, rms


def _linearise(lms, params, tv, bary, offset=None, identity_offset=None, clip_px: float = 8.0):
    """Residuals (F,L,2) of the detected landmarks against the ground-truth projections of
    the corresponded points (plus any offsets so far), capped at ``clip_px``, and the
    Jacobian (F,L,2,3) of the projection with respect to a head-space offset of each point."""
    corr = Correspondence(np.arange(len(tv)), tv, bary, np.ones(len(tv), np.float32), offset, identity_offset)
    mean, idb, exb = landmark_basis(load_face_model(), corr)
    pts = mean + np.einsum("fi,ilc->flc", params["identity"], idb) + np.einsum("fe,elc->flc", params["expression"], exb)
    cam = np.einsum("fij,flj->fli", params["rotation"], pts) + params["translation"][:, None]
    K = params["K"]
    iz = 1.0 / cam[..., 2]
    uv = np.stack([K[:, None, 0, 0] * cam[..., 0] * iz + K[:, None, 0, 2],
                   K[:, None, 1, 1] * cam[..., 1] * iz + K[:, None, 1, 2]], -1)
    err = lms - uv  # (F,L,2)
    norm = np.linalg.norm(err, axis=-1, keepdims=True)
    err = err * np.minimum(1.0, clip_px / np.maximum(norm, 1e-9))
    # d uv / d head-space offset: (f / z) [[1, 0, -x/z], [0, 1, -y/z]] R
    P = np.zeros(cam.shape[:2] + (2, 3))
    P[..., 0, 0] = P[..., 1, 1] = 1.0
    P[..., 0, 2], P[..., 1, 2] = -cam[..., 0] * iz, -cam[..., 1] * iz
    J = (K[:, None, 0, 0] * iz)[..., None, None] * np.einsum("flac,fcd->flad", P, params["rotation"])
    return err, J


def _ridge_per_landmark(A, b, weight, ridge):
    """Solve (A + ridge * mean diag) W = b per landmark: A (L,3Q,3Q), b (L,3Q) -> W (L,Q,3)."""
    n = A.shape[-1]
    scale = np.trace(A, axis1=1, axis2=2)[:, None] / n  # ridge relative to the data
    A = A + np.eye(n)[None] * (ridge * scale[..., None] + 1e-9)
    W = np.linalg.solve(A, b[..., None])[..., 0].reshape(len(A), n // 3, 3)
    W[weight <= 0] = 0.0
    return W


def identity_correction(lms, params, tv, bary, weight, ridge: float = 0.1):
    """Offsets of the landmark points (head space, cm) linear in the identity.

    Mediapipe's landmarks follow a face's shape only partly (they lean towards its own
    mean face), so a fixed surface point per landmark leaves an identity-dependent error
    that the fit otherwise absorbs into the head pose (a pitch bias of several degrees).
    Model: detected = project(X_l(id, ex) + c_l + id . D_l) and solve, per landmark, the
    ridge least squares for c_l (3,) and D_l (I, 3) over all frames, linearising the
    projection at the ground truth. Returns c (L,3) and D (I,L,3).
    """
    err, J = _linearise(lms, params, tv, bary)
    # frames share an identity per clip: accumulate per identity, then the Kronecker products
    ids, inverse = np.unique(params["identity"], axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    G = np.zeros((len(ids), len(tv), 3, 3))
    h = np.zeros((len(ids), len(tv), 3))
    np.add.at(G, inverse, np.einsum("flad,flae->flde", J, J))
    np.add.at(h, inverse, np.einsum("flad,fla->fld", J, err))
    phi = np.concatenate([np.ones((len(ids), 1)), ids], 1)  # (C, 1+I)
    Q = phi.shape[1]
    A = np.einsum("cp,cq,clde->lpdqe", phi, phi, G).reshape(len(tv), 3 * Q, 3 * Q)
    b = np.einsum("cp,cld->lpd", phi, h).reshape(len(tv), 3 * Q)
    W = _ridge_per_landmark(A, b, weight, ridge)
    return W[:, 0].astype(np.float32), W[:, 1:].transpose(1, 0, 2).astype(np.float32)


def expression_correction(lms, params, tv, bary, weight, offset, identity_offset, ridge: float = 0.1,
                          min_std: float = 0.03, view: bool = True):
    """Offsets of the landmark points (cm) linear in the blendshapes and the view, after the identity's.

    Mediapipe's landmarks need not follow an ICT blendshape exactly (e.g. they move less
    with a smile than the surface does), nor a head's rotation (they lean towards a frontal
    face: a pitch or yaw comes out smaller). Same model and solve as the identity
    correction, with per-frame regressors: the blendshapes that vary in the training
    renders (std > ``min_std``; the others keep no correction) and, with ``view``, the
    view features (tracking.view_features). Returns (E,L,3) and (K,L,3) (K = 0 without ``view``).
    """
    err, J = _linearise(lms, params, tv, bary, offset, identity_offset)
    ex = params["expression"]
    used = np.flatnonzero(ex.std(0) > min_std)
    feats = view_features(params["rotation"], params["translation"]) if view else np.zeros((len(ex), 0))
    phi = np.concatenate([ex[:, used], feats], 1)  # (F, Q)
    Q = phi.shape[1]
    JtJ = np.einsum("flad,flae->flde", J, J)  # (F,L,3,3)
    A = np.einsum("fp,fq,flde->lpdqe", phi, phi, JtJ).reshape(len(tv), 3 * Q, 3 * Q)
    b = np.einsum("fp,flad,fla->lpd", phi, J, err).reshape(len(tv), 3 * Q)
    W = _ridge_per_landmark(A, b, weight, ridge)
    out = np.zeros((ex.shape[1], len(tv), 3), np.float32)
    out[used] = W[:, :len(used)].transpose(1, 0, 2)
    return out, W[:, len(used):].transpose(1, 0, 2).astype(np.float32)


def rotation_correction(lms, params, corr: Correspondence, size: int, ridge: float = 30.0) -> np.ndarray:
    """Regression of the fit's head-rotation error on the identity it finds -> (1+I, 3).

    The head pose fitted to mediapipe's landmarks is off by a rotation that depends on the
    face (1-4 degrees per clip, mostly pitch): how a face's profile slopes is hardly seen
    in its landmarks, so the fit aligns them about as it would a typical face (and the
    identity cannot move the pose: a rotation of the face's shape is one of the pose). Fit
    every training clip (its frames share an identity) as fit3dmm does with ``corr``, and
    regress the mean rotation from the true to the fitted head (head-space rotation
    vector, radians) on the fitted identity: w(id) = w0 + id . W (ridge). Returns
    [w0; W]; tracking.fit turns its pose back by w(id) (``identity_rotation``).
    """
    from scipy.spatial.transform import Rotation

    from minerf_cli.tracking import FitConfig, fit

    ids, inverse = np.unique(params["identity"], axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    fitted, rot = [], []
    for k in range(len(ids)):
        sel = np.flatnonzero(inverse == k)
        r = fit(lms[sel], np.ones(len(sel), bool), size, 25.0, FitConfig(), corr=corr)
        rel = np.einsum("nji,njk->nik", params["rotation"][sel], r.camera_from_head[:, :3, :3].astype(np.float64))
        fitted.append(r.identity)
        rot.append(Rotation.from_matrix(rel).as_rotvec().mean(0))
    X, Y = np.asarray(fitted, np.float64), np.asarray(rot)
    w0 = Y.mean(0)
    W = np.linalg.solve(X.T @ X + ridge * np.eye(X.shape[1]), X.T @ (Y - w0))  # (I,3)
    return np.concatenate([w0[None], W]).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--ridge", type=float, default=0.1, help="ridge of the identity correction")
    ap.add_argument("--expression-ridge", type=float, default=0.1, help="ridge of the expression correction")
    ap.add_argument("--rotation-ridge", type=float, default=30.0, help="ridge of the rotation correction")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=None, help="keep the rendered data in this .npz (reused if present)")
    args = ap.parse_args()
    if args.cache and args.cache.exists():
        d = np.load(args.cache)
        lms, projs, seeds = d["lms"], d["projs"], d["seeds"]
        params = {k.removeprefix("p_"): d[k] for k in d.files if k.startswith("p_")}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            lms, projs, seeds, params = collect(args.ids, args.seconds, args.seed, args.size, Path(tmp))
        if args.cache:
            np.savez(args.cache, lms=lms, projs=projs, seeds=seeds, **{f"p_{k}": v for k, v in params.items()})
    tv, bary, rms = refine(lms, projs, seeds)
    ok = np.isfinite(rms)
    weight = np.where(ok, 1.0 / (1.0 + (np.nan_to_num(rms, nan=99, posinf=99) / 1.5) ** 2), 0.0)
    weight[rms > 6.0] = 0.0
    offset, identity_offset = identity_correction(lms, params, tv, bary, weight, args.ridge)
    expression_offset, pose_offset = expression_correction(lms, params, tv, bary, weight, offset, identity_offset,
                                                           args.expression_ridge)
    corr = Correspondence(np.arange(len(tv)), tv, bary, weight.astype(np.float32), offset, identity_offset,
                          expression_offset, pose_offset)
    identity_rotation = rotation_correction(lms, params, corr, args.size, args.rotation_ridge)
    out = args.out or Path(str(data_path("mediapipe_ict_correspondence.npz")))
    np.savez_compressed(out, landmark=np.arange(len(tv), dtype=np.int32), tri_vertices=tv.astype(np.int32),
                        bary=bary.astype(np.float32), weight=weight.astype(np.float32),
                        rms_px=np.nan_to_num(rms, posinf=np.nan).astype(np.float32),
                        offset=offset, identity_offset=identity_offset, expression_offset=expression_offset,
                        pose_offset=pose_offset, identity_rotation=identity_rotation)
    print(json.dumps({"output": str(out), "frames": int(len(lms)), "landmarks": int(ok.sum()),
                      "median_rms_px": float(np.median(rms[ok])), "mean_rms_px": float(np.mean(rms[ok])),
                      "zero_weight": int((weight == 0).sum())}))


if __name__ == "__main__":
    main()
