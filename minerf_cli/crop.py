"""Choosing one stable square crop for a whole clip from sampled face boxes.

The crop is centred horizontally on the median face centre, with its side a fixed
multiple of the median face size (head and shoulders), grown if needed to hold every
sampled face box, and shifted down so the face sits a bit above the crop's centre
(room for the hair above, the shoulders below).

Out-of-frame policy: CLAMP. The box is shifted back inside the source frame, and when
it is larger than the frame's shorter side it is shrunk to that side. The crop never
contains padding (no replicated edge pixels that would stream past a moving head), at
the cost of the face being off-centre when it is near a border of the source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .faces import Detection

# Side of the crop as a multiple of the detector's face box (which spans brows to chin).
SIDE_PER_FACE = 3.0
# How far the crop centre sits below the face centre, as a fraction of the side.
LIFT = 0.10
# Margin around the union of all sampled face boxes, as a fraction of the face size.
MOTION_MARGIN = 0.6


@dataclass(frozen=True)
class CropBox:
    """A square crop in source pixels; x0, y0 and side are even (exact with 4:2:0 video)."""

    x0: int
    y0: int
    side: int

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.side]

    def ffmpeg_filter(self, size: int) -> str:
        """The ffmpeg -vf chain that cuts this box and scales it to size x size."""
        flags = "area" if self.side > size else "bicubic"
        return f"crop={self.side}:{self.side}:{self.x0}:{self.y0},scale={size}:{size}:flags={flags}"

    def to_crop(self, x: np.ndarray, y: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Map source pixel coordinates to crop pixel coordinates."""
        s = size / self.side
        return (np.asarray(x) - self.x0) * s, (np.asarray(y) - self.y0) * s


def _even(v: float) -> int:
    return int(np.floor(v / 2.0)) * 2


def choose_crop(faces: Sequence[Detection], width: int, height: int,
                side_per_face: float = SIDE_PER_FACE, lift: float = LIFT) -> CropBox:
    """One crop box for the whole clip from the main face's box in sampled frames."""
    if not faces:
        raise ValueError("choose_crop needs at least one face box")
    boxes = np.array([(f.x0, f.y0, f.x1, f.y1) for f in faces], np.float64)
    cx = float(np.median((boxes[:, 0] + boxes[:, 2]) / 2))
    cy = float(np.median((boxes[:, 1] + boxes[:, 3]) / 2))
    face = float(np.median(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))

    side = side_per_face * face
    # Hold every sampled face (with a margin) even when the head moves a lot.
    margin = MOTION_MARGIN * face
    reach_x = max(cx - boxes[:, 0].min(), boxes[:, 2].max() - cx) + margin
    reach_up = cy - boxes[:, 1].min() + margin
    reach_down = boxes[:, 3].max() - cy + margin
    side = max(side, 2 * reach_x, reach_up / (0.5 - lift), reach_down / (0.5 + lift))

    side_px = max(_even(min(side, width, height)), 2)
    centre_y = cy + lift * side_px
    x0 = float(np.clip(cx - side_px / 2, 0, width - side_px))
    y0 = float(np.clip(centre_y - side_px / 2, 0, height - side_px))
    return CropBox(_even(x0), _even(y0), side_px)
