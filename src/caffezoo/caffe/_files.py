"""File helpers shared by the Caffe readers and writers."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success.

    >>> with atomic_open("net.caffemodel") as f:     # doctest: +SKIP
    ...     f.write(b"...")

    A failure (or Ctrl-C) half-way leaves ``path`` as it was: never a torn file.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode & 0o7777  # keep an existing file's mode
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask  # what open() would give a new file (mkstemp's is 0600)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def open_error(kind: type[Exception], path: Path, error: OSError, expected: str) -> Exception:
    """A ``kind`` error saying why ``path`` could not be opened, in words."""
    if isinstance(error, IsADirectoryError):
        return kind(f"{path}: is a directory, expected {expected}")
    if isinstance(error, FileNotFoundError):
        return kind(f"{path}: no such file")
    return kind(f"{path}: cannot read: {error.strerror}")


def looks_binary(head: bytes) -> bool:
    """True for bytes no text editor wrote: NUL bytes or control characters."""
    if b"\0" in head:
        return True
    controls = sum(b < 9 or 13 < b < 32 for b in head)
    return controls > max(2, len(head) // 100)
