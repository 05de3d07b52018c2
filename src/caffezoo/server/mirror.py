"""The server's weights mirror: a content-addressed blob store (a directory, or S3).

>>> m = Mirror(Path("/srv/caffezoo/blobs"))                          # doctest: +SKIP
>>> m.sync(storage)          # fetch every listed model's weights it lacks     # doctest: +SKIP
>>> m.path("9116a64c0fbe4459d18f4bb6b56d647b63920377")                # doctest: +SKIP
PosixPath('/srv/caffezoo/blobs/sha1/9116a64c0fbe4459d18f4bb6b56d647b63920377')

The store is a :class:`~.blobstore.BlobStore`: a local directory (a blob
cache of the downloads engine, :mod:`caffezoo.fetch`) or an S3 bucket. Blobs
sit at ``<root>/sha1/<sha1>`` and become visible only after their SHA-1 was
checked, so a half-fetched or wrong file is never served. The server answers
``GET /blobs/sha1/<sha1>`` (with ``Range``) from it, which makes it a mirror
clients can list in ``CAFFEZOO_MIRRORS``. Owners may also ``PUT`` weights: the
bytes are hashed on their way into the store and kept only when they are what
the model's front matter promises.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from ..config import settings
from ..errors import CaffezooError
from . import catalog
from .blobstore import BlobStore, BlobWriter, LocalStore
from .models import Entry
from .storage import Storage

SHA1_RE = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class MirrorResult:
    sha1: str
    url: str
    status: str  # "mirrored", "present", "failed"
    error: str | None = None


class Mirror:
    """The server's weights: a :class:`~.blobstore.BlobStore` (a directory path means a local one)."""

    def __init__(self, store: BlobStore | str | os.PathLike[str], staging: Path | None = None):
        self.store = store if isinstance(store, BlobStore) else LocalStore(Path(store))
        # Fetches for a remote store land here first (resumable), then go up verified.
        self.staging = staging
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        """The directory of a local store (tests and tools that look at files)."""
        return self.store.root  # type: ignore[attr-defined]

    def path(self, sha1: str) -> Path:
        return self.store.path(sha1)  # type: ignore[attr-defined]

    def has(self, sha1: str | None) -> bool:
        return bool(sha1) and SHA1_RE.fullmatch(sha1) is not None and self.store.has(sha1)

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

    def fetch(self, sha1: str, url: str, size: int | None = None, **options) -> None:
        """Fetch one blob through the downloads engine (verified, resumable, atomic) into the store.

        ``options`` go to :func:`caffezoo.fetch.fetch_blob`. A local store is the engine's
        own cache; for a remote one the blob is fetched into a local staging cache (so a
        broken transfer resumes), then put, and removed from staging.
        """
        from ..fetch import fetch_blob

        # No mirrors here: the origin is what a mirror copies from.
        if self.store.local_path(sha1) is not None:
            fetch_blob([url], sha1=sha1, size=size, blobs_dir=self.root, mirrors=[], offline=False, **options)
            return
        staging = self.staging or settings().cache_dir / "server" / "staging"
        got = fetch_blob([url], sha1=sha1, size=size, blobs_dir=staging, mirrors=[], offline=False, **options)
        try:
            with open(got.path, "rb") as f:
                self.store.put(sha1, f)  # hashed again on the way up: what is stored is checked
        finally:
            got.path.unlink(missing_ok=True)

    def sync(
        self,
        storage: Storage,
        on_result: Callable[[MirrorResult], None] | None = None,
        stop: threading.Event | None = None,
    ) -> list[MirrorResult]:
        """Fetch every wanted blob; a failure is reported and retried on the next sync."""
        results = []
        self.store.refresh()  # what other replicas stored counts
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

    def begin_upload(self, sha1: str) -> BlobWriter:
        """A writer for ``sha1``: ``write`` chunks, then ``commit`` (checks the SHA-1) or ``abort``."""
        return self.store.writer(sha1)
