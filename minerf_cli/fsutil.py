"""Output paths: never overwrite without --force, write to a temporary name, rename into place."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import FormatError, MinerfError, UsageError


def check_output(path: Path, force: bool) -> None:
    """Refuse an existing output unless --force; refuse a missing parent directory."""
    path = Path(path)
    if path.exists() and not force:
        raise UsageError(f"{path}: output exists (use --force to overwrite)")
    if not path.parent.exists():
        raise UsageError(f"{path}: directory {path.parent} does not exist")


@contextlib.contextmanager
def atomic_output(path: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place on success.

    The temporary name keeps ``path``'s suffix (``.x.mp4`` -> ``.x.<random>.part.mp4``) so
    tools that pick a format from the name (ffmpeg) work on it. On any exception the
    temporary file is removed, so nothing half-written is left.
    """
    path = Path(path)
    check_output(path, force)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); give it the permissions of a normal new file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_atomically(path: Path, write) -> None:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` (replacing it): a reader
    sees the old file or the new one, never half of one."""
    with atomic_output(Path(path), force=True) as tmp:
        write(tmp)


def load_tensor_file(path: Path, fmt: str, version: int, what: str, map_location="cpu") -> dict:
    """A dict of tensors and plain values saved with torch.save, read with
    ``torch.load(weights_only=True)`` (no arbitrary unpickling) and checked to carry
    ``format == fmt`` and ``version <= version``; FormatError (exit 3) naming ``what``
    (e.g. "minerf checkpoint") otherwise."""
    import torch  # noqa: PLC0415 - only the model stages need it

    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a format error
        first = (str(exc).strip().splitlines() or [""])[0]
        raise FormatError(f"{path}: not a readable {what} ({type(exc).__name__}: {first})") from None
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise FormatError(f"{path}: not a {what}")
    if int(obj.get("version", 0)) > version:
        raise FormatError(f"{path}: {what} version {obj.get('version')} is newer than this minerf understands")
    return obj


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def require_file(path: Path, what: str = "input") -> Path:
    """A readable, non-empty regular file, or a one-line error."""
    path = Path(path)
    if not path.exists():
        raise MinerfError(f"{path}: {what} not found")
    if not path.is_file():
        raise MinerfError(f"{path}: {what} is not a file")
    if path.stat().st_size == 0:
        raise MinerfError(f"{path}: {what} is empty")
    return path
