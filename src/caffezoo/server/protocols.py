"""uvicorn's HTTP protocols with a header deadline and one ``send`` per answer, and the
connection limits ``serve`` uses.

>>> uvicorn.run(app, host="127.0.0.1", port=8000, **connection_options())   # doctest: +SKIP

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but waits
for a request's headers without end: a client that sends one header line a
minute holds a connection, and enough of them hold every file descriptor
(slowloris). These protocols close a connection whose request line and headers
have not all arrived :data:`HEADER_TIMEOUT` seconds after its first byte (or
after it was opened), and answer 431 to a head over :data:`MAX_HEADER_BYTES`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from . import splice

__all__ = [
    "HEADER_TIMEOUT",
    "KEEP_ALIVE_TIMEOUT",
    "MAX_HEADER_BYTES",
    "H11HeaderDeadline",
    "OneSendPerStep",
    "connection_options",
]

HEADER_TIMEOUT = 10.0  # seconds for the request line and headers to arrive
KEEP_ALIVE_TIMEOUT = 5.0  # seconds an idle keep-alive connection stays open
MAX_HEADER_BYTES = 64 * 1024  # h11's cap on an incomplete request head


class _HeaderDeadline:
    """Mixin: a timer that runs while a request's head is being read, and closes on expiry."""

    header_timeout: float = HEADER_TIMEOUT
    max_head_bytes: int = MAX_HEADER_BYTES
    _deadline: asyncio.TimerHandle | None = None
    _head_bytes: int = 0
    _tail: bytes = b""  # the last bytes of an unfinished head: its blank line may span two reads

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneSendPerStep(transport))  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        cycle: Any = getattr(self, "cycle", None)
        if cycle is None or cycle.response_complete:
            # A head is being read: count its bytes in this chunk (up to its blank line)
            # before the parser sees them; counting only the chunks that left a head
            # unfinished let a head a little under two socket reads long through.
            seen = self._tail + data
            end = seen.find(b"\r\n\r\n")
            head = len(data) if end < 0 else max(0, end + 4 - len(self._tail))
            if self._head_bytes + head > self.max_head_bytes:
                self._refuse_head()
                return
            self._head_bytes, self._tail = (self._head_bytes + head, seen[-3:]) if end < 0 else (0, b"")
        super().data_received(data)  # type: ignore[misc]
        self._arm()

    def _refuse_head(self) -> None:
        """Answer 431 and close: httptools keeps an unfinished head in memory without a limit."""
        if not self.transport.is_closing():  # type: ignore[attr-defined]
            self.transport.write(  # type: ignore[attr-defined]
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
                b"connection: close\r\n\r\n"
            )
            self.transport.close()  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> bool:
        """Start the deadline while a head is being read (stop it once one is complete);
        whether a head is being read."""
        cycle: Any = getattr(self, "cycle", None)
        reading_head = cycle is None or cycle.response_complete
        if not reading_head:
            self._disarm()
        elif self._deadline is None and not self.transport.is_closing():  # type: ignore[attr-defined]
            self._deadline = self.loop.call_later(self.header_timeout, self._expired)  # type: ignore[attr-defined]
        return reading_head

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        cycle: Any = getattr(self, "cycle", None)
        if (cycle is None or cycle.response_complete) and not self.transport.is_closing():  # type: ignore[attr-defined]
            self.transport.close()  # type: ignore[attr-defined]


HOLD_BYTES = 64 * 1024  # queued past this, writes go at once (asyncio's default high-water mark)


class OneSendPerStep:
    """A transport whose writes within one step of the event loop leave in one ``send``.

    uvicorn writes an answer's head and its body separately, each at once: two
    system calls and two TCP segments per answer, a third of a busy server's
    time on 2 cores (profiled with py-spy on ``GET /gists/{id}``). Here writes
    are queued and handed to the transport together (``writelines``: one
    ``writev``) when the step that made them ends, before the loop polls for I/O
    again: nothing waits longer than the code that is running anyway.
    """

    def __init__(self, transport: asyncio.Transport):
        self._transport = transport
        self._queued: list[bytes] = []
        self._queued_bytes = 0
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._queued:
            self._loop.call_soon(self.flush)
        self._queued.append(data)
        self._queued_bytes += len(data)
        if self._queued_bytes >= HOLD_BYTES:
            # Now, not at the step's end: the transport's flow control must see these bytes,
            # or a sender that never yields (LargeAnswers' pieces) queues a whole body here,
            # past its budget and send deadline, for a client that may never read it.
            self.flush()

    def writelines(self, chunks) -> None:
        for data in chunks:
            self.write(data)

    def flush(self) -> None:
        queued, self._queued, self._queued_bytes = self._queued, [], 0
        if queued and not self._transport.is_closing():
            self._transport.writelines(queued)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._queued_bytes

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's own
        return getattr(self._transport, name)


class H11HeaderDeadline(_HeaderDeadline, H11Protocol):
    """uvicorn's pure-Python HTTP/1.1 protocol with a header deadline."""


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsHeaderDeadline(_HeaderDeadline, HttpToolsProtocol):
        """uvicorn's httptools protocol (the fast parser) with a header deadline, offering
        :mod:`.splice` to each request."""

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            cycle: Any = getattr(self, "cycle", None)
            # Not an upgrade (whose cycle is the request before), nor under TLS: a splice writes
            # to the TCP socket beneath the encryption.
            if splice.AVAILABLE and cycle is not None and cycle.scope is self.scope and self.scheme == "http":
                splice.offer(cycle)

    __all__ += ["HttpToolsHeaderDeadline"]
except ImportError:  # httptools is optional
    HttpToolsHeaderDeadline = None  # type: ignore[assignment,misc]


def connection_options(header_timeout: float = HEADER_TIMEOUT) -> dict[str, Any]:
    """uvicorn ``Config`` keywords: the protocol with a header deadline, keep-alive and head caps."""
    base = HttpToolsHeaderDeadline or H11HeaderDeadline
    protocol = base
    if header_timeout != HEADER_TIMEOUT:  # (serve keeps the module's class: its workers import it)
        protocol = type(base.__name__, (base,), {"header_timeout": header_timeout})
    return {
        "http": protocol,
        "timeout_keep_alive": KEEP_ALIVE_TIMEOUT,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
    }
