"""File helpers shared by the Caffe readers and writers, atomic writes among them.

The atomic writer lives here because the Caffe-format layer imports nothing
outside ``caffe/`` but :mod:`caffezoo.errors`; the rest of the zoo uses it as
:mod:`caffezoo.atomic`.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ..errors import WriteError


def net_file_found(model_dir: Path, name: str) -> bool:
    """Whether the net a solver names is in ``model_dir``: at that path below it, or by its file name.

    Caffe resolves the path from where it runs (usually Caffe's root, hence
    ``models/NAME/train_val.prototxt``); the file itself should be in the model directory.
    """
    return (model_dir / name).is_file() or (model_dir / Path(name).name).is_file()


def read_regular(path: str | os.PathLike[str], most: int | None = None) -> bytes:
    """The bytes of the regular file at ``path`` (links followed); with ``most``, at most
    ``most + 1`` of them, so that a caller sees the file is larger than it takes.

    >>> read_regular("/dev/zero")
    Traceback (most recent call last):
    OSError: [Errno 22] not a regular file (a pipe or a device): '/dev/zero'

    A pipe or a device raises OSError unread: a FIFO would keep its reader waiting for a
    writer, /dev/zero would never end. It is opened without waiting, then looked at.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file (a pipe or a device)", os.fspath(path))
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read() if most is None else f.read(most + 1)
    finally:
        os.close(fd)


def open_error(kind: type[Exception], path: Path, error: OSError, expected: str) -> Exception:
    """A ``kind`` error saying why ``path`` could not be opened, in words."""
    if isinstance(error, IsADirectoryError):
        return kind(f"{path}: is a directory, expected {expected}")
    if isinstance(error, FileNotFoundError):
        return kind(f"{path}: no such file")
    return kind(f"{path}: cannot read: {error.strerror}")


_CONTROLS = bytes([*range(9), *range(14, 32)])  # control bytes but tab, newlines, form feed


def looks_binary(head: bytes) -> bool:
    """True for bytes no text editor wrote: NUL bytes or control characters."""
    if b"\0" in head:
        return True
    controls = len(head) - len(head.translate(None, _CONTROLS))  # counted in C, not byte by byte
    return controls > max(2, len(head) // 100)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_open` (``durable``: see there)."""
    with atomic_open(path, durable=durable) as f:
        f.write(data)


@contextmanager
def atomic_open(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success.

    >>> with atomic_open("net.caffemodel") as f:     # doctest: +SKIP
    ...     f.write(b"...")

    A failure (or Ctrl-C) half-way leaves ``path`` as it was: never a torn file.
    An existing file keeps its mode; a new one gets the mode ``open()`` would
    give it. A folder that is missing or read-only, or a full disk, raises
    :class:`~caffezoo.errors.WriteError` naming ``path``.

    ``durable=False`` skips the ``fsync`` before the rename (about a millisecond or more
    each): for a cache whose reader rejects a file a crash left empty, and for
    which a lost file costs only work done again.
    """
    import tempfile  # here: every command imports this module, few of them write

    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        # a pipe or a device (/dev/stdout, /dev/full): renaming a file over it would replace it
        raise WriteError(f"{path}: cannot write: not a regular file (a pipe or a device)")
    if st is not None:
        mode = st.st_mode & 0o7777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask  # mkstemp's own is 0600
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _write_error(path, e) from e
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        # Writing fails without a file name; an error naming another file is the caller's own.
        if isinstance(e, OSError) and e.filename in (None, tmp, str(path)):
            raise _write_error(path, e) from e
        raise


def _write_error(path: Path, e: OSError) -> WriteError:
    return WriteError(f"{path}: cannot write: {e.strerror or e}")
