"""Image and face metrics for ``minerf evaluate``: small functions, shapes in the docstrings.

* :func:`psnr`, :func:`ssim` (Wang et al. 2004), :func:`cpbd` (sharpness, Narvekar & Karam
  2011): numpy + OpenCV only (no scikit-image).
* :func:`face_box`: the square face crop the image metrics are computed on (MI-NeRF app. E
  crops every frame around the face so that only the generated part is evaluated).
* :class:`FaceIdentity`: dlib's ResNet face descriptor (128-d) from the models shipped in the
  ``face-recognition-models`` package, and :func:`identity_scores` (CSIM, ACD, face distance).
* LPIPS (Zhang et al. 2018), VGG16 variant, in plain torch: :func:`load_lpips` loads it ONLY
  from weight files the user supplies (a torchvision ``vgg16`` state dict and lpips' linear
  layers); there are no built-in or random weights to fall back on.

torch and dlib are imported lazily, only by the functions that need them.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .errors import FormatError, MinerfError

# ----------------------------------------------------------------------------- PSNR / SSIM

PSNR_CAP = 100.0  # dB: what identical images count as when per-frame PSNRs are averaged


def _data_range(a: np.ndarray, data_range: float | None) -> float:
    if data_range is not None:
        return float(data_range)
    return 255.0 if a.dtype == np.uint8 else 1.0


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB of two images of one shape: (H, W) or (H, W, C).

    uint8 images have a data range of 255, float images of 1.0 (unless ``data_range`` is
    given). ``mask`` (H, W) bool restricts the mean squared error to its pixels (all channels).
    Identical images give ``inf``; an empty mask gives ``nan``.
    """
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ: {a.shape} vs {b.shape}")
    diff = a.astype(np.float64) - b.astype(np.float64)
    sq = diff * diff
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != a.shape[:2]:
            raise ValueError(f"psnr: mask shape {mask.shape} is not the images' (H, W) {a.shape[:2]}")
        if not mask.any():
            return float("nan")
        sq = sq[mask]
    mse = float(sq.mean())
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(_data_range(a, data_range) ** 2 / mse)


SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def ssim(a: np.ndarray, b: np.ndarray, data_range: float | None = None) -> float:
    """Mean structural similarity (Wang et al. 2004) of two images: (H, W) or (H, W, C).

    Gaussian window 11x11 with sigma 1.5, K1 = 0.01, K2 = 0.03, population (co)variances;
    computed on each channel of an RGB image (not on luma) and averaged over the channels.
    The mean is taken over the "valid" part of the image only (5 pixels from each border
    left out, where the window does not fit), which is what scikit-image's
    ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, channel_axis=-1)`` computes; unlike Wang's reference code
    the images are not downsampled first. uint8 images have a data range of 255, floats of 1.
    Images need to be at least 11 x 11 pixels.
    """
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ: {a.shape} vs {b.shape}")
    if min(a.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"ssim: images of {a.shape[:2]} are smaller than the {SSIM_WINDOW}x{SSIM_WINDOW} window")
    L = _data_range(a, data_range)
    c1, c2 = (SSIM_K1 * L) ** 2, (SSIM_K2 * L) ** 2
    x, y = a.astype(np.float64), b.astype(np.float64)
    if x.ndim == 3 and x.shape[2] > 4:  # cv2 filters at most 4 channels at once
        return float(np.mean([ssim(a[..., k], b[..., k], L) for k in range(a.shape[2])]))

    def blur(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    pad = (SSIM_WINDOW - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())


# ----------------------------------------------------------------------------- CPBD

CPBD_BLOCK = 64  # block side in pixels
CPBD_EDGE_FRACTION = 0.002  # a block is an edge block with more than this fraction of Canny edge pixels
CPBD_BETA = 3.6
CPBD_MAX_WIDTH_STEPS = 100


def _runs(step: np.ndarray) -> np.ndarray:
    """(H, M) bool -> (H, M) int: length of the run of True ending at each column (going right)."""
    out = np.zeros(step.shape, np.int32)
    run = np.zeros(step.shape[0], np.int32)
    for j in range(step.shape[1]):
        run = np.where(step[:, j], run + 1, 0)
        out[:, j] = run
    return out


def _edge_widths(gray: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Marziliano et al.'s edge widths: (H, W) float image and (H, W) bool edge pixels ->
    (H, W) float, the width in pixels at edge pixels whose gradient points left or right,
    0 elsewhere.

    From an edge pixel the width runs left and right over the pixels where the intensity
    keeps changing monotonically in the edge's direction (at most 100 steps each way), as
    in the authors' reference implementation.
    """
    H, W = gray.shape
    widths = np.zeros((H, W))
    if W < 3:
        return widths
    gy, gx = np.gradient(gray)
    # the reference code leaves the angle at 0 where gx == 0 (as if rising)
    angle = np.where(gx != 0, np.degrees(np.arctan2(gy, gx)), 0.0)
    quant = 45.0 * np.round(angle / 45.0)
    rising = quant == 0  # intensity increases to the right
    falling = np.abs(quant) == 180
    inc = gray[:, 1:] > gray[:, :-1]  # step j -> j+1 goes up   (H, W-1)
    dec = gray[:, 1:] < gray[:, :-1]
    # runs of up/down steps ending at step j (counting leftwards from j) and starting at step j (rightwards)
    inc_left, dec_left = _runs(inc), _runs(dec)
    inc_right = _runs(inc[:, ::-1])[:, ::-1]
    dec_right = _runs(dec[:, ::-1])[:, ::-1]
    cap = CPBD_MAX_WIDTH_STEPS
    rows, cols = np.nonzero(edges[1:-1, 1:-1])
    rows, cols = rows + 1, cols + 1
    left_step = cols - 2  # the step (col-2 -> col-1) just left of the pixel's left neighbour
    right_step = cols + 1  # the step (col+1 -> col+2)
    has_left, has_right = left_step >= 0, right_step <= W - 2
    ls, rs = np.clip(left_step, 0, W - 2), np.clip(right_step, 0, W - 2)
    up = rising[rows, cols]
    down = falling[rows, cols]
    wl = np.where(has_left, np.where(up, inc_left[rows, ls], dec_left[rows, ls]), 0)
    wr = np.where(has_right, np.where(up, inc_right[rows, rs], dec_right[rows, rs]), 0)
    width = np.minimum(wl, cap) + 1 + np.minimum(wr, cap) + 1
    keep = up | down
    widths[rows[keep], cols[keep]] = width[keep]
    return widths


def _sobel_vertical_edges(gray: np.ndarray) -> np.ndarray:
    """Vertical edges for the width measurement, as in the `cpbd` Python package (a port of the
    authors' MATLAB code, after Octave's edge(I, "sobel")): the squared response s of the
    normalised horizontal Sobel kernel, zeroed where s <= 2 sqrt(mean(s)), thinned to pixels
    strictly above both horizontal or both vertical neighbours. (H, W) float -> (H, W) bool."""
    kernel = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 8.0
    s = cv2.filter2D(gray, cv2.CV_64F, kernel, borderType=cv2.BORDER_REFLECT) ** 2
    s[s <= 2.0 * math.sqrt(s.mean())] = 0.0
    p = np.pad(s, 1)
    along_x = (s > p[1:-1, :-2]) & (s > p[1:-1, 2:])
    along_y = (s > p[:-2, 1:-1]) & (s > p[2:, 1:-1])
    return along_x | along_y


def _canny(gray: np.ndarray) -> np.ndarray:
    """Canny edges as scikit-image's canny() with its defaults finds them on a 0..255 float
    image (what the `cpbd` package uses): Gaussian sigma 1, hysteresis thresholds 0.1 / 0.2
    on the Sobel magnitude, i.e. every non-maximum-suppressed pixel with any gradient.
    They only decide which 64x64 blocks are edge blocks. (H, W) -> (H, W) bool."""
    smooth = cv2.GaussianBlur(gray.astype(np.float64), (0, 0), 1.0, borderType=cv2.BORDER_REFLECT)
    img = np.clip(np.round(smooth), 0, 255).astype(np.uint8)
    return cv2.Canny(img, 0.1, 0.2, L2gradient=True) > 0


def cpbd(gray: np.ndarray) -> float:
    """Cumulative probability of blur detection (Narvekar & Karam 2011): sharpness in [0, 1].

    ``gray`` (H, W) uint8 (or float in 0..255; an (H, W, 3) RGB image is converted to gray),
    e.g. a face crop. Higher = sharper. The image is cut into 64x64 blocks (partial blocks at
    the right and bottom are left out); blocks with more than 0.2% Canny edge pixels are edge
    blocks. In them, at every vertical Sobel edge pixel whose gradient points left or right,
    the edge width w is measured (Marziliano), and the probability of detecting blur is
    P = 1 - exp(-(w / w_JNB)^3.6) with the just-noticeable width w_JNB = 5 for a block
    contrast (max - min) <= 50, else 3. CPBD is the fraction of those edges with P <= 63%
    (the histogram of P in 1% buckets, summed up to 0.63).

    Edge detection follows the `cpbd` Python package (the port of the authors' MATLAB code
    that talking-face papers use): on 45 face crops (5 clips, 3 blur levels) this function
    gives its values to 1e-16, 10x faster. Two differences: an image smaller than one block
    is one block (`cpbd` gives 0), and an image without edge blocks gives nan (`cpbd`: 0).
    """
    g = np.asarray(gray)
    if g.ndim == 3:
        g = cv2.cvtColor(np.ascontiguousarray(g.astype(np.uint8)), cv2.COLOR_RGB2GRAY)
    g = g.astype(np.float64)
    H, W = g.shape
    canny = _canny(g)
    widths = _edge_widths(g, _sobel_vertical_edges(g))
    bh, bw = min(CPBD_BLOCK, H), min(CPBD_BLOCK, W)
    hist = np.zeros(101)
    total = 0
    for r in range(0, H - bh + 1, bh):
        for c in range(0, W - bw + 1, bw):
            if np.count_nonzero(canny[r:r + bh, c:c + bw]) <= CPBD_EDGE_FRACTION * bh * bw:
                continue
            w = widths[r:r + bh, c:c + bw]
            w = w[w != 0]
            if w.size == 0:
                continue
            block = g[r:r + bh, c:c + bw]
            jnb = 5.0 if int(block.max() - block.min()) <= 50 else 3.0
            p = 1.0 - np.exp(-np.abs(w / jnb) ** CPBD_BETA)
            hist += np.bincount(np.round(p * 100).astype(int), minlength=101)[:101]
            total += w.size
    if total == 0:
        return float("nan")
    return float(hist[:64].sum() / total)


# ----------------------------------------------------------------------------- face crop

def face_box(landmarks: np.ndarray, image_size: tuple[int, int] | None = None, scale: float = 1.2) -> np.ndarray:
    """A square face crop from landmarks in pixels: (478, 3) mediapipe, (68, 2), or any (L, >=2).

    The square is centred on the landmarks' bounding box with side ``scale`` x its longer
    side. With ``image_size`` = (H, W) it is kept inside the image: shifted in, and shrunk to
    the image's shorter side only when it is larger. Returns int64 [x0, y0, x1, y1] (x1, y1
    exclusive, so ``img[y0:y1, x0:x1]``). NaN landmarks are ignored; none valid -> ValueError.
    """
    pts = np.asarray(landmarks, np.float64)[:, :2]
    pts = pts[np.isfinite(pts).all(1)]
    if len(pts) == 0:
        raise ValueError("face_box: no finite landmarks")
    lo, hi = pts.min(0), pts.max(0)
    cx, cy = (lo + hi) / 2
    side = max(scale * float((hi - lo).max()), 2.0)
    if image_size is not None:
        H, W = image_size
        side = min(side, float(min(H, W)))
    s = int(round(side))
    x0, y0 = int(round(cx - s / 2)), int(round(cy - s / 2))
    if image_size is not None:
        x0 = min(max(x0, 0), W - s)
        y0 = min(max(y0, 0), H - s)
    return np.array([x0, y0, x0 + s, y0 + s], np.int64)


def nearest_valid(ok: np.ndarray) -> np.ndarray:
    """(N,) bool -> (N,) int64: for each index the nearest index where ``ok`` is True (itself
    where it is; a tie goes to the earlier one), e.g. the frame whose face box stands in for
    a frame without landmarks. O(N log V); ``ok`` needs at least one True."""
    valid = np.flatnonzero(ok)
    n = np.arange(len(ok))
    right = np.minimum(np.searchsorted(valid, n), len(valid) - 1)
    left = np.maximum(right - 1, 0)
    take_left = np.abs(n - valid[left]) <= np.abs(valid[right] - n)
    return valid[np.where(take_left, left, right)]


def crop(img: np.ndarray, box: np.ndarray) -> np.ndarray:
    """img (H, W, ...) and box [x0, y0, x1, y1] -> img[y0:y1, x0:x1] (clipped to the image)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    H, W = img.shape[:2]
    return img[max(y0, 0):min(y1, H), max(x0, 0):min(x1, W)]


# ----------------------------------------------------------------------------- identity (dlib)

DLIB_HINT = "install dlib-bin and face-recognition-models (pip install dlib-bin face-recognition-models; see docs/install.md)"
SAME_PERSON_DISTANCE = 0.6  # dlib's threshold: descriptors closer than this are the same person


def dlib_models_dir() -> Path:
    """The models/ folder of the face-recognition-models package, found WITHOUT importing it
    (its __init__ imports pkg_resources, which new setuptools no longer has)."""
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        d = Path(loc) / "models"
        if (d / "dlib_face_recognition_resnet_model_v1.dat").is_file():
            return d
    raise MinerfError(f"dlib's face models (package face-recognition-models) were not found; {DLIB_HINT}")


def dlib_box_from_landmarks(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """The box dlib's frontal face detector would give, from mediapipe landmarks (478, >=2).

    dlib's shape predictors expect its detector's boxes (square, eyebrows to chin), tighter
    than the landmarks' bounding box (hairline to chin): a square centred on that bounding
    box with side (w + 0.85 h) / 2. Measured on 4 real clips and 2 synthetic heads, the
    descriptors from this box and from the detector's differ by 0.02-0.08 (Euclidean),
    far below dlib's same-person threshold of 0.6. Returns (left, top, right, bottom).
    """
    pts = np.asarray(landmarks, np.float64)[:, :2]
    pts = pts[np.isfinite(pts).all(1)]
    lo, hi = pts.min(0), pts.max(0)
    w, h = hi - lo
    cx, cy = (lo + hi) / 2
    side = int(round(0.5 * (w + 0.85 * h)))
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    return (left, top, left + side, top + side)


class FaceIdentity:
    """dlib's face descriptor: 5-point alignment + ResNet (128-d, Euclidean same-person
    threshold 0.6). Models come from the face-recognition-models package (offline)."""

    def __init__(self) -> None:
        try:
            import dlib  # noqa: PLC0415 - lazy on purpose
        except ImportError as exc:
            raise MinerfError(f"dlib is not available ({exc}); {DLIB_HINT}") from None
        d = dlib_models_dir()
        self._dlib = dlib
        self._detector: Any = None
        self._shape = dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(str(d / "dlib_face_recognition_resnet_model_v1.dat"))

    def detect(self, rgb: np.ndarray) -> tuple[int, int, int, int] | None:
        """The largest face found by dlib's frontal (HOG) detector, upsampling once, or None."""
        if self._detector is None:
            self._detector = self._dlib.get_frontal_face_detector()
        rects = self._detector(np.ascontiguousarray(rgb), 1)
        if not rects:
            return None
        r = max(rects, key=lambda r: r.width() * r.height())
        return (r.left(), r.top(), r.right(), r.bottom())

    def descriptor(self, rgb: np.ndarray, box: tuple[int, int, int, int] | None = None) -> np.ndarray | None:
        """(128,) float64 descriptor of the face in ``rgb`` (H, W, 3) uint8, inside ``box``
        (left, top, right, bottom), e.g. from :func:`dlib_box_from_landmarks`; without a box
        dlib's detector finds it. None when no face is found."""
        img = np.ascontiguousarray(rgb, dtype=np.uint8)
        if box is None:
            box = self.detect(img)
            if box is None:
                return None
        rect = self._dlib.rectangle(*(int(v) for v in box))
        shape = self._shape(img, rect)
        return np.asarray(self._net.compute_face_descriptor(img, shape), np.float64)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity: a (..., D), b (..., D) (broadcast) -> (...)."""
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    return (a * b).sum(-1) / np.maximum(na * nb, 1e-12)


def centroid_distances(descriptors: np.ndarray, centroid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 128) descriptors and a person's (128,) centroid -> per descriptor the cosine
    distance 1 - cos (ACD's term) and the Euclidean distance (dlib's), both (n,)."""
    cos = cosine_similarity(descriptors, centroid[None])
    return 1.0 - cos, np.linalg.norm(descriptors - centroid[None], axis=-1)


def identity_scores(generated: np.ndarray, reference: np.ndarray) -> dict:
    """Identity of generated frames against a reference identity, from dlib descriptors.

    generated (n, 128), reference (m, 128) descriptors (frames with a face only). The
    reference identity is the centroid (mean) of its descriptors; then, over the generated
    frames:

    * csim: mean cosine similarity to the centroid (1 = same direction);
    * acd: mean cosine distance, 1 - cosine similarity (MI-NeRF app. E's ACD, computed with
      dlib's descriptor instead of InsightFace's embedding);
    * face_distance: mean Euclidean distance to the centroid (dlib: < 0.6 = same person);
    * same_person_fraction: share of generated frames closer than 0.6.
    """
    generated = np.asarray(generated, np.float64).reshape(-1, 128)
    reference = np.asarray(reference, np.float64).reshape(-1, 128)
    if len(generated) == 0 or len(reference) == 0:
        nan = float("nan")
        return {"csim": nan, "acd": nan, "face_distance": nan, "same_person_fraction": nan}
    cos_dist, dist = centroid_distances(generated, reference.mean(0))
    return {
        "csim": float((1.0 - cos_dist).mean()),
        "acd": float(cos_dist.mean()),
        "face_distance": float(dist.mean()),
        "same_person_fraction": float((dist < SAME_PERSON_DISTANCE).mean()),
    }


# ----------------------------------------------------------------------------- LPIPS (VGG16)

# torchvision's vgg16().features: (index, in, out) of its 13 3x3 convolutions; ReLUs after
# each, 2x2 max pools at 4, 9, 16, 23. LPIPS taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3,
# i.e. the outputs of features[:4], [4:9], [9:16], [16:23], [23:30].
VGG16_CONVS = ((0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
               (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512),
               (26, 512, 512), (28, 512, 512))
VGG16_POOLS = (4, 9, 16, 23)
LPIPS_TAPS = (4, 9, 16, 23, 30)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# lpips' ScalingLayer: inputs in [-1, 1] are normalised as (x - shift) / scale
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


@functools.lru_cache(maxsize=1)
def _lpips_class() -> type:
    import torch  # noqa: PLC0415 - torch only when LPIPS is used
    from torch import nn  # noqa: PLC0415

    class _Lin(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    class LPIPSVGG(nn.Module):
        """LPIPS v0.1 with a VGG16 trunk; state-dict keys ``features.N.weight/bias``
        (torchvision's vgg16) and ``linK.model.1.weight`` (lpips' vgg.pth)."""

        def __init__(self) -> None:
            super().__init__()
            convs = {i: (cin, cout) for i, cin, cout in VGG16_CONVS}
            layers: list[nn.Module] = []
            for i in range(LPIPS_TAPS[-1]):
                if i in convs:
                    layers.append(nn.Conv2d(*convs[i], kernel_size=3, padding=1))
                elif i in VGG16_POOLS:
                    layers.append(nn.MaxPool2d(2, 2))
                else:
                    layers.append(nn.ReLU())
            self.features = nn.Sequential(*layers)
            for k, c in enumerate(LPIPS_CHANNELS):
                setattr(self, f"lin{k}", _Lin(c))
            self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

        def taps(self, x: "torch.Tensor") -> list:
            out, start = [], 0
            for end in LPIPS_TAPS:
                x = self.features[start:end](x)
                out.append(x)
                start = end
            return out

        def forward(self, x: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
            """x, y (B, 3, H, W) RGB in [-1, 1] -> (B,) LPIPS distances."""
            feats = self.taps((torch.cat([x, y]) - self.shift) / self.scale)  # one batch for both
            total = 0.0
            for k, f in enumerate(feats):
                a, b = f[: len(x)], f[len(x):]
                a = a / (torch.sqrt((a * a).sum(1, keepdim=True)) + 1e-10)
                b = b / (torch.sqrt((b * b).sum(1, keepdim=True)) + 1e-10)
                d = getattr(self, f"lin{k}").model((a - b) ** 2)
                total = total + d.mean(dim=(2, 3))
            return total[:, 0]

    return LPIPSVGG


_LPIPS_SLICE_KEY = re.compile(r"^(?:net\.)?slice\d\.(\d+)\.(weight|bias)$")


def _load_weights(path: Path, what: str) -> dict:
    import pickle  # noqa: PLC0415

    import torch  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise MinerfError(f"{path}: {what} weight file not found")
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise FormatError(f"{path}: not a torch state dict of tensors ({msg})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise FormatError(f"{path}: not a torch state dict of tensors ({what})")
    return {str(k).removeprefix("module."): v for k, v in sd.items()}


def load_lpips(vgg_path: Path, lin_path: Path, device: Any = "cpu") -> Any:
    """The LPIPS (VGG) network from two user-supplied files, in eval mode on ``device``.

    ``vgg_path``: torchvision's ImageNet ``vgg16`` state dict (keys ``features.N.weight`` and
    ``features.N.bias``; ``classifier.*`` is ignored; lpips' own ``net.sliceK.N.*`` naming
    is accepted too). ``lin_path``: lpips' linear layers (its ``weights/v0.1/vgg.pth``:
    ``lin0.model.1.weight`` ... ``lin4.model.1.weight``). Both are read with
    ``torch.load(weights_only=True)``. A file that lacks a key or has a wrongly shaped tensor
    is refused with a FormatError (exit 3) naming the file and the keys.
    """
    import torch  # noqa: PLC0415

    net = _lpips_class()()
    want = net.state_dict()
    vgg = _load_weights(vgg_path, "VGG16")
    lin = _load_weights(lin_path, "LPIPS linear-layer")
    vgg = {(f"features.{m.group(1)}.{m.group(2)}" if (m := _LPIPS_SLICE_KEY.match(k)) else k): v for k, v in vgg.items()}
    merged: dict[str, torch.Tensor] = {}
    for name, path, src in (("features.", vgg_path, vgg), ("lin", lin_path, lin)):
        keys = [k for k in want if k.startswith(name)]
        missing = [k for k in keys if k not in src]
        if missing:
            found = ", ".join(sorted(src)[:4]) + (", ..." if len(src) > 4 else "")
            raise FormatError(f"{path}: not {'a torchvision vgg16' if name == 'features.' else 'an lpips vgg.pth'} "
                              f"state dict: {len(missing)} key(s) missing, e.g. {missing[0]} (it has: {found or 'nothing'})")
        for k in keys:
            if tuple(src[k].shape) != tuple(want[k].shape):
                raise FormatError(f"{path}: {k} has shape {tuple(src[k].shape)}, expected {tuple(want[k].shape)}")
            merged[k] = src[k].float()
    net.load_state_dict(merged, strict=True)
    return net.eval().to(device)


def lpips(net: Any, a: np.ndarray, b: np.ndarray) -> float:
    """LPIPS distance of two RGB uint8 images (H, W, 3) with a network from :func:`load_lpips`
    (0 = identical; the images need to be at least 16 x 16 pixels)."""
    import torch  # noqa: PLC0415

    if a.shape != b.shape:
        raise ValueError(f"lpips: shapes differ: {a.shape} vs {b.shape}")
    device = next(net.parameters()).device

    def tensor(img: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(img)).to(device).permute(2, 0, 1)[None].float()
        return t / 127.5 - 1.0

    with torch.inference_mode():
        return float(net(tensor(a), tensor(b))[0])
