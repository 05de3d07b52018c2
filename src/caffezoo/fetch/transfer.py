"""One download: a file fetched in pieces over several connections, from every source at once.

>>> digests, source = Transfer(sources, partial, expected, connections=8).run()   # doctest: +SKIP

The first connection asks the first source for the whole file, with a plain
GET (or the first missing range, resuming). When the answer gives the length
and says the source takes ranges (``Accept-Ranges: bytes``, or a 206), and at
least :data:`SEGMENTED_MIN` bytes are left, the file may be split: the first
connection is measured (:data:`FAST_LINK`), and unless it alone is as fast as
this machine can take, the other connections start. Each takes the lowest
piece nobody fetches (:class:`~.segments.Plan`) from the source that promises
the most for one more connection — measured bytes a second per connection,
shared by those it has; a source not heard from yet counts as fast as the
best — within the per-host cap and the source's share. Pieces are written at
their offsets and hashed in file order (:mod:`.ordered_hash`); the sidecar is
saved when a piece is done (at most every :data:`SAVE_GAP` s) and every
:data:`SAVE_EVERY` s.

A failed attempt puts its source on a backoff (its ``Retry-After`` when it
says one) while the others go on, and a 429 or 503 halves its share of
connections; connections failing together count as one attempt. After ``retries``
attempts without progress the source is out and its pieces go to the others.
When no piece is left to hand out, an idle connection takes the tail of the
piece that would finish last, split by measured speeds so both end together,
or the whole of a piece silent for :data:`STALL` seconds.

When the last byte is in, the SHA-1 decides. If it is wrong and several sources
sent bytes, each in turn has its bytes fetched again from the others,
compared as they land: the one whose replacement makes the SHA-1 right lied
and is named. With one source the rules are those of one stream: wrong bytes
after a resume earn one download from the start; otherwise the source sent
the wrong file and the next one is tried.
"""

from __future__ import annotations

import atexit
import contextvars
import math
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ChecksumError, DiskSpaceError, DownloadError
from .events import Event, Progress
from .hashing import Digests, Expected
from .limits import HOSTS, RateLimit
from .ordered_hash import BUDGET
from .partial import MAX_CHUNKS, MAX_DELAY, Partial
from .retry import Retry, SourceFailed, Unsatisfiable, WrongFile
from .segments import Piece, Plan
from .urls import Source

__all__ = ["DEFAULT_CONNECTIONS", "MAX_CONNECTIONS", "SEGMENTED_MIN", "Transfer"]

# Connections per download (-c). Measured on loopback with each capped at 25 MB/s: eight
# bring 3.9x one (four 2.9x, sixteen no more than eight, with 12 MiB more memory).
DEFAULT_CONNECTIONS = 8
# The most a download may ask for (-c, --per-host): the download client's pool holds 64.
MAX_CONNECTIONS = 64
# Files with fewer bytes left than this take one connection: a new connection costs a round
# trip or three (TLS) before its first byte, and the first one is measured first. Measured
# at 25 MB/s a connection: eight gain 1.0-1.1x on 2-4 MiB, 1.1-1.8x on 8 MiB and 1.8-2.1x
# on 16 MiB (with 0.1 s or no round trip per request).
SEGMENTED_MIN = 8 << 20
# Piece sizes: the pieces in flight fit half the hasher's memory budget, so that at link speed
# nothing is read back; larger where a request's round trip would cost more than 1/8 of
# a piece's time (a source far away: the hasher then reads some back from the page cache),
# but at most 1/16 of what is left: what is ahead of the hashed prefix when the last byte
# lands is hashed after it (pieces of 16 MiB at 25 MB/s left 0.2 s of hashing at the end).
MIN_PIECE = 1 << 20
MAX_PIECE = 64 << 20
# One connection runs alone while it brings FAST_LINK bytes a second or keeps its thread busy
# (running or waiting for a CPU) more than BUSY of the time: then a CPU, not the link, is the
# limit, and more connections would only compete for it (measured on loopback: one stream
# 270 MB/s, eight 150 MB/s in all). Looked at every PROBE_TIME s; a slower link gets every
# connection (eight capped at 25 MB/s each: 200 MB/s in all). 0.05 s kept loopback one stream
# and took a capped link wide in every run tried, 0.05 s sooner than 0.1 s did.
PROBE_TIME = 0.05
FAST_LINK = 150e6
BUSY = 0.5
# A piece with no byte for this long (at most half the timeout) is taken whole by an idle connection.
STALL = 5.0
# Bytes a connection gathers before writing them: few enough that its buffers stay small
# (the hasher keeps its own copy), enough that a write costs little.
BATCH = 256 << 10
# Sidecar saves (each an fsync): at most every SAVE_GAP s for a piece done, every SAVE_EVERY s
# for the bytes of pieces in progress. A kill loses at most that much work.
SAVE_GAP = 0.1
SAVE_EVERY = 1.0
_FOREVER = 1 << 62

_running: weakref.WeakSet[Transfer] = weakref.WeakSet()


def _demand() -> float:
    """Seconds this thread has run or waited to run (Linux's schedstat), else its CPU time.

    Waiting for a CPU counts: on a busy machine a thread that gets half a CPU but wants a
    whole one is bound by the CPU, not by the link.
    """
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            run, wait, _ = f.read().split()
        return (int(run) + int(wait)) / 1e9
    except (OSError, ValueError):
        return time.thread_time()


@atexit.register
def _save_all() -> None:
    """At exit (Ctrl-C in the CLI leaves the download threads behind), save what they wrote."""
    for transfer in list(_running):
        transfer.stop()


@dataclass(eq=False)
class Feed:
    """One source during a transfer: its health, speed and connections."""

    source: Source
    share: int  # connections it may have at once
    url: str = ""  # what to ask: the source's URL, or the file's behind a Google Drive page
    failed: str | None = None
    wrong: bool = False  # failed because the file it sent has another SHA-1
    other_length: bool = False  # failed only for disagreeing with the length the first answer gave
    ranges: bool | None = None  # takes byte ranges (None: not known yet)
    active: int = 0
    stuck: int = 0  # failed attempts in a row without a byte
    attempts: int = 0
    last_failure: float = -math.inf
    not_before: float = 0.0
    speed: float = 0.0  # bytes a second per connection, lately
    wait: float = math.inf  # seconds from a request to its answer, at best (a round trip)
    answered: bool = False
    content_type: str = ""

    def __post_init__(self) -> None:
        self.url = self.url or self.source.url

    @property
    def key(self) -> str:
        return self.source.url

    @property
    def host(self) -> str | None:
        """What the per-host cap counts; None for a local file (or a URL with no host to count)."""
        if self.source.is_local:
            return None
        try:
            return self.source.host
        except ValueError:  # it does not parse: the request fails at once
            return None

    def line(self) -> str:
        return f"{self.source.role} {self.source}: {self.failed}"


class _Stale(Exception):
    """The piece was taken away (restart, another round, stop): drop the answer, no harm done."""


class _OtherLength(WrongFile):
    """The source's file has another length than the one the transfer follows, which no ``size``
    vouches for: either may be the wrong file, so it is asked again if the length is dropped."""


class Transfer:
    """Fetch the missing bytes of ``partial`` from ``sources``; :meth:`run` returns the digests."""

    def __init__(
        self,
        sources: Sequence[Source],
        partial: Partial,
        expected: Expected,
        *,
        connections: int = DEFAULT_CONNECTIONS,
        per_host: int | None = None,
        rate: RateLimit | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        auth: Mapping[str, str] | None = None,
        client: Any = None,
        report: Progress | None = None,
        label: str = "",
    ):
        self.connections = max(1, connections)
        self.feeds = [Feed(s, share=self.connections) for s in sources]
        self.partial, self.expected = partial, expected
        self.per_host = per_host or self.connections
        self.rate = rate
        self.timeout, self.retries = timeout, retries
        self.auth, self.client = auth or {}, client
        self.label = label or expected.sha1
        self.stall = min(STALL, timeout / 2)
        self.bad: list[str] = []  # sources found sending wrong bytes
        self._report = report
        self._events: list[Event] = []
        self._report_lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._saved = time.monotonic()
        self._finished = False  # run() returned: nothing more is saved or reported
        self._changes = 0  # pieces completed (and other news worth a save)...
        self._saved_changes = 0  # ...and how many of them the sidecar on disk knows
        self._gate = False  # going wide: the others wait until the sidecar stops saying "appending"
        self.cond = threading.Condition()
        self.round = 0
        self.stopped = False
        self.error: BaseException | None = None
        self.parallel = False
        self.width = 1  # connections that may be busy at once...
        self.target: int | None = None  # ...and how many are worth it (None: not measured yet)
        self._mark: tuple[int, float, int, float] | None = None  # (thread, time, bytes, CPU) measured from
        self.comparing = False  # blaming: bytes written are compared with those they replace
        self.differ: list[tuple[int, int]] = []
        self.excluded: Feed | None = None
        self.clean_retries = 1
        if partial.distrusted:
            self._event(
                "warning", message=f"an earlier partial download was not trusted ({partial.distrusted})"
            )
        if expected.size is not None and partial.total not in (None, expected.size):
            partial.restart()  # recorded for a file of another length
        for key in set(partial.runs.by_key()) - {f.key for f in self.feeds}:
            partial.forget(key)  # from a source not listed now: nothing to resume it with
        self.resumed = partial.runs.covered > 0
        self.plan = Plan(partial.runs, partial.total)

    # -- the whole ----------------------------------------------------------------------

    def run(self) -> tuple[Digests, Source]:
        """Fetch, verify, blame; return the digests and the source that gave the most bytes."""
        _running.add(self)
        try:
            while True:
                self._round()
                digests = self.partial.digests()
                problem = self.expected.mismatch(digests)
                if problem is None:
                    return digests, self._main_source()
                have = self.partial.runs.by_key()
                contributors = [f for f in self.feeds if f.key in have] or [
                    f for f in self.feeds if f.answered
                ]
                if len(contributors) > 1:
                    blamed = self._blame(sorted(contributors, key=lambda f: have.get(f.key, 0)))
                    if blamed is not None:
                        return blamed, self._main_source()
                if self.resumed and self.clean_retries:
                    self.clean_retries -= 1
                    for f in contributors:
                        message = f"wrong bytes after resuming ({problem}); starting over"
                        self._event("retry", source=f.source, message=message)
                else:
                    html = any(f.content_type.startswith("text/html") for f in contributors)
                    hint = (
                        " — the server sent a web page, not the file (a Dropbox link needs ?dl=1; "
                        "a Google Drive file must be shared publicly)"
                        if html
                        else ""
                    )
                    for f in contributors:
                        self._fail(f, f"wrong file: {problem}{hint}", wrong=True)
                with self.cond:
                    self._restart(None)
                self._save(force=True)
        except BaseException:
            self.stop()
            raise
        finally:
            with self.cond:  # a connection still waiting for bytes writes nothing when they come
                self.stopped = True
                self._cancel_pieces()
            self._flush_events()
            with self._save_lock, self._report_lock:
                self._finished = True
            _running.discard(self)

    def stop(self) -> None:
        """Stop every connection (they write nothing more) and save the sidecar."""
        with self.cond:
            if self.stopped:
                return
            self.stopped = True
            self._cancel_pieces()
            self.cond.notify_all()
        try:
            self._save(force=True)
        except OSError:
            pass  # the cache went away: nothing to resume into

    def _round(self) -> None:
        """Run connections until every byte is written; raise when no source can finish it."""
        with self.cond:
            self.round += 1
            n = self.round
        for i in range(self.connections):
            context = contextvars.copy_context()  # a fetch budget (_http.budget) covers every connection
            threading.Thread(
                target=context.run, args=(self._work, n), name=f"caffezoo-connection-{i}", daemon=True
            ).start()
        while True:
            with self.cond:
                if self.plan.complete or self.error is not None or not (self._alive() or self._busy()):
                    break
                if self.parallel:
                    self._widen()  # (also when no bytes come: a silent piece is then taken over)
                self.cond.wait(0.5)
            self._flush_events()
            self._save()  # also when every connection waits for bytes that do not come
        with self.cond:
            self.round += 1  # the connections of this round leave
            self._cancel_pieces()
            self.cond.notify_all()
            error, done = self.error, self.plan.complete
        self._flush_events()
        if not done:  # (done: the file is verified and renamed next, or starts over)
            self._save(force=True)
        if error is not None:
            raise error
        if not done:
            raise self._give_up()

    def _give_up(self) -> DownloadError:
        lines = "\n".join(f"  {f.line()}" for f in self.feeds if f.failed)
        error = ChecksumError if all(f.wrong for f in self.feeds) else DownloadError
        return error(
            f"{self.label}: could not download it from any of {len(self.feeds)} source(s):\n{lines}\n"
            "Try again later, list a mirror that has it in CAFFEZOO_MIRRORS, or put the file in place "
            "yourself (it is checked by its sha1)."
        )

    def _main_source(self) -> Source:
        have = self.partial.runs.by_key()
        feeds = [f for f in self.feeds if not f.failed] or self.feeds
        return max(feeds, key=lambda f: have.get(f.key, 0)).source

    def sources(self) -> list[str]:
        """Every source whose bytes are in the file, the largest share first."""
        have = self.partial.runs.by_key()
        return [str(f.source) for f in sorted(self.feeds, key=lambda f: -have.get(f.key, 0)) if f.key in have]

    # -- blame --------------------------------------------------------------------------

    def _blame(self, suspects: list[Feed]) -> Digests | None:
        """Fetch each suspect's bytes again from the others; the one whose replacement fixes the SHA-1 lied."""
        for suspect in suspects:
            if not any(f is not suspect and not f.failed and f.ranges is not False for f in self.feeds):
                continue
            with self.cond:
                self._forget(suspect.key)
                self.excluded, self.comparing, self.differ = suspect, True, []
            try:
                self._round()
            except DownloadError:
                continue  # the others cannot fill in for it (one may have failed meanwhile): the next
            finally:
                with self.cond:
                    self.excluded, self.comparing = None, False
            digests = self.partial.digests()
            if self.expected.mismatch(digests) is None:
                self._fail(
                    suspect,
                    f"sent wrong bytes (at {self._lies()}); the file was completed from the other sources",
                )
                self._event("warning", source=suspect.source, message=f"{suspect.source} {suspect.failed}")
                self.bad.append(str(suspect.source))
                return digests
        return None

    def _compare(self, offset: int, data: bytes) -> None:
        """Note where ``data`` differs from the bytes it replaces (blaming: those are the lies)."""
        old = self.partial.read(offset, len(data))
        if old == data:
            return
        same = [a == b for a, b in zip(old, data, strict=False)] + [False] * (len(data) - len(old))
        first, last = same.index(False), len(same) - 1 - same[::-1].index(False)
        self.differ.append((offset + first, offset + last + 1))

    def _lies(self) -> str:
        """Where the bytes differed, as ``A-B`` ranges of file offsets."""
        merged: list[list[int]] = []
        for a, b in sorted(self.differ):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        return ", ".join(f"{a}-{b - 1}" for a, b in merged) or "bytes that did not differ this time"

    # -- one connection -----------------------------------------------------------------

    def _work(self, round_: int) -> None:
        try:
            self._connection(round_)
        except BaseException as e:  # a bug: stop the transfer with it rather than hang
            with self.cond:
                self.error = self.error or e
                self.cond.notify_all()

    def _connection(self, round_: int) -> None:
        while True:
            with self.cond:
                job = self._next(round_)
            if job is None:
                return
            feed, piece = job
            try:
                self._fetch(feed, piece)
            except _Stale:
                pass
            except Retry as e:
                self._on_retry(feed, piece, e)
            except Unsatisfiable as e:
                self._on_416(feed, piece, e)
            except SourceFailed as e:
                self._fail(
                    feed, str(e), forget=isinstance(e, WrongFile), other_length=isinstance(e, _OtherLength)
                )
            except BaseException as e:  # a full disk, a bug: the whole transfer stops
                with self.cond:
                    self.error = self.error or e
                    self.cond.notify_all()
            finally:
                with self.cond:
                    self.plan.release(piece)
                    feed.active -= 1
                    self.cond.notify_all()
                if feed.host is not None:
                    HOSTS.release(feed.host)
                self._flush_events()
                self._open_gate()
                self._save()

    def _open_gate(self) -> None:
        """Going wide: once the sidecar no longer says "appending", the others may start."""
        if self._gate:
            self._save(force=True)
            with self.cond:
                self._gate = False
                self.cond.notify_all()

    def _next(self, round_: int) -> tuple[Feed, Piece] | None:
        """Under the lock: a source and a piece for this connection; None when it should leave."""
        while True:
            if self.stopped or self.error is not None or self.round != round_ or self.plan.complete:
                return None
            now = time.monotonic()
            if self._gate or (not self.parallel and self._busy()):
                self.cond.wait()  # one connection until a source says the file may be split
                continue
            if self.parallel and self._busy() >= self.width:
                self.cond.wait(0.05)  # more connections would outrun the hash: no gain
                continue
            feed = self._pick(now)
            if feed is None:
                if not self._alive():
                    return None
                self.cond.wait(self._until_a_source(now))
                continue
            if self.parallel and (self.target or 1) > 1:
                piece = self.plan.take(self._piece_size(feed), now, feed) or self.plan.steal(
                    now,
                    min_size=self._steal_size(feed),
                    stall=self.stall,
                    speed=feed.speed or None,
                    owner=feed,
                )
            else:  # one stream (or the one measuring the link): all the free bytes in a row
                piece = self.plan.take(_FOREVER, now, feed)
            if piece is None:
                if feed.host is not None:
                    HOSTS.release(feed.host)
                self.cond.wait(self.stall / 2)  # a piece in progress may be given up, or go silent
                continue
            feed.active += 1
            return feed, piece

    def _pick(self, now: float) -> Feed | None:
        """The source for one more connection (its host slot taken), or None if none can have it."""
        usable = [
            f
            for f in self.feeds
            if not f.failed
            and f is not self.excluded
            and f.not_before <= now
            and (not self.parallel or (f.ranges is not False and f.active < f.share))
        ]
        if self.parallel:  # most bytes a second for one more connection; unknown counts as the best
            guess = max((f.speed for f in self.feeds), default=0.0) or 1.0
            usable.sort(key=lambda f: -(f.speed or guess) / (f.active + 1))
        for f in usable:
            if f.host is None or HOSTS.acquire(f.host, self.per_host):
                return f
        return None

    def _alive(self) -> bool:
        """Can some source still give bytes (now or after its backoff)?"""
        alive = [f for f in self.feeds if not f.failed and f is not self.excluded]
        if self.parallel and alive and all(f.ranges is False for f in alive):
            self.parallel = False  # only sources that ignore ranges are left: one stream, from byte 0
        return bool(alive)

    def _busy(self) -> int:
        """Connections fetching a piece."""
        return sum(p.left > 0 for p in self.plan.pieces)

    def _until_a_source(self, now: float) -> float:
        waits = [f.not_before - now for f in self.feeds if not f.failed and f.not_before > now]
        return min([0.1, *waits]) if waits else 0.1  # host slots free up in other downloads too

    def _piece_size(self, feed: Feed | None = None) -> int:
        """Half the hasher's memory per connection; more where a request's round trip costs
        more than an eighth of a piece's time, but no more than a fair share of what is left."""
        fits = BUDGET // (2 * self.connections)
        worth = 0.0
        if feed is not None and feed.wait < math.inf:
            share = (self.plan.total or 0) - self.partial.size
            worth = min(8 * feed.speed * feed.wait, share / (2 * self.connections))
        return int(max(MIN_PIECE, min(MAX_PIECE, max(fits, worth))))

    def _steal_size(self, feed: Feed) -> int:
        """The least worth taking from another connection: a batch, or two round trips' worth."""
        trip = feed.wait if feed.wait < math.inf else 0.0
        return int(max(BATCH, 2 * feed.speed * trip))

    def _fetch(self, feed: Feed, piece: Piece) -> None:
        """One request for ``piece``, its answer written until the piece is done or taken away."""
        if feed.source.is_local:
            from .local import open_local
        else:
            from .wire import RangeAsk, open_range  # (httpx only for what is not plain http)
        piece.began = time.monotonic()
        start, end = piece.pos, piece.end
        if end is not None and end == self.plan.total:
            end = None  # "bytes=N-": the same bytes, the request a single stream has always made
        validator = self.partial.validators.get(feed.key) if start or end is not None else None
        if feed.source.is_local:
            opened = open_local(feed.source, start, end, validator, self.expected)
        else:
            ask = RangeAsk(feed.source, feed.url, start, end, validator, self.expected)
            opened = open_range(ask, timeout=self.timeout, auth=self.auth, client=self.client)
        with opened as answer:
            with self.cond:
                news = self._check(feed, piece, answer, validator)
            if news:  # validators to resume with, where it appends: on disk before the bytes
                self._save(force=True)
            self._flush_events()
            pending: list[bytes] = []
            size, flushed = 0, time.monotonic()
            try:
                for chunk in answer.chunks():
                    if self.rate is not None:
                        self.rate.take(len(chunk))
                    pending.append(chunk)
                    size += len(chunk)
                    if (
                        size >= BATCH
                        or isinstance(chunk, memoryview)  # the reader's buffer: the next read reuses it
                        or len(pending) >= MAX_CHUNKS
                        or time.monotonic() - flushed > MAX_DELAY
                    ):
                        batch, pending, size, flushed = pending, [], 0, time.monotonic()
                        more = self._write(feed, piece, batch, answer.where)
                        self._flush_events()
                        self._open_gate()
                        self._save()
                        if not more:
                            return
            finally:  # what arrived before a failure is kept, for the next attempt
                if pending and not self._write(feed, piece, pending, answer.where):
                    return  # noqa: B012 (the piece is complete: nothing to retry)
            where = answer.where
        with self.cond:
            if piece.end is None:  # a stream of unknown length ended: that is the end of the file
                self._set_total(piece.pos)
            elif piece.pos < piece.end:
                raise Retry(f"{where}: connection closed after {piece.pos} of {self.plan.total} bytes")

    def _check(self, feed: Feed, piece: Piece, answer: Any, validator: str | None) -> bool:
        """Under the lock: what the answer says about the file; adjust the plan to it.

        True when the sidecar must be saved before the answer's bytes are written.
        """
        if self.stopped or piece not in self.plan.pieces:
            raise _Stale
        if feed.answered:  # what one more request costs (the first also paid for setting up)
            feed.wait = min(feed.wait, time.monotonic() - piece.began)
        else:
            feed.answered = True
            total = self.plan.total or self.expected.size
            self._event("start", done=self.partial.size, total=total, source=feed.source)
        feed.url, feed.content_type = answer.url, answer.content_type
        if answer.offset != piece.pos:  # a 200 to a range: the whole file, from byte 0
            changed = validator is not None and answer.validator != validator
            others = set(self.partial.runs.by_key()) - {feed.key}
            if not self.parallel and not (changed and others):
                self._restart(piece)  # the range was ignored, or the file changed: start over
            elif changed:  # its file changed: what it sent before is of another version, the others' stays
                self._forget(feed.key)
                if answer.validator:
                    self.partial.validators[feed.key] = answer.validator
                else:  # (a sidecar holds validators as text only)
                    self.partial.validators.pop(feed.key, None)
                # A failed attempt, not a free one: backends of one server that each name the file
                # their own way (an ETag per machine) would otherwise make this source run forever.
                raise Retry(f"{answer.where}: the file changed (If-Range {validator}); its bytes are dropped")
            else:
                feed.ranges = False
                raise _Stale
        total = answer.total
        if total is not None and self.plan.total is not None and total != self.plan.total:
            others = set(self.partial.runs.by_key()) - {feed.key}
            if others or self.parallel:
                wrong = WrongFile if self.expected.size is not None else _OtherLength
                raise wrong(f"{answer.where}: the file has {total} bytes, not {self.plan.total}")
            self._restart(None)  # the file was another one when the record was made
            raise Retry(f"{answer.where}: the file has {total} bytes now; starting over")
        feed.ranges = answer.ranges
        news = bool(answer.validator) and self.partial.validators.get(feed.key) != answer.validator
        if answer.validator:
            self.partial.validators[feed.key] = answer.validator
        if total is not None and self.plan.total is None:
            if self.expected.size is None and any(f is not feed and not f.failed for f in self.feeds):
                try:  # its word alone against the disk: another source may give another length
                    self.partial.ensure_space(total)
                except DiskSpaceError as e:
                    raise _OtherLength(f"{answer.where}: {e}") from None
            self._set_total(total)
            self.partial.ensure_space(total)
            news = True
        if piece.end is None and self.plan.total is not None:
            piece.end = self.plan.total
        if (
            not self.parallel
            and answer.ranges
            and self.connections > 1
            and self.plan.total is not None
            and self.plan.total - self.partial.size >= SEGMENTED_MIN
        ):
            self.parallel = True  # the file may be split: this connection is measured first
        runs = self.partial.runs
        appending = (
            (self.target or 1) == 1  # one stream, or the one measuring the link
            and piece.pos == runs.prefix() == runs.covered
            and piece.end in (None, self.plan.total)
        )
        append = feed.key if appending else None
        news = news or append != self.partial.append
        self.partial.append = append
        if news:
            self._changes += 1
        return news

    def _write(self, feed: Feed, piece: Piece, chunks: list[bytes], where: str) -> bool:
        """Write what fits in the piece; False when the piece is done (or was taken away)."""
        with self.cond:
            if self.stopped or piece not in self.plan.pieces:
                raise _Stale
            n = sum(len(c) for c in chunks)
            if piece.end is None:
                limit = self.expected.size if self.expected.size is not None else self.expected.max_size
                if limit is not None and piece.pos + n > limit:
                    raise WrongFile(f"{where}: more than the expected {limit} bytes")
                take = n
            else:
                take = max(0, min(n, piece.end - piece.pos))
            if take == 0:
                return False
            data = chunks if take == n else [b"".join(chunks)[:take]]
            if self.comparing:
                self._compare(piece.pos, b"".join(data))
            self.partial.write_at(piece.pos, data, feed.key)
            now = time.monotonic()
            piece.wrote(take, now)
            feed.stuck = 0
            speed = piece.speed()
            if speed:
                feed.speed = speed if not feed.speed else 0.7 * feed.speed + 0.3 * speed
            self._event(
                "bytes",
                done=self.partial.size,
                total=self.plan.total or self.expected.size,
                source=feed.source,
            )
            done = piece.end is not None and piece.pos >= piece.end
            if done:
                self._changes += 1  # saved before the next request: a kill keeps every piece done
                self.cond.notify_all()
            if (self.target or 1) == 1:
                self._measure(feed, piece, now)
            self._widen()
            return take == n and not done

    # -- when things go wrong -------------------------------------------------------------

    def _on_retry(self, feed: Feed, piece: Piece, e: Retry) -> None:
        from .._http import MAX_RETRY_AFTER, backoff  # only now: it imports httpx

        with self.cond:
            if piece.got:
                self.resumed = True  # another attempt continues these bytes
            now = time.monotonic()
            if piece.began < feed.last_failure:
                return  # the same failure, met by another connection: counted once
            feed.attempts += 1
            feed.stuck = 0 if piece.got else feed.stuck + 1
            feed.last_failure = now
            if feed.stuck > self.retries or feed.attempts >= max(20, 10 * (self.retries + 1)):
                tries = f"{feed.attempts} attempt{'s' * (feed.attempts > 1)}"
                self._fail(feed, f"{e} (gave up after {tries}, {self.partial.size} bytes kept)")
                return
            delay = backoff(feed.stuck or 1) if e.retry_after is None else e.retry_after
            if delay > MAX_RETRY_AFTER:
                self._fail(feed, f"{e}; the server asks to retry after {delay:.0f} s")
                return
            if e.busy:  # 429/503: ask less of it, for the rest of this download
                feed.share = max(1, feed.share // 2)
            feed.not_before = now + delay
            self._event(
                "retry", done=self.partial.size, source=feed.source, message=f"{e}; retrying in {delay:.1f} s"
            )

    def _on_416(self, feed: Feed, piece: Piece, e: Unsatisfiable) -> None:
        with self.cond:
            if e.total is not None and piece.pos == e.total and piece.end in (None, self.plan.total):
                self._set_total(e.total)  # asked from the end: every byte is here; the SHA-1 decides
                return
            if self.parallel:
                self._fail(feed, f"{e}: its file is shorter", forget=True)
                return
            self._restart(None)
        self._on_retry(feed, piece, Retry(f"{e}; starting over"))

    def _fail(
        self,
        feed: Feed,
        message: str,
        *,
        wrong: bool = False,
        forget: bool = False,
        other_length: bool = False,
    ) -> None:
        """The source is out: it is not asked again (``other_length``: unless the length it
        disagreed with is dropped); with ``forget``, the bytes it sent are dropped."""
        with self.cond:
            if feed.failed:
                return
            feed.failed, feed.wrong, feed.other_length = message, wrong, other_length
            if forget:
                self._forget(feed.key)
            self._event("fail", source=feed.source, message=message)
            self.cond.notify_all()

    # -- the plan, under the lock -----------------------------------------------------------

    def _measure(self, feed: Feed, piece: Piece, now: float) -> None:
        """While one connection runs alone: would more bring more? (See FAST_LINK.)

        When they would, the others start: this connection's piece ends after a piece's
        worth, and they take the rest. A stream that slows down later (a server's first
        burst spent) is looked at again.
        """
        if not self.parallel:
            return
        me = threading.get_ident()
        if self._mark is None or self._mark[0] != me:
            self._mark = (me, now, self.partial.size, _demand())
            return
        _, then, size, cpu_then = self._mark
        if now - then < PROBE_TIME:
            return
        cpu = _demand()
        self._mark = (me, now, self.partial.size, cpu)
        rate = (self.partial.size - size) / (now - then)
        busy = (cpu - cpu_then) / (now - then)
        if rate >= FAST_LINK or busy > BUSY:
            self.target = 1  # enough alone, for now
            return
        self.target = self.width = self.connections
        if self.partial.append is not None:  # others will write out of order: not appending now
            self.partial.append = None
            self._changes += 1
            self._gate = True
        size = self._piece_size(feed)
        if piece.end is not None and piece.end - piece.pos >= 2 * size:
            piece.end = piece.pos + size
        self.cond.notify_all()

    def _widen(self) -> None:
        """One fewer connection while the hash falls behind, one more (up to the target) once
        it keeps up again.

        Behind: bytes written in a row from the start and not hashed yet. Not the hasher's
        pool filling up: that also happens when the piece at the prefix is slower than those
        after it, and fewer connections then only stalled the others (a 128 MiB download at
        25 MB/s a connection ran on one for a quarter of its time).
        """
        lag = self.partial.runs.prefix() - self.partial.hasher.hashed
        if lag > BUDGET * 3 // 4 and self.width > 1:
            self.width -= 1
        elif lag < BUDGET // 4 and self.width < (self.target or 1):
            self.width += 1
            self.cond.notify_all()

    def _forget(self, key: str) -> None:
        if self.partial.forget(key):
            self._changes += 1

    def _set_total(self, total: int) -> None:
        self.plan.total = self.partial.total = total
        self.cond.notify_all()

    def _restart(self, keep: Piece | None) -> None:
        """Every byte thrown away; ``keep`` (the piece being answered) goes on from byte 0."""
        for p in list(self.plan.pieces):
            if p is not keep:
                p.end = p.pos
                self.plan.release(p)
        self.partial.restart()
        self._changes += 1
        self.plan.total = None
        for f in self.feeds:  # the length they disagreed with is gone: the SHA-1 will judge them
            if f.other_length:
                f.failed, f.other_length = None, False
        self.parallel = False
        self.target, self.width, self._mark, self._gate = None, 1, None, False
        self.resumed = False
        if keep is not None:
            keep.start = keep.pos = keep.got = 0
            keep.end = None
            keep.first = keep.last = None

    def _cancel_pieces(self) -> None:
        for p in list(self.plan.pieces):
            p.end = p.pos
            self.plan.release(p)

    # -- reporting and saving ---------------------------------------------------------------

    def _event(self, kind: str, *, source: Source | None = None, **fields: Any) -> None:
        if self._report is not None:
            self._events.append(Event(kind, source=None if source is None else str(source), **fields))

    def _flush_events(self) -> None:
        if self._report is None or not self._events:
            return
        with self._report_lock:  # in the order they happened, never under the transfer's lock
            if self._finished:
                return
            with self.cond:
                events, self._events = self._events, []
            for event in events:
                self._report(event)

    def _save(self, force: bool = False) -> None:
        """Save the sidecar: news (a piece done, a source's validator) at most every SAVE_GAP s,
        the bytes of pieces in progress every SAVE_EVERY s; ``force``: now.

        A connection never waits for another's save (an fsync): the next save covers it.
        """
        if not force:
            since = time.monotonic() - self._saved
            news = self._changes != self._saved_changes
            if since < (SAVE_GAP if news else SAVE_EVERY) or not self._save_lock.acquire(blocking=False):
                return
        else:
            self._save_lock.acquire()
        try:
            if self._finished:
                return
            with self.cond:
                state = self.partial.state()
                changes = self._changes
            self._saved = time.monotonic()
            self.partial.save(state)
            self._saved_changes = changes
        finally:
            self._save_lock.release()
