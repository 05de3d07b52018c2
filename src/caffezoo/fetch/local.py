"""``file://`` sources: a kernel copy (``copy_file_range``) while a thread hashes what it copied.

>>> path_of("file:///srv/zoo/blobs/sha1/ab")
'/srv/zoo/blobs/sha1/ab'
"""

from __future__ import annotations

import os
import stat
from urllib.parse import unquote, urlsplit

from .hashing import Expected
from .partial import Partial
from .retry import Retry, SourceFailed
from .urls import Source

__all__ = ["copy", "path_of"]


def path_of(url: str) -> str:
    """The local path of a ``file://`` URL (only this machine's: no host, or localhost)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise SourceFailed(f"{url}: file:// URLs on another host ({parts.netloc}) are not supported")
    return unquote(parts.path)


def copy(source: Source, partial: Partial, expected: Expected) -> None:
    """Copy the rest of the file into ``partial``, from where the partial stands."""
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
            raise SourceFailed(f"{path} has {total} bytes, expected {expected.size}")
        if expected.max_size is not None and total > expected.max_size:
            raise SourceFailed(f"{path} has {total} bytes, more than the {expected.max_size} allowed")
        if partial.size > total:
            partial.restart()
        partial.resumed = partial.resumed or partial.size > 0
        partial.ensure_space(total)
        partial.remember(source.url, None, None, total)
        try:
            partial.write_file_range(fd, path, partial.size, total - partial.size)
        except OSError as e:  # reading the source; a full disk is a DiskSpaceError instead
            raise SourceFailed(f"{path}: {e.strerror or e}") from None
        after = os.stat(path)
        if (after.st_ino, after.st_size, after.st_mtime_ns) != (
            before.st_ino,
            total,
            before.st_mtime_ns,
        ):
            partial.restart()
            raise Retry(f"{path} changed while it was being copied")
    finally:
        os.close(fd)
