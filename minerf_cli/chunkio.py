"""Writing gzip-chunked HDF5 datasets fast: deflate in a worker thread, write raw chunks.

h5py compresses chunks in the calling thread while holding its global lock. Here the
deflate runs in a worker thread instead (``isal`` when installed, about 4x faster than
zlib at level 1, else the standard ``zlib``; both release the GIL) and the compressed
bytes go in with ``write_direct_chunk``. The datasets stay ordinary gzip datasets that
plain h5py (or h5ls/h5dump) reads: the deflate filter decodes any zlib stream. A bounded
queue keeps memory flat whatever the clip length.
"""

from __future__ import annotations

import queue
import threading
import time
import zlib

import h5py
import numpy as np

try:  # optional accelerator: same zlib stream format, ~4x the speed
    from isal import isal_zlib as _fast_zlib
except ImportError:  # pragma: no cover - depends on the environment
    _fast_zlib = None

DEFLATE_BACKEND = "isal" if _fast_zlib is not None else "zlib"


def deflate(data: bytes | memoryview, level: int = 1) -> bytes:
    """A zlib stream of ``data`` (what HDF5's gzip filter stores)."""
    if _fast_zlib is not None:
        return _fast_zlib.compress(data, min(level, 3))
    return zlib.compress(data, level)


def chunked_dataset(parent: h5py.Group, name: str, item_shape: tuple[int, ...], dtype: str,
                    initial: int = 0, level: int = 1) -> h5py.Dataset:
    """A resizable (n, *item_shape) dataset, one gzip chunk per item."""
    return parent.create_dataset(
        name, shape=(initial, *item_shape), maxshape=(None, *item_shape), dtype=dtype,
        chunks=(1, *item_shape), compression="gzip", compression_opts=level, shuffle=False)


class QueueWorker:
    """Handle queued items in one worker thread: ``submit(item)`` from the producer,
    ``handle(item)`` (a subclass's) in the worker.

    Use as a context manager. The bounded queue keeps memory flat. An error in the worker is
    raised in the producer at its next ``submit`` or at the end of the block; the worker
    keeps draining the queue after an error so the producer never blocks.
    """

    thread_name = "minerf-worker"

    def __init__(self, maxsize: int):
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._error: BaseException | None = None

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._queue.put(None)
        self._thread.join()
        if exc_type is None and self._error is not None:
            raise self._error

    def submit(self, item) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def handle(self, item) -> None:  # pragma: no cover - subclasses
        raise NotImplementedError

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # keep draining so the producer never blocks
            try:
                self.handle(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the producer
                self._error = exc


def grow_to(dset: h5py.Dataset, index: int) -> None:
    """Make a resizable dataset long enough for ``dset[index]`` (doubling, so O(log n) resizes)."""
    if index >= dset.shape[0]:
        dset.resize(max(index + 1, 2 * dset.shape[0]), axis=0)


class ChunkWriter(QueueWorker):
    """Compress and write whole-item chunks ``dset[index] = array`` in a worker thread.

    Use as a context manager. Datasets grow as needed (they must be resizable on axis 0);
    call ``trim(dset, n)`` after the block to set their final length. An error in the
    worker is raised in the caller at its next ``put`` or at the end of the block.
    """

    thread_name = "minerf-chunk-writer"

    def __init__(self, level: int = 1, maxsize: int = 24):
        super().__init__(maxsize)
        self.level = level
        self.seconds = {"compress": 0.0, "write": 0.0}
        self.bytes_in = 0
        self.bytes_out = 0

    def put(self, dset: h5py.Dataset, index: int, array: np.ndarray) -> None:
        """Queue ``array`` (exactly one chunk: dset's shape without axis 0) for ``dset[index]``."""
        if self._error is not None:
            raise self._error
        if array.shape != dset.chunks[1:] or array.dtype != dset.dtype:
            raise ValueError(f"{dset.name}: chunk of shape {array.shape} {array.dtype}, "
                             f"expected {dset.chunks[1:]} {dset.dtype}")
        self.submit((dset, index, array))

    def handle(self, item) -> None:
        dset, index, array = item
        t0 = time.perf_counter()
        raw = np.ascontiguousarray(array).data
        blob = deflate(raw, self.level)
        t1 = time.perf_counter()
        grow_to(dset, index)
        dset.id.write_direct_chunk((index,) + (0,) * (dset.ndim - 1), blob)
        self.seconds["compress"] += t1 - t0
        self.seconds["write"] += time.perf_counter() - t1
        self.bytes_in += raw.nbytes
        self.bytes_out += len(blob)

    @staticmethod
    def trim(dset: h5py.Dataset, n: int) -> None:
        """Set the dataset's final length (after the writer's block has ended)."""
        dset.resize(n, axis=0)
