"""A small vectorised triangle rasterizer with a z-buffer (numpy, CPU).

Conventions
-----------
* Camera: OpenCV. x right, y down, z forward (depth > 0 in front of the camera).
* Pixels: pixel (i, j) (row i, column j) covers the square [j, j+1) x [i, i+1) of the
  continuous image plane; its centre is at (x, y) = (j + 0.5, i + 0.5). A triangle covers a
  pixel when the pixel *centre* lies inside it or on its edge. With this convention, a
  principal point at (W/2, H/2) is the exact image centre, and mediapipe's normalised
  landmarks map to pixels as (x * W, y * H) with no half-pixel shift.
  (OpenCV itself puts pixel centres at integer coordinates: subtract 0.5 to convert.)
* Front faces: triangles whose vertices appear counter-clockwise on screen as seen by the
  viewer (the OpenGL default; the ICT mesh's outside). In pixel coordinates, with y down,
  that is a *negative* signed area ``(x1-x0)*(y2-y0) - (y1-y0)*(x2-x0)``.
* Barycentrics are perspective-correct (3D) barycentrics of the pixel centre: with
  ``b = bary[i, j]`` and triangle ``t = tri_id[i, j]``, the 3D point
  ``sum_k b[k] * verts_cam[tris[t, k]]`` projects exactly onto the pixel centre. With
  ``perspective=False`` they are the plain screen-space barycentrics (for orthographic use).
  Coverage is decided on vertex positions snapped to 1/1024 px (exact, watertight edge
  tests) while the barycentrics are computed from the unsnapped positions, so a pixel centre
  within ~1/2000 px of an edge can get a barycentric slightly below 0 (~1e-4; not clamped).
* Depth test: the nearest fragment wins (smallest camera depth, compared in float32); exact
  ties go to the smallest triangle index, so results are deterministic.

How it works: cull, compute each triangle's integer bounding box of pixel centres, bucket
triangles by bounding-box size (powers of two per axis), evaluate the barycentric affine
functions on all (T_b, h_b * w_b) candidate pixels of a bucket at once, keep the inside
fragments, and resolve visibility with one ``np.minimum.at`` on a flat int64 buffer whose
keys are (float32 depth bits << 32 | triangle index). No Python loop over triangles.
"""

from __future__ import annotations

import numpy as np

EMPTY = -1
_MAX_CANDIDATES = 1 << 20  # candidate pixels evaluated per chunk (bounds memory to ~50 MB)


def project(verts_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole projection of camera-space points.

    verts_cam: (V, 3) points in the camera frame (OpenCV: x right, y down, z forward).
    K: (3, 3) intrinsics [[fx, s, cx], [0, fy, cy], [0, 0, 1]], in the pixel-centre
    convention of this module (centre of pixel (i, j) at (j + 0.5, i + 0.5)).
    Returns (V, 3) float64 [px_x, px_y, depth] with depth = camera z.
    """
    v = np.asarray(verts_cam, np.float64)
    K = np.asarray(K, np.float64)
    z = v[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (K[0, 0] * v[:, 0] + K[0, 1] * v[:, 1]) / z + K[0, 2]
        y = K[1, 1] * v[:, 1] / z + K[1, 2]
    return np.stack([x, y, z], axis=1)


def transform(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) rigid/affine transform to (V, 3) points; returns (V, 3) float64.

    Written without BLAS on purpose: numpy's threaded BLAS busy-waits on the other cores,
    which slows down everything running beside (e.g. the video encoder).
    """
    p = np.asarray(points, np.float64)
    M = np.asarray(M, np.float64)
    out = p[:, 0:1] * M[:3, 0] + M[:3, 3]
    out += p[:, 1:2] * M[:3, 1]
    out += p[:, 2:3] * M[:3, 2]
    return out


_SUB = 1024.0  # vertex positions are snapped to 1/1024 px for exact (watertight) edge tests
_MAX_UNITS = 2.0**24  # |snapped coordinate| bound (16384 px) that keeps the edge arithmetic exact


def _edge_setup(x0, y0, x1, y1, x2, y2):
    """Edge-function coefficients of triangles, exact in float64.

    x*, y*: (T,) vertex coordinates in 1/1024-pixel units (integers stored as float64, < 2^24).
    Returns (A0, B0, C0, A1, B1, C1, area2) with E_k(x, y) = A_k x + B_k y + C_k the doubled
    signed area of the sub-triangle opposite vertex k (E_2 = area2 - E_0 - E_1) and area2 the
    doubled signed area; all values are integers below 2^53, so the arithmetic is exact and
    a pixel centre on a shared edge is never missed by both neighbours.
    """
    A0 = y1 - y2
    B0 = x2 - x1
    C0 = (y2 - y1) * x1 - (x2 - x1) * y1
    A1 = y2 - y0
    B1 = x0 - x2
    C1 = (y0 - y2) * x2 - (x0 - x2) * y2
    area2 = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    return A0, B0, C0, A1, B1, C1, area2


def _bucket_size(n: np.ndarray) -> np.ndarray:
    """Smallest power of two >= n (n >= 1), elementwise int64.

    (Finer size classes waste fewer candidates but cost more per-bucket overhead; measured
    slower on the ICT mesh at 512 px.)
    """
    return (1 << np.ceil(np.log2(np.maximum(n, 1))).astype(np.int64)).astype(np.int64)


def tune_allocator() -> bool:
    """Keep freed memory in the process (glibc): large numpy temporaries then reuse pages.

    With glibc's defaults every large temporary is a fresh mmap that page-faults on first
    touch, which costs ~30% of a rasterization. This sets M_MMAP_THRESHOLD (64 MB) and
    M_TRIM_THRESHOLD (256 MB) for the whole process: up to 256 MB of freed memory stay
    mapped until exit. Returns False where unavailable (non-glibc).
    """
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok1 = libc.mallopt(m_trim_threshold, 256 << 20)
        ok2 = libc.mallopt(m_mmap_threshold, 64 << 20)
        return bool(ok1 and ok2)
    except (OSError, AttributeError):
        return False


def rasterize(
    verts_px: np.ndarray,
    tris: np.ndarray,
    height: int,
    width: int,
    cull_backfaces: bool = True,
    perspective: bool = True,
    near: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterize triangles with a z-buffer.

    verts_px: (V, 3) [px_x, px_y, depth] as returned by :func:`project`.
    tris: (T, 3) int vertex indices.
    cull_backfaces: drop triangles that are clockwise on screen (see module docstring).
    perspective: perspective-correct barycentrics and depth (requires depth > ``near``);
    triangles with any vertex at depth <= ``near`` are dropped.
    Returns tri_id (H, W) int32 (index into ``tris``, -1 = empty) and bary (H, W, 3) float32
    (0 where empty).

    Coverage is decided on vertex positions snapped to 1/1024 px with exact arithmetic
    (watertight: a pixel centre on an edge shared by two triangles is covered by at least
    one of them); the returned barycentrics are recomputed from the unsnapped positions.
    """
    H, W = int(height), int(width)
    v = np.asarray(verts_px, np.float64)
    tris = np.asarray(tris, np.int64)
    tri_id = np.full((H, W), EMPTY, np.int32)
    bary = np.zeros((H, W, 3), np.float32)
    if len(tris) == 0:
        return tri_id, bary
    vx = np.round(v[:, 0] * _SUB)
    vy = np.round(v[:, 1] * _SUB)
    vz = np.ascontiguousarray(v[:, 2])
    t0, t1, t2 = (np.ascontiguousarray(tris[:, k]) for k in range(3))
    x0, x1, x2 = vx[t0], vx[t1], vx[t2]
    y0, y1, y2 = vy[t0], vy[t1], vy[t2]
    A0, B0, C0, A1, B1, C1, area2 = _edge_setup(x0, y0, x1, y1, x2, y2)
    keep = (area2 < 0) if cull_backfaces else (area2 != 0)
    big = np.maximum(np.maximum(np.abs(x0), np.abs(x1)), np.abs(x2))
    big = np.maximum(big, np.maximum(np.maximum(np.abs(y0), np.abs(y1)), np.abs(y2)))
    keep &= np.isfinite(area2) & (big < _MAX_UNITS)  # drops triangles reaching 16384 px off-screen
    if perspective:
        keep &= (vz[t0] > near) & (vz[t1] > near) & (vz[t2] > near)
    with np.errstate(invalid="ignore"):
        # integer range of pixel centres (j + 0.5) inside the bbox, clipped to the image
        j_lo = np.maximum(np.ceil(np.minimum(np.minimum(x0, x1), x2) / _SUB - 0.5), 0)
        j_hi = np.minimum(np.floor(np.maximum(np.maximum(x0, x1), x2) / _SUB - 0.5), W - 1)
        i_lo = np.maximum(np.ceil(np.minimum(np.minimum(y0, y1), y2) / _SUB - 0.5), 0)
        i_hi = np.minimum(np.floor(np.maximum(np.maximum(y0, y1), y2) / _SUB - 0.5), H - 1)
        keep &= (j_lo <= j_hi) & (i_lo <= i_hi)
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        return tri_id, bary
    # orient every kept triangle so that inside means E_k >= 0; E_2 = A2 x + B2 y + C2 exactly
    sgn = np.sign(area2[idx])
    A0, B0, C0, A1, B1, C1 = (c[idx] * sgn for c in (A0, B0, C0, A1, B1, C1))
    area = np.abs(area2[idx])
    A2, B2, C2 = -(A0 + A1), -(B0 + B1), area - C0 - C1
    j_lo, j_hi, i_lo, i_hi = (a[idx].astype(np.int64) for a in (j_lo, j_hi, i_lo, i_hi))
    if perspective:
        iz0, iz1, iz2 = (1.0 / vz[t[idx]] for t in (t0, t1, t2))
    else:
        iz0, iz1, iz2 = (vz[t[idx]] for t in (t0, t1, t2))
    bw = _bucket_size(j_hi - j_lo + 1)
    bh = _bucket_size(i_hi - i_lo + 1)

    frag_pix, frag_key = [], []
    bucket = bw * 65536 + bh
    order = np.argsort(bucket, kind="stable")
    sb = bucket[order]
    starts = np.flatnonzero(np.r_[True, sb[1:] != sb[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for s, e in zip(starts, ends):
        sw, sh = int(bw[order[s]]), int(bh[order[s]])
        dj, di = np.arange(sw), np.arange(sh)
        step = max(1, _MAX_CANDIDATES // (sw * sh))
        for c in range(s, e, step):
            sel = order[c:min(e, c + step)]  # (Tb,) indices into the kept triangles
            jj = j_lo[sel, None] + dj  # (Tb, sw) candidate columns
            ii = i_lo[sel, None] + di  # (Tb, sh) candidate rows
            cx = jj * _SUB + _SUB / 2  # pixel centres in 1/1024 px units (exact)
            cy = ii * _SUB + _SUB / 2
            # separable edge functions: column part (-inf outside the bbox) + row part
            col_out = np.where(jj > j_hi[sel, None], -np.inf, 0.0)
            row_out = np.where(ii > i_hi[sel, None], -np.inf, 0.0)
            ok = None
            es = []
            for A, B, C in ((A0, B0, C0), (A1, B1, C1), (A2, B2, C2)):
                ec = (A[sel, None] * cx + C[sel, None] + col_out)[:, None, :]  # (Tb, 1, sw)
                er = (B[sel, None] * cy + row_out)[:, :, None]  # (Tb, sh, 1)
                ek = ec + er  # (Tb, sh, sw)
                ok = ek >= 0 if ok is None else ok & (ek >= 0)
                es.append(ek)
            flat = np.flatnonzero(ok)
            if len(flat) == 0:
                continue
            t_loc, rc = np.divmod(flat, sw * sh)
            r_loc, c_loc = np.divmod(rc, sw)
            tsel = sel[t_loc]
            w = (es[0].reshape(-1)[flat] * iz0[tsel] + es[1].reshape(-1)[flat] * iz1[tsel]
                 + es[2].reshape(-1)[flat] * iz2[tsel]) / area[tsel]
            depth = 1.0 / w if perspective else w
            frag_pix.append((i_lo[tsel] + r_loc) * W + j_lo[tsel] + c_loc)
            frag_key.append(_depth_key(depth, idx[tsel]))
    if not frag_pix:
        return tri_id, bary
    pix = np.concatenate(frag_pix)
    key = np.concatenate(frag_key)
    zbuf = np.full(H * W, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(zbuf, pix, key)
    covered = np.flatnonzero(zbuf != np.iinfo(np.int64).max)
    winners = zbuf[covered] & 0xFFFFFFFF
    tri_id.reshape(-1)[covered] = winners
    ci, cj = np.divmod(covered, W)
    pts = np.stack([cj + 0.5, ci + 0.5], 1)
    bary.reshape(-1, 3)[covered] = barycentric_at(v, tris, winners, pts, perspective=perspective)
    return tri_id, bary


def _depth_key(depth: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """int64 sort keys ordering fragments by (float32 depth, triangle index)."""
    d = np.asarray(depth, np.float32)
    bits = d.view(np.int32).astype(np.int64)
    # positive floats order like their bit patterns; map negatives below them (signed 32 bit)
    bits = np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)
    return (bits << 32) | tri.astype(np.int64)


def barycentric_at(
    verts_px: np.ndarray,
    tris: np.ndarray,
    tri_ids: np.ndarray,
    points: np.ndarray,
    perspective: bool = True,
) -> np.ndarray:
    """Barycentrics of arbitrary image points in given triangles.

    verts_px: (V, 3) [px_x, px_y, depth]; tris: (T, 3); tri_ids: (P,) triangle per point;
    points: (P, 2) continuous image coordinates (pixel-centre convention of this module).
    Returns (P, 3) float64 barycentrics (perspective-correct unless ``perspective=False``);
    they sum to 1 and are negative for a point outside its triangle (no clamping), so a
    sub-pixel landmark can be back-projected into the triangle found at its pixel.
    """
    v = np.asarray(verts_px, np.float64)
    tris = np.asarray(tris, np.int64)
    tri_ids = np.asarray(tri_ids, np.int64)
    pts = np.asarray(points, np.float64)
    px, py = pts[:, 0], pts[:, 1]
    vx, vy, vz = (np.ascontiguousarray(v[:, k]) for k in range(3))
    t0, t1, t2 = (np.take(np.ascontiguousarray(tris[:, k]), tri_ids) for k in range(3))
    x0, x1, x2 = vx[t0], vx[t1], vx[t2]
    y0, y1, y2 = vy[t0], vy[t1], vy[t2]
    # edge functions relative to a vertex (well conditioned), divided by the doubled area
    area2 = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    with np.errstate(divide="ignore", invalid="ignore"):
        l0 = ((x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)) / area2
        l1 = ((x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)) / area2
        l2 = 1.0 - l0 - l1
        if perspective:
            l0, l1, l2 = l0 / vz[t0], l1 / vz[t1], l2 / vz[t2]
            s = l0 + l1 + l2
            l0, l1, l2 = l0 / s, l1 / s, l2 / s
    lam = np.stack([l0, l1, l2], 1)
    return lam


def interpolate(attr: np.ndarray, tris: np.ndarray, tri_id: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Interpolate per-vertex attributes over the image.

    attr: (V, C) or (V,); tris: (T, 3); tri_id: (H, W) int (-1 empty); bary: (H, W, 3).
    Returns (H, W, C) (or (H, W)) in attr's float dtype (float32 for integer attrs); 0 where empty.
    """
    attr = np.asarray(attr)
    squeeze = attr.ndim == 1
    a = attr[:, None] if squeeze else attr
    dtype = a.dtype if np.issubdtype(a.dtype, np.floating) else np.float32
    H, W = tri_id.shape
    out = np.zeros((H * W, a.shape[1]), dtype)
    flat = tri_id.reshape(-1)
    cov = np.flatnonzero(flat >= 0)
    if len(cov):
        out[cov] = interpolate_at(a, tris, flat[cov], bary.reshape(-1, 3)[cov]).astype(dtype)
    out = out.reshape(H, W, a.shape[1])
    return out[..., 0] if squeeze else out


def interpolate_at(attr: np.ndarray, tris: np.ndarray, tri_ids: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Interpolate per-vertex attributes at P sample points.

    attr: (V, C); tris: (T, 3); tri_ids: (P,) valid triangle indices; bary: (P, 3).
    Returns (P, C).
    """
    t = np.take(np.asarray(tris), tri_ids, axis=0)  # (P, 3)
    b = np.asarray(bary)
    a = np.asarray(attr)
    out = np.take(a, t[:, 0], axis=0) * b[:, 0:1]
    out += np.take(a, t[:, 1], axis=0) * b[:, 1:2]
    out += np.take(a, t[:, 2], axis=0) * b[:, 2:3]
    return out
