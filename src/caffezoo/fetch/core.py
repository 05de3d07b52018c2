"""Fetch a blob by SHA-1 from the first source that has it; install it where it is wanted.

>>> blob = fetch_blob(["https://example.org/w.caffemodel"], sha1="9116a64c...")   # doctest: +SKIP
>>> blob.path, blob.status                                                          # doctest: +SKIP
(PosixPath('~/.cache/caffezoo/blobs/sha1/9116a64c...'), 'downloaded')
>>> fetch_to("net/w.caffemodel", ["https://example.org/w.caffemodel"], sha1="9116...")  # doctest: +SKIP

The order of work: the cache (a recorded blob costs a ``stat``), then, holding
the blob's lock, each source in turn — mirrors first, see
:func:`caffezoo.fetch.urls.plan` — each with retries, resuming from the bytes
already on disk. The SHA-1 decides whether a source gave the right file; only
then is the file renamed into the cache, and only a cached (verified) blob is
linked into place. Nothing here prints: ``progress`` receives :class:`Event`\\ s.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..config import settings
from ..errors import ChecksumError, DownloadError, OfflineError
from .cache import BlobCache
from .hashing import Digests, Expected, hash_file
from .partial import Partial
from .retry import Retry, SourceFailed
from .urls import Source, plan

__all__ = ["Event", "Fetched", "How", "Progress", "Status", "fetch_blob", "fetch_to", "install"]


How = Literal["link", "copy", "symlink"]
Status = Literal["present", "cached", "downloaded"]


@dataclass(frozen=True)
class Event:
    """Something a progress display may show.

    ``kind`` is one of ``check`` (hashing a file already there), ``start`` (a
    source answered; ``total`` may be known), ``bytes`` (``done`` of ``total``),
    ``retry`` and ``fail`` (``message`` says why; ``fail`` moves to the next
    source), ``wait`` (another process is downloading the same blob; ``done`` is
    its progress), ``warning``.
    """

    kind: str
    done: int = 0
    total: int | None = None
    source: str | None = None
    message: str = ""


Progress = Callable[[Event], None]


@dataclass(frozen=True)
class Fetched:
    """The outcome: where the verified file is and how it got there.

    ``status``: ``present`` (was already right), ``cached`` (from the blob cache,
    no network), ``downloaded``. ``how`` says how it was installed.
    """

    path: Path
    sha1: str
    sha256: str | None
    size: int
    status: Status
    source: str | None = None
    blob: Path | None = None
    how: str | None = None


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
) -> Fetched:
    """Make sure the blob ``sha1`` is in the cache; return its path there.

    ``sources`` are URLs (http, https, file) or local paths. ``mirrors`` are
    base URLs serving ``<base>/blobs/sha1/<sha1>``, tried first. ``auth`` maps
    an origin (``scheme://host:port``, see :func:`caffezoo.fetch.urls.origin`) to the
    ``Authorization`` value sent to it, and to nothing else. Unset arguments come
    from :func:`caffezoo.config.settings`. ``max_size`` caps the bytes taken from a source
    when ``size`` is unknown; ``client`` is the httpx client to use (e.g. one made by
    :func:`caffezoo._http.client` with an outbound-URL policy; default: the process's own).
    Raises :class:`~caffezoo.errors.DownloadError` (or a subclass) when no source gives the
    right bytes.
    """
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
            source, digests = _download(
                candidates, partial, expected, label, timeout, retries, auth or {}, report, client
            )
            path = cache.commit(partial, digests)
        except BaseException:
            if partial.size:
                partial.close()  # kept: the next attempt or run resumes from these bytes
            else:
                partial.discard()
            raise
    return Fetched(path, digests.sha1, digests.sha256, digests.size, "downloaded", str(source), blob=path)


def _download(
    sources: list[Source],
    partial: Partial,
    expected: Expected,
    label: str,
    timeout: float,
    retries: int,
    auth: Mapping[str, str],
    report: Progress,
    client: Any = None,
) -> tuple[Source, Digests]:
    failures: list[str] = []
    wrong_files = 0  # sources that answered with other bytes: if all did, it is a ChecksumError
    for source in sources:
        clean_retries = 1  # wrong bytes after a resume earn one download from the start
        while True:
            partial.on_bytes = lambda n, src=str(source): report(
                Event("bytes", done=n, total=partial.meta.get("total") or expected.size, source=src)
            )
            report(Event("start", done=partial.size, total=expected.size, source=str(source)))
            try:
                _with_retries(source, partial, expected, timeout, retries, auth, report, client)
                digests = partial.digests()
            except SourceFailed as e:
                failures.append(f"{source.role} {source}: {e}")
                report(Event("fail", source=str(source), message=str(e)))
                break
            problem = expected.mismatch(digests)
            if problem is None:
                return source, digests
            was_resumed = partial.resumed
            html = (partial.content_type or "").startswith("text/html")
            partial.restart()
            if was_resumed and clean_retries:
                clean_retries -= 1
                report(
                    Event(
                        "retry",
                        source=str(source),
                        message=f"wrong bytes after resuming ({problem}); starting over",
                    )
                )
                continue
            hint = (
                (
                    " — the server sent a web page, not the file (a Dropbox link needs ?dl=1; "
                    "a Google Drive file must be shared publicly)"
                )
                if html
                else ""
            )
            failures.append(f"{source.role} {source}: wrong file: {problem}{hint}")
            wrong_files += 1
            report(Event("fail", source=str(source), message=f"wrong file: {problem}"))
            break
    lines = "\n".join(f"  {f}" for f in failures)
    error = ChecksumError if wrong_files == len(sources) else DownloadError
    raise error(
        f"{label}: could not download it from any of {len(sources)} source(s):\n{lines}\n"
        "Try again later, list a mirror that has it in CAFFEZOO_MIRRORS, or put the file in place "
        "yourself (it is checked by its sha1)."
    )


def _with_retries(
    source: Source,
    partial: Partial,
    expected: Expected,
    timeout: float,
    retries: int,
    auth: Mapping[str, str],
    report: Progress,
    client: Any = None,
) -> None:
    """Attempts on one source until the body is complete; SourceFailed when they run out."""
    stuck = 0  # attempts in a row that added no byte
    total_attempts = 0
    limit = max(20, 10 * (retries + 1))
    while True:
        before = partial.size
        total_attempts += 1
        try:
            if source.is_local:
                from . import local

                local.copy(source, partial, expected)
            else:
                from . import http

                http.get(source, partial, expected, timeout=timeout, auth=auth, client=client)
            return
        except Retry as e:
            from .._http import MAX_RETRY_AFTER, backoff  # only now: it imports httpx

            stuck = 0 if partial.size > before else stuck + 1
            if stuck > retries or total_attempts >= limit:
                attempts = f"{total_attempts} attempt{'s' * (total_attempts > 1)}"
                raise SourceFailed(f"{e} (gave up after {attempts}, {partial.size} bytes kept)") from None
            delay = backoff(stuck or 1) if e.retry_after is None else e.retry_after
            if delay > MAX_RETRY_AFTER:
                raise SourceFailed(f"{e}; the server asks to retry after {delay:.0f} s") from None
            report(
                Event(
                    "retry",
                    done=partial.size,
                    source=str(source),
                    message=f"{e}; retrying in {delay:.1f} s",
                )
            )
            time.sleep(delay)


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
    return Fetched(dest, blob.sha1, blob.sha256, blob.size, blob.status, blob.source, blob.path, done)
