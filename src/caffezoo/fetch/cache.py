"""The content-addressed blob cache.

Layout under the root (``settings().blobs_dir`` by default)::

    sha1/<sha1>              verified blobs, read-only; the layout mirrors serve
    .partial/<sha1>.<id>.*   downloads in progress or interrupted (see partial.py)
    .verified/<sha1>.json    what was verified, for O(1) re-runs (see records.py)
    .locks/<sha1>.lock       one download per blob at a time (best effort)

Because blobs sit at ``sha1/<sha1>``, the parent of a cache root is itself a
mirror base: ``CAFFEZOO_MIRRORS=file:///shared/caffezoo/cache`` reuses another
machine's downloads.

>>> import tempfile
>>> cache = BlobCache(tempfile.mkdtemp())
>>> cache.entries()
[]
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..config import settings
from ..errors import ChecksumError, UsageError
from .hashing import Digests, Expected, hash_file
from .partial import Partial, abandoned, partials_of, size_of
from .records import Records

__all__ = ["BlobCache", "BlobInfo", "PruneReport", "VerifyResult"]


# Temporary files older than this are leftovers of a crash, removed by prune.
_TMP_AGE = 3600


@dataclass(frozen=True)
class BlobInfo:
    """One cached blob: its SHA-1, where it is, and which recorded files hold it."""

    sha1: str
    path: Path
    size: int
    mtime: float
    links: int
    users: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VerifyResult:
    blob: BlobInfo
    ok: bool
    problem: str | None = None


@dataclass
class PruneReport:
    """What :meth:`BlobCache.prune` removed (or would remove, with ``dry_run``)."""

    blobs: list[str] = field(default_factory=list)
    partials: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    bytes: int = 0


class BlobCache:
    """A blob cache rooted at ``root`` (default: ``settings().blobs_dir``)."""

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root) if root is not None else settings().blobs_dir
        self.records = Records(self.root / ".verified")
        self.partial_dir = self.root / ".partial"
        self.locks_dir = self.root / ".locks"

    def path(self, sha1: str) -> Path:
        return self.root / "sha1" / sha1

    # -- looking up ---------------------------------------------------------------------

    def lookup(
        self,
        expected: Expected,
        *,
        verify: bool = False,
        hash_unrecorded: bool = True,
        on_hash: Callable[[int], None] | None = None,
        on_corrupt: Callable[[str], None] | None = None,
    ) -> Digests | None:
        """Digests of the cached blob when it is there and right; ``None`` when it must be fetched.

        A blob whose record still matches is trusted without reading it (unless
        ``verify``); others are hashed, and one whose bytes are not its name is
        removed (``on_corrupt`` is told why).
        """
        p = self.path(expected.sha1)
        if not p.is_file():
            return None
        if not verify and self.records.is_verified(p, expected.sha1, expected.sha256):
            record = self.records.load(expected.sha1)
            got = Digests(expected.sha1, record.get("sha256"), p.stat().st_size)
        elif not hash_unrecorded:
            return None
        else:
            st = p.stat()
            got = hash_file(p, sha256=expected.sha256 is not None, progress=on_hash)
            if got.sha1 != expected.sha1:
                problem = f"cached blob {p} is corrupt: its sha1 is {got.sha1}"
                if os.path.exists(p) and os.stat(p).st_ino == st.st_ino:  # still the file we read
                    p.unlink()
                    self.records.forget(expected.sha1)
                if on_corrupt:
                    on_corrupt(problem + "; removed it")
                return None
            self.records.add(expected.sha1, [p], got.size, got.sha256)
        problem = expected.mismatch(got)
        if problem:  # the SHA-1 matches, so the other expected values are the ones in error
            raise ChecksumError(
                f"the cached blob {p} has the expected sha1 but {problem}: the expected values "
                "contradict each other"
            )
        return got

    # -- downloading -----------------------------------------------------------------------

    def claim(self, sha1: str, sha256: bool = False) -> Partial:
        """A partial file for ``sha1``: a dead download's, to resume, or a new one."""
        return Partial.claim(self.partial_dir, sha1, sha256)

    def commit(self, partial: Partial, digests: Digests) -> Path:
        """Move a verified partial into place and record it."""
        dest = self.path(digests.sha1)
        partial.commit(dest)
        self.records.add(digests.sha1, [dest], digests.size, digests.sha256)
        return dest

    def partial_bytes(self, sha1: str) -> int:
        """Bytes in every partial file of ``sha1`` (how far another process has got)."""
        return sum(size_of(p) for p in partials_of(self.partial_dir, sha1))

    @contextmanager
    def lock(
        self, sha1: str, *, ready: Callable[[], bool], on_wait: Callable[[int], None], stall: float
    ) -> Iterator[bool]:
        """Hold the blob's lock while the body runs; yield whether it is really held.

        Waiting ends early when ``ready()`` says another process produced the
        blob, when that process's partial file stops growing for ``stall``
        seconds (it hangs), or when locks do not work here. Then the body runs
        without the lock: unique partial files keep that safe, it only risks a
        second download.
        """
        from filelock import FileLock, Timeout  # imported when a download needs it

        self.locks_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.locks_dir / f"{sha1}.lock")
        held = False
        seen, since = self.partial_bytes(sha1), time.monotonic()
        while True:
            try:
                lock.acquire(timeout=0.2)
                held = True
                break
            except Timeout:
                pass
            except (OSError, NotImplementedError, RuntimeError):
                break  # this file system cannot lock
            if ready():
                break
            now_bytes = self.partial_bytes(sha1)
            if now_bytes != seen:
                seen, since = now_bytes, time.monotonic()
            elif time.monotonic() - since > stall:
                break
            on_wait(now_bytes)
        try:
            yield held
        finally:
            if held:
                lock.release()

    # -- maintenance -----------------------------------------------------------------------

    def entries(self) -> list[BlobInfo]:
        """Every blob in the cache, by SHA-1."""
        out = []
        blob_dir = self.root / "sha1"
        if not blob_dir.is_dir():
            return out
        for entry in sorted(os.scandir(blob_dir), key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat()
            users = [u for u in self.records.users(entry.name) if u != os.path.abspath(entry.path)]
            out.append(BlobInfo(entry.name, Path(entry.path), st.st_size, st.st_mtime, st.st_nlink, users))
        return out

    def find(self, prefixes: Iterable[str]) -> list[BlobInfo]:
        """The blobs named by full or abbreviated (7+ digits) SHA-1s; an error for any unknown."""
        blobs = self.entries()
        out = []
        for prefix in prefixes:
            p = prefix.strip().lower()
            if len(p) < 7:
                raise UsageError(f"{prefix!r}: give at least 7 hex digits of the SHA-1")
            found = [b for b in blobs if b.sha1.startswith(p)]
            if not found:
                raise UsageError(f"{prefix!r}: no such blob in {self.root}")
            if len(found) > 1:
                raise UsageError(f"{prefix!r} is ambiguous: {', '.join(b.sha1 for b in found)}")
            out.append(found[0])
        return out

    def verify(
        self, blobs: Iterable[BlobInfo] | None = None, on_hash: Callable[[int], None] | None = None
    ) -> list[VerifyResult]:
        """Re-hash blobs (all by default); a blob is right when its bytes hash to its name."""
        results = []
        for blob in self.entries() if blobs is None else blobs:
            try:
                got = hash_file(blob.path, progress=on_hash)
            except OSError as e:
                results.append(VerifyResult(blob, False, f"cannot read: {e.strerror or e}"))
                continue
            if got.sha1 == blob.sha1:
                self.records.add(blob.sha1, [blob.path], got.size)
                results.append(VerifyResult(blob, True))
            else:
                self.records.forget(blob.sha1)
                results.append(VerifyResult(blob, False, f"corrupt: its bytes hash to {got.sha1}"))
        return results

    def remove(self, blobs: Iterable[BlobInfo]) -> int:
        """Delete blobs (files linked to them keep their bytes); return the bytes freed."""
        freed = 0
        for blob in blobs:
            blob.path.unlink(missing_ok=True)
            self.records.forget(blob.sha1)
            if blob.links <= 1:
                freed += blob.size
        return freed

    def prune(self, dry_run: bool = False) -> PruneReport:
        """Remove what nothing needs: blobs no model file links to, abandoned partials, leftovers.

        A blob is kept while another hard link or a recorded symlink points to it;
        a file that is a copy does not need it.
        """
        report = PruneReport()
        for blob in self.entries():
            linked = blob.links > 1 or any(os.path.islink(u) and _same(u, blob.path) for u in blob.users)
            if not linked:
                report.blobs.append(blob.sha1)
                report.bytes += blob.size
                if not dry_run:
                    self.remove([blob])
        if self.partial_dir.is_dir():
            for part in sorted(self.partial_dir.glob("*.part")):
                meta_path = part.with_suffix(".json")
                if not abandoned(part):
                    continue
                report.partials.append(part.name)
                report.bytes += size_of(part)
                if not dry_run:
                    part.unlink(missing_ok=True)
                    meta_path.unlink(missing_ok=True)
            for meta_path in self.partial_dir.glob("*.json"):
                if not meta_path.with_suffix(".part").exists() and _old(meta_path):
                    report.other.append(meta_path.name)
                    if not dry_run:
                        meta_path.unlink(missing_ok=True)
        for d in (self.root / "sha1", self.partial_dir, self.records.dir):
            for tmp in d.glob(".*.tmp") if d.is_dir() else ():
                if _old(tmp):
                    report.other.append(tmp.name)
                    if not dry_run:
                        tmp.unlink(missing_ok=True)
        if self.records.dir.is_dir():
            for rec in self.records.dir.glob("*.json"):
                sha1 = rec.stem
                if not self.path(sha1).exists() and not self.records.users(sha1):
                    report.other.append(rec.name)
                    if not dry_run:
                        rec.unlink(missing_ok=True)
        return report


def _same(a: str, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _old(p: Path) -> bool:
    try:
        return time.time() - p.stat().st_mtime > _TMP_AGE
    except OSError:
        return False
