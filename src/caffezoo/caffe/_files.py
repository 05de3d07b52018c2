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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def looks_binary(head: bytes) -> bool:
    """True for bytes no text editor wrote: NUL bytes or control characters."""
    if b"\0" in head:
        return True
    controls = sum(b < 9 or 13 < b < 32 for b in head)
    return controls > max(2, len(head) // 100)
