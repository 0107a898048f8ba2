"""The ICT face model (MIT, USC ICT-FaceKit), shipped as package data.

mesh(id, ex) = neutral + sum_k id_k * identity_modes[k] + sum_j ex_j * expression_modes[j]
Vertices are in centimetres, +y up, +z towards the viewer (the "head space").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np

MOUTH_SET = (
    "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker",
    "mouthSmile_L", "mouthSmile_R", "mouthStretch_L", "mouthStretch_R",
)


def data_path(name: str):
    """Path of a file in minerf_cli/data."""
    return resources.files("minerf_cli").joinpath("data", name)


@dataclass(frozen=True)
class FaceModel:
    neutral: np.ndarray  # (V, 3) float32
    identity_modes: np.ndarray  # (I, V, 3) float32
    expression_modes: np.ndarray  # (E, V, 3) float32
    expression_names: tuple[str, ...]
    quads: np.ndarray  # (F, 4) int32
    landmarks68: np.ndarray  # (68,) int32
    rigid_vertices: np.ndarray
    face_region: tuple[int, int]

    @property
    def num_identity(self) -> int:
        return self.identity_modes.shape[0]

    @property
    def num_expression(self) -> int:
        return self.expression_modes.shape[0]

    @functools.cached_property
    def triangles(self) -> np.ndarray:
        """(2F, 3) int32 triangles from the quads (a, b, c) + (a, c, d)."""
        q = self.quads
        return np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]], axis=0).astype(np.int32)

    def expression_index(self, name: str) -> int:
        return self.expression_names.index(name)

    def vertices(self, identity: np.ndarray | None = None, expression: np.ndarray | None = None) -> np.ndarray:
        """Mesh vertices (V, 3) for identity (I,) and expression (E,) weights, or (B, V, 3) for (B, E)."""
        v = self.neutral
        if identity is not None:
            v = v + np.tensordot(np.asarray(identity, np.float32), self.identity_modes, axes=(0, 0))
        if expression is not None:
            ex = np.asarray(expression, np.float32)
            v = v + np.tensordot(ex, self.expression_modes, axes=(ex.ndim - 1, 0))
        return v.astype(np.float32)


@functools.lru_cache(maxsize=1)
def load_face_model() -> FaceModel:
    """Load the ICT face model from package data (cached)."""
    with data_path("ict_face_model.npz").open("rb") as fh:
        d = np.load(fh)
        return FaceModel(
            neutral=d["neutral"].astype(np.float32),
            identity_modes=d["identity_modes"].astype(np.float32),
            expression_modes=d["expression_modes"].astype(np.float32),
            expression_names=tuple(str(s) for s in d["expression_names"]),
            quads=d["quads"].astype(np.int32),
            landmarks68=d["landmarks68"].astype(np.int32),
            rigid_vertices=d["rigid_vertices"].astype(np.int32),
            face_region=tuple(int(x) for x in d["face_region"]),
        )
