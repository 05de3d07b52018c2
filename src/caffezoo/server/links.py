"""Link health: is each model's ``caffemodel_url`` still there?

>>> report = check_links(storage)                     # what is due, at 1 request/s    # doctest: +SKIP
>>> [(r.url, r.reachable, r.status, r.size) for r in report]                            # doctest: +SKIP
[('http://dl.example.org/net.caffemodel', True, 200, 243862414)]

Each URL is probed with ``HEAD``; a server that refuses ``HEAD`` (405, 403,
501...) gets a one-byte ``Range`` GET, whose ``Content-Range`` also tells the
size. Nothing more is downloaded. Transient failures (timeouts, 429, 5xx) are
retried a few times with exponential backoff, honouring ``Retry-After``; all
requests together stay under ``rate`` per second. Every request obeys the
server's outbound-URL policy (:class:`caffezoo._http.Policy`: public addresses
only, unless the operator opts in), and what is published is only the status
and a fixed phrase (:func:`caffezoo._http.public_error`), never the socket's words. What is seen is recorded in
``link_checks`` (reachable, status, size, error, when) and shown on the pages
and in ``/api/models``. A URL is checked again ``ok_every`` after a success;
after failures, the wait doubles from ``fail_every`` up to ``max_backoff``, so
dead hosts are not hammered but a host that comes back is noticed.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import TYPE_CHECKING

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .. import _http
from .._http_status import header_number, range_total
from . import catalog
from .storage import Storage, now
from .tables import Entry, LinkCheck

if TYPE_CHECKING:
    from .jobs import Leases

__all__ = [
    "FAIL_EVERY",
    "MAX_BACKOFF",
    "OK_EVERY",
    "Background",
    "Probe",
    "check_links",
    "due_urls",
    "is_due",
    "link_client",
    "probe",
    "record",
    "shown_error",
]

OK_EVERY = timedelta(days=1)
FAIL_EVERY = timedelta(hours=1)
MAX_BACKOFF = timedelta(days=7)
MAX_RETRY_AFTER = 30.0
RECORD_EVERY = 5.0  # seconds: what probes saw is stored (and shown) in batches at most this old


@dataclass(frozen=True)
class Probe:
    url: str
    reachable: bool
    status: int | None = None
    size: int | None = None
    error: str | None = None


class RateLimit:
    """At most ``rate`` calls per second, across threads."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            t = time.monotonic()
            delay = self._next - t
            self._next = max(t, self._next) + self.interval
        if delay > 0:
            time.sleep(delay)


def _size(r: httpx.Response) -> int | None:
    total = range_total(r.headers.get("content-range"))
    if total is not None:
        return total
    return header_number(r.headers.get("content-length")) if r.status_code == 200 else None


# What a probe records as its error, and so all that pages may show of one (rows written
# before errors were fixed phrases may hold socket errors: those are shown as the generic one).
_PUBLIC_ERROR = re.compile(
    r"HTTP \d{3}( [A-Za-z' -]{1,40})?|refused by policy|cannot connect|no answer in time|connection failed"
    r"|too many redirects|not a valid URL|not an http\(s\) URL|not checked: only http:// and https:// URLs are probed"
)


def shown_error(error: str | None) -> str | None:
    """``error`` if it is one of the fixed phrases probes record, else ``connection failed``.

    >>> shown_error("HTTP 404 Not Found"), shown_error("ConnectError: [Errno 111] Connection refused")
    ('HTTP 404 Not Found', 'connection failed')
    """
    return error if error is None or _PUBLIC_ERROR.fullmatch(error) else "connection failed"


def _status_text(status: int) -> str:
    """``HTTP 404 Not Found``: the standard phrase, not the remote server's own words."""
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def probe(
    client: httpx.Client,
    url: str,
    *,
    limit: RateLimit | None = None,
    retries: int = 2,
    backoff: float = 0.5,
    deadline: float | None = 60.0,
) -> Probe:
    """Probe one URL: ``HEAD``, else a one-byte ``Range`` GET; retry transient failures.

    ``client`` should come from :func:`link_client` (the policy lives in its transport);
    each attempt must end within ``deadline`` seconds, however slowly the host answers.
    """
    limit = limit or RateLimit(0)
    if not url.lower().startswith(("http://", "https://")):
        return Probe(url, False, error="not checked: only http:// and https:// URLs are probed")
    last: Probe | None = None
    for attempt in range(retries + 1):
        try:
            limit.wait()
            with _http.budget(deadline):
                r = client.head(url)
                if (
                    r.status_code >= 400
                    and not _http.is_retryable_status(r.status_code)
                    or r.status_code == 501
                ):
                    # Some hosts (S3 presigned URLs, old CGI) refuse HEAD but serve GET.
                    limit.wait()
                    with client.stream("GET", url, headers={"Range": "bytes=0-0"}) as g:
                        r = g  # the body is never read: closing drops the connection
            if r.status_code < 400:
                return Probe(url, True, r.status_code, _size(r))
            last = Probe(url, False, r.status_code, error=_status_text(r.status_code))
            if not _http.is_retryable_status(r.status_code):
                return last
            wait = _http.retry_after(r.headers.get("retry-after"))
        except (httpx.HTTPError, httpx.InvalidURL) as e:  # InvalidURL is not an HTTPError
            last = Probe(url, False, error=_http.public_error(e))
            if isinstance(
                e, (_http.Refused, httpx.TooManyRedirects, httpx.UnsupportedProtocol, httpx.InvalidURL)
            ):
                return last  # no second try changes these
            wait = None
        if attempt < retries:
            delay = _http.backoff(attempt + 1, base=backoff)
            time.sleep(min(max(delay, wait or 0.0), MAX_RETRY_AFTER))
    return last  # type: ignore[return-value]


def link_client(policy: _http.Policy, timeout: float = 10.0) -> httpx.Client:
    """The link checker's client: the server's policy, ``timeout`` per read, 10 redirects at most."""
    return _http.client(
        policy=policy,
        timeout=timeout,
        max_redirects=10,
        headers={"User-Agent": f"{_http.user_agent()} link-checker"},
    )


def due_urls(storage: Storage, when: datetime | None = None, all_urls: bool = False) -> list[str]:
    """The listed models' weights URLs not checked yet, or whose next check is due."""
    when = when or now()
    with storage.session() as s:
        q = (
            select(Entry.caffemodel_url)
            .outerjoin(LinkCheck, LinkCheck.url == Entry.caffemodel_url)
            .where(Entry.listed.is_(True), Entry.caffemodel_url.is_not(None))
            .distinct()
        )
        if not all_urls:
            q = q.where(LinkCheck.url.is_(None) | (LinkCheck.next_check <= when))
        return sorted(u for u in s.scalars(q) if u)


def is_due(s: Session, url: str, when: datetime | None = None) -> bool:
    """Whether ``url`` was never checked or its next check has come (read in ``s``)."""
    next_check = s.scalar(select(LinkCheck.next_check).where(LinkCheck.url == url))
    return next_check is None or next_check <= (when or now())


def record(
    storage: Storage,
    results: Iterable[Probe],
    when: datetime | None = None,
    *,
    ok_every: timedelta = OK_EVERY,
    fail_every: timedelta = FAIL_EVERY,
    max_backoff: timedelta = MAX_BACKOFF,
    leases: Leases | None = None,
) -> None:
    """Store what probes saw and when to look again, in one transaction; with ``leases``,
    release the probed URLs' jobs in it too (a replica claiming them next sees them done)."""
    when = when or now()
    with storage.session(write=True) as s:
        for result in results:
            if leases is not None:
                leases.finish("link", result.url, session=s)
            row = s.get(LinkCheck, result.url)
            if row is None:
                row = LinkCheck(url=result.url, failures=0)
                s.add(row)
            row.reachable, row.status, row.error, row.checked_at = (
                result.reachable,
                result.status,
                result.error,
                when,
            )
            if result.reachable:
                row.failures, row.size = 0, result.size
                # /compare sorts by the weights' size: the size the front matter lacks, from here.
                s.execute(
                    update(Entry)
                    .where(Entry.caffemodel_url == result.url, Entry.size.is_(None))
                    .values(weights_size=result.size)
                )
                row.next_check = when + ok_every
            else:
                row.failures = (row.failures or 0) + 1
                row.next_check = when + min(fail_every * 2 ** (row.failures - 1), max_backoff)
        catalog.bump(s)


def check_links(
    storage: Storage,
    urls: Iterable[str] | None = None,
    *,
    all_urls: bool = False,
    rate: float = 1.0,
    timeout: float = 10.0,
    retries: int = 2,
    backoff: float = 0.5,
    on_result: Callable[[Probe], None] | None = None,
    stop: threading.Event | None = None,
    record_every: float = RECORD_EVERY,
    ok_every: timedelta = OK_EVERY,
    leases: Leases | None = None,
    policy: _http.Policy | None = None,
) -> list[Probe]:
    """Probe ``urls`` (default: those due) at most ``rate`` per second; return what was seen,
    recorded every ``record_every`` seconds and at the end; a success is due again ``ok_every``
    later. ``policy``: where probes may go (default: public addresses only).

    With ``leases`` (:mod:`.jobs`), each URL is first claimed in the database, so replicas
    running this at the same time probe each URL once; those due when listed but checked
    by another replica since are skipped, and are not in the result.
    """
    todo = list(urls) if urls is not None else due_urls(storage, all_urls=all_urls)
    # Only a round over what is due asks again whether each URL still is, once claimed.
    recheck = urls is None and not all_urls
    # A URL longer than link_checks can key on is never probed: its check could not be kept.
    todo = [u for u in todo if len(u) <= LinkCheck.url.type.length]
    limit = RateLimit(rate)
    results: list[Probe] = []
    recorded, last_record = 0, time.monotonic()
    with link_client(policy or _http.Policy(), timeout) as client:
        try:
            for url in todo:
                if stop is not None and stop.is_set():
                    break
                if leases is not None and not leases.claim(
                    "link", url, (lambda s, url=url: is_due(s, url)) if recheck else None
                ):
                    continue  # another replica probes it, or just did
                try:
                    result = probe(
                        client, url, limit=limit, retries=retries, backoff=backoff, deadline=6 * timeout
                    )
                except BaseException:
                    if leases is not None:  # not left held (and renewed) by a live process
                        leases.finish("link", url)
                    raise
                results.append(result)
                if on_result:
                    on_result(result)
                # Recording moves the pages' cache generation on: once per probe, a round over
                # many URLs would leave every page uncached while it runs.
                if time.monotonic() - last_record >= record_every:
                    record(storage, results[recorded:], ok_every=ok_every, leases=leases)
                    recorded, last_record = len(results), time.monotonic()
        finally:
            if len(results) > recorded:
                record(storage, results[recorded:], ok_every=ok_every, leases=leases)
    return results


class Background(threading.Thread):
    """Runs ``job()`` now and then every ``every`` seconds until :meth:`stop`; errors are logged."""

    def __init__(self, name: str, job: Callable[[threading.Event], object], every: float):
        super().__init__(name=name, daemon=True)
        self.job, self.every, self._stop_event = job, every, threading.Event()

    def run(self) -> None:
        import logging

        log = logging.getLogger("caffezoo.server")
        while not self._stop_event.is_set():
            try:
                self.job(self._stop_event)
            except Exception:  # keep the server's helper alive; the next round may succeed
                log.exception("%s failed", self.name)
            self._stop_event.wait(self.every)

    def stop(self) -> None:
        self._stop_event.set()
