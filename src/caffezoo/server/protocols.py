"""uvicorn's HTTP protocols with a header deadline, and the connection limits ``serve`` uses.

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

__all__ = [
    "HEADER_TIMEOUT",
    "KEEP_ALIVE_TIMEOUT",
    "MAX_HEADER_BYTES",
    "H11HeaderDeadline",
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

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self._arm():
            # Still reading a head after this chunk: all of it was head (httptools keeps
            # an unfinished head in memory without a limit of its own).
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes and not self.transport.is_closing():  # type: ignore[attr-defined]
                self.transport.write(  # type: ignore[attr-defined]
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
                    b"connection: close\r\n\r\n"
                )
                self.transport.close()  # type: ignore[attr-defined]
        else:
            self._head_bytes = 0

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


class H11HeaderDeadline(_HeaderDeadline, H11Protocol):
    """uvicorn's pure-Python HTTP/1.1 protocol with a header deadline."""


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsHeaderDeadline(_HeaderDeadline, HttpToolsProtocol):
        """uvicorn's httptools protocol (the fast parser) with a header deadline."""

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
