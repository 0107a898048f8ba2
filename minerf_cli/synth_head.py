"""Render a shaded ICT head with eyes, mouth interior, hair, torso and backdrop (CPU).

Geometry: the ICT face model (head space: cm, +y up, +z towards the viewer) without the
shoulder flare below the neck; its holes (eyes, inner mouth) are filled with rings of
triangles sunk slightly behind the lids / lips; a static torso (a shirt) sits under the
neck. Appearance: per-vertex albedo (skin tone with multi-scale noise, redder lips, darker
brows, lash lines and hair), per-vertex Lambert + ambient + a little specular from a light
fixed in the camera frame, procedural eyes (sclera, iris, pupil) and mouth interior
(teeth, dark cavity) per pixel, over a per-identity gradient backdrop.

Camera: OpenCV (x right, y down, z forward), pixel centres at (j + 0.5, i + 0.5) (see
raster.py). ``camera_from_head`` maps head space to the camera; for a frontal head its
rotation is diag(1, -1, -1).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from . import raster
from .facemodel import FaceModel, load_face_model

FLIP = np.diag([1.0, -1.0, -1.0])  # head space (y up, z to viewer) -> OpenCV camera axes
NECK_CUT_Y = -11.3  # cm: triangles entirely below this (the shoulder flare) are dropped
COLLAR_Y = -10.2  # cm: top of the shirt collar
NECK_BLEND_Y = -8.3  # cm: below this the neck blends from the head's motion to the torso's
PIVOT = np.array([0.0, -9.0, -1.5])  # cm: head rotations turn about this point (top of the neck)
USED_EXPRESSIONS = (
    "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthSmile_L", "mouthSmile_R",
    "mouthStretch_L", "mouthStretch_R", "browInnerUp_L", "browInnerUp_R", "browOuterUp_L",
    "browOuterUp_R", "eyeBlink_L", "eyeBlink_R",
)

SKIN_TONES = np.array([
    [0.97, 0.82, 0.72], [0.93, 0.74, 0.61], [0.84, 0.63, 0.49],
    [0.70, 0.50, 0.36], [0.52, 0.35, 0.24], [0.38, 0.25, 0.17],
])
HAIR_COLOURS = np.array([
    [0.06, 0.05, 0.05], [0.16, 0.10, 0.06], [0.32, 0.20, 0.11], [0.62, 0.48, 0.30], [0.55, 0.53, 0.50],
])
IRIS_COLOURS = np.array([[0.30, 0.18, 0.08], [0.18, 0.11, 0.05], [0.25, 0.38, 0.52], [0.30, 0.40, 0.25]])
SHIRT_COLOURS = np.array([
    [0.12, 0.16, 0.32], [0.45, 0.10, 0.12], [0.14, 0.32, 0.20], [0.50, 0.50, 0.52], [0.85, 0.85, 0.82],
    [0.10, 0.10, 0.11], [0.10, 0.40, 0.42], [0.70, 0.55, 0.15],
])


# ------------------------------------------------------------------ appearance

@dataclass(frozen=True)
class Look:
    """Who the synthetic person is and how they are filmed (all colours RGB in [0, 1])."""

    identity: np.ndarray  # (100,) ICT identity coefficients
    skin: np.ndarray  # (3,)
    hair: np.ndarray
    iris: np.ndarray
    shirt: np.ndarray
    bg_top: np.ndarray
    bg_bottom: np.ndarray
    hairline_deg: float  # moves the hairline up (+) or down (-)
    f0: float  # voice pitch (Hz)
    focal_rel: float  # focal length / image size
    face_frac: float  # face width / image width
    face_x: float  # face centre, fraction of the width
    face_y: float  # face centre, fraction of the height
    texture_seed: int = 0


def random_look(rng: np.random.Generator) -> Look:
    """A random plausible person, backdrop and framing."""
    k = rng.uniform(0, len(SKIN_TONES) - 1)
    i = int(k)
    skin = SKIN_TONES[i] * (1 - (k - i)) + SKIN_TONES[min(i + 1, len(SKIN_TONES) - 1)] * (k - i)
    skin = np.clip(skin * rng.uniform(0.95, 1.05, 3), 0, 1)
    hue = rng.uniform(0, 1)
    bg = _hsv(hue, rng.uniform(0.1, 0.45), rng.uniform(0.45, 0.9))
    bg2 = _hsv((hue + rng.uniform(-0.08, 0.08)) % 1, rng.uniform(0.1, 0.45), rng.uniform(0.35, 0.85))
    return Look(
        identity=rng.normal(0.0, 0.6, 100).astype(np.float32),
        skin=skin,
        hair=HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.85, 1.15),
        iris=IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))],
        shirt=SHIRT_COLOURS[rng.integers(len(SHIRT_COLOURS))],
        bg_top=bg, bg_bottom=bg2,
        hairline_deg=float(rng.uniform(-3, 4)),
        f0=float(rng.uniform(110, 190)),
        focal_rel=float(rng.uniform(1.6, 2.2)),
        face_frac=float(rng.uniform(0.35, 0.45)),
        face_x=float(rng.uniform(0.47, 0.53)),
        face_y=float(rng.uniform(0.40, 0.45)),
        texture_seed=int(rng.integers(2**31)),
    )


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV in [0, 1] -> RGB (3,)."""
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


def _smoothstep(e0, e1, x):
    t = np.clip((np.asarray(x, np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _polyline_distance(p: np.ndarray, poly: np.ndarray, closed: bool = False) -> np.ndarray:
    """Distance (N,) from 2D points (N, 2) to a polyline (M, 2)."""
    if closed:
        a, b = poly, np.roll(poly, -1, axis=0)
    else:
        a, b = poly[:-1], poly[1:]
    ab = b - a  # (S, 2)
    ap = p[:, None, :] - a[None]  # (N, S, 2)
    t = np.clip((ap * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    d = ap - t[..., None] * ab
    return np.sqrt((d * d).sum(-1)).min(1)


def _inside_polygon(p: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test: (N, 2) points, (M, 2) polygon -> (N,) bool."""
    x, y = p[:, 0:1], p[:, 1:2]
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    cross = ((y0 > y) != (y1 > y)) & (x < (x1 - x0) * (y - y0) / np.where(y1 == y0, 1e-12, y1 - y0) + x0)
    return cross.sum(1) % 2 == 1


# ------------------------------------------------------------------ topology

def boundary_loops(quads: np.ndarray) -> list[np.ndarray]:
    """Boundary loops of a quad mesh: edges used by one quad, chained in their quad's direction.

    quads: (F, 4). Returns a list of (n,) vertex-index arrays; along a loop, the surface lies
    on the left of each edge (as seen from the front of the faces).
    """
    e = np.concatenate([quads[:, [0, 1]], quads[:, [1, 2]], quads[:, [2, 3]], quads[:, [3, 0]]])
    _, inv, counts = np.unique(np.sort(e, 1), axis=0, return_inverse=True, return_counts=True)
    nxt = {int(a): int(b) for a, b in e[counts[inv.reshape(-1)] == 1]}
    loops, seen = [], set()
    for start in sorted(nxt):
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = nxt[v]
        loops.append(np.array(loop, np.int64))
    return loops


@dataclass(frozen=True)
class Fill:
    """Rings of vertices that close one hole: position = M @ verts + offset (head space)."""

    name: str
    loop: np.ndarray  # (n,) boundary vertex indices (ring 0)
    tris: np.ndarray  # (F, 3) into the extended vertex array
    ring_a: np.ndarray  # (n_new,) 0 at the boundary .. 1 at the centre, of the new vertices
    M: sparse.csr_matrix  # (n_new, V)
    offset: np.ndarray  # (n_new, 3)


def _make_fill(name, loop, n_verts, first_new, rings, push):
    """Fill a boundary loop with ``rings`` (fractions towards the centroid) sunk by ``push`` cm."""
    n = len(loop)
    rows, cols, vals, offs, ring_a = [], [], [], [], []
    ids = [loop]
    nxt_id = first_new
    for a, p in zip(rings, push):
        if a >= 1.0:  # the centre: one vertex
            r = np.array([nxt_id])
            rows += [nxt_id - first_new] * n
            cols += list(loop)
            vals += [1.0 / n] * n
            offs.append([0, 0, -p])
            ring_a.append(1.0)
        else:
            r = np.arange(nxt_id, nxt_id + n)
            for i in range(n):
                row = nxt_id + i - first_new
                rows += [row] * (n + 1)
                cols += [loop[i]] + list(loop)
                vals += [1.0 - a] + [a / n] * n
                offs.append([0, 0, -p])
                ring_a.append(a)
        nxt_id += len(r)
        ids.append(r)
    tris = []
    for outer, inner in zip(ids[:-1], ids[1:]):
        o1 = np.roll(outer, -1)
        if len(inner) == 1:
            tris.append(np.stack([o1, outer, np.full(n, inner[0])], 1))
        else:
            i1 = np.roll(inner, -1)
            tris.append(np.stack([o1, outer, inner], 1))
            tris.append(np.stack([o1, inner, i1], 1))
    M = sparse.csr_matrix((vals, (rows, cols)), shape=(nxt_id - first_new, n_verts))
    return Fill(name, loop, np.concatenate(tris).astype(np.int64), np.array(ring_a), M,
                np.array(offs, np.float64))


@dataclass(frozen=True)
class Topology:
    """Identity-independent mesh data shared by all renders."""

    tris: np.ndarray  # (T, 3) head triangles then fill triangles, into V + n_fill vertices
    n_head_tris: int
    fills: tuple  # (Fill, ...): eye_R, eye_L, mouth (the subject's right / left eye)
    fill_tri_ranges: dict  # name -> (start, end) in tris
    fill_M: sparse.csr_matrix  # (n_fill, V)
    fill_offset: np.ndarray  # (n_fill, 3)
    fill_ring_a: np.ndarray  # (n_fill,)
    incidence: sparse.csr_matrix  # (V + n_fill, T): vertex normal = incidence @ face normal
    weights: dict  # name -> (V,) region weights in [0, 1] on the mean face


@functools.lru_cache(maxsize=1)
def topology() -> Topology:
    """Cut the shoulder flare, fill eyes and mouth, compute region weights (cached)."""
    m = load_face_model()
    v = m.neutral.astype(np.float64)
    V = len(v)
    tris = m.triangles.astype(np.int64)
    tris = tris[~(v[tris, 1] < NECK_CUT_Y).all(1)]
    lm = v[m.landmarks68]
    loops = boundary_loops(m.quads)
    cents = np.array([v[lp].mean(0) for lp in loops])

    def nearest(points):
        d = np.linalg.norm(cents - points.mean(0), axis=1)
        k = int(np.argmin(d))
        if d[k] > 2.0:
            raise RuntimeError("face model: cannot find the eye/mouth holes")
        return loops[k]

    # 68-landmark convention: 36-41 the subject's right eye (head-space x < 0), 42-47 left
    holes = [("eye_R", nearest(lm[36:42]), (0.35, 0.7, 1.0), (0.12, 0.14, 0.12)),
             ("eye_L", nearest(lm[42:48]), (0.35, 0.7, 1.0), (0.12, 0.14, 0.12)),
             ("mouth", nearest(lm[60:68]), (0.3, 0.6, 1.0), (0.4, 1.2, 2.2))]
    fills, first, ranges, all_tris = [], V, {}, [tris]
    start = len(tris)
    for name, loop, rings, push in holes:
        f = _make_fill(name, loop, V, first, rings, push)
        fills.append(f)
        first += f.M.shape[0]
        ranges[name] = (start, start + len(f.tris))
        start += len(f.tris)
        all_tris.append(f.tris)
    all_tris = np.concatenate(all_tris)
    n_all = first
    T = len(all_tris)
    inc = sparse.csr_matrix((np.ones(3 * T), (all_tris.T.reshape(-1), np.tile(np.arange(T), 3))),
                            shape=(n_all, T))
    return Topology(
        tris=all_tris, n_head_tris=len(tris), fills=tuple(fills), fill_tri_ranges=ranges,
        fill_M=sparse.vstack([f.M for f in fills]).tocsr(),
        fill_offset=np.concatenate([f.offset for f in fills]),
        fill_ring_a=np.concatenate([f.ring_a for f in fills]),
        incidence=inc, weights=_region_weights(m, v, fills),
    )


def _region_weights(m: FaceModel, v: np.ndarray, fills) -> dict:
    """Per-vertex weights (V,) in [0, 1] of lips, brows, lash lines and cheeks (mean face)."""
    lm = v[m.landmarks68]
    xy = v[:, :2]
    front = _smoothstep(5.5, 7.5, v[:, 2])
    outer = lm[48:60, :2]
    d_lip = _polyline_distance(xy, outer, closed=True)
    inside = _inside_polygon(xy, outer)
    lips = np.where(inside, 1.0, _smoothstep(0.18, 0.0, d_lip)) * _smoothstep(8.5, 9.5, v[:, 2])
    brows = np.zeros(len(v))
    for a, b in ((17, 22), (22, 27)):
        line = lm[a:b, :2] + [0.0, 0.12]
        d = _polyline_distance(xy, line)
        # thicker at the inner end (towards x = 0)
        inner = np.abs(line[:, 0]).min()
        taper = np.clip((np.abs(xy[:, 0]) - inner) / 4.5, 0, 1)
        half = 0.5 - 0.25 * taper
        brows = np.maximum(brows, _smoothstep(half, half * 0.45, d) * front)
    lash = np.zeros(len(v))
    for f in fills[:2]:
        loop = f.loop
        c = v[loop].mean(0)
        d = _polyline_distance(xy, v[loop, :2], closed=True)
        upper = _smoothstep(c[1] - 0.15, c[1] + 0.25, v[:, 1])
        near = _smoothstep(0.28, 0.0, d) * (0.35 + 0.65 * upper)
        lash = np.maximum(lash, near * _smoothstep(6.5, 7.5, v[:, 2]))
    cheeks = np.zeros(len(v))
    for k in (3, 13):
        centre = 0.5 * (lm[k] + lm[31 if k == 3 else 35])
        cheeks = np.maximum(cheeks, _smoothstep(2.8, 0.0, np.linalg.norm(v - centre, axis=1)))
    return {"lips": lips, "brows": brows, "lash": lash, "cheeks": cheeks}


# ------------------------------------------------------------------ albedo

def _value_noise(p: np.ndarray, rng: np.random.Generator, scale_cm: float, n: int = 24) -> np.ndarray:
    """Smooth random field on 3D points (N, 3), roughly unit variance, feature size ~scale_cm."""
    dirs = rng.normal(size=(n, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    freq = rng.uniform(0.6, 1.4, n) * 2 * np.pi / scale_cm
    phase = rng.uniform(0, 2 * np.pi, n)
    return np.sin(p @ (dirs * freq[:, None]).T + phase).sum(1) * np.sqrt(2.0 / n)


def _hair_weight(v: np.ndarray, hairline_deg: float) -> np.ndarray:
    """(V,) 1 on the scalp: above a hairline that is high at the forehead and low at the nape."""
    c = np.array([0.0, 3.8, -0.8])
    d = v - c
    az = np.arctan2(d[:, 0], d[:, 2])  # 0 = front
    elev = np.degrees(np.arctan2(d[:, 1], np.hypot(d[:, 0], d[:, 2])))
    # elevation of the hairline by azimuth: forehead, temples, above the ears, nape
    thr = np.interp(np.degrees(np.abs(az)), [0, 30, 55, 75, 90, 120, 150, 180], [28, 28, 25, 17, 10, 2, -12, -25])
    thr = thr + hairline_deg
    return _smoothstep(thr - 1.5, thr + 2.5, elev)


def vertex_albedo(look: Look, v_id: np.ndarray, top: Topology) -> np.ndarray:
    """Per-vertex albedo (V + n_fill, 3) for the head of ``look`` (identity vertices v_id (V, 3))."""
    rng = np.random.default_rng(look.texture_seed)
    V = len(v_id)
    w = top.weights
    skin = np.tile(look.skin, (V, 1))
    tone = (1 + 0.045 * _value_noise(v_id, rng, 6.0)[:, None]
            + 0.035 * _value_noise(v_id, rng, 1.5)[:, None]
            + 0.03 * rng.standard_normal((V, 1)))
    blotch = 0.012 * _value_noise(v_id, rng, 2.5)[:, None] * np.array([[1.0, -0.5, -0.5]])
    skin = skin * tone + blotch
    lum = float(look.skin.mean())
    rose = np.array([0.80, 0.36, 0.40]) * (0.45 + 0.6 * lum)
    red = 0.45 * look.skin * np.array([1.0, 0.66, 0.68]) + 0.55 * rose
    skin = skin + (0.12 * w["cheeks"])[:, None] * (red - skin)
    lips = np.clip(red * (1 + 0.05 * rng.standard_normal((V, 1))), 0, 1)
    skin = skin + w["lips"][:, None] * (lips - skin)
    hair_col = look.hair * (1 + 0.25 * rng.standard_normal((V, 1)) + 0.15 * _value_noise(v_id, rng, 0.8)[:, None])
    hair = _hair_weight(v_id, look.hairline_deg)[:, None]
    brows = (w["brows"] * (0.75 + 0.25 * rng.random(V)))[:, None]
    brow_col = np.minimum(look.hair, look.skin * 0.35) * (1 + 0.3 * rng.standard_normal((V, 1)))
    skin = skin + brows * (brow_col - skin)
    skin = skin + hair * (hair_col - skin)
    skin = skin + (0.85 * w["lash"])[:, None] * (np.array([0.07, 0.05, 0.05]) - skin)
    fill = np.zeros((top.fill_M.shape[0], 3))
    return np.clip(np.concatenate([skin, fill]), 0.0, 1.0)


# ------------------------------------------------------------------ torso

def torso_mesh(neck_width: float = 6.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A shirt in body space (cm): vertices (N, 3), triangles (T, 3), collar weight (N,).

    A tube with superelliptic cross-sections: a loose collar around the neck at COLLAR_Y that
    widens into shoulders (~19 cm half-width) and continues down out of the frame.
    """
    neck = neck_width + 1.3
    # profile: collar -> trapezius slope (x grows slowly, then fast) -> rounded shoulder -> arm
    ys = np.concatenate([np.linspace(COLLAR_Y, -16.5, 14), np.linspace(-17.0, -22.0, 6),
                         np.linspace(-25.0, -80.0, 5)])
    s = np.clip((COLLAR_Y - ys) / (COLLAR_Y + 16.5), 0, 1)
    tip = _smoothstep(-16.5, -21.5, ys)  # 0 above the shoulder tip, 1 below
    half_w = neck + (16.8 - neck) * s ** 1.7 + 2.6 * np.sqrt(np.clip((-16.5 - ys) / 5.0, 0, 1)) * (1 - 0.3 * tip)
    half_w = half_w + 0.02 * np.clip(-25.0 - ys, 0, None)
    shoulder = _smoothstep(0.0, 1.0, s)
    half_d = 7.4 + 3.8 * shoulder
    z_c = -0.9 + 0.9 * shoulder
    th = np.linspace(0, 2 * np.pi, 49)[:-1]
    c, sn = np.cos(th), np.sin(th)
    p = 4.0  # superellipse exponent: boxy shoulders
    ex = np.sign(sn) * np.abs(sn) ** (2 / p)
    ez = np.sign(c) * np.abs(c) ** (2 / p)
    R, Th = len(ys), len(th)
    verts = np.stack([half_w[:, None] * ex[None], np.repeat(ys[:, None], Th, 1),
                      z_c[:, None] + half_d[:, None] * ez[None]], -1).reshape(-1, 3)
    idx = np.arange(R * Th).reshape(R, Th)
    a, b = idx[:-1], np.roll(idx[:-1], -1, axis=1)
    cc, d = idx[1:], np.roll(idx[1:], -1, axis=1)
    tris = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, cc], -1).reshape(-1, 3)])
    collar = _smoothstep(COLLAR_Y - 1.2, COLLAR_Y - 0.4, verts[:, 1])
    return verts, tris, collar


# ------------------------------------------------------------------ renderer

LIGHT = np.array([-0.45, -0.55, -1.0]) / np.linalg.norm([-0.45, -0.55, -1.0])  # towards the light (camera frame)
FILL_LIGHT = np.array([0.7, -0.1, -0.7]) / np.linalg.norm([0.7, -0.1, -0.7])


def _shade(normals: np.ndarray, view: np.ndarray | None = None, two_sided: bool = False) -> tuple:
    """Lambert + ambient (+ Blinn-Phong) factors for unit normals (N, 3) in the camera frame."""
    nl = _dot3(normals, LIGHT)
    nf = _dot3(normals, FILL_LIGHT)
    if two_sided:
        nl, nf = np.abs(nl), np.abs(nf)
    diffuse = 0.34 + 0.62 * np.clip(nl, 0, None) + 0.16 * np.clip(nf, 0, None)
    spec = np.zeros(len(normals))
    if view is not None:
        h = LIGHT[None] + view
        h /= np.linalg.norm(h, axis=1, keepdims=True) + 1e-12
        spec = np.clip((normals * h).sum(1), 0, None) ** 24
    return diffuse, spec


def camera_from_head(R_head: np.ndarray, delta: np.ndarray, t_cam: np.ndarray) -> np.ndarray:
    """(4, 4): x_cam = FLIP @ (R_head @ (x - PIVOT) + PIVOT + delta) + t_cam for head-space x."""
    M = np.eye(4)
    M[:3, :3] = FLIP @ R_head
    M[:3, 3] = FLIP @ (PIVOT - R_head @ PIVOT + delta) + t_cam
    return M


class HeadRenderer:
    """Renders one synthetic person: ``render(expression, camera_from_head) -> (H, W, 3) uint8``.

    expression: (E,) ICT blendshape weights (E = 53, model order); only USED_EXPRESSIONS
    are applied (the others must be 0). The torso and backdrop are static: pre-rendered once.
    The head is rigid above NECK_BLEND_Y (head space); below it the neck blends linearly into
    the torso's frame (camera_from_head with no rotation or translation), so the neck's base
    stays inside the collar.
    """

    def __init__(self, look: Look, size: int, model: FaceModel | None = None):
        raster.tune_allocator()
        self.m = m = model or load_face_model()
        self.top = top = topology()
        self.look = look
        self.size = H = W = int(size)
        self.v_id = m.vertices(look.identity).astype(np.float64)  # (V, 3)
        self.used = np.array([m.expression_index(n) for n in USED_EXPRESSIONS])
        self.modes = m.expression_modes[self.used].reshape(len(self.used), -1).astype(np.float64)
        self.albedo = vertex_albedo(look, self.v_id, top)
        # camera: focal from the look; head distance so the face spans face_frac of the width
        lm = self.v_id[m.landmarks68]
        f = look.focal_rel * W
        self.K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]])
        face_w = lm[16, 0] - lm[0, 0]
        dist = f * face_w / (look.face_frac * W)
        centre = 0.5 * (lm[27] + lm[30])  # between the eyes and the nose tip
        z = dist
        x_cam = (look.face_x * W - W / 2) * z / f
        y_cam = (look.face_y * H - H / 2) * z / f
        self.t_cam = np.array([x_cam, y_cam, z]) - FLIP @ centre
        # eyes: iris centres (head space, xy) at the centroid of the open lids
        self.iris_xy = {fill.name: self.v_id[fill.loop, :2].mean(0) for fill in top.fills[:2]}
        self.upper_teeth_y = lm[62, 1] - 0.05
        self.lower_lip_idx = m.landmarks68[66]
        self.plate, self.plate_depth = self._static_plate()
        # neck skinning: the neck's base stays in the collar while the head turns
        w = _smoothstep(NECK_CUT_Y, NECK_BLEND_Y, self.v_id[:, 1])
        self.neck_idx = np.flatnonzero(w < 1)
        self.neck_w = w[self.neck_idx, None]
        self.cam_from_body = camera_from_head(np.eye(3), np.zeros(3), self.t_cam)
        # (V + n_fill, 1): 0 on the mesh, 0..1 from a hole's rim to its centre on the fills
        self.ring_a = np.concatenate([np.zeros(len(self.v_id)), top.fill_ring_a])[:, None]

    # -- static parts
    def _static_plate(self) -> tuple[np.ndarray, np.ndarray]:
        """Backdrop with the torso: RGB (H, W, 3) uint8 and torso depth (H*W,) (inf elsewhere)."""
        H = W = self.size
        look = self.look
        yy = (np.arange(H) + 0.5) / H
        xx = (np.arange(W) + 0.5) / W
        grad = look.bg_top[None, None] * (1 - yy[:, None, None]) + look.bg_bottom[None, None] * yy[:, None, None]
        vign = 1 - 0.18 * ((xx[None, :] - 0.5) ** 2 + (yy[:, None] - 0.45) ** 2)[..., None] * 2
        img = grad * vign
        neck = self.v_id[np.abs(self.v_id[:, 1] - COLLAR_Y) < 0.4]
        verts, tris, collar = torso_mesh(float(np.abs(neck[:, 0]).max()) if len(neck) else 6.0)
        vc = verts @ FLIP.T + self.t_cam
        px = raster.project(vc, self.K)
        tid, bary = raster.rasterize(px, tris, H, W, cull_backfaces=False)
        depth = np.full(H * W, np.inf)
        cov = np.flatnonzero(tid.reshape(-1) >= 0)
        if len(cov):
            t = tid.reshape(-1)[cov]
            b = bary.reshape(-1, 3)[cov]
            n = _vertex_normals(vc, tris, sparse.csr_matrix(
                (np.ones(3 * len(tris)), (tris.T.reshape(-1), np.tile(np.arange(len(tris)), 3))),
                shape=(len(vc), len(tris))))
            diffuse, _ = _shade(n, two_sided=True)
            rng = np.random.default_rng(look.texture_seed + 1)
            alb = look.shirt[None] * (1 + 0.05 * rng.standard_normal((len(verts), 1)))
            alb = alb * (1 - 0.25 * collar[:, None])
            col = raster.interpolate_at(alb * diffuse[:, None], tris, t, b)
            img.reshape(-1, 3)[cov] = col
            depth[cov] = raster.interpolate_at(vc[:, 2:3], tris, t, b)[:, 0]
        return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), depth

    # -- per frame
    def head_vertices(self, expression: np.ndarray) -> np.ndarray:
        """Head-space vertices incl. fill vertices (V + n_fill, 3) for expression (E,)."""
        ex = np.asarray(expression, np.float64)[self.used]
        v = self.v_id.reshape(-1).copy()
        for k in np.flatnonzero(ex):  # axpy per active blendshape (no threaded BLAS)
            v += ex[k] * self.modes[k]
        v = v.reshape(-1, 3)
        fill = self.top.fill_M @ v + self.top.fill_offset
        return np.concatenate([v, fill])

    def camera_vertices(self, expression: np.ndarray, cam_from_head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Head-space and camera-space vertices, each (V + n_fill, 3), as rendered.

        Camera-space = cam_from_head applied to head-space, except the neck below
        NECK_BLEND_Y, which blends into the torso's frame.
        """
        vh = self.head_vertices(expression)
        vc = raster.transform(vh, cam_from_head)
        body = raster.transform(vh[self.neck_idx], self.cam_from_body)
        vc[self.neck_idx] = self.neck_w * vc[self.neck_idx] + (1 - self.neck_w) * body
        return vh, vc

    def render(self, expression: np.ndarray, cam_from_head: np.ndarray) -> np.ndarray:
        """One frame (H, W, 3) uint8 for expression (E,) and camera_from_head (4, 4)."""
        return self.render_with_mask(expression, cam_from_head)[0]

    @functools.cached_property
    def torso_mask(self) -> np.ndarray:
        """(H, W) bool: the pixels of the static torso (shirt)."""
        return np.isfinite(self.plate_depth).reshape(self.size, self.size)

    def render_with_mask(self, expression: np.ndarray, cam_from_head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame (H, W, 3) uint8 and the (H, W) bool mask of the pixels the head mesh
        (face, scalp, ears, neck, eye and mouth fills) covers in front of the torso."""
        top = self.top
        H = W = self.size
        vh, vc = self.camera_vertices(expression, cam_from_head)
        px = raster.project(vc, self.K)
        tid, bary = raster.rasterize(px, top.tris, H, W)
        out = self.plate.copy()
        mask = np.zeros(H * W, bool)
        flat = tid.reshape(-1)
        cov = np.flatnonzero(flat >= 0)
        if len(cov) == 0:
            return out, mask.reshape(H, W)
        t = flat[cov]
        b = bary.reshape(-1, 3)[cov].astype(np.float64)
        depth = raster.interpolate_at(vc[:, 2:3], top.tris, t, b)[:, 0]
        front = depth < self.plate_depth[cov]
        cov, t, b = cov[front], t[front], b[front]
        mask[cov] = True

        normals = _vertex_normals(vc, top.tris, top.incidence)
        view = -vc / np.linalg.norm(vc, axis=1, keepdims=True)
        diffuse, spec = _shade(normals, view)
        colour = self.albedo * diffuse[:, None] + (0.10 * spec)[:, None]
        pix = raster.interpolate_at(colour, top.tris, t, b)

        # eyes and mouth: procedural albedo from the head-space position of the pixel
        special = t >= top.n_head_tris
        if special.any():
            ts, bs = t[special], b[special]
            pos = raster.interpolate_at(vh, top.tris, ts, bs)
            ring = raster.interpolate_at(self.ring_a, top.tris, ts, bs)[:, 0]
            shade = raster.interpolate_at(diffuse[:, None], top.tris, ts, bs)[:, 0]
            alb = np.zeros((len(ts), 3))
            for name, (s, e) in top.fill_tri_ranges.items():
                sel = (ts >= s) & (ts < e)
                if sel.any():
                    alb[sel] = (self._eye_albedo(pos[sel], ring[sel], name) if name.startswith("eye")
                                else self._mouth_albedo(pos[sel], ring[sel], vh))
            pix[special] = alb * shade[:, None]
        out.reshape(-1, 3)[cov] = np.clip(pix * 255 + 0.5, 0, 255).astype(np.uint8)
        return out, mask.reshape(H, W)

    def _eye_albedo(self, pos: np.ndarray, ring: np.ndarray, name: str) -> np.ndarray:
        """Sclera / iris / pupil by the distance from the iris centre in head-space xy."""
        r = np.linalg.norm(pos[:, :2] - self.iris_xy[name], axis=1)
        sclera = np.array([0.93, 0.90, 0.87])
        iris = self.look.iris * (0.75 + 0.5 * _smoothstep(0.58, 0.2, r))[:, None]
        col = np.where((r < 0.58)[:, None], iris, sclera[None])
        col = np.where((r < 0.23)[:, None], np.array([0.02, 0.02, 0.02])[None], col)
        col = np.where(((r > 0.55) & (r < 0.6))[:, None], col * 0.5, col)  # limbal ring
        lid = 0.45 + 0.55 * _smoothstep(0.0, 0.5, ring)  # shadow under the lids
        return col * lid[:, None]

    def _mouth_albedo(self, pos: np.ndarray, ring: np.ndarray, vh: np.ndarray) -> np.ndarray:
        """Teeth near the lips, a dark red cavity further in."""
        cavity = np.array([0.45, 0.12, 0.12]) * (1 - _smoothstep(0.1, 0.7, ring))[:, None] + 0.04
        lower_lip_y = vh[self.lower_lip_idx, 1]
        upper = pos[:, 1] > self.upper_teeth_y - 0.85
        lower = pos[:, 1] < lower_lip_y + 0.45
        teeth = (upper | lower) & (ring < 0.55) & (np.abs(pos[:, 0]) < 1.8)
        tcol = np.array([0.86, 0.83, 0.74]) * (1 - 0.9 * ring)[:, None]
        return np.where(teeth[:, None], tcol, cavity)


def _dot3(v: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(N, 3) . (3,) -> (N,) without BLAS."""
    return v[:, 0] * d[0] + v[:, 1] * d[1] + v[:, 2] * d[2]


def _vertex_normals(verts: np.ndarray, tris: np.ndarray, incidence: sparse.csr_matrix) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) of a triangle mesh."""
    x, y, z = (np.ascontiguousarray(verts[:, k]) for k in range(3))
    t0, t1, t2 = tris[:, 0], tris[:, 1], tris[:, 2]
    ax, ay, az = x[t1] - x[t0], y[t1] - y[t0], z[t1] - z[t0]
    bx, by, bz = x[t2] - x[t0], y[t2] - y[t0], z[t2] - z[t0]
    fn = np.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], 1)
    n = incidence @ fn
    return n / (np.linalg.norm(n, axis=1, keepdims=True) + 1e-12)
