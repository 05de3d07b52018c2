"""Bounded work per request: costly functions run in a lane of worker threads with a
concurrency limit, a bounded queue and a deadline; what does not fit is a 503.

>>> lane = Lane("render", workers=2, queue=16, deadline=10.0)        # doctest: +SKIP
>>> html = await lane.run(render_page, data)                         # doctest: +SKIP

A full queue raises :class:`Busy` at once; work still queued or running at the
deadline raises :class:`TooSlow` and the request is answered without waiting
for the thread (Python cannot stop a thread, so the slot stays taken until it
ends on its own: the lane never holds more than ``workers`` threads, whatever
the callers do). The app answers both with 503 and ``Retry-After`` (see
:func:`busy_response`). Waiting requests are coroutines, not threads: a queue
of 100 costs no thread at all.

Each lane has its own executor, so a lane that is full never starves the
thread pool that the rest of the server uses. A lane of long CPU-bound work
(``try``: a net's forward pass) can run its threads ``nice`` steps lower (on
Linux, where the nice value is per thread): the event loop and the other
threads then win the CPU whenever they want it, and cheap requests stay quick
while the costly ones run.

A lane bounds how many answers are *built* at once, not how many finished ones
wait in memory for clients that read slowly. :class:`LargeAnswers` bounds those:
an answer over :data:`LARGE_ANSWER` bytes holds its size against a budget from
the moment it is built until it is sent (or its client is gone, or its send
deadline passed); a full budget is answered 503 instead.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from .._http_status import header_number

__all__ = [
    "AnswerBudget",
    "BodyRefused",
    "Busy",
    "Lane",
    "LargeAnswers",
    "Limits",
    "TooSlow",
    "busy_response",
    "held_body",
    "stated_length",
]

T = TypeVar("T")

log = logging.getLogger("caffezoo.server")

LARGE_ANSWER = 1024 * 1024  # bytes: answers bigger than this count against Limits.inflight_bytes
SEND_CHUNK = 256 * 1024  # a large body is handed to the server this much at a time


class Busy(Exception):
    """No room in a lane now (or no answer within its deadline): try again after ``retry_after`` s."""

    def __init__(self, lane: str, retry_after: int, message: str | None = None):
        super().__init__(message or f"the server is busy ({lane}); try again in {retry_after} s")
        self.lane, self.retry_after = lane, retry_after


class TooSlow(Busy):
    """The work ran past its deadline; the request is answered without it."""


class Lane:
    """At most ``workers`` calls running in threads and ``queue`` more waiting, each
    answered within ``deadline`` seconds (queueing included); its threads ``nice`` steps lower."""

    def __init__(
        self, name: str, *, workers: int, queue: int, deadline: float, retry_after: int = 0, nice: int = 0
    ):
        if workers < 1 or queue < 0 or deadline <= 0:
            raise ValueError(f"lane {name}: workers >= 1, queue >= 0 and deadline > 0, please")
        self.name, self.workers, self.queue, self.deadline = name, workers, queue, deadline
        self.nice = nice
        self.retry_after = retry_after or max(1, math.ceil(deadline))
        self._executor = ThreadPoolExecutor(
            max_workers=workers,
            thread_name_prefix=f"caffezoo-{name}",
            initializer=lower_priority if nice > 0 else None,
            initargs=(nice,) if nice > 0 else (),
        )
        self._slots: asyncio.Semaphore | None = None
        self.admitted = 0  # waiting + running (a thread past its deadline still counts)
        self.running = 0

    def _semaphore(self) -> asyncio.Semaphore:
        if self._slots is None:  # made on first use, inside the server's event loop
            self._slots = asyncio.Semaphore(self.workers)
        return self._slots

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in one of the lane's threads; :class:`Busy` or :class:`TooSlow` when it cannot be."""
        if self.admitted >= self.workers + self.queue:
            raise Busy(self.name, self.retry_after)
        loop = asyncio.get_running_loop()
        slots = self._semaphore()
        deadline = loop.time() + self.deadline
        self.admitted += 1
        started = False
        try:
            try:
                await asyncio.wait_for(slots.acquire(), self.deadline)
            except TimeoutError:
                raise TooSlow(self.name, self.retry_after) from None
            self.running += 1
            future = loop.run_in_executor(self._executor, fn, *args)
            started = True
            future.add_done_callback(self._finished)
            try:
                return await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise TooSlow(self.name, self.retry_after) from None
        finally:
            if not started:
                self.admitted -= 1

    def _finished(self, future: asyncio.Future) -> None:
        # The slot is given back when the thread is really done, not when the caller gave up.
        self.running -= 1
        self.admitted -= 1
        assert self._slots is not None
        self._slots.release()
        if not future.cancelled():
            future.exception()  # retrieved: a late failure is not "never retrieved" noise

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def lower_priority(steps: int) -> bool:
    """Run the calling thread ``steps`` nice steps lower (at most 19); whether it could.

    Linux only, where ``setpriority`` on a thread id renices that thread alone (elsewhere
    that id could name another process: nothing is done). Lowering needs no privilege.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + steps))
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class Limits:
    """The server's bounds on work and memory (``caffezoo serve`` options)."""

    render_workers: int = 2
    render_queue: int = 32
    render_deadline: float = 10.0
    draw_workers: int = 1
    draw_queue: int = 8
    draw_timeout: float = 20.0
    draw_max_layers: int = 1000
    picture_wait: float = 2.0  # how long a model page waits for its first drawing
    cache_bytes: int = 64 * 1024 * 1024
    inflight_bytes: int = 64 * 1024 * 1024  # large answers built and not yet sent, together
    send_deadline: float = 60.0  # seconds a large answer may take to send; then the connection is cut
    try_it: bool = False  # `caffezoo serve --try`: run models on uploaded images (server CPU)
    try_workers: int = 1
    try_queue: int = 4
    try_deadline: float = 30.0
    try_max_bytes: int = 8 * 1024 * 1024
    try_max_pixels: int = 24_000_000
    try_cache_bytes: int = 4 * 1024**3  # weights copied from a remote store, and conversions, on disk
    try_upload_bytes: int = 32 * 1024 * 1024  # upload bodies being read or run, together (per process)
    try_upload_deadline: float = 60.0  # seconds an upload's body may take to arrive; then 408
    body_bytes: int = 128 * 1024 * 1024  # Gist API request bodies being received or parsed, together
    body_deadline: float = 60.0  # seconds a Gist API request body may take to arrive; then 408


def busy_response(request: Any, exc: Busy):
    """503 with ``Retry-After``: an HTML page for a browser, GitHub-shaped JSON for the rest."""
    headers = {"Retry-After": str(exc.retry_after)}
    if "text/html" in request.headers.get("accept", ""):
        from .pages import render

        response = render(
            "error.html",
            status=503,
            title="Busy",
            message=f"The server is busy; please try again in {exc.retry_after} seconds.",
            q="",
        )
        response.headers.update(headers)
        return response
    from .errors import error_response

    return error_response(503, str(exc), headers=headers)


class AnswerBudget:
    """Bytes of large answers built and not yet sent, at most ``max_bytes`` together (and, the
    same way, try-it's upload bodies held in memory, ``send_deadline`` the time to receive one).

    >>> budget = AnswerBudget(20_000_000, send_deadline=60)
    >>> budget.take(12_000_000), budget.take(12_000_000)
    (True, False)

    One answer alone is always let through (``take`` on an empty budget), or an answer
    bigger than the budget could never be served: memory stays under ``max_bytes``
    plus one answer. Used from the event loop only, so it needs no lock.
    """

    def __init__(self, max_bytes: int, *, send_deadline: float, large: int = LARGE_ANSWER):
        if max_bytes < 0 or send_deadline <= 0:
            raise ValueError("large answers: max_bytes >= 0 and send_deadline > 0, please")
        self.max_bytes, self.send_deadline, self.large = max_bytes, send_deadline, large
        # A slot frees when an answer is sent, or at the latest at its send deadline.
        self.retry_after = max(1, math.ceil(min(send_deadline, 10.0)))
        self.bytes = 0
        self.answers = 0

    def take(self, size: int) -> bool:
        if self.answers and self.bytes + size > self.max_bytes:
            return False
        self.bytes += size
        self.answers += 1
        return True

    def give(self, size: int) -> None:
        self.bytes -= size
        self.answers -= 1


class LargeAnswers:
    """ASGI middleware: a response body over ``budget.large`` bytes is sent only if the
    :class:`AnswerBudget` has room (else 503 with ``Retry-After``, see :func:`busy_response`),
    in :data:`SEND_CHUNK` pieces, within ``budget.send_deadline`` seconds.

    uvicorn's ``send`` waits while the client does not read (flow control), so a
    client that never reads would hold its body, and its budget, for ever: past the
    deadline the rest is not sent and the connection is closed (the client sees a
    body shorter than its ``Content-Length``). Sending in pieces keeps at most one
    piece in the connection's write buffer once it is cut, not the whole body.
    Streamed answers (files, blobs) come in small pieces already and pass untouched.
    """

    def __init__(self, app: Any, budget: AnswerBudget):
        self.app, self.budget = app, budget

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        budget = self.budget
        start: dict | None = None
        state = {"refused": False, "cut": False}

        async def send_bounded(message: dict) -> None:
            nonlocal start
            if state["refused"] or state["cut"]:
                return  # the answer was replaced by a 503, or its connection is being closed
            if message["type"] == "http.response.start":
                start = message  # held until the body shows whether it is large
                return
            if start is not None and message["type"] == "http.response.body":
                first, start = start, None
                body = message.get("body", b"")
                if len(body) > budget.large:
                    if not budget.take(len(body)):
                        state["refused"] = True
                        return
                    try:
                        await send(first)
                        await self._send_pieces(send, body, message.get("more_body", False), state)
                    finally:
                        budget.give(len(body))
                    return
                await send(first)
            await send(message)

        await self.app(scope, receive, send_bounded)
        if state["refused"]:
            from starlette.requests import Request

            busy = Busy(
                "large answers",
                budget.retry_after,
                f"the server is sending too many large answers; try again in {budget.retry_after} s",
            )
            await busy_response(Request(scope), busy)(scope, receive, send)
        elif start is not None:
            await send(start)  # an answer that ended without a body message (none in Starlette)

    async def _send_pieces(self, send: Callable, body: bytes, more_body: bool, state: dict) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(loop.time() + self.budget.send_deadline):
                for at in range(0, len(body), SEND_CHUNK):
                    # A bytes slice is a copy: the connection's buffer must not keep the whole body alive.
                    piece = body[at : at + SEND_CHUNK]
                    more = more_body or at + SEND_CHUNK < len(body)
                    await send({"type": "http.response.body", "body": piece, "more_body": more})
        except TimeoutError:
            state["cut"] = True
            log.warning(
                "a %d-byte answer was not read within %.0f s: connection cut",
                len(body),
                self.budget.send_deadline,
            )


def stated_length(request: Any) -> int | None:
    """The body's length as its Content-Length states it; None when it states none, or when the
    body comes chunked (the chunks frame it, h11 reads them: its Content-Length is not its size).

    >>> stated_length(type("R", (), {"headers": {"content-length": "0" * 5000 + "10"}})())
    10
    """
    if "transfer-encoding" in request.headers:
        return None
    # httptools passes 4,300+ digits when they are leading zeros: header_number reads them
    return header_number(request.headers.get("content-length"))


class BodyRefused(Exception):
    """:func:`held_body` would not take a body: ``status`` 413 (too large), 408 (too slow) or 503
    (no room; ``retry_after`` seconds)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


@asynccontextmanager
async def held_body(request: Any, budget: AnswerBudget, cap: int) -> AsyncIterator[bytes]:
    """The request body (at most ``cap`` bytes), its memory reserved from ``budget`` until the
    block ends; raises :class:`BodyRefused`.

    ``async with held_body(request, budget, 30_000_000) as body: ...``

    The reservation (the stated Content-Length, else ``cap``) is taken before the first byte is
    read, or N slow bodies would hold N caps; a body that has not arrived within
    ``budget.send_deadline`` seconds (a slow loris) is refused, its reservation given back.
    """
    stated = stated_length(request)
    if stated is not None and stated > cap:
        raise BodyRefused(413, f"the body is {stated:,} bytes; the limit is {cap:,}")
    reserved = cap if stated is None else stated
    if not budget.take(reserved):
        raise BodyRefused(
            503,
            f"the server is receiving too many request bodies; try again in {budget.retry_after} s",
            budget.retry_after,
        )
    try:
        chunks, size = [], 0
        try:
            async with asyncio.timeout(budget.send_deadline):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > cap:
                        raise BodyRefused(413, f"the body is over {cap:,} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise BodyRefused(
                408, f"the body did not arrive within {budget.send_deadline:g} seconds"
            ) from None
        body = b"".join(chunks)
        del chunks
        yield body
    finally:
        budget.give(reserved)
