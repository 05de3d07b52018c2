"""Digests: what a blob is expected to be, and hashing that keeps up with the network.

>>> exp = Expected("9116A64C0FBE4459D18F4BB6B56D647B63920377", size=10)
>>> exp.sha1
'9116a64c0fbe4459d18f4bb6b56d647b63920377'
>>> exp.mismatch(Digests(sha1=exp.sha1, sha256=None, size=9))
'size: expected 10 bytes, got 9'

:class:`StreamHasher` hashes in a thread of its own, fed through a bounded
queue: ``hashlib`` releases the GIL on large buffers, so the network thread
keeps receiving while the previous megabyte is hashed, and a slow disk or
CPU holds the download back instead of buffering without bound.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import UsageError
from ..hashes import normalize_hex

__all__ = ["BUFFER_SIZE", "Digests", "Expected", "QUEUE_DEPTH", "StreamHasher", "hash_file", "new_hashes"]


# 1 MiB reads: large enough that per-call overhead vanishes, small enough for a bounded queue.
BUFFER_SIZE = 1 << 20
QUEUE_DEPTH = 4


@dataclass(frozen=True)
class Digests:
    """What was measured: SHA-1, SHA-256 (when asked for) and byte count."""

    sha1: str
    sha256: str | None
    size: int


@dataclass(frozen=True)
class Expected:
    """What a blob must be. ``sha1`` names it; ``sha256`` and ``size`` are checked when given.

    ``max_size`` caps what a source may send when ``size`` is not known (a server's mirror
    must not fill its disk for a made-up SHA-1).
    """

    sha1: str
    sha256: str | None = None
    size: int | None = None
    max_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha1", _hex(self.sha1, 40, "sha1"))
        if self.sha256 is not None:
            object.__setattr__(self, "sha256", _hex(self.sha256, 64, "sha256"))
        if self.size is not None and self.size < 0:
            raise UsageError(f"size: expected a number of bytes >= 0, got {self.size}")

    def mismatch(self, got: Digests) -> str | None:
        """``None`` when ``got`` is this blob, else what differs, in words."""
        problems = []
        if self.size is not None and got.size != self.size:
            problems.append(f"size: expected {self.size} bytes, got {got.size}")
        if got.sha1 != self.sha1:
            problems.append(f"sha1: expected {self.sha1}, got {got.sha1}")
        if self.sha256 is not None and got.sha256 != self.sha256:
            problems.append(f"sha256: expected {self.sha256}, got {got.sha256}")
        return "; ".join(problems) or None


def _hex(value: str, digits: int, name: str) -> str:
    text = normalize_hex(value, digits)
    if text is None:
        raise UsageError(f"{name}: expected {digits} hexadecimal digits, got {value!r}")
    return text


def new_hashes(sha256: bool) -> list:
    """Fresh SHA-1 (and SHA-256) objects."""
    # usedforsecurity=False: integrity checks must work on FIPS-mode systems too.
    hashes = [hashlib.sha1(usedforsecurity=False)]
    if sha256:
        hashes.append(hashlib.sha256(usedforsecurity=False))
    return hashes


def _digests(hashes: list, size: int) -> Digests:
    return Digests(hashes[0].hexdigest(), hashes[1].hexdigest() if len(hashes) > 1 else None, size)


def hash_file(
    path: str | os.PathLike[str],
    sha256: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Digests:
    """Hash a whole file in 1 MiB reads into one reused buffer.

    ``progress(n)`` is called with the bytes read so far, once per buffer.
    """
    hashes = new_hashes(sha256)
    buf = bytearray(BUFFER_SIZE)
    view = memoryview(buf)
    size = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            for h in hashes:
                h.update(view[:n])
            size += n
            if progress:
                progress(size)
    return _digests(hashes, size)


_STOP = object()
_RESET = object()


class StreamHasher:
    """Hash byte batches in a background thread, in the order they are fed.

    >>> h = StreamHasher()
    >>> h.feed([b"caffe", b"zoo"])
    >>> h.result().sha1 == hashlib.sha1(b"caffezoo").hexdigest()
    True
    >>> h.close()
    """

    def __init__(self, sha256: bool = False):
        self._sha256 = sha256
        self._hashes = new_hashes(sha256)
        self._size = 0
        self._error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self._thread = threading.Thread(target=self._run, name="caffezoo-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                if isinstance(item, threading.Event):
                    item.set()
                elif item is _RESET:
                    self._hashes, self._size, self._error = new_hashes(self._sha256), 0, None
                elif self._error is not None:
                    continue
                elif isinstance(item, tuple):  # (path, offset, length): bytes already on disk
                    self._hash_range(*item)
                else:
                    # One update per batch: each update gives up and takes back the GIL, and
                    # fewer hand-overs leave the network thread more time.
                    data = item[0] if len(item) == 1 else b"".join(item)
                    for h in self._hashes:
                        h.update(data)
                    self._size += len(data)
            except BaseException as e:  # re-raised by result(), in the caller's thread
                self._error = e
            finally:
                self._queue.task_done()

    def _hash_range(self, path: str, offset: int, length: int) -> None:
        buf = bytearray(BUFFER_SIZE)
        view = memoryview(buf)
        with open(path, "rb", buffering=0) as f:
            f.seek(offset)
            while length > 0:
                n = f.readinto(view[: min(length, BUFFER_SIZE)])
                if not n:
                    raise OSError(f"{path}: shorter than the {length} bytes still expected")
                for h in self._hashes:
                    h.update(view[:n])
                self._size += n
                length -= n

    def feed(self, chunks: Sequence[bytes | memoryview]) -> None:
        """Queue a batch of chunks (blocks while the queue is full). The chunks must not change."""
        self._queue.put(chunks)

    def feed_file(self, path: str | os.PathLike[str], offset: int, length: int) -> None:
        """Queue ``length`` bytes of a file from ``offset`` (a partial download being resumed)."""
        self._queue.put((os.fspath(path), offset, length))

    def reset(self) -> None:
        """Start over, as if nothing had been fed."""
        self._queue.put(_RESET)

    def result(self) -> Digests:
        """Wait for everything fed so far; return its digests."""
        done = threading.Event()
        self._queue.put(done)
        done.wait()
        if self._error is not None:
            raise self._error
        return _digests([h.copy() for h in self._hashes], self._size)

    def close(self) -> None:
        """Stop the thread (what is still queued is dropped unhashed)."""
        if self._thread.is_alive():
            while True:
                try:
                    self._queue.get_nowait()
                    self._queue.task_done()
                except queue.Empty:
                    break
            self._queue.put(_STOP)
            self._thread.join()
