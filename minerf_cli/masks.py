"""Per-frame person and head masks, and the background plate of a clip.

- person: selfie segmentation probability, upscaled to the frame and thresholded; the
  head mask is added to it so that head is always a subset of person.
- head: the convex hull of the face-mesh landmarks (which stops at mid-forehead), plus
  the person pixels above the jaw line (jaw angle to jaw angle) within a band around the
  face: the forehead, the hair and the ears. Frames without landmarks get an empty mask.
- background: per-pixel median of sampled frames where the (dilated) person mask is off;
  pixels seen in too few samples (the person covers them nearly always) are inpainted
  (cv2.inpaint, Telea, at low resolution).
"""

from __future__ import annotations

import cv2
import numpy as np

from .faces import JAW_LINE

PERSON_THRESHOLD = 0.5
# The band above the jaw line that may hold hair reaches this many face widths beyond
# the face on either side.
HAIR_SIDE_MARGIN = 0.4
# JAW_LINE points skipped at each end: the line then runs from jaw angle to jaw angle
# (landmarks 58 and 288), so the ears are part of the head.
JAW_SIDE_SKIP = 3


def person_mask(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    """0/255 uint8 (height, width) mask from a segmentation probability map."""
    u8 = cv2.convertScaleAbs(prob, alpha=255.0)  # 8-bit first: resizing uint8 is ~2x faster
    if u8.shape != (height, width):
        u8 = cv2.resize(u8, (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.threshold(u8, int(255 * PERSON_THRESHOLD), 255, cv2.THRESH_BINARY)[1]


def head_mask(points: np.ndarray | None, person: np.ndarray) -> np.ndarray:
    """0/255 uint8 head mask from (478, 3) landmarks in pixels and the person mask.

    Writes the head into ``person`` too (head is a subset of person).
    """
    h, w = person.shape
    head = np.zeros((h, w), np.uint8)
    if points is None:
        return head
    xy = np.round(points[:, :2]).astype(np.int32)
    cv2.fillConvexPoly(head, cv2.convexHull(xy), 255)

    jaw = xy[list(JAW_LINE)]
    face_w = max(float(np.linalg.norm(jaw[-1] - jaw[0])), 1.0)
    # Start the jaw line at the jaw angles (below the ear lobes), not at ear level.
    jaw = jaw[JAW_SIDE_SKIP:len(jaw) - JAW_SIDE_SKIP]
    left, right = jaw[0], jaw[-1]
    pad = int(round(HAIR_SIDE_MARGIN * face_w))
    top = min(0, int(xy[:, 1].min()) - h)  # far above the frame: the polygon's lid
    xl, xr = int(min(left[0], right[0])) - pad, int(max(left[0], right[0])) + pad
    # Above the jaw line: down the left side to ear level, along the jaw, up the right side.
    region = np.concatenate([
        [[xl, top], [xl, left[1]]], jaw, [[xr, right[1]], [xr, top]],
    ]).astype(np.int32)
    above = np.zeros((h, w), np.uint8)
    cv2.fillPoly(above, [region], 255)
    np.bitwise_or(head, np.bitwise_and(above, person), out=head)
    np.bitwise_or(person, head, out=person)
    return head


class BackgroundPlate:
    """Collects sampled frames and person masks; ``plate()`` returns the median background.

    Samples are kept as (H, W, 3, S) uint16 (samples on the last, contiguous axis, where
    numpy sorts ~7x faster than uint8 or axis 0), filled as they come in.
    """

    def __init__(self, max_samples: int = 40, dilate: float = 0.03, min_visible: float = 0.1):
        self.max_samples = max_samples
        self.dilate = dilate
        self.min_visible = min_visible
        self.count = 0
        self._stack: np.ndarray | None = None
        self._hidden: np.ndarray | None = None
        self._kernel: np.ndarray | None = None

    def add(self, frame: np.ndarray, person: np.ndarray) -> None:
        if self.count >= self.max_samples:
            return
        h, w = person.shape
        if self._stack is None:
            self._stack = np.empty((h, w, 3, self.max_samples), np.uint16)
            self._hidden = np.empty((h, w, self.max_samples), bool)
            k = int(round(self.dilate * max(h, w))) | 1  # odd; 1 = no dilation
            self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)) if k > 1 else None
        self._stack[..., self.count] = frame
        self._hidden[..., self.count] = (cv2.dilate(person, self._kernel) if self._kernel is not None else person) > 0
        self.count += 1

    def plate(self) -> tuple[np.ndarray, float]:
        """(H, W, 3) uint8 plate, and the fraction of pixels that had to be inpainted."""
        if self._stack is None:
            raise ValueError("no frames were sampled for the background")
        n = self.count
        stack, hidden = self._stack[..., :n], self._hidden[..., :n]
        h, w = hidden.shape[:2]
        stack[np.broadcast_to(hidden[:, :, None, :], stack.shape)] = 256  # sorts after every real value
        stack.sort(axis=-1)
        count = n - hidden.sum(axis=-1)  # visible samples per pixel, (H, W)
        idx = np.broadcast_to(((np.maximum(count, 1) - 1) // 2)[:, :, None, None], (h, w, 3, 1))
        plate = np.take_along_axis(stack, idx, axis=-1)[..., 0]
        # Pixels seen in too few samples are mostly segmentation misses next to the
        # person: inpaint them rather than trust a median of one or two.
        holes = count < max(1, int(np.ceil(self.min_visible * n)))
        plate[holes] = 0
        plate = plate.astype(np.uint8)
        hole_fraction = float(holes.mean())
        if holes.any():
            plate = _inpaint(plate, holes.astype(np.uint8) * 255)
        self._stack = self._hidden = None  # one use; free the memory
        return plate, hole_fraction


def _inpaint(image: np.ndarray, holes: np.ndarray, work: int = 128) -> np.ndarray:
    """Fill ``holes`` (0/255) by Telea inpainting at a low resolution (large holes are
    smooth anyway, and full resolution is slow), keeping the known pixels as they are."""
    h, w = holes.shape
    scale = min(1.0, work / max(h, w))
    if scale < 1.0:
        sw, sh = max(int(round(w * scale)), 1), max(int(round(h * scale)), 1)
        small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
        small_holes = cv2.resize(holes, (sw, sh), interpolation=cv2.INTER_NEAREST)
        small_holes = cv2.dilate(small_holes, np.ones((3, 3), np.uint8))
        filled = cv2.resize(cv2.inpaint(small, small_holes, 3, cv2.INPAINT_TELEA), (w, h),
                            interpolation=cv2.INTER_LINEAR)
    else:
        filled = cv2.inpaint(image, holes, 3, cv2.INPAINT_TELEA)
    out = image.copy()
    out[holes > 0] = filled[holes > 0]
    return out
