"""Blob bodies moved from the store's socket to the client's by the kernel (Linux ``splice``).

>>> await send({"type": SPLICE, "socket": store_socket, "count": n})  # doctest: +SKIP

Streamed, a blob's bytes cross Python twice: a ``recv`` into a bytes object,
then a ``send`` out of it. On 2 cores shared with the store and the client that
copy held the server to about 0.75x of reading the store directly
(``benchmarks/cluster.py``). Through a pipe, ``splice`` moves them from socket
to socket without entering user space.

The server offers this as an ASGI extension, ``scope["extensions"]["caffezoo.splice"]``,
on uvicorn's httptools protocol (:mod:`.protocols` calls :func:`offer` for each
request). An app that sees no offer (another server, an in-process test client,
not Linux) streams as before. A :data:`SPLICE` message carries an open socket
whose next bytes are the body and the number of bytes to move: no more than the
answer's ``Content-Length`` has left after the bytes already sent. It ends the
answer; the server sets its ``sent`` to the bytes that reached the client. When
the store's answer stops early, or either side makes no progress for
:data:`IDLE_TIMEOUT` seconds, the client's connection is closed: the client sees
a body shorter than its length and resumes, as when a streamed answer breaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
from typing import Any

__all__ = ["AVAILABLE", "IDLE_TIMEOUT", "SPLICE", "offer"]

log = logging.getLogger("caffezoo.server")

SPLICE = "caffezoo.splice"
IDLE_TIMEOUT = 60.0  # seconds either side may make no progress before the answer is cut
PIPE_BYTES = 1 << 20  # asked of the kernel (fs.pipe-max-size allows 1 MiB unprivileged)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


def _works() -> bool:
    """Whether ``splice`` moves a byte from a socket through a pipe to another socket
    here: Linux has it since 2.6.17, but sandboxes (gVisor, some seccomp profiles) refuse it,
    and an offer that failed at its first call would cut every answer right after its head."""
    if not hasattr(os, "splice"):  # not Linux, or Python < 3.10
        return False
    # Each descriptor is closed however far the probe got: a process short of them, or a sandbox
    # that refuses socketpair or pipe, gets False (streaming), not an import that fails.
    with contextlib.ExitStack() as later:
        try:
            a, b = (later.enter_context(s) for s in socket.socketpair())
            c, d = (later.enter_context(s) for s in socket.socketpair())
            rd, wr = os.pipe()
            later.callback(os.close, rd)
            later.callback(os.close, wr)
            a.sendall(b"x")
            return (
                os.splice(b.fileno(), wr, 1) == 1 and os.splice(rd, c.fileno(), 1) == 1 and d.recv(1) == b"x"
            )
        except OSError:
            return False


AVAILABLE = _works()


def offer(cycle: Any) -> None:
    """Offer the extension to one request: uvicorn's ``RequestResponseCycle`` ``cycle``,
    whose ``send`` then takes :data:`SPLICE` messages."""
    cycle.scope.setdefault("extensions", {})[SPLICE] = {}
    send = cycle.send

    async def send_or_splice(message: Any) -> None:
        if message["type"] == SPLICE:
            message["sent"] = await _splice_body(cycle, send, message["socket"], message["count"])
        else:
            await send(message)

    cycle.send = send_or_splice  # run_asgi hands the app cycle.send when its task starts


async def _splice_body(cycle: Any, send: Any, source: socket.socket, count: int) -> int:
    """The bytes of ``count`` that reached the client's socket."""
    if cycle.disconnected:
        return 0  # as uvicorn's send does: the client is gone, nothing to say
    if (
        not cycle.response_started
        or cycle.response_complete
        or cycle.chunked_encoding is not False
        or cycle.scope["method"] == "HEAD"
        or not 0 <= count <= cycle.expected_content_length
    ):
        raise RuntimeError(f"{SPLICE}: {count} bytes do not fit what the answer's Content-Length has left")
    sent = await _move(cycle.transport, source, count) if count else 0
    if sent < count:
        # The body cannot be finished: close the connection, or the client would wait for bytes
        # that never come and then read the next answer as the rest of this one.
        cycle.transport.close()
        cycle.disconnected = True  # what connection_lost will say: the app ends quietly
        cycle.message_event.set()
        return sent
    cycle.expected_content_length -= count
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return sent


async def _move(transport: Any, source: socket.socket, count: int) -> int:
    """Move ``count`` bytes from ``source`` to the client of ``transport``; how many it moved,
    fewer when either side failed or stalled."""
    loop = asyncio.get_running_loop()
    flush = getattr(transport, "flush", None)
    if flush is not None:
        flush()  # protocols.OneSendPerStep: the head and the first bytes go before the body
    give_up = loop.time() + IDLE_TIMEOUT
    while transport.get_write_buffer_size():  # the body must follow them on the socket
        if transport.is_closing() or loop.time() > give_up:
            return 0
        await asyncio.sleep(0.005)
    client = transport.get_extra_info("socket")
    if client is None or transport.is_closing():
        return 0
    # Our own descriptor of the client's socket: the loop refuses a second watcher on the
    # transport's, and the bytes must not go out through the transport's buffer.
    try:
        out = os.dup(client.fileno())
    except OSError as e:  # out of file descriptors: this answer is cut, the server goes on
        log.warning("blob answer cut: %s", e)
        return 0
    try:
        rd, wr = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        os.close(out)
        log.warning("blob answer cut: %s", e)
        return 0
    try:
        if os.get_blocking(out):
            return 0  # not an event loop's socket: a splice into it could block the loop
        source.setblocking(False)
        try:
            fcntl.fcntl(wr, _F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # the kernel's default size (64 KiB) works, only with more hops
        room = fcntl.fcntl(wr, _F_GETPIPE_SZ)
        src = source.fileno()
        unread, held = count, 0  # still in the store's socket; in the pipe
        idle_since = loop.time()
        while unread or held:
            moved = False
            if unread and held < room:
                try:
                    n = os.splice(src, wr, min(unread, room - held), flags=_FLAGS)
                except BlockingIOError:
                    n = -1
                except OSError as e:
                    log.warning("blob store: its answer broke off %d bytes early: %s", unread, e)
                    return count - unread - held
                if n == 0:
                    log.warning("blob store: its answer ended %d bytes early", unread)
                    return count - unread - held
                if n > 0:
                    unread, held, moved = unread - n, held + n, True
            if held:
                try:
                    n = os.splice(rd, out, held, flags=_FLAGS)
                except BlockingIOError:
                    n = -1
                except OSError:
                    return count - unread - held  # the client went away (EPIPE, ECONNRESET)
                if n > 0:
                    held, moved = held - n, True
            if moved:
                idle_since = loop.time()
                await asyncio.sleep(0)  # the other answers' turn
                continue
            left = idle_since + IDLE_TIMEOUT - loop.time()
            if left <= 0:
                log.info("blob answer cut: no progress for %g s (%d bytes left)", IDLE_TIMEOUT, unread + held)
                return count - unread - held
            # Bytes in the pipe wait for the client only: a pipe can be full before `room` bytes
            # (its slots hold partial pages), and a readable store would then wake us in a spin.
            await _ready(loop, None if held else src, out if held else None, left)
        return count
    finally:
        os.close(rd)
        os.close(wr)
        os.close(out)


async def _ready(
    loop: asyncio.AbstractEventLoop, readable: int | None, writable: int | None, timeout: float
) -> None:
    """Until ``readable`` can be read or ``writable`` written, or ``timeout`` seconds."""
    woken = loop.create_future()

    def wake() -> None:
        if not woken.done():
            woken.set_result(None)

    if readable is not None:
        loop.add_reader(readable, wake)
    if writable is not None:
        loop.add_writer(writable, wake)
    try:
        await asyncio.wait_for(woken, timeout)
    except TimeoutError:
        pass
    finally:
        if readable is not None:
            loop.remove_reader(readable)
        if writable is not None:
            loop.remove_writer(writable)
