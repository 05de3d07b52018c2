"""The server's weights mirror: a content-addressed blob store on the filesystem.

>>> m = Mirror(Path("/srv/caffezoo/blobs"))                          # doctest: +SKIP
>>> m.sync(storage)          # fetch every listed model's weights it lacks     # doctest: +SKIP
>>> m.path("9116a64c0fbe4459d18f4bb6b56d647b63920377")                # doctest: +SKIP
PosixPath('/srv/caffezoo/blobs/sha1/9116a64c0fbe4459d18f4bb6b56d647b63920377')

The store is a blob cache of the downloads engine (:mod:`caffezoo.fetch`):
blobs sit at ``<root>/sha1/<sha1>`` and are only ever renamed into place
after their SHA-1 was checked, so a half-fetched or wrong file is never
served. The server answers ``GET /blobs/sha1/<sha1>`` (with ``Range``) from
it, which makes it a mirror clients can list in ``CAFFEZOO_MIRRORS``. Owners
may also ``PUT`` weights: the bytes are hashed on their way to disk and kept
only when they are what the model's front matter promises.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from ..errors import CaffezooError, ChecksumError
from ..hashes import is_sha1
from . import catalog
from .models import Entry
from .storage import Storage


@dataclass(frozen=True)
class MirrorResult:
    sha1: str
    url: str
    status: str  # "mirrored", "present", "failed"
    error: str | None = None


class Mirror:
    """A blob store rooted at ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._prefix = os.path.join(str(self.root), "sha1", "")  # has() runs per card: no Path objects
        self._lock = threading.Lock()

    def _cache(self):
        from ..fetch import BlobCache  # the downloads engine

        return BlobCache(self.root)

    def path(self, sha1: str) -> Path:
        return self.root / "sha1" / sha1

    def has(self, sha1: str | None) -> bool:
        return bool(sha1) and is_sha1(sha1, lowercase=True) and os.path.isfile(self._prefix + sha1)

    def wanted(self, storage: Storage) -> list[tuple[str, str, int | None]]:
        """``(sha1, url, size)`` of listed models whose weights the store lacks."""
        with storage.session() as s:
            rows = s.execute(
                select(Entry.sha1, Entry.caffemodel_url, Entry.size).where(
                    Entry.listed.is_(True), Entry.sha1.is_not(None), Entry.caffemodel_url.is_not(None)
                )
            ).all()
        seen, out = set(), []
        for sha1, url, size in rows:
            if sha1 not in seen and not self.has(sha1):
                seen.add(sha1)
                out.append((sha1, url, size))
        return out

    def fetch(self, sha1: str, url: str, size: int | None = None) -> Path:
        """Fetch one blob through the downloads engine (verified, resumable, atomic)."""
        from ..fetch import fetch_blob

        # No mirrors here: the origin is what a mirror copies from.
        return fetch_blob([url], sha1=sha1, size=size, blobs_dir=self.root, mirrors=[], offline=False).path

    def sync(
        self,
        storage: Storage,
        on_result: Callable[[MirrorResult], None] | None = None,
        stop: threading.Event | None = None,
    ) -> list[MirrorResult]:
        """Fetch every wanted blob; a failure is reported and retried on the next sync."""
        results = []
        with self._lock:  # one sync at a time; the engine's locks guard each blob as well
            for sha1, url, size in self.wanted(storage):
                if stop is not None and stop.is_set():
                    break
                try:
                    self.fetch(sha1, url, size)
                    result = MirrorResult(sha1, url, "mirrored")
                    self.changed(storage)
                except CaffezooError as e:
                    result = MirrorResult(sha1, url, "failed", str(e))
                results.append(result)
                if on_result:
                    on_result(result)
        return results

    @staticmethod
    def changed(storage: Storage) -> None:
        """A blob arrived: the pages' "mirrored" badges are stale."""
        with storage.session(write=True) as s:
            catalog.bump(s)

    # ------------------------------------------------------------------ uploads

    def begin_upload(self, sha1: str) -> Upload:
        return Upload(self._cache(), sha1)


class Upload:
    """Bytes of one blob on their way in: hashed as written, kept only if the SHA-1 matches."""

    def __init__(self, cache, sha1: str):
        self.cache, self.sha1 = cache, sha1
        self.partial = cache.claim(sha1)
        self.partial.restart()  # an upload starts from byte 0, whatever a dead download left
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.partial.write(chunk)
        self.size += len(chunk)

    def finish(self) -> Path:
        """Check the digest and rename the blob into place; :class:`ChecksumError` otherwise."""
        self.partial.flush()
        digests = self.partial.digests()
        if digests.sha1 != self.sha1:
            self.abort()
            raise ChecksumError(
                f"the uploaded bytes ({digests.size} bytes) have sha1 {digests.sha1}, "
                f"not {self.sha1}: nothing was stored"
            )
        return self.cache.commit(self.partial, digests)

    def abort(self) -> None:
        self.partial.discard()
