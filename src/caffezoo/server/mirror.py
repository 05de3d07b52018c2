"""The server's weights mirror: a content-addressed blob store (a directory, or S3).

>>> m = Mirror(Path("/srv/caffezoo/blobs"))                          # doctest: +SKIP
>>> m.sync(storage)          # one round: fetch every listed model's weights it lacks     # doctest: +SKIP
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

A round (:func:`wanted`, then :func:`fetch_wanted` for each, a few at a time)
is bounded so that no one user can block it or fill the disk: every model
naming a SHA-1 offers its URL as a source, tried in turn until one gives the
right bytes; each fetch obeys the outbound-URL policy (http(s) to public
addresses only, unless the operator opts in), a deadline, a minimum rate and
a byte cap (the front matter's ``size``, else ``max_bytes``); a source that
failed is tried again after a backoff that doubles like the link checker's.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from .. import _http
from ..config import settings
from ..errors import CaffezooError
from ..hashes import is_sha1
from . import catalog
from .blobstore import BlobStore, BlobWriter, LocalStore
from .storage import Storage, now
from .tables import Entry, MirrorSource

if TYPE_CHECKING:
    from .jobs import Leases

__all__ = ["Mirror", "MirrorOptions", "MirrorResult", "wanted"]


CONCURRENCY = 4
MAX_BYTES = 4 << 30  # what a source may send when the front matter gives no size
FETCH_SECONDS = 3600.0
MIN_RATE = 32 << 10  # bytes/s a fetch must average once its grace period is over
GRACE = 30.0
ROUND_SECONDS = 6 * 3600.0


@dataclass(frozen=True)
class MirrorResult:
    sha1: str
    url: str
    status: str  # "mirrored", "failed", "refused" (by the outbound-URL policy)
    error: str | None = None


@dataclass(frozen=True)
class MirrorOptions:
    """How a round fetches: where it may go, how many at once, and the caps of one fetch."""

    policy: _http.Policy = field(default_factory=_http.Policy)
    concurrency: int = CONCURRENCY
    max_bytes: int = MAX_BYTES
    fetch_seconds: float = FETCH_SECONDS
    min_rate: float = MIN_RATE
    grace: float = GRACE
    timeout: float = 30.0  # seconds one read may wait
    retries: int = 2
    round_seconds: float = ROUND_SECONDS  # no fetch starts later than this into a round


@dataclass(frozen=True)
class Wanted:
    """A blob the store lacks, and every ``(url, size)`` the listed models offer for it."""

    sha1: str
    sources: tuple[tuple[str, int | None], ...]


def wanted(
    storage: Storage, has: Callable[[str], bool], when: datetime | None = None, everything: bool = False
) -> list[Wanted]:
    """The blobs to fetch now: missing from the store, with the sources not backing off
    (``everything``: with all their sources). Blobs are taken from each owner in turn, so
    that one user's thousand models do not hold everyone else's until the round's end."""
    when = when or now()
    with storage.session() as s:
        rows = s.execute(
            select(Entry.sha1, Entry.caffemodel_url, Entry.size, Entry.owner)
            .where(Entry.listed.is_(True), Entry.sha1.is_not(None), Entry.caffemodel_url.is_not(None))
            .order_by(Entry.pk)
        ).all()
        waiting = (
            set()
            if everything
            else set(
                s.execute(
                    select(MirrorSource.sha1, MirrorSource.url).where(MirrorSource.next_try > when)
                ).all()
            )
        )
    sources: dict[str, dict[str, int | None]] = {}
    by_owner: dict[str | None, list[str]] = {}
    for sha1, url, size, owner in rows:
        if is_sha1(sha1, lowercase=True) and (sha1, url) not in waiting and not has(sha1):
            if sha1 not in sources:
                by_owner.setdefault(owner, []).append(sha1)
            sources.setdefault(sha1, {}).setdefault(url, size)
    queues = list(by_owner.values())
    order = [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]
    return [Wanted(sha1, tuple(sources[sha1].items())) for sha1 in order]


Fetch = Callable[..., object]  # fetch(sha1, url, size, max_size=..., client=..., timeout=..., retries=...)


def fetch_wanted(w: Wanted, fetch: Fetch, client, options: MirrorOptions) -> list[MirrorResult]:
    """Try ``w``'s sources in turn until one gives the right bytes; what each attempt gave."""
    results = []
    for url, size in w.sources:
        try:
            options.policy.check_url(url)  # no file://, no plain path: the server's files stay its own
        except _http.Refused:
            results.append(MirrorResult(w.sha1, url, "refused", _http.REFUSED))
            continue
        if size is not None and size > options.max_bytes:
            error = f"the front matter's size ({size} bytes) is more than this server's maximum ({options.max_bytes})"
            results.append(MirrorResult(w.sha1, url, "failed", error))
            continue
        try:
            with _http.budget(options.fetch_seconds, min_rate=options.min_rate, grace=options.grace):
                fetch(
                    w.sha1,
                    url,
                    size,
                    max_size=options.max_bytes if size is None else size,
                    client=client,
                    timeout=options.timeout,
                    retries=options.retries,
                )
        except CaffezooError as e:
            # The engine names each source's failure; a refusal reads the same whatever the address.
            refused = _http.REFUSED in str(e)
            results.append(
                MirrorResult(
                    w.sha1, url, "refused" if refused else "failed", _http.REFUSED if refused else str(e)
                )
            )
            continue
        results.append(MirrorResult(w.sha1, url, "mirrored"))
        break
    return results


def record(storage: Storage, results: list[MirrorResult], when: datetime | None = None) -> None:
    """Remember failed sources and when to try them again; forget those of mirrored blobs."""
    from .links import FAIL_EVERY, MAX_BACKOFF  # the same backoff as the link checker's

    when = when or now()
    with storage.session(write=True) as s:
        for r in results:
            if r.status == "mirrored":
                s.execute(delete(MirrorSource).where(MirrorSource.sha1 == r.sha1))
                continue
            if len(r.url) > MirrorSource.url.type.length:
                continue
            row = s.get(MirrorSource, (r.sha1, r.url))
            if row is None:
                row = MirrorSource(sha1=r.sha1, url=r.url, failures=0)
                s.add(row)
            row.failures = (row.failures or 0) + 1
            row.error, row.tried_at = r.error, when
            row.next_try = when + min(FAIL_EVERY * 2 ** (row.failures - 1), MAX_BACKOFF)
        if any(r.status == "mirrored" for r in results):
            catalog.bump(s)  # a blob arrived: the pages' "mirrored" badges are stale


def run_round(
    storage: Storage,
    todo: list[Wanted],
    fetch: Fetch,
    options: MirrorOptions,
    on_result: Callable[[MirrorResult], None] | None = None,
    stop: threading.Event | None = None,
    claim: Callable[[str], bool] | None = None,
    release: Callable[[str, bool], None] | None = None,
) -> list[MirrorResult]:
    """Fetch ``todo``, ``options.concurrency`` blobs at a time; record and return what happened.

    ``claim(sha1)`` is asked first (False: another replica has it) and ``release(sha1,
    mirrored)`` told after, once the result is recorded (:mod:`.jobs`)."""
    results: list[MirrorResult] = []
    lock = threading.Lock()
    ends = time.monotonic() + options.round_seconds

    def one(w: Wanted) -> None:
        if (stop is not None and stop.is_set()) or time.monotonic() > ends:
            return  # the rest waits for the next round
        if claim is not None and not claim(w.sha1):
            return  # another replica fetches it, or has
        mirrored = False
        try:
            got = fetch_wanted(w, fetch, client, options)
            record(storage, got)
            mirrored = any(r.status == "mirrored" for r in got)
        finally:
            if release is not None:
                release(w.sha1, mirrored)
        with lock:
            results.extend(got)
            for r in got:
                if on_result:
                    on_result(r)

    with (
        _http.client(
            policy=options.policy,
            timeout=options.timeout,
            headers={"Accept-Encoding": "identity", "User-Agent": f"{_http.user_agent()} mirror"},
            read_size=256 << 10,  # as downloads do: fewer, larger reads
            max_connections=max(4, options.concurrency * 2),
        ) as client,
        ThreadPoolExecutor(max(1, options.concurrency), thread_name_prefix="caffezoo-mirror") as pool,
    ):
        for future in [pool.submit(one, w) for w in todo]:
            future.result()
    return results


class Mirror:
    """The server's weights: a :class:`~.blobstore.BlobStore` (a directory path means a local one);
    ``options`` say how its rounds fetch."""

    def __init__(
        self,
        store: BlobStore | str | os.PathLike[str],
        options: MirrorOptions | None = None,
        staging: Path | None = None,
    ):
        self.store = store if isinstance(store, BlobStore) else LocalStore(Path(store))
        self.options = options or MirrorOptions()
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
        return bool(sha1) and is_sha1(sha1, lowercase=True) and self.store.has(sha1)

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

    def job(self, sha1: str) -> str:
        """The job of fetching ``sha1`` into this store, as :mod:`.jobs` names it: replicas
        sharing the store share the job; a store of its own (another machine's directory)
        gets its own copy."""
        where = self.store.url
        if isinstance(self.store, LocalStore):  # a path means something on one machine only
            where = f"file://{socket.gethostname()}{Path(where).resolve()}"
        return f"{where}#{sha1}"

    def sync(
        self,
        storage: Storage,
        on_result: Callable[[MirrorResult], None] | None = None,
        stop: threading.Event | None = None,
        everything: bool = False,
        *,
        leases: Leases | None = None,
        retry_after: float = 0.0,
    ) -> list[MirrorResult]:
        """One round: fetch every wanted blob; failed sources are tried again after a backoff
        (``everything``: now).

        With ``leases`` (:mod:`.jobs`), each blob is claimed first, so replicas sharing the
        store fetch it once; a failed fetch is not tried again (by anyone) for ``retry_after`` s.
        """
        claim = release = None
        if leases is not None:

            def claim(sha1: str) -> bool:
                # stat, not has(): S3's has() may answer from a listing seconds old.
                return leases.claim("mirror", self.job(sha1), lambda _s: self.store.stat(sha1) is None)

            def release(sha1: str, mirrored: bool) -> None:
                leases.finish("mirror", self.job(sha1), cooldown=0.0 if mirrored else retry_after)

        self.store.refresh()  # what other replicas stored counts
        with self._lock:  # one round at a time; the engine's locks guard each blob as well
            todo = wanted(storage, self.has, everything=everything)
            results = run_round(storage, todo, self.fetch, self.options, on_result, stop, claim, release)
            if stop is None or not stop.is_set():
                from .facts import check_mirrored

                check_mirrored(storage, self)  # blobs that arrived, nets edited since their check
            return results

    def changed(self, storage: Storage) -> None:
        """A blob arrived: the pages' "mirrored" badges are stale, and its net wants checking."""
        from .facts import check_mirrored

        with storage.session(write=True) as s:
            catalog.bump(s)
        check_mirrored(storage, self)

    # ------------------------------------------------------------------ uploads

    def begin_upload(self, sha1: str) -> BlobWriter:
        """A writer for ``sha1``: ``write`` chunks, then ``commit`` (checks the SHA-1) or ``abort``."""
        return self.store.writer(sha1)
