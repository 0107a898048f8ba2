"""`minerf repack`: a copy of a store with its frames re-encoded, optionally cut to its first frames.

The frames are re-encoded as JPEG of a given quality (or lossless); every other node is
copied unchanged, attributes included (h5py's object copy: raw chunks, same filters).
With a frame limit every per-frame dataset of the schema (a leading N in its symbolic
shape: /frames, /landmarks/*, /masks/*, /tracking/camera_from_head, expression,
fit_error, /audio_features/features) keeps its first N frames and /audio/pcm its first
round(N * sample_rate / fps) samples. The PSNR of the new frames against the old ones is
measured while they are written (in store.FrameWriter's worker thread). The copy is
written under a temporary name and renamed into place; the input is never modified.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from . import __version__, store
from .errors import UsageError
from .fsutil import atomic_output, check_output
from .output import progress_bar, warn

COMMAND = "repack"
DEFAULT_QUALITY = 90
# Datasets with one row per frame ("frames", "landmarks/points", ...), from the schema.
PER_FRAME = frozenset(
    f"{name}/{dname}" if dname else name
    for name, node in store.SCHEMA.items()
    for dname, shape in node.shapes.items()
    if shape and shape[0] == "N"
)
# Every dataset the schema knows ("background", "tracking/identity", ...).
KNOWN = frozenset(f"{name}/{dname}" if dname else name for name, node in store.SCHEMA.items() for dname in node.shapes)
# /frames attributes that describe its encoding: set by the writer, not copied.
_CODEC_ATTRS = ("codec", "quality", "height", "width", "chroma_subsampling")
_STAMP_ATTRS = ("format", "version", "created_by")
COPY_BLOCK_BYTES = 32 << 20


@dataclass(frozen=True)
class RepackOptions:
    jpeg_quality: int | None = DEFAULT_QUALITY  # None: lossless frames
    max_frames: int | None = None  # None: every frame
    force: bool = False

    def check(self) -> None:
        """Usage errors (exit 2) for impossible option values."""
        if self.jpeg_quality is not None:
            store.check_jpeg_quality(self.jpeg_quality)
        if self.max_frames is not None and self.max_frames < 1:
            raise UsageError(f"--max-frames must be >= 1 (got {self.max_frames})")


def _copy_attrs(src: h5py.HLObject, dst: h5py.HLObject, skip: tuple[str, ...] = ()) -> None:
    """Copy attributes with their stored types (fixed/variable strings, arrays)."""
    for key in src.attrs:
        if key in skip:
            continue
        attr_id = h5py.h5a.open(src.id, key.encode())
        dst.attrs.create(key, src.attrs[key], dtype=attr_id.dtype)


def _copy_cut(src: h5py.Dataset, parent: h5py.Group, name: str, length: int) -> h5py.Dataset:
    """Copy the first ``length`` rows of ``src`` into a new dataset with the same filters."""
    shape = (length, *src.shape[1:])
    resizable = src.maxshape[0] is None
    maxshape = (None if resizable else length, *src.maxshape[1:])
    kwargs: dict = {}
    if src.chunks:
        chunk0 = src.chunks[0] if resizable else max(1, min(src.chunks[0], length))
        kwargs.update(chunks=(chunk0, *src.chunks[1:]), compression=src.compression,
                      compression_opts=src.compression_opts, shuffle=src.shuffle, fletcher32=src.fletcher32,
                      scaleoffset=src.scaleoffset)
    if src.dtype.kind != "O" and src.fillvalue is not None:
        kwargs["fillvalue"] = src.fillvalue
    dst = parent.create_dataset(name, shape=shape, maxshape=maxshape, dtype=src.dtype, **kwargs)
    row = max(1, int(np.prod(src.shape[1:], dtype=np.int64)) * src.dtype.itemsize)
    step = max(1, COPY_BLOCK_BYTES // row) if src.dtype.kind != "O" else 64
    if src.chunks:
        step = max(src.chunks[0], step // src.chunks[0] * src.chunks[0])
    for a in range(0, length, step):
        b = min(length, a + step)
        dst[a:b] = src[a:b]
    _copy_attrs(src, dst)
    return dst


def _same_encoding(reader: store.FrameReader, quality: int | None) -> bool:
    if quality is None:
        return reader.codec == store.LOSSLESS
    return reader.codec == store.JPEG and reader.quality == quality


def _write_frames(fin: h5py.File, fout: h5py.File, reader: store.FrameReader, n: int, quality: int | None,
                  path: Path) -> dict:
    """/frames of the copy: re-encoded (PSNR measured), or copied when the encoding is the same."""
    src = fin["frames"]
    if _same_encoding(reader, quality):
        # re-encoding JPEG at its own quality would only lose more; lossless is lossless
        if n == len(reader):
            fin.copy(src, fout, name="frames")
        else:
            _copy_cut(src, fout, "frames", n)
        store.stamp(fout["frames"], COMMAND)
        return {"reencoded": False, "psnr": [], "identical": n, "bytes": None}
    with store.FrameWriter(fout, reader.height, reader.width, quality, measure=True) as writer, \
            progress_bar(COMMAND, n) as bar:
        task = bar.add_task(COMMAND, total=n, info=path.name)
        t0 = time.perf_counter()
        for start in range(0, n, reader.block):
            for k, frame in enumerate(reader[start:min(n, start + reader.block)]):
                writer.put(start + k, frame)
            done = min(n, start + reader.block)
            rate = done / max(time.perf_counter() - t0, 1e-6)
            bar.update(task, completed=done, info=f"{path.name} {rate:.0f} frames/s")
    writer.trim(n)
    ds = writer.dataset
    _copy_attrs(src, ds, skip=_CODEC_ATTRS + _STAMP_ATTRS)
    store.stamp(ds, COMMAND)
    values = [writer.psnr.get(i, math.inf) for i in range(n)]
    return {"reencoded": True, "psnr": [v for v in values if math.isfinite(v)],
            "identical": sum(not math.isfinite(v) for v in values),
            "bytes": writer.bytes_out if writer.codec == store.JPEG else int(ds.id.get_storage_size())}


def _copy_node(fin: h5py.File, fout: h5py.File, name: str, n: int | None, fps: float) -> list[str]:
    """Copy top-level node ``name``; with ``n`` cut its per-frame datasets. Returns the paths cut."""
    obj = fin[name]
    if n is None:
        fin.copy(obj, fout, name=name)
        return []
    if isinstance(obj, h5py.Dataset):
        if name in PER_FRAME:
            _copy_cut(obj, fout, name, n)
            return [f"/{name}"]
        fin.copy(obj, fout, name=name)
        return []
    group = fout.create_group(name)
    _copy_attrs(obj, group)
    cut = []
    for key, child in obj.items():
        full = f"{name}/{key}"
        if isinstance(child, h5py.Dataset) and full in PER_FRAME:
            _copy_cut(child, group, key, n)
            cut.append(f"/{full}")
        elif full == "audio/pcm":
            samples = int(round(n * float(obj.attrs["sample_rate"]) / fps))
            if samples < len(child):
                _copy_cut(child, group, key, samples)
                cut.append(f"/{full}")
            else:
                obj.copy(child, group, name=key)
        else:
            obj.copy(child, group, name=key)
    return cut


def repack(src: Path, dst: Path, opts: RepackOptions = RepackOptions()) -> dict:
    """Write a copy of store ``src`` at ``dst`` with re-encoded frames; returns the JSON summary."""
    src, dst = Path(src), Path(dst)
    opts.check()
    check_output(dst, opts.force)
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise UsageError(f"{dst}: is the input store; repack writes a copy (choose another -o)")
    t0 = time.perf_counter()
    with store.open_store(src) as fin:
        reader = store.FrameReader(fin)
        n_in = len(reader)
        n = n_in if opts.max_frames is None else min(n_in, opts.max_frames)
        fps = float(fin["frames"].attrs["fps"])
        cut: list[str] = []
        with atomic_output(dst, opts.force) as tmp:
            with h5py.File(tmp, "w") as fout:
                _copy_attrs(fin, fout)
                fout.attrs["version"] = store.VERSION
                fout.attrs["repacked_by"] = f"minerf {__version__} {COMMAND}"
                fout.attrs["repacked_from"] = str(src.resolve())
                frames = _write_frames(fin, fout, reader, n, opts.jpeg_quality, dst)
                if n < n_in:
                    cut.append("/frames")
                for name in fin:
                    if name != "frames":
                        cut += _copy_node(fin, fout, name, n if n < n_in else None, fps)
                if n < n_in:
                    for name, obj in fout.items():
                        for ds in [obj] if isinstance(obj, h5py.Dataset) else obj.values():
                            if (isinstance(ds, h5py.Dataset) and ds.name.lstrip("/") not in KNOWN
                                    and ds.ndim and ds.shape[0] == n_in):
                                warn(f"{src}: {ds.name} is not in the store schema; copied whole ({n_in} rows)")
                audio_samples = int(fout["audio/pcm"].shape[0]) if "audio/pcm" in fout else None
            with h5py.File(tmp, "r") as f:
                store.validate(f, dst)
    psnrs = frames["psnr"]
    bytes_in, bytes_out = src.stat().st_size, dst.stat().st_size
    return {
        "input": str(src),
        "output": str(dst),
        "frames": n,
        "frames_in": n_in,
        "codec_in": reader.codec,
        "jpeg_quality_in": reader.quality,
        "codec": store.LOSSLESS if opts.jpeg_quality is None else store.JPEG,
        "jpeg_quality": opts.jpeg_quality,
        "reencoded": frames["reencoded"],
        # mean over frames of each frame's PSNR against the input's frame (identical frames,
        # whose PSNR is infinite, are counted apart); null when every frame is identical
        "psnr_db": round(float(np.mean(psnrs)), 3) if psnrs else None,
        "psnr_min_db": round(float(np.min(psnrs)), 3) if psnrs else None,
        "identical_frames": frames["identical"],
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "ratio": round(bytes_in / max(bytes_out, 1), 2),
        "frame_bytes_mean": None if frames["bytes"] is None else round(frames["bytes"] / max(n, 1)),
        "cut": cut,
        "audio_samples": audio_samples,
        "seconds": round(time.perf_counter() - t0, 3),
    }
