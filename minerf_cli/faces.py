"""mediapipe wrappers: face detection, the 478-point face mesh and selfie segmentation.

mediapipe is imported lazily (``import minerf_cli.faces`` is cheap and works without it);
the first model built without mediapipe raises a one-line MinerfError saying what to
install. We use the legacy ``mp.solutions`` API with its bundled .tflite models, which
exists in mediapipe 0.10.21 (not in 1.x) and runs offline.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from .errors import MinerfError

MEDIAPIPE_HINT = "install mediapipe==0.10.21 (pip install --no-deps mediapipe==0.10.21; see docs/install.md)"

_mp: Any = None


def mediapipe() -> Any:
    """The mediapipe module, or a one-line MinerfError when it is missing or too new."""
    global _mp
    if _mp is None:
        try:
            import mediapipe as mp  # noqa: PLC0415 - lazy on purpose
        except ImportError as exc:
            raise MinerfError(f"mediapipe is not available ({exc}); {MEDIAPIPE_HINT}") from None
        if not hasattr(mp, "solutions"):
            version = getattr(mp, "__version__", "?")
            raise MinerfError(f"mediapipe {version} lacks the legacy mp.solutions API; {MEDIAPIPE_HINT}")
        _mp = mp
    return _mp


def preload() -> None:
    """Start importing mediapipe in a background thread (the first model waits for it)."""
    if _mp is None:
        threading.Thread(target=_try_import, name="minerf-mediapipe-import", daemon=True).start()


def _try_import() -> None:
    try:
        mediapipe()
    except MinerfError:
        pass  # reported again, in the caller's thread, by the first model


@contextlib.contextmanager
def quiet_native_stderr(enabled: bool = True) -> Iterator[None]:
    """Silence what native code (TFLite, glog) writes to file descriptor 2.

    mediapipe's C++ side prints INFO/WARNING lines straight to fd 2 when its graphs start.
    Python's own stderr (logs, progress bars) keeps going to the terminal: while the block
    runs, ``sys.stderr`` is a stream on a duplicate of the original fd 2. A no-op when
    disabled (--debug) or when stderr is not a real file descriptor (e.g. under a test runner).
    """
    try:
        real = enabled and sys.stderr.fileno() == 2
    except (AttributeError, OSError, io.UnsupportedOperation):
        real = False
    if not real:
        yield
        return
    sys.stderr.flush()
    saved_fd = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    old_stderr = sys.stderr
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(saved_fd), "wb", buffering=0), encoding="utf-8",
                                  errors="replace", write_through=True)
    try:
        yield
    finally:
        sys.stderr.flush()
        replacement = sys.stderr
        sys.stderr = old_stderr
        replacement.close()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)


@dataclass(frozen=True)
class Detection:
    """A face box in pixels of the image it was found in, with the detector's score."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    @property
    def area(self) -> float:
        return max(self.x1 - self.x0, 0.0) * max(self.y1 - self.y0, 0.0)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    @property
    def size(self) -> float:
        """The longer side of the box."""
        return max(self.x1 - self.x0, self.y1 - self.y0)

    def iou(self, other: "Detection") -> float:
        ix = max(min(self.x1, other.x1) - max(self.x0, other.x0), 0.0)
        iy = max(min(self.y1, other.y1) - max(self.y0, other.y0), 0.0)
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def scaled(self, factor: float) -> "Detection":
        return Detection(self.x0 * factor, self.y0 * factor, self.x1 * factor, self.y1 * factor, self.score)


class _Model:
    """A mediapipe solution with close() and context-manager support."""

    _solution: Any

    def close(self) -> None:
        self._solution.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FaceDetector(_Model):
    """mediapipe's full-range face detector (model_selection=1: faces up to ~5 m away)."""

    def __init__(self, min_score: float = 0.5):
        mp = mediapipe()
        self._solution = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=min_score)

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        """All faces in an RGB uint8 image, boxes in its pixels, largest first."""
        h, w = rgb.shape[:2]
        result = self._solution.process(rgb)
        out = []
        for det in result.detections or ():
            box = det.location_data.relative_bounding_box
            x0, y0 = box.xmin * w, box.ymin * h
            out.append(Detection(x0, y0, x0 + box.width * w, y0 + box.height * h, float(det.score[0])))
        out.sort(key=lambda d: d.area, reverse=True)
        return out


class FaceMesh(_Model):
    """mediapipe's face mesh in video (tracking) mode: one face, 478 landmarks with irises."""

    num_landmarks = 478

    def __init__(self, min_score: float = 0.5):
        mp = mediapipe()
        self._solution = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=1, refine_landmarks=True,
            min_detection_confidence=min_score, min_tracking_confidence=0.5)

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        """(478, 3) float32 landmarks in pixels of ``rgb`` (x right, y down, z depth in
        pixels, smaller = nearer the camera), or None when no face is found. Call on
        consecutive frames of one clip: the mesh tracks the face between calls."""
        h, w = rgb.shape[:2]
        result = self._solution.process(rgb)
        if not result.multi_face_landmarks:
            return None
        pts = np.array([(p.x, p.y, p.z) for p in result.multi_face_landmarks[0].landmark], np.float32)
        pts *= np.array([w, h, w], np.float32)  # mediapipe's z has the scale of x
        return pts


class PersonSegmenter(_Model):
    """mediapipe's selfie segmentation.

    Default: the "landscape" model (model_selection=1, 256x144 input), fed a 256x144
    downscale of the frame. On square head-and-shoulders crops its masks match the general
    model's (model_selection=0, 256x256) to IoU 0.985-0.996 (measured on the 14 real
    clips' crops) at ~60% of the cost (2.5 vs 4.2-5.2 ms a frame on the 2-core dev box).
    """

    INPUT_SIZE = {0: (256, 256), 1: (256, 144)}  # (width, height) of each model's input

    def __init__(self, model_selection: int = 1):
        mp = mediapipe()
        self.work_size = self.INPUT_SIZE[model_selection]
        self._solution = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=model_selection)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Person probability, float32 in [0, 1], at the model's input size (H, W).

        The image is resized to the model's own input size first (as fast as letting
        mediapipe do it; a non-square input is squashed); the caller resizes the map back
        to the frame's size, which undoes the squash.
        """
        import cv2  # noqa: PLC0415

        w, h = self.work_size
        small = rgb if rgb.shape[:2] == (h, w) else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        return self._solution.process(small).segmentation_mask


# The lower face oval (left ear level -> chin -> right ear level) in mediapipe's
# face-mesh topology: the "jaw line" that separates the head from the neck.
JAW_LINE = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454)
