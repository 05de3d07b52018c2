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
recently used others go, never one that a request holds (:meth:`TryFiles.hold`).
What is on disk at start-up counts from the start, oldest first.
"""

from __future__ import annotations

import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import CaffezooError
from ..hashes import is_sha1
from .blobstore import BlobStore, LocalStore

ONNX_PER_WEIGHTS = 1  # a conversion holds the weights again (as float32, like the caffemodel)

__all__ = ["TooLarge", "TryFiles"]


class TooLarge(CaffezooError):
    """The weights and their conversion would not fit in the files' budget at all."""


class TryFiles:
    """Weights copies under ``root`` and conversions in ``onnx_dir``, within ``max_bytes``."""

    def __init__(self, root: Path, onnx_dir: Path, max_bytes: int):
        self.copies = LocalStore(root)
        self.onnx_dir = Path(onnx_dir)
        self.max_bytes = max_bytes
        self._files: OrderedDict[str, dict[Path, int]] = OrderedDict()  # sha1 -> its files, LRU first
        self._held: Counter[str] = Counter()
        self._fetching: dict[str, threading.Lock] = {}  # one per blob ever copied: as many as models
        self._lock = threading.Lock()
        self._scan()

    @property
    def bytes(self) -> int:
        with self._lock:
            return sum(sum(f.values()) for f in self._files.values())

    def _scan(self) -> None:
        found: list[tuple[float, str, Path, int]] = []
        for info in self.copies.list():
            found.append((info.modified or 0.0, info.sha1, self.copies.path(info.sha1), info.size))
        if self.onnx_dir.is_dir():
            for entry in os.scandir(self.onnx_dir):
                sha1 = entry.name.split("-", 1)[0]
                if entry.name.endswith(".onnx") and is_sha1(sha1, lowercase=True):
                    st = entry.stat()
                    found.append((st.st_mtime, sha1, Path(entry.path), st.st_size))
        for _, sha1, path, size in sorted(found):
            self._files.setdefault(sha1, {})[path] = size
            self._files.move_to_end(sha1)
        with self._lock:
            self._make_room(0)

    @contextmanager
    def hold(self, sha1: str) -> Iterator[None]:
        """While the body runs, ``sha1``'s files are not removed to make room for others."""
        with self._lock:
            self._held[sha1] += 1
        try:
            yield
        finally:
            with self._lock:
                self._held[sha1] -= 1
                if not self._held[sha1]:
                    del self._held[sha1]

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
        with fetching:  # one copy at a time of each blob; the others wait for it
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
                with self._lock:
                    self._make_room(need, keep=sha1)
                self.copies.put(sha1, store.get(sha1))  # hashed on the way in: a wrong copy never appears
            self.used(sha1, path)
        return path

    def used(self, sha1: str, *paths: Path | None) -> None:
        """``paths`` (that exist) belong to ``sha1``, just used: counted, and last in line to go."""
        ours = (self.onnx_dir, self.copies.root / "sha1")  # never a local store's own blob
        sizes = {p: p.stat().st_size for p in paths if p is not None and p.parent in ours and p.is_file()}
        with self._lock:
            self._files.setdefault(sha1, {}).update(sizes)
            self._files.move_to_end(sha1)
            self._make_room(0)

    def _make_room(self, need: int, keep: str | None = None) -> None:
        """Remove the least recently used blobs' files until ``need`` more bytes fit (lock held)."""
        total = sum(sum(f.values()) for f in self._files.values())
        for sha1 in list(self._files):
            if total + need <= self.max_bytes:
                return
            if sha1 == keep or self._held[sha1]:
                continue
            for path, size in self._files.pop(sha1).items():
                path.unlink(missing_ok=True)
                total -= size
            self.copies.cache().records.forget(sha1)
