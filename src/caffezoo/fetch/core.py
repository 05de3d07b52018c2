"""Fetch a blob by SHA-1 from the sources that have it; install it where it is wanted.

>>> blob = fetch_blob(["https://example.org/w.caffemodel"], sha1="9116a64c...")   # doctest: +SKIP
>>> blob.path, blob.status                                                          # doctest: +SKIP
(PosixPath('~/.cache/caffezoo/blobs/sha1/9116a64c...'), 'downloaded')
>>> fetch_to("net/w.caffemodel", ["https://example.org/w.caffemodel"], sha1="9116...")  # doctest: +SKIP

The order of work: the cache (a recorded blob costs a ``stat``), then, holding
the blob's lock, a :class:`~caffezoo.fetch.transfer.Transfer` from the sources
— mirrors first, see :func:`caffezoo.fetch.urls.plan` — resuming from the bytes
already on disk: one stream for a small file or a server without ranges, else
pieces over several connections from every source at once. The SHA-1 decides
whether the sources gave the right file; only then is the file renamed into
the cache, and only a cached (verified) blob is linked into place. Nothing
here prints: ``progress`` receives :class:`Event`\\ s.
"""

from __future__ import annotations

import functools
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import settings
from ..errors import DownloadError, OfflineError, UsageError
from .cache import BlobCache
from .events import Event, Progress
from .hashing import Digests, Expected, hash_file
from .limits import RateLimit, parse_rate
from .urls import Source, plan

__all__ = ["Event", "Fetched", "How", "Progress", "Status", "fetch_blob", "fetch_to", "install"]


How = Literal["link", "copy", "symlink"]
Status = Literal["present", "cached", "downloaded"]


@dataclass(frozen=True)
class Fetched:
    """The outcome: where the verified file is and how it got there.

    ``status``: ``present`` (was already right), ``cached`` (from the blob cache,
    no network), ``downloaded``. ``how`` says how it was installed. ``source`` gave
    the most bytes; ``sources`` lists every one that gave some, ``bad_sources`` those
    found sending wrong bytes (their bytes were fetched again from the others).
    """

    path: Path
    sha1: str
    sha256: str | None
    size: int
    status: Status
    source: str | None = None
    blob: Path | None = None
    how: str | None = None
    sources: tuple[str, ...] = field(default=())
    bad_sources: tuple[str, ...] = field(default=())


def _quiet(event: Event) -> None:
    pass


def _os_errors(func):
    """Turn a file-system failure (cache not writable, not a directory...) into a DownloadError."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise DownloadError(f"{where}{e.strerror or e}") from e

    return wrapper


@_os_errors
def fetch_blob(
    sources: Iterable[str | os.PathLike[str] | Source],
    *,
    sha1: str,
    sha256: str | None = None,
    size: int | None = None,
    name: str | None = None,
    blobs_dir: str | os.PathLike[str] | None = None,
    mirrors: Iterable[str] | None = None,
    offline: bool | None = None,
    verify: bool = False,
    timeout: float | None = None,
    retries: int | None = None,
    auth: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    max_size: int | None = None,
    client: Any = None,
    connections: int | None = None,
    per_host: int | None = None,
    limit_rate: str | float | RateLimit | None = None,
) -> Fetched:
    """Make sure the blob ``sha1`` is in the cache; return its path there.

    ``sources`` are URLs (http, https, file) or local paths. ``mirrors`` are
    base URLs serving ``<base>/blobs/sha1/<sha1>``, asked first. A file large
    enough is fetched in pieces over ``connections`` connections (default 8)
    from every source that takes byte ranges, at most ``per_host`` to one host
    (default: ``connections``), at most ``limit_rate`` bytes a second in all
    (``"10M"``, a number, or a :class:`~caffezoo.fetch.limits.RateLimit` shared
    by several downloads). ``auth`` maps
    an origin (``scheme://host:port``, see :func:`caffezoo.fetch.urls.origin`) to the
    ``Authorization`` value sent to it, and to nothing else. Unset arguments come
    from :func:`caffezoo.config.settings`. ``max_size`` caps the bytes taken from a source
    when ``size`` is unknown; ``client`` is the httpx client to use (e.g. one made by
    :func:`caffezoo._http.client` with an outbound-URL policy; default: the process's own).
    Raises :class:`~caffezoo.errors.DownloadError` (or a subclass) when no source gives the
    right bytes.
    """
    from .transfer import MAX_CONNECTIONS

    for key, value in (("connections", connections), ("per_host", per_host)):
        # Checked here, not by the CLI alone: -1 slots for a host waited forever, 10000 connections
        # were 10000 threads.
        if value is not None and not (type(value) is int and 1 <= value <= MAX_CONNECTIONS):
            raise UsageError(f"{key}: expected a whole number from 1 to {MAX_CONNECTIONS}, got {value!r}")
    if limit_rate is not None and not isinstance(limit_rate, RateLimit):
        limit_rate = RateLimit(parse_rate(limit_rate))  # a bad value is refused before any request
    s = settings()
    expected = Expected(sha1, sha256, size, max_size)
    cache = BlobCache(blobs_dir if blobs_dir is not None else s.blobs_dir)
    report = progress or _quiet
    label = name or expected.sha1

    def on_corrupt(message: str) -> None:
        report(Event("warning", message=message))

    def on_hash(n: int) -> None:
        report(Event("check", done=n, total=expected.size))

    def hit(digests: Digests) -> Fetched:
        return Fetched(
            cache.path(expected.sha1),
            digests.sha1,
            digests.sha256,
            digests.size,
            "cached",
            blob=cache.path(expected.sha1),
        )

    found = cache.lookup(expected, verify=verify, on_hash=on_hash, on_corrupt=on_corrupt)
    if found:
        return hit(found)
    candidates = plan(expected.sha1, sources, tuple(s.mirrors if mirrors is None else mirrors))
    if s.offline if offline is None else offline:
        candidates = [c for c in candidates if c.is_local]
        if not candidates:
            raise OfflineError(
                f"{label}: not in the cache ({cache.path(expected.sha1)}) and CAFFEZOO_OFFLINE is set; "
                "unset it to download, or give a file:// source"
            )
    if not candidates:
        raise DownloadError(f"{label}: no source to download it from")
    timeout = s.timeout if timeout is None else timeout
    retries = s.retries if retries is None else retries

    def ready() -> bool:
        return cache.lookup(expected, hash_unrecorded=False) is not None

    stall = 4 * timeout  # a holder whose bytes stand still this long is hung: go on without it
    with cache.lock(
        expected.sha1,
        ready=ready,
        stall=stall,
        on_wait=lambda n: report(
            Event("wait", done=n, total=expected.size, message="another process is downloading it")
        ),
    ):
        found = cache.lookup(expected, on_hash=on_hash, on_corrupt=on_corrupt)
        if found:
            return hit(found)
        partial = cache.claim(expected.sha1, sha256=expected.sha256 is not None)
        try:
            if expected.size is not None:
                partial.ensure_space(expected.size)
            from .transfer import DEFAULT_CONNECTIONS, Transfer

            transfer = Transfer(
                candidates,
                partial,
                expected,
                connections=connections or DEFAULT_CONNECTIONS,
                per_host=per_host,
                rate=limit_rate,
                timeout=timeout,
                retries=retries,
                auth=auth,
                client=client,
                report=report,
                label=label,
            )
            digests, source = transfer.run()
            path = cache.commit(partial, digests)
        except BaseException:
            if partial.size:
                partial.close()  # kept: the next attempt or run resumes from these bytes
            else:
                partial.discard()
            raise
    return Fetched(
        path,
        digests.sha1,
        digests.sha256,
        digests.size,
        "downloaded",
        str(source),
        blob=path,
        sources=tuple(transfer.sources()),
        bad_sources=tuple(transfer.bad),
    )


def install(blob: Path, dest: Path, how: How = "link") -> str:
    """Put ``blob`` at ``dest`` atomically: a hard link (a copy where links fail) or a symlink.

    Returns what was done: ``link``, ``copy`` or ``symlink``. A file already at
    ``dest`` is replaced in one rename, never left half-written.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        if how == "symlink":
            os.symlink(blob.resolve(), tmp)
        elif how == "link":
            try:
                os.link(blob, tmp)
            except OSError:  # another file system, or links not allowed: copy instead
                how = "copy"
        if how == "copy":
            shutil.copyfile(blob, tmp)  # sendfile/copy_file_range in the kernel on Linux
        os.replace(tmp, dest)
    except OSError as e:
        raise DownloadError(f"cannot install {dest}: {e.strerror or e}") from None
    finally:
        if os.path.lexists(tmp):
            tmp.unlink()
    return how


@_os_errors
def fetch_to(
    dest: str | os.PathLike[str],
    sources: Iterable[str | os.PathLike[str] | Source],
    *,
    sha1: str,
    sha256: str | None = None,
    size: int | None = None,
    how: How = "link",
    verify: bool = False,
    blobs_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    **options,
) -> Fetched:
    """Make sure ``dest`` holds the blob ``sha1``; fetch it into the cache first if needed.

    A file already at ``dest`` that a record shows unchanged since it was
    verified is accepted at the cost of a ``stat``; ``verify=True`` re-hashes
    it. A wrong file there is replaced only by a verified one. ``options`` are
    those of :func:`fetch_blob`.
    """
    dest = Path(dest)
    expected = Expected(sha1, sha256, size)
    cache = BlobCache(blobs_dir if blobs_dir is not None else settings().blobs_dir)
    report = progress or _quiet
    if dest.is_dir():
        raise DownloadError(f"{dest} is a directory, expected a file name")
    if os.path.exists(dest):
        if not dest.is_file():  # reading a pipe never ends; replacing /dev/null breaks the system
            raise DownloadError(f"{dest} is not a regular file (a device, pipe or socket)")
        if not verify and cache.records.is_verified(dest, expected.sha1, expected.sha256):
            st = dest.stat()
            if expected.size in (None, st.st_size):
                rec = cache.records.load(expected.sha1)
                return Fetched(dest, expected.sha1, rec.get("sha256"), st.st_size, "present")
        got = hash_file(
            dest,
            sha256=expected.sha256 is not None,
            progress=lambda n: report(Event("check", done=n, total=expected.size)),
        )
        problem = expected.mismatch(got)
        if problem is None:
            cache.records.add(expected.sha1, [dest], got.size, got.sha256)
            return Fetched(dest, got.sha1, got.sha256, got.size, "present")
        report(Event("warning", message=f"{dest} is not the expected file ({problem}); replacing it"))
    blob = fetch_blob(
        sources,
        sha1=expected.sha1,
        sha256=expected.sha256,
        size=expected.size,
        blobs_dir=cache.root,
        verify=verify,
        progress=progress,
        **options,
    )
    done = install(blob.path, dest, how)
    cache.records.add(expected.sha1, [blob.path, dest], blob.size, blob.sha256)
    return Fetched(
        dest,
        blob.sha1,
        blob.sha256,
        blob.size,
        blob.status,
        blob.source,
        blob.path,
        done,
        blob.sources,
        blob.bad_sources,
    )
