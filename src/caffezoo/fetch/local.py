"""``file://`` sources: a range of a local file, answered like an HTTP server with ``If-Range`` would.

>>> path_of("file:///srv/zoo/blobs/sha1/ab")
'/srv/zoo/blobs/sha1/ab'

The file's identity (inode, size, modification time) stands in for an ETag:
a file replaced or rewritten since the last request answers from byte 0, as a
server does when ``If-Range`` no longer matches, and a file that changes while
it is read is a failed attempt.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

from .hashing import BUFFER_SIZE, Expected
from .retry import Retry, SourceFailed, WrongFile
from .urls import Source
from .wire import Answer

__all__ = ["open_local", "path_of"]


def path_of(url: str) -> str:
    """The local path of a ``file://`` URL (only this machine's: no host, or localhost)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise SourceFailed(f"{url}: file:// URLs on another host ({parts.netloc}) are not supported")
    return unquote(parts.path)


def _identity(st: os.stat_result) -> str:
    return f'"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"'


@contextlib.contextmanager
def open_local(
    source: Source, start: int, end: int | None, validator: str | None, expected: Expected
) -> Iterator[Answer]:
    """Bytes ``[start, end)`` of the file (``end`` None: to its end), read in 1 MiB pieces."""
    path = path_of(source.url)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise SourceFailed(f"{path}: no such file") from None
    except OSError as e:
        raise SourceFailed(f"{path}: {e.strerror}") from None
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise SourceFailed(f"{path} is not a file")
        total = before.st_size
        if expected.size is not None and total != expected.size:
            raise WrongFile(f"{path} has {total} bytes, expected {expected.size}")
        if expected.max_size is not None and total > expected.max_size:
            raise WrongFile(f"{path} has {total} bytes, more than the {expected.max_size} allowed")
        me = _identity(before)
        offset = start if validator in (None, me) else 0  # changed since: the whole file, from 0
        stop = total if end is None or offset == 0 and start else min(end, total)

        def body() -> Iterator[bytes | memoryview]:
            # Into one buffer, reused (a fresh 1 MiB bytes object per read faults its pages in
            # one by one); a full one is handed over as a view, valid until the next chunk.
            buf = memoryview(bytearray(min(BUFFER_SIZE, max(0, stop - offset))))
            at = offset
            while at < stop:
                want = min(len(buf), stop - at)
                try:
                    n = os.preadv(fd, [buf[:want]], at)
                except OSError as e:
                    raise SourceFailed(f"{path}: {e.strerror or e}") from None
                if not n:
                    raise Retry(f"{path} ended at {at} bytes, expected {total}")
                at += n
                yield buf[:n] if n == len(buf) else bytes(buf[:n])
            after = os.stat(path)
            if _identity(after) != me or after.st_ino != before.st_ino:
                raise Retry(f"{path} changed while it was being copied")

        status = 206 if offset else 200
        yield Answer(source.url, status, offset, total, True, me, None, "", path, body=body)
    finally:
        os.close(fd)
