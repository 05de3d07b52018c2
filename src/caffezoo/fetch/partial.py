"""Partial downloads: one unique file per download, written at offsets, resumable by the next run.

Each download writes ``<dir>/<sha1>.<id>.part`` with a sidecar
``<sha1>.<id>.json`` naming its owner (host, boot, pid and the pid's start
time), the file's length, the runs of bytes written (each with the source
that sent it) and each source's validator (a strong ETag, else Last-Modified)
for ``If-Range``. A new download first looks for a partial of the same blob
whose owner is gone — killed, crashed, rebooted — and adopts it by renaming
it to its own name: a rename succeeds for exactly one process, so two runs
never write into one file, and a live download's file is never touched. Locks
only save bandwidth; this is what keeps bytes correct where locks silently do
nothing (some network file systems).

The sidecar is replaced whole (write, then rename) and lists only bytes
already written, so a crash at any moment leaves a record no larger than the
truth. It vouches for nothing: hashlib's state cannot be saved, so the runs it
lists are read back and hashed once when a download resumes, and the final
SHA-1 decides. A sidecar that does not parse, or lists runs out of order or
past the end of the file, is not trusted at all: the bytes are thrown away.

Writes go through :meth:`Partial.write_at`, which records the run and hands
the bytes to an :class:`~caffezoo.fetch.ordered_hash.OrderedHasher`, so the
hash always covers exactly the bytes in the file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes
from ..errors import DiskSpaceError
from .hashing import BUFFER_SIZE, Digests
from .ordered_hash import OrderedHasher
from .segments import Runs

__all__ = [
    "MAX_CHUNKS",
    "MAX_DELAY",
    "Partial",
    "STALE_SECONDS",
    "abandoned",
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
# The key of bytes written by :meth:`Partial.write` (a whole file from one writer).
WHOLE = ""


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


def abandoned(part: Path) -> bool:
    """Whether the partial file ``part`` was left by a writer that is gone (its sidecar says who)."""
    meta = _load_meta(part.with_suffix(".json"))
    return meta is None or not owner_alive(meta.get("owner", {}), part)


def _load_meta(path: Path) -> dict[str, Any] | None:
    """The sidecar; {} when there is none, None when it does not parse."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _state(meta: dict[str, Any] | None, file_size: int) -> tuple[Runs, int | None, dict[str, str]]:
    """Runs, length and validators recorded in a sidecar; ``ValueError`` when it is not to be trusted."""
    if meta is None:
        raise ValueError("its record does not parse")
    total = meta.get("total")
    if total is not None and (type(total) is not int or total < 0):
        raise ValueError(f"total: {total!r}")
    if "runs" not in meta:  # one stream from byte 0 (as written before segments), or nothing
        url = meta.get("url")
        runs = Runs()
        if total is not None and file_size > total:
            raise ValueError(f"{file_size} bytes in a file of {total}")
        if file_size and isinstance(url, str) and url:
            runs.add(0, file_size, url)
            etag, modified = meta.get("etag"), meta.get("last_modified")
            strong = etag if isinstance(etag, str) and not etag.startswith("W/") else None
            validator = strong or (modified if isinstance(modified, str) else None)
            return runs, total, ({url: validator} if validator else {})
        if file_size:
            raise ValueError("bytes without a record of where they came from")
        return runs, total, {}
    sources, validators = meta.get("sources"), meta.get("validators", {})
    if not isinstance(sources, list) or not all(isinstance(u, str) for u in sources):
        raise ValueError("sources: expected a list of URLs")
    if not isinstance(validators, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in validators.items()
    ):
        raise ValueError("validators: expected URLs and their validators")
    limit = file_size if total is None else min(total, file_size)
    runs = Runs.from_json(meta["runs"], sources, limit)
    append = meta.get("append")
    if isinstance(append, str) and append and runs.covered == runs.prefix():
        # One stream was appending to the bytes from 0: what is in the file past them is its.
        runs.add(runs.prefix(), limit, append)
    return runs, total, validators


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
    """A partial download owned by this process. Use :meth:`claim` to get one.

    ``runs`` are the bytes written, keyed by source URL; ``total`` the file's length once
    known; ``validators`` the ``If-Range`` value of each source; ``hasher`` hashes the
    bytes in file order. The caller serialises writes (one lock around them).
    """

    def __init__(
        self,
        path: Path,
        meta: dict[str, Any],
        fd: int,
        runs: Runs,
        total: int | None,
        validators: dict[str, str],
        sha256: bool = False,
        distrusted: str | None = None,
    ):
        self.path = path
        self.meta_path = path.with_suffix(".json")
        self.meta = meta
        self.runs = runs
        self.total = total
        self.validators = validators
        self.append: str | None = None  # the source appending past the runs (one stream from 0)
        self.resumed = runs.covered > 0  # bytes from an earlier run are in the file
        self.distrusted = distrusted  # why the bytes an earlier run left were thrown away
        self.hasher = OrderedHasher(path, sha256=sha256)
        for a, b, _ in runs.spans():  # read back once, in turn, while the network starts
            self.hasher.add_written(a, b - a)
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
        _write_meta(mine.with_suffix(".json"), meta)  # owner first: never a part without one
        adopted: dict[str, Any] | None = {}
        for other in sorted(partials_of(directory, sha1), key=size_of, reverse=True):
            if other == mine:
                continue
            other_meta = _load_meta(other.with_suffix(".json"))
            # A sidecar is replaced whole, so a live download's always parses: one that does not
            # is a corrupt leftover, adopted to be thrown away.
            if other_meta is not None and owner_alive(other_meta.get("owner", {}), other):
                continue
            try:
                if adopted == {}:
                    os.rename(other, mine)  # exactly one process wins this
                    adopted = other_meta
                else:
                    other.unlink()  # a smaller leftover of a dead download
            except FileNotFoundError:
                continue  # another process adopted or removed it first
            other.with_suffix(".json").unlink(missing_ok=True)
        fd = os.open(mine, os.O_RDWR | os.O_CREAT, 0o644)
        distrusted = None
        try:
            runs, total, validators = _state(adopted, os.fstat(fd).st_size)
        except ValueError as e:  # never trusted: the bytes are thrown away
            distrusted = str(e)
            os.ftruncate(fd, 0)
            runs, total, validators = Runs(), None, {}
        partial = cls(mine, meta, fd, runs, total, validators, sha256, distrusted)
        if adopted:
            partial.save()  # the adopted state, under this process's name
        return partial

    @property
    def size(self) -> int:
        """Bytes written (in runs, wherever they are in the file)."""
        return self.runs.covered

    # -- writing --------------------------------------------------------------------------

    def write_at(self, offset: int, chunks: Sequence[bytes | memoryview], key: Hashable) -> None:
        """Write ``chunks`` at ``offset``, record them as sent by ``key``, queue them for hashing."""
        n = sum(len(c) for c in chunks)
        written = 0
        try:
            written = os.pwritev(self._fd, chunks, offset)
            while written < n:  # a short write: write the rest, which raises if the disk is full
                written += os.pwrite(self._fd, b"".join(chunks)[written:], offset + written)
        except OSError as e:
            # The bytes that did reach the file are kept for the next run (which re-hashes them).
            self.runs.add(offset, offset + written, key)
            raise disk_error(e, self.path, self.size) from None
        self.runs.add(offset, offset + n, key)
        self.hasher.add(offset, chunks)

    def read(self, offset: int, length: int) -> bytes:
        """Bytes of the file (to compare with another source's)."""
        return os.pread(self._fd, length, offset)

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` after the bytes written from 0 (in batches): a whole file from one writer."""
        self._pending.append(chunk)
        self._pending_n += len(chunk)
        if (
            self._pending_n >= BUFFER_SIZE
            or len(self._pending) >= MAX_CHUNKS
            or time.monotonic() - self._last_flush > MAX_DELAY
        ):
            self.flush()

    def flush(self) -> None:
        """Write the pending batch of :meth:`write`."""
        self._last_flush = time.monotonic()
        if self._pending:
            batch = self._pending
            self._pending, self._pending_n = [], 0
            self.write_at(self.runs.prefix(), batch, WHOLE)

    def restart(self) -> None:
        """Throw every byte away and start from zero (Range was ignored, or the bytes were wrong)."""
        self._pending, self._pending_n = [], 0
        os.ftruncate(self._fd, 0)
        self.runs.clear()
        self.total = None
        self.validators.clear()
        self.append = None
        self.resumed = False
        self.hasher.reset()

    def forget(self, key: Hashable) -> list[tuple[int, int]]:
        """Stop counting the bytes ``key`` sent (its file changed, or it lied); return where they were.

        They stay in the file until overwritten, and the hash starts over from the file.
        """
        gone = self.runs.drop(key)
        if gone:
            self.hasher.reset()
            for a, b, _ in self.runs.spans():
                self.hasher.add_written(a, b - a)
        return gone

    def ensure_space(self, total: int) -> None:
        """Fail now, not 200 MB later, when the disk cannot take ``total`` bytes."""
        need = total - self.size
        free = shutil.disk_usage(self.path.parent).free
        if need > free:
            raise DiskSpaceError(
                f"not enough disk space in {self.path.parent}: {need} more bytes needed, {free} free"
            )

    # -- the sidecar ----------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What :meth:`save` writes: take it under the writers' lock, save it outside."""
        keys = sorted({str(k) for _, _, k in self.runs.spans()})
        return {
            **self.meta,
            "total": self.total,
            "sources": keys,
            "validators": dict(self.validators),
            "runs": self.runs.to_json(keys),
            "append": self.append,
        }

    def save(self, state: dict[str, Any] | None = None) -> None:
        """Replace the sidecar (write, then rename) with ``state`` (default: the state now)."""
        _write_meta(self.meta_path, self.state() if state is None else state)

    # -- the end --------------------------------------------------------------------------

    def digests(self) -> Digests:
        """Digests of the file's bytes (waits for the hasher to reach the end)."""
        self.flush()
        return self.hasher.result(self.total if self.total is not None else self.runs.prefix())

    def commit(self, dest: Path) -> None:
        """Rename the (verified) file to ``dest`` atomically, then make it read-only.

        Read-only, so that a hard-linked model file cannot be overwritten in place
        by mistake; only once renamed, so that a rename that fails leaves a partial
        file the next run can still open for writing.
        """
        self.flush()
        os.close(self._fd)
        self._fd = -1
        self.hasher.close()
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, dest)
        os.chmod(dest, os.stat(dest).st_mode & 0o777 & ~0o222)
        self.meta_path.unlink(missing_ok=True)

    def close(self) -> None:
        """Write what is pending and the sidecar (for the next run to resume from); release the file."""
        if self._fd >= 0:
            try:
                self.flush()
            except DiskSpaceError:
                pass
            self.save()
            os.close(self._fd)
            self._fd = -1
        self.hasher.close()

    def discard(self) -> None:
        """Close and delete the partial file."""
        self._pending = []
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.hasher.close()
        self.path.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)


def _write_meta(path: Path, meta: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(meta, separators=(",", ":"), sort_keys=True).encode())


def size_of(p: Path) -> int:
    """Bytes written in ``p`` (its holes not counted); 0 once it is gone (adopted or removed)."""
    try:
        st = p.stat()
    except OSError:
        return 0
    return min(st.st_size, st.st_blocks * 512)
