"""Plain ``http://`` ranges read straight from a socket: a download's data path without httpx.

>>> ask = RangeAsk(source, source.url, 0, None, None, expected)  # doctest: +SKIP
>>> with open_range(ask, timeout=30, auth={}) as answer:  # doctest: +SKIP
...     for chunk in answer.chunks(): ...

:func:`open_range` answers as :func:`caffezoo.fetch.http.open_range` does (the
same :class:`Answer`, the same checks of status and headers, the same failures)
and hands the request to it — httpx — whenever it is not a plain one: HTTPS,
a proxy in the environment, a client or a fetch budget given (a server's
fetches, with their outbound-URL policy), a redirect (httpx follows it and
drops ``Authorization`` when it leaves the origin), a body without a length.

Why: importing httpx costs 0.15 s (more under load), as much as hashing 50 MB,
and a whole download over loopback takes 0.3 s; and its per-read work (h11
events, a copy per layer) is a fifth of a connection's CPU time. Here a read is
one ``recv`` of up to :data:`READ_SIZE` bytes, and connections are kept open
from piece to piece.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from .._http_status import header_number, is_retryable_status, range_start, range_total, retry_after
from .hashing import Expected
from .retry import Retry, SourceFailed, Unsatisfiable, WrongFile
from .urls import Source, origin

__all__ = [
    "Answer",
    "READ_SIZE",
    "RangeAsk",
    "check_answer",
    "open_range",
    "plain_target",
    "range_header",
    "read_answer",
    "range_start",
    "range_total",
]

# Bytes asked of the socket per read (here, and by httpx's client for downloads in fetch.http):
# at loopback or LAN speeds per-read work costs more than the bytes at 64 KiB; 256 KiB cuts it 4-fold.
READ_SIZE = 256 << 10
# A read that fills the buffer slower than this hands over what it has (FILL_TIME s).
FILL_TIME = 0.05
# A status line and headers longer than this are not a file server's: httpx reads them.
_MAX_HEAD = 64 << 10
# Informational answers (1xx) skipped before the answer; a server sending more is not a file server.
_MAX_INFORMATIONAL = 8
# Idle kept-alive connections with their (host, port), oldest first: a download's connections go
# from piece to piece. At most _MAX_IDLE in all (as httpx's download client keeps), so that a
# process reading from host after host does not hold a socket open for each of them.
_MAX_IDLE = 32
_idle: list[tuple[tuple[str, int], socket.socket]] = []
_idle_lock = threading.Lock()
_PROXY_VARS = ("http_proxy", "all_proxy")
# URLs whose answer this reader left to httpx (a redirect, a chunked body...): their next pieces
# go to httpx at once, not through one more request and connection wasted here. Forgotten in
# bulk past _MAX_NOT_PLAIN.
_not_plain: set[str] = set()
_MAX_NOT_PLAIN = 1024


@dataclass
class Answer:
    """A source's answer to a request for the bytes from ``start``: where its body goes, and what it said.

    ``offset`` is where the body starts in the file: the start asked for (206), or 0 (200:
    the range was ignored, or ``If-Range`` found the file changed). ``ranges``: the source
    takes byte ranges (it answered 206, or said ``Accept-Ranges: bytes``).
    """

    url: str
    status: int
    offset: int
    total: int | None
    ranges: bool
    etag: str | None
    last_modified: str | None
    content_type: str
    where: str
    received: int = 0
    body: Callable[[], Iterator[bytes]] | None = field(default=None, repr=False)

    @property
    def validator(self) -> str | None:
        """An ``If-Range`` value for later requests: a strong ETag, else Last-Modified."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    def chunks(self) -> Iterator[bytes]:
        """The body, as it arrives."""
        assert self.body is not None
        for chunk in self.body():
            self.received += len(chunk)
            yield chunk


def range_header(start: int, end: int | None) -> str | None:
    """``bytes=START-[END-1]``; None for the whole file.

    >>> range_header(0, None), range_header(10, None), range_header(10, 20)
    (None, 'bytes=10-', 'bytes=10-19')
    """
    if end is None:
        return f"bytes={start}-" if start else None
    return f"bytes={start}-{end - 1}"


class _NotPlain(Exception):
    """Not for this reader (a redirect, a body of unknown length...): httpx asks again."""


def check_answer(
    status: int,
    where: str,
    headers: Any,
    url: str,
    source: Source,
    start: int,
    expected: Expected,
    raw: Callable[[], Iterator[bytes]],
    decoded: Callable[[], Iterator[bytes]],
) -> Answer | None:
    """Check an answer's status and headers (``headers.get`` takes lower-case names); None for
    a Google Drive confirm page. ``raw`` iterates the body as sent, ``decoded`` inflated."""
    if status == 416:
        raise Unsatisfiable(f"{where} for bytes {start}-", range_total(headers.get("content-range")))
    if is_retryable_status(status):
        raise Retry(where, retry_after(headers.get("retry-after")), busy=status in (429, 503))
    if status not in (200, 206):
        hint = {
            401: " (credentials needed?)",
            403: " (access denied)",
            404: " (not there)",
            410: " (gone)",
        }
        raise SourceFailed(where + hint.get(status, ""))
    offset = 0
    if status == 206:
        offset = range_start(headers.get("content-range"))
        if offset != start:
            raise Retry(f"{where}: range starts at {offset}, asked for {start}")
    ctype = headers.get("content-type", "")
    if source.drive and ctype.startswith("text/html"):
        return None
    encoded = headers.get("content-encoding", "identity").strip().lower() not in ("", "identity")
    if encoded and expected.max_size is not None:
        # One read of a gzip (or brotli) bomb inflates a thousandfold before any cap sees it;
        # where bytes are capped (a server's mirror, which asks for identity) refuse to decode.
        raise SourceFailed(f"{where}: a compressed answer, which this fetch may not inflate")
    if encoded and status == 206:  # a range of compressed bytes cannot extend the file's bytes
        raise Retry(f"{where}: compressed answer to a range request")
    if status == 206:
        total = range_total(headers.get("content-range"))
    else:
        total = None if encoded else header_number(headers.get("content-length"))
    if expected.size is not None and total is not None and total != expected.size:
        raise WrongFile(f"{where}: the file has {total} bytes, expected {expected.size}")
    if expected.max_size is not None and total is not None and total > expected.max_size:
        raise WrongFile(f"{where}: {total} bytes, more than the {expected.max_size} allowed")
    ranges = status == 206 or (not encoded and "bytes" in headers.get("accept-ranges", "").lower())
    return Answer(
        url=url,
        status=status,
        offset=offset,
        total=total,
        ranges=ranges and total is not None,
        etag=headers.get("etag"),
        last_modified=headers.get("last-modified"),
        content_type=ctype,
        where=where,
        body=decoded if encoded else raw,
    )


def _plain(url: str, client: Any, source: Source) -> tuple[str, int, str] | None:
    """(host, port, target) when this reader may ask ``url``; None when httpx must."""
    if client is not None or source.drive or url in _not_plain:
        return None
    http = sys.modules.get("caffezoo._http")
    if http is not None and http._budget.get() is not None:
        return None  # a fetch budget: httpx's network backend enforces it
    return plain_target(url)


def plain_target(url: str) -> tuple[str, int, str] | None:
    """``(host, port, request target)`` when ``url`` can be asked over a socket of one's own:
    plain ``http://``, no proxy in the environment, nothing in it an HTTP client would rewrite;
    else None (an HTTP client must ask it).

    >>> plain_target("http://127.0.0.1:7480/b/k?X-Amz-Signature=0")
    ('127.0.0.1', 7480, '/b/k?X-Amz-Signature=0')
    """
    if not url.startswith("http://"):
        return None
    if any(os.environ.get(v) or os.environ.get(v.upper()) for v in _PROXY_VARS):
        return None  # httpx applies the proxy, and NO_PROXY
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError:
        return None  # httpx says what is wrong with it
    host = parts.hostname
    if not host or parts.username or parts.password or "%" in host:
        return None
    if not url.isascii() or not url.isprintable() or " " in url:
        return None  # httpx percent-encodes what a request line may not hold as it is
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return host, port, target


class RangeAsk(NamedTuple):
    """What one request asks: bytes ``[start, end)`` of ``url`` (``end`` None: to the end) for
    ``source``, ``If-Range: validator``, to be checked against ``expected``."""

    source: Source
    url: str
    start: int
    end: int | None
    validator: str | None
    expected: Expected


@contextlib.contextmanager
def open_range(
    ask: RangeAsk, *, timeout: float, auth: Mapping[str, str], client: Any = None
) -> Iterator[Answer]:
    """Ask for ``ask``'s bytes as :func:`caffezoo.fetch.http.open_range` does."""
    source, url = ask.source, ask.url
    where = _plain(url, client, source)
    if where is not None:
        with contextlib.ExitStack() as stack:
            try:
                answer = stack.enter_context(_open_plain(ask, *where, timeout, auth))
            except _NotPlain:
                if len(_not_plain) >= _MAX_NOT_PLAIN:
                    _not_plain.clear()
                _not_plain.add(url)
            else:
                yield answer
                return
    from .http import open_range as open_with_httpx

    with open_with_httpx(ask, timeout=timeout, auth=auth, client=client) as answer:
        yield answer


# Who is asking. Without the version: importlib.metadata takes 0.1 s to find it, a third
# of a whole download's time over loopback.
USER_AGENT = "caffezoo"


@contextlib.contextmanager
def _open_plain(
    ask: RangeAsk, host: str, port: int, target: str, timeout: float, auth: Mapping[str, str]
) -> Iterator[Answer]:
    source, url, start, end, validator, expected = ask
    try:
        name = source.host
    except ValueError:
        name = host
    netloc = f"[{host}]" if ":" in host else host
    netloc += "" if port == 80 else f":{port}"
    lines = [f"GET {target} HTTP/1.1", f"Host: {netloc}", f"User-Agent: {USER_AGENT}"]
    lines += ["Accept: */*", "Accept-Encoding: identity"]
    wanted = range_header(start, end)
    if wanted:
        lines.append(f"Range: {wanted}")
        if validator:
            lines.append(f"If-Range: {validator}")
    token = auth.get(origin(url))
    if token:
        lines.append(f"Authorization: {token}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    sock: socket.socket | None = None
    keep = False
    try:
        try:
            for fresh in (False, True):
                sock, reused = _connection(host, port, timeout, fresh)
                try:
                    sock.sendall(request)
                    status, reason, headers, version, rest = _read_answer_head(sock)
                    break
                except (ConnectionError, _Closed):
                    sock.close()
                    sock = None
                    if not reused:  # a new connection that breaks at once: the server's doing
                        raise
        except TimeoutError:
            raise Retry(f"no answer from {name} for {timeout:g} s ({start} bytes received)") from None
        except socket.gaierror as e:
            if e.errno == socket.EAI_NONAME:
                raise SourceFailed(f"unknown host {name}") from None
            raise Retry(f"cannot connect to {name}: {e}") from None
        except _Refused as e:
            raise Retry(f"cannot connect to {name}: {e.__cause__}") from None
        except (OSError, _Closed) as e:
            raise Retry(f"connection to {name} broke after {start} bytes: {e}") from None
        if 300 <= status < 400 or headers.get("transfer-encoding") or not _length_known(status, headers):
            raise _NotPlain  # httpx follows redirects and reads chunked bodies
        if headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
            raise _NotPlain  # httpx inflates it, or refuses to
        length = (header_number(headers["content-length"]) or 0) if status in (200, 206) else 0
        answer: Answer | None = None

        def body() -> Iterator[bytes | memoryview]:
            # Read into one buffer, reused: a fresh bytes object of 256 KiB per read is a fresh
            # mmap, whose pages fault in one by one (a third of a connection's CPU time).
            # A full buffer is handed over as a view, valid until the next chunk is asked for.
            left = length
            if rest:
                yield rest[:left]
                left -= len(rest[:left])
            buf = memoryview(bytearray(min(READ_SIZE, left))) if left > 0 else memoryview(b"")
            while left > 0:
                want, got, error = min(len(buf), left), 0, None
                began = time.monotonic()
                try:
                    while got < want:
                        n = sock.recv_into(buf[got:want])
                        if not n:
                            raise _Closed()
                        got += n
                        if got < want and time.monotonic() - began > FILL_TIME:
                            break  # a slow link: hand over what came, so that it reaches the disk
                except (OSError, _Closed) as e:
                    error = e
                left -= got
                if got:  # what arrived before a failure is kept too
                    yield buf[:got] if got == len(buf) else bytes(buf[:got])
                if error is not None:
                    at = start if answer is None else answer.offset + answer.received
                    if isinstance(error, TimeoutError):
                        raise Retry(
                            f"no answer from {name} for {timeout:g} s ({at} bytes received)"
                        ) from None
                    if isinstance(error, _Closed):
                        error = _Closed(
                            "peer closed connection without sending complete message body: "
                            f"received {length - left} bytes, expected {length}"
                        )
                    raise Retry(f"connection to {name} broke after {at} bytes: {error}") from None

        where = f"HTTP {status} {reason} from {netloc}"
        answer = check_answer(status, where, headers, url, source, start, expected, body, body)
        if answer is None:  # a Google Drive page (not asked here)
            raise _NotPlain
        yield answer
        # Kept for the next piece only when its whole answer was read, and nothing more came.
        keep = (
            answer.received == length
            and not _more(sock)
            and len(rest) <= length
            and version == "HTTP/1.1"
            and "close" not in headers.get("connection", "").lower()
        )
    finally:
        if sock is not None:
            if keep:
                _give_back(host, port, sock)
            else:
                sock.close()


class _Closed(Exception):
    """The connection ended before the whole answer came."""

    def __init__(self, message: str = "Server disconnected without sending a response.") -> None:
        super().__init__(message)


class _Refused(Exception):
    """Connecting failed (the OSError is the cause)."""


def _connection(host: str, port: int, timeout: float, fresh: bool) -> tuple[socket.socket, bool]:
    """A kept-alive connection to ``host:port`` (True), else a new one (False)."""
    while not fresh:
        with _idle_lock:
            at = next((i for i in range(len(_idle) - 1, -1, -1) if _idle[i][0] == (host, port)), None)
            if at is None:
                break
            sock = _idle.pop(at)[1]
        if _more(sock):  # bytes came after it was kept (or the server closed it): not an answer to us
            sock.close()
            continue
        sock.settimeout(timeout)
        return sock, True
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror:
        raise
    except TimeoutError:
        raise
    except OSError as e:
        raise _Refused() from e
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, False


def _more(sock: socket.socket) -> bool:
    """Is there something to read already, after a whole answer: more bytes than its
    Content-Length said, or the server closing? Then the connection is not reused.

    A peek without waiting, not ``select``, which fails for descriptors above 1024."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset: not reusable either
    finally:
        sock.settimeout(timeout)
    return True


def _give_back(host: str, port: int, sock: socket.socket) -> None:
    with _idle_lock:
        _idle.append(((host, port), sock))
        gone = _idle.pop(0)[1] if len(_idle) > _MAX_IDLE else None
    if gone is not None:
        gone.close()


def _read_answer_head(sock: socket.socket) -> tuple[int, str, dict[str, str], str, bytes]:
    """Status, reason, headers and version of the answer, and what came after its head.

    Informational answers before it (100 Continue, 103 Early Hints) are skipped, as httpx does.
    """
    rest = b""
    for _ in range(_MAX_INFORMATIONAL + 1):
        head, rest = _read_head(sock, rest)
        status, reason, headers, version = _parse_head(head)
        if not 100 <= status < 200:
            return status, reason, headers, version, rest
        if status == 101:  # switching protocols, unasked: not an answer this reader knows
            raise _NotPlain
    raise _NotPlain


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (names in lower case) and the body bytes already read of the answer on
    ``sock`` (informational answers skipped); :class:`ValueError` when it is not a plain
    HTTP/1.x answer or the connection ends before its head does.

    >>> status, headers, first = read_answer(sock)  # doctest: +SKIP
    """
    try:
        status, _reason, headers, _version, rest = _read_answer_head(sock)
    except _NotPlain:
        raise ValueError("not a plain HTTP/1.x answer") from None
    except _Closed as e:
        raise ValueError(str(e)) from None
    return status, headers, rest


def _read_head(sock: socket.socket, data: bytes = b"") -> tuple[bytes, bytes]:
    """The status line and headers, and what came after them (``data``: what came already)."""
    while True:
        end = data.find(b"\r\n\r\n")
        head = data if end < 0 else data[:end]
        if head.count(b"\n") != head.count(b"\r\n"):
            raise _NotPlain  # a line ending in a bare LF, which httpx takes and this reader does not
        if end >= 0:
            return head, data[end + 4 :]
        if len(data) > _MAX_HEAD:
            raise _NotPlain
        chunk = sock.recv(READ_SIZE)
        if not chunk:
            raise _Closed()
        data += chunk


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str], str]:
    lines = head.decode("latin-1").split("\r\n")
    m = re.fullmatch(r"(HTTP/1\.[01]) (\d{3})(?: (.*))?", lines[0])
    if not m:
        raise _NotPlain  # httpx says what is wrong with it
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or line[:1] in " \t":
            raise _NotPlain
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return int(m[2]), m[3] or "", headers, m[1]


def _length_known(status: int, headers: Mapping[str, str]) -> bool:
    """Does the body end by its length (so the connection can be kept)? Always, for errors."""
    if status not in (200, 206):
        return True  # the body is not read: the connection is closed after it
    return header_number(headers.get("content-length")) is not None
