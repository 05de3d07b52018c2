"""SHA-1 of a file written out of order, computed over its contiguous prefix as it grows.

>>> import hashlib, os, tempfile
>>> fd, path = tempfile.mkstemp()
>>> _ = os.pwrite(fd, b"zoo", 5); _ = os.pwrite(fd, b"caffe", 0)
>>> h = OrderedHasher(path)
>>> h.add(5, [b"zoo"])          # landed first: kept in memory until the prefix reaches it
>>> h.add(0, [b"caffe"])        # the prefix: hashed now, then the bytes at 5 follow
>>> h.result(8).sha1 == hashlib.sha1(b"caffezoo").hexdigest()
True
>>> h.close(); os.close(fd); os.unlink(path)

Connections write their pieces of a download at their offsets and then hand
the same bytes to :meth:`OrderedHasher.add`. A thread of its own hashes them
in file order. Bytes wait for their turn in memory: copied into a pool of
``budget`` bytes in blocks of 1 MiB, allocated once, so that the network
threads' own buffers are freed at once and memory does not pile up in each
thread's allocator arena. When the pool is full, the pieces farthest ahead
are let go and read back from the file (the page cache, as they were just
written) when the prefix reaches them, so memory stays bounded however far
ahead fast connections run, and no network thread ever waits for the hash.
Every byte is hashed once; when the last piece lands, what is left to hash
is at most what waits ahead of the prefix.

:meth:`add_written` hands over bytes already in the file (a resumed download's):
they are read back once, in their turn.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Sequence

from .hashing import BUFFER_SIZE, Digests, new_hashes

__all__ = ["BUDGET", "OrderedHasher"]

# Bytes waiting in memory for their turn. Eight connections on pieces of 1 MiB fit twice
# over, so at link speed nothing is read back; with 8 connections peak RSS stays under 96 MiB.
BUDGET = 16 << 20
# The pool's block, and the read-back size: large enough that per-call overhead vanishes.
BLOCK = BUFFER_SIZE

Chunks = Sequence[bytes | memoryview]


class OrderedHasher:
    """Hash a file's bytes in file order while they are written in any order (see the module)."""

    def __init__(self, path: str | os.PathLike[str], sha256: bool = False, budget: int = BUDGET):
        self.path = os.fspath(path)
        self.budget = budget
        self.peak_buffered = 0  # the most bytes ever held in memory ahead of the prefix
        self.read_back = 0  # bytes hashed from the file rather than from memory
        self._sha256 = sha256
        self._hashes = new_hashes(sha256)
        self._hashed = 0  # the prefix [0, hashed) is in the digests
        self._memory: dict[int, tuple[list[int], int]] = {}  # offset -> (pool blocks, length)
        self._memory_end: dict[int, int] = {}  # end -> offset, to append a connection's next bytes
        self._memory_at: list[int] = []  # their offsets, sorted: the farthest is let go first
        self._pool: list[bytearray] = []  # blocks, allocated as first needed
        self._free: list[int] = []  # blocks not in use
        self._buffered = 0
        self._disk: dict[int, int] = {}  # offset -> length of bytes to read back
        self._disk_end: dict[int, int] = {}  # end -> offset, to join neighbours
        self._busy = False  # the thread is hashing a piece it took
        self._epoch = 0
        self._error: BaseException | None = None
        self._closed = False
        self._fd = -1
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="caffezoo-hash", daemon=True)
        self._thread.start()

    # -- feeding ------------------------------------------------------------------------

    def add(self, offset: int, chunks: Chunks) -> None:
        """Hash ``chunks``, already written at ``offset``, in their turn (they are copied)."""
        length = sum(len(c) for c in chunks)
        if not length:
            return
        with self._cond:
            start = self._memory_end.get(offset)
            if start is not None:  # the same connection's previous bytes: fill up their blocks
                blocks, used = self._memory[start]
                more = -(-(used + length) // BLOCK) - len(blocks)
                extra = self._blocks(more, start) if more > 0 else []
                if extra is not None and start in self._memory:  # (making room may let it go)
                    blocks += extra
                    self._copy(chunks, blocks, used)
                    self._memory[start] = (blocks, used + length)
                    del self._memory_end[offset]
                    self._memory_end[offset + length] = start
                    self._buffered += length
                    self.peak_buffered = max(self.peak_buffered, self._buffered)
                    self._cond.notify_all()
                    return
                if extra:
                    self._free.extend(extra)
            blocks = self._blocks(-(-length // BLOCK), offset)
            if blocks is None:  # no room, nor anything farther ahead to make room: read it back later
                self._put_disk(offset, length)
            else:
                self._copy(chunks, blocks, 0)
                bisect.insort(self._memory_at, offset)
                self._memory[offset] = (blocks, length)
                self._memory_end[offset + length] = offset
                self._buffered += length
                self.peak_buffered = max(self.peak_buffered, self._buffered)
            self._cond.notify_all()

    def _copy(self, chunks: Chunks, blocks: list[int], at: int) -> None:
        """Copy ``chunks`` into ``blocks`` from byte ``at`` on (no joined copy in between)."""
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                b, o = divmod(at, BLOCK)
                n = min(len(view), BLOCK - o)
                self._pool[blocks[b]][o : o + n] = view[:n]
                view = view[n:]
                at += n

    def _blocks(self, n: int, offset: int) -> list[int] | None:
        """``n`` free blocks, letting go of pieces farther ahead than ``offset`` if needed."""
        if n <= 0:
            return []
        while len(self._free) < n and len(self._pool) < self.budget // BLOCK:
            self._pool.append(bytearray(BLOCK))
            self._free.append(len(self._pool) - 1)
        while len(self._free) < n and self._memory_at and self._memory_at[-1] > offset:
            far = self._memory_at.pop()  # it is on disk already: read it back in its turn
            blocks, length = self._memory.pop(far)
            del self._memory_end[far + length]
            self._free.extend(blocks)
            self._buffered -= length
            self._put_disk(far, length)
        if len(self._free) < n:
            return None
        taken, self._free = self._free[-n:], self._free[:-n]
        return taken

    def add_written(self, offset: int, length: int) -> None:
        """Hash ``length`` bytes of the file from ``offset`` in their turn, reading them back."""
        if length > 0:
            with self._cond:
                self._put_disk(offset, length)
                self._cond.notify_all()

    def _put_disk(self, offset: int, length: int) -> None:
        before = self._disk_end.pop(offset, None)
        if before is not None:  # join the range that ends where this one starts
            offset, length = before, length + self._disk.pop(before)
        after = self._disk.pop(offset + length, None)
        if after is not None:
            del self._disk_end[offset + length + after]
            length += after
        self._disk[offset] = length
        self._disk_end[offset + length] = offset

    def reset(self) -> None:
        """Forget everything: nothing hashed, nothing waiting (the file starts over)."""
        with self._cond:
            self._epoch += 1
            self._hashes = new_hashes(self._sha256)
            self._hashed = 0
            for blocks, _ in self._memory.values():
                self._free.extend(blocks)
            self._memory.clear()
            self._memory_end.clear()
            self._memory_at.clear()
            self._buffered = 0
            self._disk.clear()
            self._disk_end.clear()
            self._error = None
            self._cond.notify_all()

    # -- results -----------------------------------------------------------------------

    @property
    def hashed(self) -> int:
        """Bytes of the prefix hashed so far."""
        return self._hashed

    @property
    def buffered(self) -> int:
        """Bytes waiting in memory for their turn (at most ``budget``)."""
        return self._buffered

    def result(self, total: int) -> Digests:
        """Wait until the prefix reaches ``total`` bytes; return its digests.

        Raises the error the thread met (a file shorter than what was handed over),
        or ``RuntimeError`` when bytes before ``total`` were never handed over.
        """
        with self._cond:
            while self._hashed < total and self._error is None:
                if not self._busy and self._hashed not in self._memory and self._hashed not in self._disk:
                    raise RuntimeError(f"{self.path}: bytes from {self._hashed} were never written")
                self._cond.wait()
            if self._error is not None:
                raise self._error
            if self._hashed != total:
                raise RuntimeError(f"{self.path}: {self._hashed} bytes hashed, expected {total}")
            hashes = [h.copy() for h in self._hashes]
        return Digests(hashes[0].hexdigest(), hashes[1].hexdigest() if len(hashes) > 1 else None, total)

    def close(self) -> None:
        """Stop the thread; what is still waiting is dropped unhashed."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()

    # -- the thread --------------------------------------------------------------------

    def _take(self) -> tuple[int, tuple[list[int], int] | int, list, int] | None:
        """The piece at the prefix (pool blocks, or a length to read back), once there is one."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                at = self._hashed
                if self._error is None and at in self._memory:
                    blocks, n = self._memory.pop(at)
                    del self._memory_end[at + n]
                    self._memory_at.remove(at)
                    self._buffered -= n
                    self._busy = True
                    return at, (blocks, n), self._hashes, self._epoch
                if self._error is None and at in self._disk:
                    n = self._disk.pop(at)
                    del self._disk_end[at + n]
                    self._busy = True
                    return at, n, self._hashes, self._epoch
                self._cond.wait()

    def _run(self) -> None:
        view = memoryview(bytearray(BLOCK))
        try:
            while (taken := self._take()) is not None:
                at, piece, hashes, epoch = taken
                try:
                    if isinstance(piece, int):
                        done = self._read_back(at, piece, hashes, view, epoch)
                    else:
                        done = self._hash_blocks(*piece, hashes)
                except BaseException as e:  # re-raised by result(), in the caller's thread
                    done, error = 0, e
                else:
                    error = None
                with self._cond:
                    self._busy = False
                    if not isinstance(piece, int):
                        self._free.extend(piece[0])
                    if epoch == self._epoch:
                        self._hashed = at + done
                        self._error = self._error or error
                    self._cond.notify_all()
        finally:
            if self._fd >= 0:
                os.close(self._fd)

    def _hash_blocks(self, blocks: list[int], length: int, hashes: list) -> int:
        # One update per 1 MiB block: each update gives up and takes back the GIL, and
        # fewer hand-overs leave the network threads more time.
        done = 0
        for b in blocks:
            part = memoryview(self._pool[b])[: min(BLOCK, length - done)]
            for h in hashes:
                h.update(part)
            done += len(part)
        return done

    def _read_back(self, at: int, length: int, hashes: list, view: memoryview, epoch: int) -> int:
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_RDONLY)
        done = 0
        while done < length:
            if epoch != self._epoch:  # reset meanwhile: the rest is not wanted
                return done
            n = os.preadv(self._fd, [view[: min(BLOCK, length - done)]], at + done)
            if not n:
                raise OSError(f"{self.path}: shorter than the {at + length} bytes written")
            for h in hashes:
                h.update(view[:n])
            done += n
            self.read_back += n
        return done
