"""One HTTP(S) attempt with httpx: resume with Range/If-Range, stream into a partial file.

Each call of :func:`get` is one attempt; it raises :class:`~caffezoo.fetch.retry.Retry`
for failures worth another try (dropped connection, timeout, 429, 5xx) and
:class:`~caffezoo.fetch.retry.SourceFailed` for the rest. Redirects are followed
by httpx, which drops ``Authorization`` when a redirect leaves the origin.

Imported only when a download really needs the network: httpx costs start-up
time that an "already there" check does not need.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Mapping
from html.parser import HTMLParser
from urllib.parse import urlencode, urljoin

from .. import _http
from .._http import httpx
from .hashing import Expected
from .partial import Partial
from .retry import Retry, SourceFailed
from .urls import Source, origin, redact

__all__ = ["drive_confirm_url", "get"]

# Largest confirm page we read from Google Drive before giving up on it.
_MAX_PAGE = 2 << 20
# Bytes asked of the socket per read: at loopback or LAN speeds httpcore's per-read Python work
# (h11 events, buffer copies) costs more than the bytes at its 64 KiB; 256 KiB cuts that 4-fold.
READ_SIZE = 256 << 10

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
            )
        return _client


def get(
    source: Source,
    partial: Partial,
    expected: Expected,
    *,
    timeout: float,
    auth: Mapping[str, str],
    client: httpx.Client | None = None,
) -> None:
    """Fetch ``source`` into ``partial`` from where it stands; return when the body is complete.

    ``client``: default, the process-wide download client; a server passes one with its policy.
    """
    url = source.url
    for _ in range(3):  # Google Drive may answer with a confirm page first
        url = _attempt(url, source, partial, expected, timeout, auth, client or default_client())
        if url is None:
            return
    raise SourceFailed("Google Drive kept answering with a confirmation page instead of the file")


def _attempt(
    url: str,
    source: Source,
    partial: Partial,
    expected: Expected,
    timeout: float,
    auth: Mapping[str, str],
    http: httpx.Client,
) -> str | None:
    headers = {}
    if partial.size:
        headers["Range"] = f"bytes={partial.size}-"
        validator = partial.validator(url)
        if validator:
            headers["If-Range"] = validator
    try:
        token = auth.get(origin(url))
    except ValueError as e:  # a bad port, a broken IPv6 address: httpx would refuse it too
        raise SourceFailed(f"{_unless_source(url, source)}not a valid URL: {e}") from None
    if token:
        headers["Authorization"] = token
    host = source.host
    try:
        with http.stream("GET", url, headers=headers, timeout=timeout) as response:
            try:
                return _receive(response, url, source, partial, expected)
            finally:
                partial.flush()  # what arrived before a failure is kept, for the next attempt
    except _http.Refused:
        raise SourceFailed(_http.REFUSED) from None
    except _http.LimitExceeded as e:  # the fetch's budget: trying again would not fit in it either
        raise SourceFailed(f"{host}: {e} ({partial.size} bytes received)") from None
    except httpx.TimeoutException:
        raise Retry(f"no answer from {host} for {timeout:g} s ({partial.size} bytes received)") from None
    except httpx.ConnectError as e:
        if _unknown_host(e):
            raise SourceFailed(f"unknown host {host}") from None
        raise Retry(f"cannot connect to {host}: {_reason(e)}") from None
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.CloseError) as e:
        raise Retry(f"connection to {host} broke after {partial.size} bytes: {_reason(e)}") from None
    except httpx.TooManyRedirects:
        raise SourceFailed(f"too many redirects from {host}") from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as e:
        raise SourceFailed(f"{_unless_source(url, source)}{e}") from None
    except httpx.TransportError as e:
        raise Retry(f"{host}: {_reason(e)}") from None
    except httpx.HTTPError as e:  # e.g. a body that does not decode
        raise SourceFailed(f"{host}: {_reason(e)}") from None


def _receive(r: httpx.Response, url: str, source: Source, partial: Partial, expected: Expected) -> str | None:
    status = r.status_code
    where = f"HTTP {status} {r.reason_phrase} from {r.url.netloc.decode('ascii', 'replace')}"
    offset = partial.size
    if status == 416:
        total = _range_total(r.headers.get("content-range"))
        if offset and offset in (total, expected.size):
            return None  # the partial file already holds every byte; the digests decide
        partial.restart()
        raise Retry(f"{where} for bytes {offset}-; starting over")
    if _http.is_retryable_status(status):
        raise Retry(where, _http.retry_after(r.headers.get("retry-after")))
    if status not in (200, 206):
        hint = {
            401: " (credentials needed?)",
            403: " (access denied)",
            404: " (not there)",
            410: " (gone)",
        }
        raise SourceFailed(where + hint.get(status, ""))
    if status == 206:
        start = _range_start(r.headers.get("content-range"))
        if start != offset:
            partial.restart()
            raise Retry(f"{where}: range starts at {start}, asked for {offset}; starting over")
        partial.resumed = True
    elif offset:
        partial.restart()  # 200 to a Range request: Range ignored, or the file changed (If-Range)
        offset = 0
    ctype = r.headers.get("content-type", "")
    if source.drive and ctype.startswith("text/html"):
        return _drive_confirm(r, url)
    partial.content_type = ctype
    encoded = r.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity")
    if encoded and expected.max_size is not None:
        # One read of a gzip (or brotli) bomb inflates a thousandfold before any cap sees it;
        # where bytes are capped (a server's mirror, which asks for identity) refuse to decode.
        partial.restart()
        raise SourceFailed(f"{where}: a compressed answer, which this fetch may not inflate")
    if encoded and status == 206:  # a range of compressed bytes cannot extend the file's bytes
        partial.restart()
        raise Retry(f"{where}: compressed answer to a range request; starting over")
    length = r.headers.get("content-length")
    total = offset + int(length) if length and length.isdigit() and not encoded else None
    if total is None and status == 206:
        total = _range_total(r.headers.get("content-range"))
    if expected.size is not None and total is not None and total != expected.size:
        partial.restart()  # another file: bytes kept from before may be its bytes too
        raise SourceFailed(f"{where}: the file has {total} bytes, expected {expected.size}")
    if total is not None:
        partial.ensure_space(total)
    partial.remember(url, r.headers.get("etag"), r.headers.get("last-modified"), total)
    if expected.max_size is not None and total is not None and total > expected.max_size:
        partial.restart()
        raise SourceFailed(f"{where}: {total} bytes, more than the {expected.max_size} allowed")
    limit = expected.size if expected.size is not None else total
    if limit is None:
        limit = expected.max_size
    received = offset
    for chunk in r.iter_bytes() if encoded else r.iter_raw():
        received += len(chunk)
        if limit is not None and received > limit:
            partial.restart()
            raise SourceFailed(f"{where}: more than the expected {limit} bytes")
        partial.write(chunk)
    if total is not None and received != total:
        raise Retry(f"{where}: connection closed after {received} of {total} bytes")
    return None


def _unless_source(url: str, source: Source) -> str:
    """``url: `` unless it is the source's own URL, which the failure line names anyway."""
    return "" if url == source.url else f"{redact(url)}: "


def _range_start(value: str | None) -> int | None:
    m = re.match(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)", value or "")
    return int(m.group(1)) if m else None


def _range_total(value: str | None) -> int | None:
    m = re.match(r"\s*bytes\s+(?:\d+-\d+|\*)/(\d+)", value or "")
    return int(m.group(1)) if m else None


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
