"""The files "try it" keeps on this machine: weights copied from a remote blob store, and the
ONNX conversions of the nets tried; at most ``max_bytes`` together, least recently used first out.

>>> files = TryFiles(work_dir / "weights", onnx_dir, max_bytes=4 << 30)          # doctest: +SKIP
>>> with files.hold(sha1):                                                       # doctest: +SKIP
...     net = load(prototxt, weights=files.weights(store, sha1))
...     files.used(sha1, net.path)

A local store's weights are used where they are. A remote store's (S3) are
copied first, through :class:`~.blobstore.LocalStore`'s verified writer: the
bytes are hashed on their way in and the copy appears under its name only when
its SHA-1 is the one asked for. Each blob counts with everything made from it
(its copy, its ``.onnx`` conversions); when a new one needs room, the least
recently used others go (by the files' modification times, which :meth:`TryFiles.used`
touches), never one that a request holds (:meth:`TryFiles.hold`).

The budget is what is on disk, not what one process remembers: every process on
the machine (``--workers N``, replicas sharing a home) counts the same files under
one lock file, so together they stay within ``max_bytes``. Locks are ``flock``\\ s,
which the kernel drops when a process dies: a hold is a shared lock on
``.held/SHA1``, and a copy under way reserves its bytes in ``.reserved/SHA1``,
locked while it runs, so the others count it before its file exists (and, once its
lock is gone with its process, remove the partial file it left). Files are only
ever unlinked, never truncated: a process still reading one keeps its bytes.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import CaffezooError
from ..fetch.partial import abandoned, partials_of
from ..hashes import is_sha1
from .blobstore import BlobStore, LocalStore

ONNX_PER_WEIGHTS = 1  # a conversion holds the weights again (as float32, like the caffemodel)

__all__ = ["TooLarge", "TryFiles"]


class TooLarge(CaffezooError):
    """The weights and their conversion would not fit in the files' budget at all."""


def _lock_fd(path: Path, how: int) -> int:
    """``path`` opened (made if missing) and ``flock``\\ ed ``how``; its descriptor (close to unlock).

    ``fcntl.flock`` rather than the ``filelock`` package the downloads use: holds need shared
    locks, and the budget needs to ask without waiting whether someone else holds one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, how)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _locked_by_another(path: Path) -> bool:
    """Whether some open file holds a lock on ``path`` (this process's own included)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class TryFiles:
    """Weights copies under ``root`` and conversions in ``onnx_dir``, within ``max_bytes``
    together, across every process using the same directories."""

    def __init__(self, root: Path, onnx_dir: Path, max_bytes: int):
        self.copies = LocalStore(root)
        self.onnx_dir = Path(onnx_dir)
        self.max_bytes = max_bytes
        self._held_dir = self.copies.root / ".held"
        self._reserved_dir = self.copies.root / ".reserved"
        self._fetching: dict[str, threading.Lock] = {}  # one per blob ever copied: as many as models
        self._lock = threading.Lock()
        with self._budget():
            self._make_room(0)

    @contextmanager
    def _budget(self) -> Iterator[None]:
        """The machine-wide lock under which files are counted, reserved and removed."""
        fd = _lock_fd(self.copies.root / ".budget.lock", fcntl.LOCK_EX)
        try:
            yield
        finally:
            os.close(fd)

    @property
    def bytes(self) -> int:
        """Bytes on disk (and reserved by copies under way), as every process counts them."""
        with self._budget():
            return self._total(self._on_disk())

    def _on_disk(self) -> dict[str, tuple[float, dict[Path, int]]]:
        """Each blob's files and when it was last used (its newest file), least recently used first."""
        found: dict[str, tuple[float, dict[Path, int]]] = {}

        def add(sha1: str, path: Path, size: int, mtime: float) -> None:
            when, paths = found.get(sha1, (0.0, {}))
            paths[path] = size
            found[sha1] = (max(when, mtime), paths)

        for info in self.copies.list():
            add(info.sha1, self.copies.path(info.sha1), info.size, info.modified or 0.0)
        if self.onnx_dir.is_dir():
            for entry in os.scandir(self.onnx_dir):
                sha1 = entry.name.split("-", 1)[0]
                if entry.name.endswith(".onnx") and is_sha1(sha1, lowercase=True):
                    try:
                        st = entry.stat()
                    except FileNotFoundError:  # removed by another process just now
                        continue
                    add(sha1, Path(entry.path), st.st_size, st.st_mtime)
        return dict(sorted(found.items(), key=lambda item: item[1][0]))

    def _reserved(self) -> int:
        """Bytes reserved by copies under way; a reservation whose process is gone is cleared."""
        total = 0
        if not self._reserved_dir.is_dir():
            return 0
        for entry in os.scandir(self._reserved_dir):
            path = Path(entry.path)
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue
            if not text.strip().isdigit():
                continue
            if _locked_by_another(path):
                total += int(text)
            else:  # its copier died (the kernel dropped its lock): nothing is coming
                path.write_text("")
                self._drop_abandoned_copy(entry.name)
        return total

    def _drop_abandoned_copy(self, sha1: str) -> None:
        """Remove the partial file a copier of ``sha1`` killed mid-way left: no budget counts it,
        and no copy of ``sha1`` can start meanwhile (a copier reserves under the budget lock)."""
        for part in partials_of(self.copies.cache().partial_dir, sha1):
            if abandoned(part):
                part.unlink(missing_ok=True)
                part.with_suffix(".json").unlink(missing_ok=True)

    def _total(self, on_disk: dict[str, tuple[float, dict[Path, int]]]) -> int:
        return sum(sum(paths.values()) for _, paths in on_disk.values()) + self._reserved()

    @contextmanager
    def hold(self, sha1: str) -> Iterator[None]:
        """While the body runs, ``sha1``'s files are not removed to make room for others,
        by this process or any other."""
        fd = _lock_fd(self._held_dir / sha1, fcntl.LOCK_SH)
        try:
            # An eviction that looked before our lock may be removing the files still: wait for it
            # to end (it holds the budget), so what the body finds on disk then stays there.
            with self._budget():
                pass
            yield
        finally:
            os.close(fd)

    def weights(self, store: BlobStore, sha1: str) -> Path:
        """The weights ``sha1`` as a local file: the store's own, or a verified copy of them.

        :class:`KeyError` when the store does not have them, :class:`TooLarge` when they
        cannot fit, the store's errors (:class:`~.blobstore.BlobStoreError`,
        :class:`~caffezoo.errors.ChecksumError`) as they come.
        """
        local = store.local_path(sha1)
        if local is not None:
            return local
        path = self.copies.path(sha1)
        with self._lock:
            fetching = self._fetching.setdefault(sha1, threading.Lock())
        # One copy at a time of each blob, in this process (the thread lock) and on the machine
        # (the reservation's flock): the others wait for it, then find the file there.
        with fetching:
            fd = _lock_fd(self._reserved_dir / sha1, fcntl.LOCK_EX)
            try:
                os.ftruncate(fd, 0)  # what a copier that died left there
                if not path.is_file():
                    info = store.stat(sha1)
                    if info is None:
                        raise KeyError(sha1)
                    need = info.size * (1 + ONNX_PER_WEIGHTS)
                    if need > self.max_bytes:
                        raise TooLarge(
                            f"its weights ({info.size:,} bytes) and their conversion would not fit in the "
                            f"{self.max_bytes:,} bytes this server keeps for trying models"
                        )
                    with self._budget():
                        self._make_room(need, keep=sha1)
                        os.ftruncate(fd, 0)
                        os.pwrite(fd, str(need).encode(), 0)  # counted by the others until done
                    self.copies.put(sha1, store.get(sha1))  # hashed on the way in: a wrong copy never appears
            finally:
                os.ftruncate(fd, 0)
                os.close(fd)
            self.used(sha1, path)
        return path

    def used(self, sha1: str, *paths: Path | None) -> None:
        """``paths`` (that exist) belong to ``sha1``, just used: last in line to go; then the
        least recently used others go until everything fits."""
        ours = (self.onnx_dir, self.copies.root / "sha1")  # never a local store's own blob
        for p in paths:
            if p is not None and p.parent in ours:
                try:
                    os.utime(p)
                except FileNotFoundError:
                    pass
        with self._budget():
            self._make_room(0)

    def _make_room(self, need: int, keep: str | None = None) -> None:
        """Remove the least recently used blobs' files until ``need`` more bytes fit (budget lock held)."""
        on_disk = self._on_disk()
        total = self._total(on_disk)
        for sha1, (_, paths) in on_disk.items():
            if total + need <= self.max_bytes:
                return
            if sha1 == keep or _locked_by_another(self._held_dir / sha1):
                continue
            for path, size in paths.items():
                path.unlink(missing_ok=True)  # never truncated: a reader elsewhere keeps its bytes
                total -= size
            self.copies.cache().records.forget(sha1)
