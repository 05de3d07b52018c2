"""One HTTP(S) request for a range of a file, its answer checked before a byte is taken.

>>> ask = RangeAsk(source, source.url, 0, None, None, expected)  # doctest: +SKIP
>>> with open_range(ask, timeout=30, auth={}) as answer:  # doctest: +SKIP
...     answer.total, answer.ranges          # (268435456, True): the length, and Range works
...     for chunk in answer.chunks(): ...

:func:`open_range` raises :class:`~caffezoo.fetch.retry.Retry` for failures worth
another try (dropped connection, timeout, 429, 5xx), :class:`~caffezoo.fetch.retry.WrongFile`
when the source serves another file (another length), :class:`~caffezoo.fetch.retry.Unsatisfiable`
for a 416 and :class:`~caffezoo.fetch.retry.SourceFailed` for the rest — also for what
goes wrong while the caller reads the body inside the ``with``. Redirects are
followed by httpx, which drops ``Authorization`` when a redirect leaves the origin.

Imported only when a download really needs the network: httpx costs start-up
time that an "already there" check does not need.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator, Mapping
from html.parser import HTMLParser
from urllib.parse import urlencode, urljoin

from .. import _http
from .._http import httpx
from .hashing import Expected
from .retry import Retry, SourceFailed
from .urls import Source, origin, redact
from .wire import READ_SIZE, Answer, RangeAsk, check_answer, range_header

__all__ = ["Answer", "READ_SIZE", "default_client", "drive_confirm_url", "open_range"]

# Largest confirm page we read from Google Drive before giving up on it.
_MAX_PAGE = 2 << 20
_client: httpx.Client | None = None
_client_lock = threading.Lock()


def default_client() -> httpx.Client:
    """The process-wide client for downloads: one connection pool shared by concurrent downloads."""
    global _client
    with _client_lock:
        if _client is None:
            _client = _http.client(
                timeout=30.0,
                # identity: the bytes on the wire are the file's, so Content-Length and Range apply.
                headers={"Accept-Encoding": "identity"},
                read_size=READ_SIZE,
                max_connections=64,
                max_keepalive=32,  # a download's connections are reused from piece to piece
            )
        return _client


@contextlib.contextmanager
def open_range(
    ask: RangeAsk, *, timeout: float, auth: Mapping[str, str], client: httpx.Client | None = None
) -> Iterator[Answer]:
    """Ask for ``ask``'s bytes (``If-Range: ask.validator``), through httpx.

    ``client``: default, the process-wide download client; a server passes one with its policy.
    """
    source, url, start, end, validator, expected = ask
    http = client or default_client()
    try:
        host = source.host
    except ValueError:  # a URL that does not parse: said so below, before any request
        host = redact(url)
    answer: Answer | None = None

    def position() -> int:
        return start if answer is None else answer.offset + answer.received

    try:
        for _ in range(3):  # Google Drive may answer with a confirm page first
            headers = {}
            wanted = range_header(start, end)
            if wanted:
                headers["Range"] = wanted
                if validator:
                    headers["If-Range"] = validator
            try:
                token = auth.get(origin(url))
            except ValueError as e:  # a bad port, a broken IPv6 address: httpx would refuse it too
                raise SourceFailed(f"{_unless_source(url, source)}not a valid URL: {e}") from None
            if token:
                headers["Authorization"] = token
            with http.stream("GET", url, headers=headers, timeout=timeout) as response:
                answer = _answer(response, url, source, start, expected)
                if answer is None:  # a confirm page: the URL of the file is in it
                    url = _drive_confirm(response, url)
                    continue
                yield answer
                return
        raise SourceFailed("Google Drive kept answering with a confirmation page instead of the file")
    except _http.Refused:
        raise SourceFailed(_http.REFUSED) from None
    except _http.LimitExceeded as e:  # the fetch's budget: trying again would not fit in it either
        raise SourceFailed(f"{host}: {e} ({position()} bytes received)") from None
    except httpx.TimeoutException:
        raise Retry(f"no answer from {host} for {timeout:g} s ({position()} bytes received)") from None
    except httpx.ConnectError as e:
        if _unknown_host(e):
            raise SourceFailed(f"unknown host {host}") from None
        raise Retry(f"cannot connect to {host}: {_reason(e)}") from None
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.CloseError) as e:
        raise Retry(f"connection to {host} broke after {position()} bytes: {_reason(e)}") from None
    except httpx.TooManyRedirects:
        raise SourceFailed(f"too many redirects from {host}") from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as e:
        raise SourceFailed(f"{_unless_source(url, source)}{e}") from None
    except httpx.TransportError as e:
        raise Retry(f"{host}: {_reason(e)}") from None
    except httpx.HTTPError as e:  # e.g. a body that does not decode
        raise SourceFailed(f"{host}: {_reason(e)}") from None


def _answer(r: httpx.Response, url: str, source: Source, start: int, expected: Expected) -> Answer | None:
    """Check the status and headers of ``r``; None when it is a Google Drive confirm page."""
    where = f"HTTP {r.status_code} {r.reason_phrase} from {r.url.netloc.decode('ascii', 'replace')}"
    return check_answer(
        r.status_code, where, r.headers, url, source, start, expected, r.iter_raw, r.iter_bytes
    )


def _unless_source(url: str, source: Source) -> str:
    """``url: `` unless it is the source's own URL, which the failure line names anyway."""
    return "" if url == source.url else f"{redact(url)}: "


def _reason(e: Exception) -> str:
    return str(e) or type(e).__name__


def _unknown_host(e: BaseException) -> bool:
    """Did name resolution say the host does not exist (as opposed to a passing failure)?"""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, socket.gaierror) and e.errno == socket.EAI_NONAME:
            return True
        e = e.__cause__ or e.__context__
    return False


# -- Google Drive ------------------------------------------------------------------------


class _Forms(HTMLParser):
    """Collect each form's action and its hidden inputs, and links carrying ``confirm=``."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, list[tuple[str, str]]]] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append((a.get("action", ""), []))
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1][1].append((a["name"], a.get("value", "")))
        elif tag == "a" and "confirm=" in a.get("href", ""):
            self.links.append(a["href"])


def drive_confirm_url(page: str, base: str) -> str | None:
    """The URL behind Google Drive's "can't scan this file for viruses" page, if it has one.

    >>> drive_confirm_url('<form id="download-form" action="https://drive.usercontent.google.com/download">'
    ...   '<input type="hidden" name="id" value="F"><input type="hidden" name="confirm" value="t"></form>',
    ...   "https://drive.google.com/uc?export=download&id=F")
    'https://drive.usercontent.google.com/download?id=F&confirm=t'
    """
    parser = _Forms()
    parser.feed(page)
    for action, inputs in parser.forms:
        if any(name == "confirm" for name, _ in inputs):
            return urljoin(base, action) + "?" + urlencode(inputs)
    if parser.links:
        return urljoin(base, parser.links[0])
    return None


def _drive_confirm(r: httpx.Response, url: str) -> str:
    """The file's URL from a confirm page; SourceFailed when the page has none."""
    page = bytearray()
    for chunk in r.iter_raw():
        page += chunk
        if len(page) > _MAX_PAGE:
            break
    found = drive_confirm_url(page.decode("utf-8", "replace"), str(r.url))
    if found is None:
        raise SourceFailed(
            "Google Drive answered with a web page instead of the file: is it shared with "
            "'anyone with the link', and is its download quota not exceeded?"
        )
    return found
