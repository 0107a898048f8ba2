"""The HDF5 frame store: the one schema module (spec in man/minerf-store.5).

One store per video clip, readable with plain h5py / h5ls. The root and every top-level
node carry ``format``, ``version`` and ``created_by`` attributes; a reader refuses (exit
code 3) a store whose format is unknown or whose version is newer than it understands,
and a command that needs a node the store lacks says which stage writes it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from . import __version__
from .errors import FormatError, MinerfError, UsageError
from .fsutil import atomic_output

FORMAT = "minerf-store"
VERSION = 1
NUM_LANDMARKS = 478


@dataclass(frozen=True)
class Node:
    """One top-level node of the store: a dataset or a group of datasets.

    ``shapes`` maps a dataset name ("" for the node itself when it is a dataset) to its
    symbolic shape; symbols (N frames, H, W, S audio samples, E expressions, I identity
    modes, K feature size, T window) must agree across the store.
    """

    kind: str  # "dataset" | "group"
    producer: str  # the command that writes it
    shapes: dict[str, tuple]
    dtypes: dict[str, str]
    attrs: tuple[str, ...] = ()
    doc: str = ""
    optional: tuple[str, ...] = field(default_factory=tuple)


SCHEMA: dict[str, Node] = {
    "frames": Node(
        "dataset", "prep", {"": ("N", "H", "W", 3)}, {"": "uint8"},
        attrs=("fps", "crop_box", "source_size", "source_fps", "start_time"),
        doc="RGB frames of one square crop for the whole clip, one gzip chunk per frame; frame i "
        "shows source time start_time + i / fps (constant rate: ffmpeg resamples variable-rate "
        "sources). crop_box = [x0, y0, side] in source pixels, always inside the source frame "
        "(shifted, or shrunk to the shorter side, never padded); source_size = [width, height].",
    ),
    "audio": Node(
        "group", "prep", {"pcm": ("S",)}, {"pcm": "float32"}, attrs=("sample_rate",),
        doc="The clip's audio track, mono float32 in [-1, 1] at 16 kHz, aligned so sample "
        "s belongs to time s / sample_rate from the first stored frame; exactly N / fps seconds "
        "long (cut, or zero-padded where the track is shorter). Absent for clips without audio.",
    ),
    "landmarks": Node(
        "group", "prep", {"points": ("N", NUM_LANDMARKS, 3), "valid": ("N",)},
        {"points": "float32", "valid": "bool"},
        doc="mediapipe face-mesh landmarks (478 with iris) in crop pixels: x right, y down, "
        "z relative depth in pixels (smaller = nearer); valid marks frames with a face; points "
        "are NaN where valid is false.",
    ),
    "masks": Node(
        "group", "prep", {"head": ("N", "H", "W"), "person": ("N", "H", "W")},
        {"head": "uint8", "person": "uint8"},
        doc="0/255 masks: person from selfie segmentation (thresholded at 0.5, plus the head); "
        "head = face-mesh hull and the segmented hair/head above the jaw line (jaw angle to jaw "
        "angle), a subset of person, empty where landmarks are invalid.",
    ),
    "background": Node(
        "dataset", "prep", {"": ("H", "W", 3)}, {"": "uint8"},
        doc="A background plate: per-pixel median of up to 40 sampled frames outside the "
        "(dilated) person mask; pixels seen in under 10% of the samples are inpainted "
        "(attrs samples, inpainted_fraction).",
    ),
    "tracking": Node(
        "group", "fit3dmm",
        {
            "intrinsics": (3, 3),
            "camera_from_head": ("N", 4, 4),
            "expression": ("N", "E"),
            "identity": ("I",),
            "fit_error": ("N",),
        },
        {"intrinsics": "float32", "camera_from_head": "float32", "expression": "float32",
         "identity": "float32", "fit_error": "float32"},
        attrs=("expression_names", "units", "camera_convention"),
        doc="ICT face model fit: pinhole intrinsics (pixels of the crop), per-frame "
        "camera-from-head rigid transforms (head space = ICT model space in cm, +y up, +z "
        "towards the viewer; camera = OpenCV: x right, y down, z forward), ICT blendshape "
        "weights in [0, 1], identity coefficients, per-frame mean landmark reprojection "
        "error in pixels (NaN where no landmarks).",
    ),
    "audio_features": Node(
        "group", "encode-audio", {"features": ("N", "T", "K")}, {"features": "float32"},
        doc="Per video frame, the window of audio features centred on the frame.",
    ),
}


def _node_attrs(command: str) -> dict:
    return {"format": FORMAT, "version": VERSION, "created_by": f"minerf {__version__} {command}"}


def stamp(obj: h5py.HLObject, command: str) -> None:
    """Write format/version/created_by on a node (or the root)."""
    for key, value in _node_attrs(command).items():
        obj.attrs[key] = value


def _check_version(obj: h5py.HLObject, where: str, path: Path) -> None:
    fmt = obj.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT:
        raise FormatError(f"{path}: {where} is not a minerf store (format attribute {fmt!r})")
    version = obj.attrs.get("version")
    if version is None:
        raise FormatError(f"{path}: {where} has no version attribute")
    if int(version) > VERSION:
        raise FormatError(
            f"{path}: {where} has store version {int(version)}, newer than this minerf "
            f"({__version__}) understands (version {VERSION}); upgrade minerf"
        )


def validate(f: h5py.File, path: Path, require: tuple[str, ...] = ()) -> dict[str, int]:
    """Check the root, every known node present and the ``require``d ones.

    Returns the resolved shape symbols (e.g. {"N": 300, "H": 512, ...}).
    Raises FormatError (exit 3) naming the file and what is wrong.
    """
    _check_version(f, "root", path)
    symbols: dict[str, int] = {}
    for name, node in SCHEMA.items():
        if name not in f:
            continue
        obj = f[name]
        _check_version(obj, f"/{name}", path)
        is_group = isinstance(obj, h5py.Group)
        if is_group != (node.kind == "group"):
            raise FormatError(f"{path}: /{name} should be a {node.kind}")
        for dname, shape in node.shapes.items():
            if dname and dname not in obj:
                raise FormatError(f"{path}: /{name}/{dname} is missing")
            ds = obj[dname] if dname else obj
            full = f"/{name}/{dname}" if dname else f"/{name}"
            if len(ds.shape) != len(shape):
                raise FormatError(f"{path}: {full} has shape {ds.shape}, expected {shape}")
            for sym, actual in zip(shape, ds.shape):
                if isinstance(sym, int):
                    if sym != actual:
                        raise FormatError(f"{path}: {full} has shape {ds.shape}, expected {shape}")
                elif symbols.setdefault(sym, actual) != actual:
                    raise FormatError(
                        f"{path}: {full} has {sym}={actual} but the store elsewhere has {sym}={symbols[sym]}"
                    )
        for attr in node.attrs:
            if attr not in obj.attrs:
                raise FormatError(f"{path}: /{name} lacks attribute {attr!r}")
    for name in require:
        if name not in f:
            producer = SCHEMA[name].producer
            raise FormatError(f"{path}: store has no /{name} group (run `minerf {producer} {path}` first)")
    return symbols


def open_store(path: Path, require: tuple[str, ...] = (), mode: str = "r") -> h5py.File:
    """Open and validate a store; the caller closes it (use as a context manager)."""
    path = Path(path)
    if not path.exists():
        raise MinerfError(f"{path}: store not found")
    try:
        f = h5py.File(path, mode)
    except OSError as exc:
        raise FormatError(f"{path}: not an HDF5 file or unreadable ({exc.__class__.__name__})") from None
    try:
        validate(f, path, require)
    except BaseException:
        f.close()
        raise
    return f


@contextlib.contextmanager
def create_store(path: Path, command: str, force: bool = False, source: dict | None = None) -> Iterator[h5py.File]:
    """Create a new store at a temporary name; renamed into place when the block succeeds."""
    with atomic_output(Path(path), force) as tmp:
        with h5py.File(tmp, "w") as f:
            stamp(f, command)
            for key, value in (source or {}).items():
                f.attrs[key] = value
            yield f
        with h5py.File(tmp, "r") as f:
            validate(f, Path(path))


@contextlib.contextmanager
def add_node(path: Path, name: str, command: str, force: bool = False) -> Iterator[h5py.Group]:
    """Add group ``name`` to an existing store; removed again if the block fails.

    Refuses to replace an existing node without --force (exit 2).
    """
    path = Path(path)
    node = SCHEMA[name]
    with open_store(path, mode="r+") as f:
        if name in f:
            if not force:
                raise UsageError(f"{path}: /{name} exists (use --force to replace it)")
            del f[name]
        if node.kind != "group":
            raise ValueError(f"add_node is for groups; /{name} is a dataset")
        group = f.create_group(name)
        stamp(group, command)
        try:
            yield group
            f.flush()
            validate(f, path)
        except BaseException:
            if name in f:
                del f[name]
            raise


def frames_dataset(f: h5py.File, n: int, size: int, compression_level: int = 1, resizable: bool = False) -> h5py.Dataset:
    """The /frames dataset: (n, size, size, 3) uint8, one gzip chunk per frame.

    ``resizable`` allows growing/trimming it along N (for writers that learn N at the end).
    """
    ds = f.create_dataset(
        "frames", shape=(n, size, size, 3), dtype="uint8", chunks=(1, size, size, 3),
        maxshape=(None, size, size, 3) if resizable else None,
        compression="gzip", compression_opts=compression_level, shuffle=False,
    )
    return ds


def describe(path: Path) -> dict:
    """A JSON-able summary of a store: nodes, shapes, attributes."""
    with open_store(path) as f:
        out: dict = {"path": str(path), "format": FORMAT, "version": int(f.attrs["version"]), "nodes": {}}
        for key in ("created_by", "source_path", "source_sha256"):
            if key in f.attrs:
                out[key] = str(f.attrs[key])
        for name in f:
            obj = f[name]
            entry: dict = {"created_by": str(obj.attrs.get("created_by", ""))}
            if isinstance(obj, h5py.Dataset):
                entry["shape"] = list(obj.shape)
                entry["dtype"] = str(obj.dtype)
            else:
                entry["datasets"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in obj.items()}
            attrs = {k: v for k, v in obj.attrs.items() if k not in ("format", "version", "created_by")}
            entry["attrs"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in attrs.items()}
            out["nodes"][name] = entry
        return out
