"""The HDF5 frame store: the one schema module (spec in man/minerf-store.5).

One store per video clip, readable with plain h5py / h5ls. The root and every top-level
node carry ``format``, ``version`` and ``created_by`` attributes; a reader refuses (exit
code 3) a store whose format is unknown or whose version is newer than it understands,
and a command that needs a node the store lacks says which stage writes it.

/frames holds the frames either lossless (an (N,H,W,3) uint8 dataset, one gzip chunk per
frame) or as JPEG (an (N,) dataset of variable-length uint8 arrays, one JPEG file per
frame, attrs codec="jpeg", quality, height, width). ``FrameReader`` reads both and
``FrameWriter`` writes both. JPEG frames came with store version 2: a version-1 reader
would take the byte arrays for frames, so everything is now written as version 2, a JPEG
/frames in a store marked version 1 is refused, and version-1 stores (always lossless)
are still read.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np

from . import __version__
from .chunkio import ChunkWriter, QueueWorker, grow_to
from .errors import FormatError, MinerfError, UsageError
from .fsutil import atomic_output

FORMAT = "minerf-store"
# 2: /frames may hold JPEG frames (codec="jpeg"). Version-1 stores (lossless frames only) are
# still read; a version-1 reader refuses version-2 stores instead of misreading JPEG bytes.
VERSION = 2
JPEG_VERSION = 2  # the first version that may hold JPEG frames
NUM_LANDMARKS = 478

LOSSLESS = "lossless"  # FrameReader.codec of an (N,H,W,3) uint8 /frames (no codec attribute)
JPEG = "jpeg"


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
        doc="RGB frames of one square crop for the whole clip; frame i "
        "shows source time start_time + i / fps (constant rate: ffmpeg resamples variable-rate "
        "sources). crop_box = [x0, y0, side] in source pixels, always inside the source frame "
        "(shifted, or shrunk to the shorter side, never padded); source_size = [width, height]. "
        "Two encodings. Lossless (the default): an (N, H, W, 3) uint8 dataset, one gzip chunk per "
        "frame, no codec attribute. JPEG (`minerf prep --jpeg-quality Q`, `minerf repack`): an (N,) "
        "dataset of variable-length uint8 arrays, each the bytes of one frame's JPEG file (4:4:4 "
        "chroma where OpenCV offers it, recorded in chroma_subsampling), with attributes codec = "
        "\"jpeg\", quality (1-100), height = H and width = W; decode with cv2.imdecode (which returns "
        "BGR; the frames are RGB) or read either encoding with minerf_cli.store.FrameReader. JPEG "
        "frames came with store version 2 (a version-1 reader would take the byte arrays for frames): "
        "a JPEG /frames in a store marked version 1 is refused; version-1 stores, always lossless, "
        "are still read.",
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
        attrs=("kind", "fps", "window_frames", "hop_s"),
        doc="Per video frame n, the window of audio features centred on the frame's instant "
        "n / fps: features[n, k] is the kind = \"logmel80\" log-mel spectrum (16 kHz, periodic Hann "
        "window 400, hop 160 = hop_s 0.01 s, n_fft 512, 80 Slaney mel filters 0-8000 Hz, ln(power + 1e-6)) "
        "at time n / fps + (k - T // 2) * hop_s, linearly interpolated between 10 ms frames where needed; "
        "T = 2 * round(window_frames / fps / 2 / hop_s) + 1 (65 at 25 fps, 55 at 30 fps for the default "
        "window_frames = 16); steps outside the audio hold the log-mel of silence (attr pad_value). "
        "A store made from a bare audio file (`minerf encode-audio SPEECH.wav --fps F -o OUT.h5`) holds "
        "only /audio (with attr fps) and /audio_features, no /frames.",
    ),
    "render": Node(
        "group", "transfer",
        {"expression": ("N", "E"), "camera_from_head": ("N", 4, 4), "target_frames": ("N",)},
        {"expression": "float32", "camera_from_head": "float32", "target_frames": "int64"},
        doc="In a store of rendered frames (`minerf transfer --store`, `minerf lipsync --store`): what "
        "each frame was asked to show, the ICT blendshape weights and the camera-from-head pose it was "
        "rendered with, and the frame of the identity's own clip that gave its background and latent code.",
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


def _attr_str(value) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


def expression_names(f: h5py.File) -> list[str]:
    """The blendshape names of /tracking/expression's columns (the /tracking attribute)."""
    return [_attr_str(v) for v in f["tracking"].attrs["expression_names"]]


def frames_codec(ds: h5py.Dataset) -> str:
    """LOSSLESS or JPEG: how a /frames dataset stores its frames (no check of the layout)."""
    codec = _attr_str(ds.attrs.get("codec"))
    return LOSSLESS if codec is None else codec


def _frames_shape(f: h5py.File, ds: h5py.Dataset, path: Path) -> tuple:
    """The (N, H, W, 3) shape /frames decodes to; checks the JPEG layout (FormatError)."""
    codec = frames_codec(ds)
    if codec == LOSSLESS:
        return ds.shape
    if codec != JPEG:
        raise FormatError(f"{path}: /frames has codec {codec!r}; this minerf ({__version__}) reads "
                          f"lossless and {JPEG!r} frames")
    if ds.ndim != 1 or h5py.check_vlen_dtype(ds.dtype) != np.uint8:
        raise FormatError(f"{path}: /frames (codec {JPEG!r}) should be an (N,) dataset of variable-length "
                          f"uint8 arrays, not shape {ds.shape} {ds.dtype}")
    missing = [a for a in ("quality", "height", "width") if a not in ds.attrs]
    if missing:
        raise FormatError(f"{path}: /frames (codec {JPEG!r}) lacks attribute(s) {', '.join(map(repr, missing))}")
    for where, obj in (("root", f), ("/frames", ds)):
        if int(obj.attrs["version"]) < JPEG_VERSION:
            raise FormatError(f"{path}: {where} says store version {int(obj.attrs['version'])}, but /frames holds "
                              f"JPEG frames (store version {JPEG_VERSION} or later)")
    return (ds.shape[0], int(ds.attrs["height"]), int(ds.attrs["width"]), 3)


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
            actual_shape = _frames_shape(f, ds, path) if name == "frames" and not dname else ds.shape
            if len(actual_shape) != len(shape):
                raise FormatError(f"{path}: {full} has shape {actual_shape}, expected {shape}")
            for sym, actual in zip(shape, actual_shape):
                if isinstance(sym, int):
                    if sym != actual:
                        raise FormatError(f"{path}: {full} has shape {actual_shape}, expected {shape}")
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


def frames_dataset(f: h5py.File, n: int, size: int, compression_level: int = 1, resizable: bool = False,
                   width: int | None = None) -> h5py.Dataset:
    """A lossless /frames dataset: (n, size, width or size, 3) uint8, one gzip chunk per frame.

    ``resizable`` allows growing/trimming it along N (for writers that learn N at the end).
    """
    width = size if width is None else width
    ds = f.create_dataset(
        "frames", shape=(n, size, width, 3), dtype="uint8", chunks=(1, size, width, 3),
        maxshape=(None, size, width, 3) if resizable else None,
        compression="gzip", compression_opts=compression_level, shuffle=False,
    )
    return ds


def jpeg_frames_dataset(f: h5py.File, n: int, height: int, width: int, quality: int) -> h5py.Dataset:
    """A JPEG /frames dataset: (n,) variable-length uint8, resizable, codec attributes set."""
    ds = f.create_dataset("frames", shape=(n,), maxshape=(None,), dtype=h5py.vlen_dtype(np.uint8),
                          chunks=(JPEG_CHUNK,))
    ds.attrs["codec"] = JPEG
    ds.attrs["quality"] = int(quality)
    ds.attrs["height"] = int(height)
    ds.attrs["width"] = int(width)
    ds.attrs["chroma_subsampling"] = _jpeg_sampling()[1]
    return ds


# ------------------------------------------------------------------------ JPEG frames

JPEG_CHUNK = 64  # frames per chunk of the (N,) dataset of references to the JPEG bytes


def _jpeg_sampling() -> tuple[list[int], str]:
    """cv2.imencode parameters for 4:4:4 chroma where this OpenCV offers them (4.8+)."""
    import cv2  # noqa: PLC0415 - heavy; only where frames are encoded

    flag = getattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR", None)
    if flag is None:  # pragma: no cover - depends on the OpenCV build
        return [], "4:2:0"
    return [int(flag), int(getattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR_444", 0x111111))], "4:4:4"


def check_jpeg_quality(quality: int, option: str = "--jpeg-quality") -> None:
    if not 1 <= int(quality) <= 100:
        raise UsageError(f"{option} must be in 1..100 (got {quality})")


def encode_jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    """One (H, W, 3) uint8 RGB frame -> the bytes of a JPEG file, as a 1-D uint8 array."""
    import cv2  # noqa: PLC0415

    params, _ = _jpeg_sampling()
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR),
                           [int(cv2.IMWRITE_JPEG_QUALITY), int(quality), *params])
    if not ok:
        raise MinerfError(f"JPEG encoding of a {frame.shape} frame failed")
    return buf.reshape(-1)


def decode_jpeg(data: np.ndarray | bytes, where: str = "frame") -> np.ndarray:
    """The bytes of a JPEG file -> (H, W, 3) uint8 RGB (MinerfError naming ``where`` if undecodable)."""
    import cv2  # noqa: PLC0415

    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray)) else np.asarray(data, np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if buf.size else None
    if img is None:
        raise MinerfError(f"{where} is not a decodable JPEG ({buf.size} bytes)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class FrameReader:
    """Random access to /frames in either encoding, as (H, W, 3) uint8 RGB arrays.

    ``FrameReader(f)`` takes an open store (or its /frames dataset). ``reader[i]`` is one
    frame (H, W, 3); ``reader[a:b]``, ``reader[[i, j, ...]]`` or ``reader[int_array]`` (any
    order, repeats allowed, negative indices count from the end) give (n, H, W, 3).
    Iterating yields the frames in order, read in blocks.
    """

    def __init__(self, f: h5py.File | h5py.Group | h5py.Dataset, block: int = 32):
        if isinstance(f, h5py.Dataset):
            ds = f
        else:
            if "frames" not in f:
                raise FormatError(f"{f.file.filename}: store has no /frames (run `minerf prep` first)")
            ds = f["frames"]
        self.dataset = ds
        self.codec = frames_codec(ds)
        self.block = max(1, int(block))
        self._where = f"{ds.file.filename}: {ds.name}"
        if self.codec == JPEG:
            self.height, self.width = int(ds.attrs["height"]), int(ds.attrs["width"])
            self.quality: int | None = int(ds.attrs["quality"])
        elif self.codec == LOSSLESS and ds.ndim == 4:
            self.height, self.width = int(ds.shape[1]), int(ds.shape[2])
            self.quality = None
        else:
            raise FormatError(f"{self._where}: frames of codec {self.codec!r} and shape {ds.shape} are not readable")
        self._n = int(ds.shape[0])

    @property
    def attrs(self) -> h5py.AttributeManager:
        return self.dataset.attrs

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The decoded shape (N, H, W, 3)."""
        return (self._n, self.height, self.width, 3)

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, self._n, self.block):
            yield from self[start:start + self.block]

    def _index(self, i: int) -> int:
        j = int(i) + self._n if i < 0 else int(i)
        if not 0 <= j < self._n:
            raise IndexError(f"frame index {i} out of range for {self._n} frames")
        return j

    def _decode(self, data: np.ndarray, i: int) -> np.ndarray:
        img = decode_jpeg(data, f"{self._where}[{i}]")
        if img.shape != (self.height, self.width, 3):
            raise MinerfError(f"{self._where}[{i}] decodes to {img.shape}, expected "
                              f"({self.height}, {self.width}, 3)")
        return img

    def encoded(self, i: int) -> np.ndarray:
        """The stored JPEG bytes of frame i (JPEG stores only), as a 1-D uint8 array."""
        if self.codec != JPEG:
            raise ValueError(f"{self._where}: frames are {self.codec}, not JPEG")
        return np.asarray(self.dataset[self._index(i)], np.uint8)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            i = self._index(key)
            if self.codec == JPEG:
                return self._decode(self.dataset[i], i)
            return self.dataset[i]
        if isinstance(key, slice):
            start, stop, step = key.indices(self._n)
            if step == 1 and self.codec == LOSSLESS:
                return self.dataset[start:max(start, stop)]
            idx = np.arange(start, stop, step)
        elif isinstance(key, (Sequence, np.ndarray)) and not isinstance(key, (str, bytes)):
            idx = np.asarray(key)
            if idx.dtype == bool:
                if idx.shape != (self._n,):
                    raise IndexError(f"boolean frame mask of shape {idx.shape} for {self._n} frames")
                idx = np.flatnonzero(idx)
            elif idx.size == 0:
                idx = idx.astype(np.int64)
            elif idx.dtype.kind not in "iu" or idx.ndim != 1:
                raise IndexError(f"frame indices must be ints, a slice or a 1-D int array (got {idx.dtype} "
                                 f"of shape {idx.shape})")
            idx = np.array([self._index(i) for i in idx.tolist()], np.int64)
        else:
            raise TypeError(f"frame index must be an int, a slice or a sequence of ints, not {type(key).__name__}")
        if len(idx) == 0:
            return np.empty((0, self.height, self.width, 3), np.uint8)
        uniq, inverse = np.unique(idx, return_inverse=True)
        frames = np.empty((len(uniq), self.height, self.width, 3), np.uint8)
        for a in range(0, len(uniq), self.block):
            part = uniq[a:a + self.block]
            if self.codec == LOSSLESS:
                if part[-1] - part[0] + 1 == len(part):  # a contiguous run: one hyperslab
                    frames[a:a + len(part)] = self.dataset[int(part[0]):int(part[-1]) + 1]
                else:
                    frames[a:a + len(part)] = self.dataset[part]
            else:
                raw = self.dataset[part] if len(part) > 1 else [self.dataset[int(part[0])]]
                for k, i in enumerate(part.tolist()):
                    frames[a + k] = self._decode(raw[k], i)
        if len(uniq) == len(idx) and np.array_equal(uniq, idx):
            return frames
        return frames[inverse.reshape(-1)]


class FrameWriter:
    """Write /frames frame by frame, lossless or JPEG; encoding and writing run in a worker thread.

    ``FrameWriter(f, height, width, jpeg_quality=None)`` creates /frames in the open store
    ``f`` (lossless gzip when ``jpeg_quality`` is None). Use as a context manager, ``put(i,
    frame)`` every (H, W, 3) uint8 RGB frame, then call ``trim(n)`` after the block to set
    the final length. Lossless frames go through a ``chunkio.ChunkWriter`` (pass one to
    share its thread with other datasets); JPEG frames are encoded with cv2.imencode in
    the writer's own thread (a ``chunkio.QueueWorker`` too). With ``measure=True`` (JPEG)
    each frame's PSNR against its decoded JPEG is kept in ``psnr`` (index -> dB).
    """

    def __init__(self, f: h5py.File, height: int, width: int, jpeg_quality: int | None = None, *,
                 chunk_writer=None, measure: bool = False, level: int = 1, maxsize: int = 16):
        self.height, self.width = int(height), int(width)
        self.quality = None if jpeg_quality is None else int(jpeg_quality)
        self.codec = LOSSLESS if self.quality is None else JPEG
        self.measure = measure
        self.psnr: dict[int, float] = {}
        self.seconds = {"encode": 0.0, "write": 0.0}
        self.bytes_out = 0
        self._own_chunks = None
        if self.codec == LOSSLESS:
            self.dataset = frames_dataset(f, 0, self.height, level, resizable=True, width=self.width)
            if chunk_writer is None:
                chunk_writer = self._own_chunks = ChunkWriter(level)
            self._chunks = chunk_writer
        else:
            check_jpeg_quality(self.quality)
            self.dataset = jpeg_frames_dataset(f, 0, self.height, self.width, self.quality)
            self._jpeg = _JpegWorker(self, maxsize)

    def __enter__(self) -> "FrameWriter":
        if self.codec == JPEG:
            self._jpeg.__enter__()
        elif self._own_chunks is not None:
            self._own_chunks.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.codec == JPEG:
            self._jpeg.__exit__(exc_type, exc, tb)
        elif self._own_chunks is not None:
            self._own_chunks.__exit__(exc_type, exc, tb)
            self.seconds["encode"] = self._own_chunks.seconds["compress"]
            self.seconds["write"] = self._own_chunks.seconds["write"]
            self.bytes_out = self._own_chunks.bytes_out

    def put(self, index: int, frame: np.ndarray) -> None:
        """Queue frame ``index`` ((H, W, 3) uint8 RGB)."""
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame of shape {frame.shape} {frame.dtype}, expected "
                             f"({self.height}, {self.width}, 3) uint8")
        if self.codec == LOSSLESS:
            self._chunks.put(self.dataset, index, frame)
        else:
            self._jpeg.submit((index, frame))

    def trim(self, n: int) -> None:
        """Set the final number of frames (after the block has ended)."""
        self.dataset.resize(n, axis=0)


class _JpegWorker(QueueWorker):
    """Encode queued (index, frame) items as JPEG into a :class:`FrameWriter`'s dataset."""

    thread_name = "minerf-jpeg-writer"

    def __init__(self, writer: FrameWriter, maxsize: int):
        super().__init__(maxsize)
        self.writer = writer

    def handle(self, item) -> None:
        w, (index, frame) = self.writer, item
        t0 = time.perf_counter()
        data = encode_jpeg(frame, w.quality)
        if w.measure:
            from .metrics import psnr  # noqa: PLC0415 - cv2, like the encoder

            w.psnr[index] = psnr(frame, decode_jpeg(data))
        t1 = time.perf_counter()
        grow_to(w.dataset, index)
        w.dataset[index] = data
        w.seconds["encode"] += t1 - t0
        w.seconds["write"] += time.perf_counter() - t1
        w.bytes_out += int(data.nbytes)


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
            if name == "frames" and isinstance(obj, h5py.Dataset) and frames_codec(obj) == JPEG:
                # the decoded shape, like a lossless store's; how it is stored beside it
                entry["shape"] = [len(obj), int(obj.attrs["height"]), int(obj.attrs["width"]), 3]
                entry["dtype"] = "uint8"
                entry["stored"] = {"codec": JPEG, "shape": list(obj.shape), "dtype": "vlen uint8"}
            elif isinstance(obj, h5py.Dataset):
                entry["shape"] = list(obj.shape)
                entry["dtype"] = str(obj.dtype)
            else:
                entry["datasets"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in obj.items()}
            attrs = {k: v for k, v in obj.attrs.items() if k not in ("format", "version", "created_by")}
            entry["attrs"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in attrs.items()}
            out["nodes"][name] = entry
        return out
