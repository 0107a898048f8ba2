"""A tracked clip in memory, as the NeRF stages use it (train, personalize, transfer).

Reads a store that has /frames, /masks, /background, /landmarks and /tracking, and keeps
what rendering and training need as torch tensors on a "data device" (the GPU when the
training runs there, so drawing rays needs no host-device copy):

* frames (N, H, W, 3) uint8 and head masks (N, H, W) bool -- all of them, or a bounded
  cache of them read from the store on demand (:class:`FrameCache`) --, the background
  plate (H, W, 3);
* K (3, 3), camera_from_head (N, 4, 4), expression (N, d) float32;
* the train / test split: the last 10% of the clip's frames are its test split (MI-NeRF
  sec. 4: "We keep the last 10% of the frames of the training videos as our test set"),
  frames without landmarks are in neither.

"Original background per frame" (MI-NeRF app. E): the background of frame n is the frame
itself with its head region replaced by the background plate, so the field has to explain
the head only and the torso stays the frame's own.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from . import store
from .errors import FormatError, MinerfError

TEST_FRACTION = 0.1
REQUIRED = ("frames", "masks", "background", "landmarks", "tracking")


def split_indices(n: int, usable: np.ndarray, test_fraction: float = TEST_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Frames 0..n-1 -> (train, test) index arrays: the last ceil(test_fraction * n) frames
    are the test split; frames where ``usable`` (n,) is false are dropped from both."""
    n_test = int(np.ceil(test_fraction * n)) if test_fraction > 0 else 0
    if n - n_test < 1:
        n_test = 0
    idx = np.arange(n)
    train = idx[: n - n_test][usable[: n - n_test]]
    test = idx[n - n_test:][usable[n - n_test:]]
    return train, test


def projected_boxes(K: torch.Tensor, camera_from_head: torch.Tensor, box_min, box_max, height: int,
                    width: int) -> torch.Tensor:
    """Image rectangles (N, 4) [u0, v0, u1, v1] of a head-space box seen by K (3, 3) from
    camera_from_head (N, 4, 4) (:func:`nerf.rays.project_box`), clipped to the image: where
    rays can hit the field's box."""
    from .nerf.rays import project_box

    uv = project_box(K.float(), camera_from_head.float(), box_min, box_max)
    limit = torch.tensor([width, height], dtype=torch.float32, device=K.device)
    lo_uv = torch.minimum(uv[:, :2].clamp_min(0), limit - 1)
    hi_uv = torch.maximum(torch.minimum(uv[:, 2:], limit), lo_uv + 1)
    return torch.cat([lo_uv, hi_uv], -1)


# mediapipe face-mesh points of the mouth region: the lips (FACEMESH_LIPS' outer contour) and
# the chin below them (152: the lowest chin point), which an opening jaw moves
MOUTH_REGION_LANDMARKS = (0, 17, 37, 39, 40, 61, 84, 91, 146, 181, 185, 267, 269, 270, 291, 314, 321, 375,
                          405, 409, 152)


def mouth_boxes(landmarks: np.ndarray, height: int, width: int, margin: float = 0.2) -> np.ndarray:
    """Per-frame rectangles (N, 4) float32 [u0, v0, u1, v1] around the lips and the chin.

    landmarks (N, 478, >=2) pixels, NaN where invalid. Each box is the bounding box of
    :data:`MOUTH_REGION_LANDMARKS` grown by ``margin`` times its width on every side and
    clipped to the image; a frame without landmarks takes the nearest valid frame's box.
    With no valid frame at all every box is the whole image."""
    pts = landmarks[:, list(MOUTH_REGION_LANDMARKS), :2].astype(np.float64)  # (N, P, 2)
    ok = np.isfinite(pts).all((1, 2))
    if not ok.any():
        return np.tile(np.array([0, 0, width, height], np.float32), (len(pts), 1))
    from .metrics import nearest_valid

    pts = pts[nearest_valid(ok)]  # frames without landmarks: the nearest valid frame's
    lo, hi = pts.min(1), pts.max(1)  # (N, 2)
    m = margin * (hi[:, :1] - lo[:, :1])  # (N, 1) from the box's width
    lo = np.maximum(lo - m, 0)
    hi = np.minimum(hi + m, [width, height])
    hi = np.maximum(hi, lo + 1)
    return np.concatenate([lo, hi], 1).astype(np.float32)


class FrameCache:
    """Frames and head masks of one store on ``device``: all of them (``capacity`` None or
    >= N: read once, the fastest) or at most ``capacity`` decoded frames in an LRU cache,
    read from the store on demand (streaming: host and GPU memory stay bounded however many
    clips a run trains on).

    ``get(n) -> (frame (H, W, 3) uint8, head (H, W) bool)``, both on ``device``.
    """

    def __init__(self, path: Path, device: torch.device, capacity: int | None = None):
        self.path, self.device = Path(path), torch.device(device)
        self._file = h5py.File(self.path, "r")
        self._reader = store.FrameReader(self._file)
        self._head = self._file["masks/head"]
        self.n, self.height, self.width = len(self._reader), self._reader.height, self._reader.width
        self.capacity = None if capacity is None or capacity >= self.n else max(1, int(capacity))
        self._lru: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.reads = 0
        if self.capacity is None:  # everything, in blocks (no second full-size host copy)
            self._frames = torch.empty((self.n, self.height, self.width, 3), dtype=torch.uint8, device=self.device)
            self._heads = torch.empty((self.n, self.height, self.width), dtype=torch.bool, device=self.device)
            for a in range(0, self.n, 64):
                b = min(self.n, a + 64)
                self._frames[a:b] = torch.from_numpy(np.ascontiguousarray(self._reader[a:b])).to(self.device)
                self._heads[a:b] = torch.from_numpy(self._head[a:b] > 127).to(self.device)
            self.reads = self.n
            self.close()

    def get(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = int(n)
        if self.capacity is None:
            return self._frames[n], self._heads[n]
        hit = self._lru.get(n)
        if hit is not None:
            self._lru.move_to_end(n)
            return hit
        if self._file is None:
            self._file = h5py.File(self.path, "r")
            self._reader, self._head = store.FrameReader(self._file), self._file["masks/head"]
        item = (torch.from_numpy(np.ascontiguousarray(self._reader[n])).to(self.device),
                torch.from_numpy(self._head[n] > 127).to(self.device))
        self.reads += 1
        self._lru[n] = item
        if len(self._lru) > self.capacity:
            self._lru.popitem(last=False)
        return item

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def nbytes_resident(self) -> int:
        per = self.height * self.width * 4
        return per * (self.n if self.capacity is None else len(self._lru))


@dataclass
class Clip:
    """One tracked clip (see the module docstring). Tensors live on ``device``; frames and
    head masks are read through a :class:`FrameCache`."""

    name: str
    path: Path
    fps: float
    cache: FrameCache
    plate: torch.Tensor  # (H, W, 3) uint8
    K: torch.Tensor  # (3, 3) float32
    camera_from_head: torch.Tensor  # (N, 4, 4) float32
    expression: torch.Tensor  # (N, d) float32
    landmarks: np.ndarray  # (N, 478, 3) float32 pixels (NaN where invalid)
    train_idx: np.ndarray
    test_idx: np.ndarray
    audio: np.ndarray | None  # (S,) float32 at 16 kHz
    sha256: str = ""

    @property
    def n_frames(self) -> int:
        return self.cache.n

    @property
    def size(self) -> tuple[int, int]:
        return self.cache.height, self.cache.width

    @property
    def device(self) -> torch.device:
        return self.plate.device

    def frame(self, n: int) -> torch.Tensor:
        """Frame n, (H, W, 3) uint8 on the clip's device."""
        return self.cache.get(n)[0]

    def background(self, n: int) -> torch.Tensor:
        """Frame n's background (H, W, 3) float in [0, 1]: the frame, with the plate under the head."""
        frame, head = self.cache.get(n)
        return torch.where(head[..., None], self.plate, frame).float() / 255.0

    def background_at(self, n: int, ij: torch.Tensor) -> torch.Tensor:
        """Background colours of frame n at pixels ij (R, 2) [i, j] -> (R, 3) float."""
        frame, head = self.cache.get(n)
        i, j = ij[:, 0], ij[:, 1]
        return torch.where(head[i, j][:, None], self.plate[i, j], frame[i, j]).float() / 255.0

    def head_at(self, n: int, ij: torch.Tensor) -> torch.Tensor:
        """Frame n's head mask at pixels ij (R, 2) [i, j] -> (R,) bool."""
        head = self.cache.get(n)[1]
        return head[ij[:, 0], ij[:, 1]]


def load_clip(path: Path, device: torch.device | str = "cpu", expr_dim: int | None = None,
              test_fraction: float = TEST_FRACTION, cache_frames: int | None = None) -> Clip:
    """Read a tracked store into a :class:`Clip` (one-line errors for unusable stores).
    ``cache_frames``: keep at most that many decoded frames (None: all, read once)."""
    path = Path(path)
    with store.open_store(path, require=REQUIRED) as f:
        n = len(store.FrameReader(f))
        fps = float(f["frames"].attrs["fps"])
        plate = f["background"][...]
        valid = f["landmarks/valid"][...].astype(bool)
        landmarks = f["landmarks/points"][...].astype(np.float32)
        K = f["tracking/intrinsics"][...].astype(np.float32)
        pose = f["tracking/camera_from_head"][...].astype(np.float32)
        expression = f["tracking/expression"][...].astype(np.float32)
        audio = f["audio/pcm"][...].astype(np.float32) if "audio" in f else None
        sha = str(f.attrs.get("source_sha256", ""))
    if n == 0:
        raise MinerfError(f"{path}: the store has no frames")
    if expr_dim is not None and expression.shape[1] != expr_dim:
        raise FormatError(f"{path}: /tracking/expression has {expression.shape[1]} blendshapes, "
                          f"the run was trained with {expr_dim}")
    usable = valid & np.isfinite(pose).all((1, 2)) & np.isfinite(expression).all(1)
    if not usable.any():
        raise MinerfError(f"{path}: no frame has usable tracking (landmarks and a finite fit)")
    train, test = split_indices(n, usable, test_fraction)
    if len(train) == 0:
        raise MinerfError(f"{path}: no usable frame outside the held-out last {test_fraction:.0%}")
    dev = torch.device(device)
    return Clip(
        name=path.stem, path=path, fps=fps, cache=FrameCache(path, dev, cache_frames),
        plate=torch.from_numpy(np.ascontiguousarray(plate)).to(dev),
        K=torch.from_numpy(K).to(dev),
        camera_from_head=torch.from_numpy(np.nan_to_num(pose)).to(dev),
        expression=torch.from_numpy(np.nan_to_num(expression)).to(dev),
        landmarks=landmarks, train_idx=train, test_idx=test, audio=audio, sha256=sha,
    )
