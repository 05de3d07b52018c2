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
thread pool that the rest of the server uses.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class Busy(Exception):
    """No room in a lane now (or no answer within its deadline): try again after ``retry_after`` s."""

    def __init__(self, lane: str, retry_after: int, message: str | None = None):
        super().__init__(message or f"the server is busy ({lane}); try again in {retry_after} s")
        self.lane, self.retry_after = lane, retry_after


class TooSlow(Busy):
    """The work ran past its deadline; the request is answered without it."""


class Lane:
    """At most ``workers`` calls running in threads and ``queue`` more waiting, each
    answered within ``deadline`` seconds (queueing included)."""

    def __init__(self, name: str, *, workers: int, queue: int, deadline: float, retry_after: int = 0):
        if workers < 1 or queue < 0 or deadline <= 0:
            raise ValueError(f"lane {name}: workers >= 1, queue >= 0 and deadline > 0, please")
        self.name, self.workers, self.queue, self.deadline = name, workers, queue, deadline
        self.retry_after = retry_after or max(1, math.ceil(deadline))
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"caffezoo-{name}")
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
