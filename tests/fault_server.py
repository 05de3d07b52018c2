"""A small HTTP/1.1 server for tests that misbehaves on purpose.

Each path serves a :class:`Route`: a body plus the faults to inject. The server
answers ``Range`` (and ``If-Range``) properly unless told not to, and records
every request with its headers, so tests can assert what a client sent.

    with FaultServer() as srv:
        route = srv.route("/w.bin", data, drop_after=1000)        # first answer breaks off
        srv.route("/flaky", data, statuses=[500, 500])            # two errors, then the file
        srv.route("/busy", data, statuses=[429], retry_after="1")
        srv.route("/moved", redirect=other.url("/w.bin"))
        download(srv.url("/w.bin"))
        srv.requests_for("/w.bin")[1].headers["range"]             # 'bytes=1000-'

Faults: ``statuses`` (answered first, in order), ``retry_after``,
``drop_after`` (close the connection after N body bytes, ``drops`` times),
``stall_after`` ((N, seconds or an Event to wait for): go silent after N bytes, once), ``trickle``
((bytes, seconds): send slowly), ``rate`` (bytes a second, per connection),
``total_rate`` (bytes a second, all connections to the route together: a capped source),
``ignore_range`` (and no ``Accept-Ranges``), ``corrupt`` (one byte flipped in
every answer), ``corrupt_at`` (the bytes at these offsets of the file flipped:
a source that lies in one segment), ``stall_at`` (every answer goes silent at
this offset of the file, until the server stops), ``die_after`` (after N body
bytes in all, every connection is cut and every request refused: a source that
dies), ``content_length`` (a lie about the length), ``redirect``, ``etag`` and
``last_modified`` (change them between requests to simulate a new file),
``content_type``, ``handler`` (a function ``(route, request_handler) -> None``
taking over the answer). Bind to ``127.0.0.2`` for "another host".

``route.bytes_sent`` counts the body bytes a route sent, ``request.sent`` those of
one answer: a test asserts what was (not) fetched again. ``server.peak_active`` is the
most answers it was sending at once; ``server.peak_whole()`` the most answers sent whole
at once (one the client cut short lingers here a moment after the client let it go).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Route:
    body: bytes = b""
    statuses: list[int] = field(default_factory=list)
    retry_after: str | None = None
    drop_after: int | None = None
    drops: int = 1
    stall_after: tuple[int, float | threading.Event] | None = None
    trickle: tuple[int, float] | None = None
    ignore_range: bool = False
    corrupt: bool = False
    content_length: int | None = None
    redirect: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    content_type: str = "application/octet-stream"
    handler: Callable[[Route, BaseHTTPRequestHandler], None] | None = None
    rate: float | None = None
    total_rate: float | None = None
    corrupt_at: tuple[int, ...] = ()
    stall_at: int | None = None
    die_after: int | None = None
    hits: int = 0
    bodies_sent: int = 0  # answers whose body went out complete
    bytes_sent: int = 0  # body bytes, all answers together
    _due: float = 0.0  # when the bytes sent so far are paid for, under total_rate

    @property
    def dead(self) -> bool:
        return self.die_after is not None and self.bytes_sent >= self.die_after


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    time: float
    sent: int = 0  # body bytes of the answer
    offset: int = 0  # where in the file they start
    whole: bool = False  # the whole body asked for went out
    end: float | None = None  # when the answer was over


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        srv = self.server.owner
        with srv.lock:
            srv.active += 1
            srv.peak_active = max(srv.peak_active, srv.active)
        try:
            self._answer(head)
        finally:
            with srv.lock:
                srv.active -= 1
                if hasattr(self, "record"):
                    self.record.end = time.monotonic()

    def _answer(self, head: bool) -> None:
        srv = self.server.owner
        path = self.path.split("?", 1)[0]
        self.record = Request(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, time.monotonic()
        )
        with srv.lock:
            srv.requests.append(self.record)
            route = srv.routes.get(path)
            if route is not None:
                n = route.hits
                route.hits += 1
        if route is None:
            return self._small(404, b"not found")
        if route.dead:  # hang up without a word
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if route.handler is not None:
            return route.handler(route, self)
        if n < len(route.statuses):
            extra = {"Retry-After": route.retry_after} if route.retry_after else {}
            return self._small(route.statuses[n], b"try again", extra)
        if route.redirect:
            return self._small(302, b"moved", {"Location": route.redirect})
        self._send_body(route, head)

    def _small(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":  # an answer to HEAD has headers only
            self.wfile.write(body)

    def _send_body(self, route: Route, head: bool) -> None:
        data = route.body
        size = len(data)
        start, end = 0, size - 1
        status = 200
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if (
            wanted
            and not route.ignore_range
            and (if_range is None or if_range in (route.etag, route.last_modified))
        ):
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
            if m:
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                if start >= size:
                    return self._small(416, b"", {"Content-Range": f"bytes */{size}"})
                status = 206
        body = data[start : end + 1]
        self.record.offset = start
        if route.corrupt and body:
            i = len(body) // 2
            body = body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1 :]
        for at in route.corrupt_at:
            if start <= at <= end:
                i = at - start
                body = body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1 :]
        self.send_response(status)
        self.send_header("Content-Type", route.content_type)
        if not route.ignore_range:
            self.send_header("Accept-Ranges", "bytes")
        length = len(body) if route.content_length is None else route.content_length - start
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        if route.etag:
            self.send_header("ETag", route.etag)
        if route.last_modified:
            self.send_header("Last-Modified", route.last_modified)
        self.end_headers()
        if head:
            return
        drop = None
        if route.drop_after is not None and route.drops != 0:
            route.drops -= 1
            drop = max(0, route.drop_after - start)
        stall = route.stall_after
        route.stall_after = None  # once
        if route.stall_at is not None:
            stall = (max(0, route.stall_at - start), 3600.0)
        sent = 0
        step = route.trickle[0] if route.trickle else 64 * 1024
        for r in (route.rate, route.total_rate):
            if r:
                step = max(1, min(step, int(r / 50)))
        began = time.monotonic()
        stopping = self.server.owner.stopping
        while sent < len(body):
            n = min(step, len(body) - sent)
            if drop is not None:
                n = min(n, drop - sent)
            if stall is not None and sent < stall[0]:
                n = min(n, stall[0] - sent)
            if route.die_after is not None:
                with self.server.owner.lock:
                    n = min(n, max(0, route.die_after - route.bytes_sent))
                if n == 0:  # dead: cut this connection too
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
            if n > 0 and route.total_rate:  # the route's connections share one budget
                with self.server.owner.lock:
                    now = time.monotonic()
                    route._due = max(route._due, now) + n / route.total_rate
                    wait = route._due - now - 0.02
                if wait > 0 and stopping.wait(wait):
                    self.close_connection = True
                    return
            if n > 0:
                with self.server.owner.lock:
                    if sent + n == len(body):  # counted before the last write, so a client never
                        route.bodies_sent += 1  # sees the whole body before the count does
                    route.bytes_sent += n
                    self.record.sent += n
                self.wfile.write(body[sent : sent + n])
                sent += n
            if route.rate and sent < len(body):
                ahead = sent / route.rate - (time.monotonic() - began)
                if ahead > 0:
                    self.wfile.flush()
                    if stopping.wait(ahead):
                        self.close_connection = True
                        return
            if drop is not None and sent >= drop:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if stall is not None and sent >= stall[0]:
                self.wfile.flush()
                if isinstance(stall[1], threading.Event):  # until the test says so
                    while not stall[1].wait(0.05) and not stopping.is_set():
                        pass
                else:
                    stopping.wait(stall[1])
                stall = None
                if stopping.is_set():
                    self.close_connection = True
                    return
            if route.trickle:
                self.wfile.flush()
                if stopping.wait(route.trickle[1]):
                    self.close_connection = True
                    return
        self.record.whole = sent == len(body)
        if route.content_length is not None and route.content_length - start > len(body):
            self.close_connection = True  # the promised bytes never come: hang up
        if not body:
            with self.server.owner.lock:
                route.bodies_sent += 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: FaultServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients hanging up is expected here
            super().handle_error(request, client_address)


class FaultServer:
    """A threaded HTTP server on ``host`` (127.0.0.1 by default) and a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self.active = self.peak_active = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._server = _Server((host, port), _Handler)
        self._server.owner = self
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def route(self, path: str, body: bytes = b"", **faults: Any) -> Route:
        route = Route(body=body, **faults)
        with self.lock:
            self.routes[path] = route
        return route

    def peak_whole(self) -> int:
        """The most answers sent whole that overlapped in time."""
        with self.lock:
            spans = [(r.time, r.end) for r in self.requests if r.whole and r.end is not None]
        edges = sorted([(t, 1) for t, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
        peak = now = 0
        for _, step in edges:
            now += step
            peak = max(peak, now)
        return peak

    def served(self, requests: list[Request], start: int, end: int) -> int:
        """Body bytes of ``requests`` that fell in ``[start, end)`` of the file."""
        return sum(max(0, min(end, r.offset + r.sent) - max(start, r.offset)) for r in requests)

    def requests_for(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path.split("?", 1)[0] == path]
