"""Which bytes of a download are written, by which source, and which are being fetched.

>>> runs = Runs()
>>> runs.add(0, 100, "a"); runs.add(100, 200, "a"); runs.add(300, 400, "b")
>>> runs.spans()
[(0, 200, 'a'), (300, 400, 'b')]
>>> runs.holes(500), runs.covered
([(200, 300), (400, 500)], 300)

A :class:`Plan` hands out the bytes still missing as pieces, lowest offset
first, so that the file fills from its start and its SHA-1 can follow close
behind (:mod:`.ordered_hash`). When nothing is left to hand out, an idle
connection takes the tail of a piece in progress — the one that would finish
last — split by the two connections' measured speeds so both end together;
a piece whose connection went silent is taken whole (aria2's way of working,
with the split weighted by throughput: a slow source's piece goes mostly to
the faster connection).

Nothing here does I/O or locking: :mod:`.transfer` holds one lock around it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_RUNS", "Piece", "Plan", "Runs"]

# A sidecar listing more runs than this is not one this code wrote (pieces are MiBs).
MAX_RUNS = 100_000


class Runs:
    """Disjoint byte ranges ``[start, end)`` that are written, each with the key of its source."""

    def __init__(self) -> None:
        self._runs: list[list[Any]] = []  # [start, end, key], sorted by start, disjoint
        self.covered = 0

    def add(self, start: int, end: int, key: Hashable) -> None:
        """Record ``[start, end)`` as written by ``key`` (replacing whatever covered it)."""
        if end <= start:
            return
        self.remove(start, end)
        i = bisect.bisect_left(self._runs, start, key=lambda r: r[0])
        run = [start, end, key]
        if i and self._runs[i - 1][1] == start and self._runs[i - 1][2] == key:
            run = self._runs.pop(i - 1)
            run[1] = end
            i -= 1
        if i < len(self._runs) and self._runs[i][0] == run[1] and self._runs[i][2] == key:
            run[1] = self._runs.pop(i)[1]
        self._runs.insert(i, run)
        self.covered += end - start

    def remove(self, start: int, end: int) -> None:
        """Forget ``[start, end)``: those bytes are missing again."""
        i = max(0, bisect.bisect_right(self._runs, start, key=lambda r: r[0]) - 1)
        while i < len(self._runs) and self._runs[i][0] < end:
            a, b, key = self._runs[i]
            if b <= start:
                i += 1
                continue
            del self._runs[i]
            self.covered -= min(b, end) - max(a, start)
            if a < start:
                self._runs.insert(i, [a, start, key])
                i += 1
            if b > end:
                self._runs.insert(i, [end, b, key])
                i += 1

    def drop(self, key: Hashable) -> list[tuple[int, int]]:
        """Forget every run of ``key``; return them."""
        gone = self.of(key)
        self._runs = [r for r in self._runs if r[2] != key]
        self.covered -= sum(b - a for a, b in gone)
        return gone

    def clear(self) -> None:
        self._runs.clear()
        self.covered = 0

    def of(self, key: Hashable) -> list[tuple[int, int]]:
        return [(a, b) for a, b, k in self._runs if k == key]

    def spans(self) -> list[tuple[int, int, Any]]:
        return [(a, b, k) for a, b, k in self._runs]

    def by_key(self) -> dict[Any, int]:
        """Bytes written per key."""
        out: dict[Any, int] = {}
        for a, b, k in self._runs:
            out[k] = out.get(k, 0) + b - a
        return out

    def prefix(self) -> int:
        """Where the written bytes that start at 0 end."""
        end = 0
        for a, b, _ in self._runs:
            if a != end:
                break
            end = b
        return end

    def holes(self, total: int | None) -> list[tuple[int, int | None]]:
        """The missing ranges up to ``total`` (the last one open-ended when it is unknown)."""
        out: list[tuple[int, int | None]] = []
        at = 0
        for a, b, _ in self._runs:
            if a > at:
                out.append((at, a))
            at = b
        if total is None:
            out.append((at, None))
        elif at < total:
            out.append((at, total))
        return out

    # -- the sidecar ------------------------------------------------------------------

    def to_json(self, keys: Sequence[Hashable]) -> list[list[int]]:
        """``[[start, end, index of the key in keys], ...]``."""
        index = {k: i for i, k in enumerate(keys)}
        return [[a, b, index[k]] for a, b, k in self._runs]

    @classmethod
    def from_json(cls, data: Any, keys: Sequence[Hashable], limit: int) -> Runs:
        """Runs read back from a sidecar; ``ValueError`` unless every one is well-formed,
        in order, disjoint, within ``[0, limit)`` and names one of ``keys``."""
        if not isinstance(data, list) or len(data) > MAX_RUNS:
            raise ValueError("runs: expected a list")
        runs = cls()
        at = 0
        for item in data:
            if not (isinstance(item, list) and len(item) == 3 and all(type(x) is int for x in item)):
                raise ValueError(f"runs: {item!r} is not [start, end, source]")
            a, b, k = item
            if not (at <= a < b <= limit) or not 0 <= k < len(keys):
                raise ValueError(f"runs: {item!r} is out of order or out of bounds")
            runs.add(a, b, keys[k])
            at = b
        return runs


@dataclass(eq=False)
class Piece:
    """Bytes ``[pos, end)`` that one connection is fetching; ``end`` None: to the end of the file.

    ``end`` may move down while the connection works: another connection took the rest.
    """

    start: int
    end: int | None
    owner: Any = None  # the source being asked
    began: float = 0.0  # when it was handed out
    pos: int = field(init=False)
    got: int = 0  # bytes written
    first: float | None = None  # when its first and last bytes were written
    last: float | None = None
    _before: int = 0  # bytes of the first write, which arrived before ``first``

    def __post_init__(self) -> None:
        self.pos = self.start

    @property
    def left(self) -> float:
        return math.inf if self.end is None else self.end - self.pos

    def wrote(self, n: int, now: float) -> None:
        self.pos += n
        self.got += n
        if self.first is None:
            self.first, self._before = now, n
        self.last = now

    def silent(self, now: float, stall: float) -> bool:
        """No byte for ``stall`` seconds (counted from when it was handed out until the first)."""
        return now - (self.last or self.began) > stall

    def speed(self) -> float:
        """Bytes a second since its first write (0 until a second one tells)."""
        if self.first is None or self.last is None or self.last <= self.first:
            return 0.0
        return (self.got - self._before) / (self.last - self.first)


class Plan:
    """The missing bytes of a file of ``total`` bytes (None: not known yet) and who fetches them."""

    def __init__(self, runs: Runs, total: int | None = None) -> None:
        self.runs = runs
        self.total = total
        self.pieces: list[Piece] = []

    @property
    def complete(self) -> bool:
        return self.total is not None and self.runs.covered == self.total

    def free(self) -> list[tuple[int, int | None]]:
        """Missing ranges that no connection is fetching, lowest first."""
        taken = sorted((p.pos, math.inf if p.end is None else p.end) for p in self.pieces if p.left > 0)
        out: list[tuple[int, int | None]] = []
        for a, b in self.runs.holes(self.total):
            hi = math.inf if b is None else b
            at: float = a
            for pa, pb in taken:
                if pb <= at or pa >= hi:
                    continue
                if pa > at:
                    out.append((int(at), int(pa)))
                at = max(at, pb)
            if at < hi:
                out.append((int(at), b))
        return out

    def take(self, size: int, now: float, owner: Any = None) -> Piece | None:
        """The lowest free bytes, ``size`` of them (all, when fewer than ``2 * size`` are free there)."""
        free = self.free()
        if not free:
            return None
        a, b = free[0]
        end = b if b is None or b - a < 2 * size else a + size
        piece = Piece(a, end, owner, now)
        self.pieces.append(piece)
        return piece

    def steal(
        self, now: float, *, min_size: int, stall: float, speed: float | None = None, owner: Any = None
    ) -> Piece | None:
        """Take the tail of the piece that would finish last, sized so that both finish together.

        ``speed`` is the thief's expected bytes a second (None: as fast as the victim).
        A piece silent for ``stall`` seconds is taken whole; of another, a tail of at
        least ``min_size`` bytes.
        """
        best, best_time = None, 0.0
        for p in self.pieces:
            if p.end is None or p.left <= 0:
                continue
            if p.silent(now, stall):
                t = math.inf
            elif p.speed() == 0 or p.left < min_size:
                continue  # too early to judge, or too little to share
            else:
                t = p.left / p.speed()
            if t > best_time:
                best, best_time = p, t
        if best is None or best.end is None:
            return None
        if best_time == math.inf:
            cut = best.pos
        else:
            v = best.speed()
            cut = max(best.pos, best.pos + int(best.left * v / (v + (speed or v))))
            if best.end - cut < min_size:
                return None  # the thief's part would not be worth a request
        piece = Piece(cut, best.end, owner, now)
        best.end = cut
        self.pieces.append(piece)
        return piece

    def release(self, piece: Piece) -> None:
        """The connection stopped: what it did not write is free again."""
        if piece in self.pieces:
            self.pieces.remove(piece)
