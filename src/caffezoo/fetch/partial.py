"""Partial downloads: one unique file per download, resumable by the next attempt or run.

Each download writes ``<dir>/<sha1>.<id>.part`` with a sidecar
``<sha1>.<id>.json`` naming its owner (host, boot, pid and the pid's start
time) and the server's validators (ETag, Last-Modified). A new download first
looks for a partial of the same blob whose owner is gone — killed, crashed,
rebooted — and adopts it by renaming it to its own name: a rename succeeds
for exactly one process, so two runs never write into one file, and a live
download's file is never touched. Locks only save bandwidth; this is what keeps
bytes correct where locks silently do nothing (some network file systems).

Bytes are written in batches of up to 1 MiB with ``writev`` and then handed to
a :class:`~caffezoo.fetch.hashing.StreamHasher`, so the hash always covers
exactly the bytes in the file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DiskSpaceError
from .hashing import BUFFER_SIZE, Digests, StreamHasher
from .records import write_json_atomic

__all__ = [
    "MAX_CHUNKS",
    "MAX_DELAY",
    "Partial",
    "STALE_SECONDS",
    "disk_error",
    "owner",
    "owner_alive",
    "partials_of",
    "size_of",
]


# Another host's partial left untouched this long is taken to be abandoned.
STALE_SECONDS = 600
# A batch is written once it holds this many chunks (writev's IOV_MAX is 1024)...
MAX_CHUNKS = 512
# ...or when it is this old, so a slow download still reaches the disk (and survives a kill).
MAX_DELAY = 0.25


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def _proc_start(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of ``pid``, from /proc; None if unknown."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rpartition(")")[2].split()
    return (fields[0], fields[19]) if len(fields) > 19 else None


def owner() -> dict[str, Any]:
    """Who this process is, precisely enough to tell later whether it is still running."""
    proc = _proc_start(os.getpid())
    return {
        "host": socket.gethostname(),
        "boot": _read("/proc/sys/kernel/random/boot_id"),
        "pid": os.getpid(),
        "start": proc[1] if proc else None,
    }


def owner_alive(meta: dict[str, Any], part: Path) -> bool:
    """Is the process that wrote ``part`` (described by ``meta``) still running?"""
    if meta.get("host") != socket.gethostname():
        try:  # another machine: judge by whether the file still grows
            return time.time() - part.stat().st_mtime < STALE_SECONDS
        except OSError:
            return False
    boot = _read("/proc/sys/kernel/random/boot_id")
    if meta.get("boot") and boot and meta["boot"] != boot:
        return False
    pid = meta.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return True  # another thread of this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    proc = _proc_start(pid)
    if proc is not None:
        state, start = proc
        if state in ("Z", "X") or (meta.get("start") and start != meta["start"]):
            return False  # a zombie, or the pid now belongs to another process
    return True


def _load_meta(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def disk_error(e: OSError, path: Path, kept: int) -> DiskSpaceError:
    """A person-readable error for a failed write to a partial file."""
    reason = {
        errno.ENOSPC: "no space left on the device",
        errno.EFBIG: "file too large (a file-size limit such as `ulimit -f` is in force)",
        errno.EDQUOT: "disk quota exceeded",
    }.get(e.errno or 0, e.strerror or str(e))
    return DiskSpaceError(
        f"writing {path}: {reason}; the {kept} bytes received so far are kept and the next "
        f"run resumes from them (free some space first; `caffezoo cache prune` removes leftovers)"
    )


def partials_of(directory: Path, sha1: str) -> list[Path]:
    return sorted(directory.glob(f"{sha1}.*.part"))


class Partial:
    """A partial download owned by this process. Use :meth:`claim` to get one."""

    def __init__(self, path: Path, meta: dict[str, Any], hasher: StreamHasher, fd: int, size: int):
        self.path = path
        self.meta_path = path.with_suffix(".json")
        self.meta = meta
        self.size = size
        self.resumed = size > 0
        self.content_type: str | None = None
        self.on_bytes: Callable[[int], None] | None = None
        self._hasher = hasher
        self._fd = fd
        self._pending: list[bytes] = []
        self._pending_n = 0
        self._last_flush = time.monotonic()

    @classmethod
    def claim(cls, directory: Path, sha1: str, sha256: bool = False) -> Partial:
        """Adopt the largest partial of ``sha1`` left by a process that is gone, or start one."""
        directory.mkdir(parents=True, exist_ok=True)
        mine = directory / f"{sha1}.{uuid.uuid4().hex[:16]}.part"
        meta: dict[str, Any] = {"owner": owner()}
        write_json_atomic(mine.with_suffix(".json"), meta)  # owner first: never a part without one
        adopted = False
        for other in sorted(partials_of(directory, sha1), key=size_of, reverse=True):
            if other == mine:
                continue
            other_meta = _load_meta(other.with_suffix(".json"))
            if owner_alive(other_meta.get("owner", {}), other):
                continue
            try:
                if not adopted:
                    os.rename(other, mine)  # exactly one process wins this
                    adopted = True
                    meta.update({k: v for k, v in other_meta.items() if k != "owner"})
                    write_json_atomic(mine.with_suffix(".json"), meta)
                else:
                    other.unlink()  # a smaller leftover of a dead download
            except FileNotFoundError:
                continue  # another process adopted or removed it first
            other.with_suffix(".json").unlink(missing_ok=True)
        fd = os.open(mine, os.O_WRONLY | os.O_CREAT, 0o644)
        size = os.lseek(fd, 0, os.SEEK_END)
        hasher = StreamHasher(sha256=sha256)
        if size:
            hasher.feed_file(mine, 0, size)  # re-hash what is there while the network starts
        return cls(mine, meta, hasher, fd, size)

    # -- writing --------------------------------------------------------------------------

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` (written and hashed in batches)."""
        self._pending.append(chunk)
        self._pending_n += len(chunk)
        if (
            self._pending_n >= BUFFER_SIZE
            or len(self._pending) >= MAX_CHUNKS
            or time.monotonic() - self._last_flush > MAX_DELAY
        ):
            self.flush()

    def flush(self) -> None:
        """Write the pending batch, then queue it for hashing."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        batch, n = self._pending, self._pending_n
        self._pending, self._pending_n = [], 0
        written = 0
        try:
            written = os.writev(self._fd, batch)
            while written < n:  # a short write: write the rest, which raises if the disk is full
                written += os.write(self._fd, b"".join(batch)[written:])
        except OSError as e:
            # The bytes that did reach the file stay for the next run (which re-hashes them);
            # this partial is finished: the hasher has not seen them.
            self.size += written
            raise disk_error(e, self.path, self.size) from None
        self.size += n
        self._hasher.feed(batch)
        if self.on_bytes is not None:
            self.on_bytes(self.size)

    def write_file_range(self, src_fd: int, src_path: str, offset: int, length: int) -> None:
        """Append ``length`` bytes of an open file from ``offset``, copied by the kernel.

        Each copied piece is then hashed from this file, by the hasher's thread
        while the kernel copies the next: the hash covers exactly the bytes
        written, even when the copy stops half-way.
        """
        self.flush()
        done = 0
        chunk = 8 * BUFFER_SIZE
        try:
            while done < length:
                n = _copy_range(src_fd, self._fd, offset + done, min(chunk, length - done))
                if n == 0:
                    raise OSError(errno.EIO, f"{src_path} ended early")
                self._hasher.feed_file(self.path, self.size, n)
                done += n
                self.size += n
                if self.on_bytes is not None:
                    self.on_bytes(self.size)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise disk_error(e, self.path, self.size) from None
            raise

    def restart(self) -> None:
        """Throw the bytes away and start from zero (Range was ignored, or the bytes were wrong)."""
        self._pending, self._pending_n = [], 0
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self.size = 0
        self.resumed = False
        self.content_type = None
        self._hasher.reset()
        for key in ("etag", "last_modified", "total"):
            self.meta.pop(key, None)

    # -- what the server said ----------------------------------------------------------

    def remember(self, url: str, etag: str | None, last_modified: str | None, total: int | None) -> None:
        """Keep the validators of the response being written, for If-Range on resume."""
        self.meta.update(url=url, etag=etag, last_modified=last_modified, total=total)
        write_json_atomic(self.meta_path, self.meta)

    def validator(self, url: str) -> str | None:
        """An If-Range value for ``url``: a strong ETag, else Last-Modified, if from that URL."""
        if self.meta.get("url") != url:
            return None
        etag = self.meta.get("etag")
        if etag and not etag.startswith("W/"):
            return etag
        return self.meta.get("last_modified")

    def ensure_space(self, total: int) -> None:
        """Fail now, not 200 MB later, when the disk cannot take ``total`` bytes."""
        need = total - self.size
        free = shutil.disk_usage(self.path.parent).free
        if need > free:
            raise DiskSpaceError(
                f"not enough disk space in {self.path.parent}: {need} more bytes needed, {free} free"
            )

    # -- the end --------------------------------------------------------------------------

    def digests(self) -> Digests:
        """Digests of every byte in the file (waits for the hasher to catch up)."""
        self.flush()
        return self._hasher.result()

    def commit(self, dest: Path) -> None:
        """Rename the (verified) file to ``dest`` atomically, then make it read-only.

        Read-only, so that a hard-linked model file cannot be overwritten in place
        by mistake; only once renamed, so that a rename that fails leaves a partial
        file the next run can still open for writing.
        """
        self.flush()
        os.close(self._fd)
        self._fd = -1
        self._hasher.close()
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, dest)
        os.chmod(dest, os.stat(dest).st_mode & 0o777 & ~0o222)
        self.meta_path.unlink(missing_ok=True)

    def close(self) -> None:
        """Write what is pending (for the next run to resume from) and release the file."""
        if self._fd >= 0:
            try:
                self.flush()
            except DiskSpaceError:
                pass
            os.close(self._fd)
            self._fd = -1
        self._hasher.close()

    def discard(self) -> None:
        """Close and delete the partial file."""
        self._pending = []
        self.close()
        self.path.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)


def size_of(p: Path) -> int:
    """Bytes in ``p``; 0 once it is gone (another process adopted or removed it)."""
    try:
        return p.stat().st_size
    except OSError:
        return 0


def _copy_range(src_fd: int, dst_fd: int, offset: int, count: int) -> int:
    """Copy in the kernel (a reflink on file systems that can); read+write where it cannot."""
    if hasattr(os, "copy_file_range"):
        try:
            return os.copy_file_range(src_fd, dst_fd, count, offset)
        except OSError as e:
            if e.errno not in (
                errno.EXDEV,
                errno.ENOSYS,
                errno.EINVAL,
                errno.EOPNOTSUPP,
                errno.EPERM,
            ):
                raise
    data = os.pread(src_fd, count, offset)
    return os.write(dst_fd, data) if data else 0
