"""Gist API reads with no query at all, still exact across replicas (PostgreSQL).

>>> feed = ChangeFeed("postgresql://zoo@db/zoo").start()   # doctest: +SKIP
>>> feed.state("aa5a315d61ae9438b18d")                      # doctest: +SKIP
(3, 7)

Every change the pages or the API show bumps ``zoo_meta.generation``
(:func:`.catalog.bump`); on PostgreSQL the same transaction sends
``NOTIFY caffezoo_changes, 'GENERATION [GIST_ID]'``. Each serving replica
listens on a connection of its own, in a thread, and forgets the ``(revision,
serial)`` it holds for a gist as soon as it hears that the gist changed; until
then ``GET /gists/{id}`` answers from memory without asking the database.

Notifications arrive when they arrive: alone they would let a client that
wrote through replica A ask replica B before B heard of it. So a write is not
over when it commits. Each listening replica keeps a row in ``cache_readers``
with the newest generation it has *applied* (``seen``, written only after
forgetting what changed) and a lease (``expires``, by the database's clock);
the writer, after its commit, waits until every replica with a live lease has
seen its generation (:func:`wait_for_readers`) -- a few milliseconds, or at
most a lease when a replica died without saying goodbye. A replica answers
from memory only while its own view of its lease holds: it counts the lease
from *before* sending the renewal, so its trust always ends before the
database lets a writer stop waiting for it. A replica that cannot renew (the
database is gone, the thread starved) reads the state from the database on
every request again (:mod:`.hotreads`): slower, never stale.

Each renewal also reads the database's generation: a replica that learns it
is behind (notifications still on their way) reads from the database until it
has heard them, and forgets everything if they do not come.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["APPLICATION", "CHANNEL", "LEASE", "ChangeFeed", "announce", "setup", "wait_for_readers"]

log = logging.getLogger("caffezoo.server.coherence")

CHANNEL = "caffezoo_changes"
APPLICATION = "caffezoo change feed"  # its connections in pg_stat_activity
LEASE = 3.0  # seconds a replica's promise to apply notifications lasts, unless renewed
RENEW_EVERY = 1.0  # a renewal late by up to LEASE - RENEW_EVERY - MARGIN keeps the trust
MARGIN = 0.5  # the replica's trust ends this much before the database's lease does (clock rates)
MAX_STATES = 100_000  # gists whose state is held (about 20 MB); the oldest goes first
WAIT_LIMIT = 2 * LEASE + 1  # a writer waits no longer than this for the replicas' acknowledgements
# The listening connection's TCP settings: a database host that vanished without closing the
# connection (power cut, partition) is noticed in seconds, not after the kernel's ~15 minutes.
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}

DDL = """
CREATE TABLE IF NOT EXISTS cache_readers (
    id TEXT PRIMARY KEY,
    expires TIMESTAMPTZ NOT NULL,
    seen BIGINT NOT NULL
)
"""

# Renew the lease and acknowledge what was applied; the database's generation comes back.
# ``seen`` NULL (a fresh start, nothing held): the generation the database is at.
REPORT = """
INSERT INTO cache_readers AS r (id, expires, seen)
VALUES (%(id)s, now() + make_interval(secs => %(lease)s),
        COALESCE(%(seen)s, (SELECT value FROM zoo_meta WHERE key = 'generation')))
ON CONFLICT (id) DO UPDATE SET expires = EXCLUDED.expires, seen = GREATEST(r.seen, EXCLUDED.seen)
RETURNING (SELECT value FROM zoo_meta WHERE key = 'generation')
"""

WAITING = "SELECT count(*) FROM cache_readers WHERE expires > now() AND seen < %s AND id <> %s"


def setup(conn: Any) -> None:
    """Create ``cache_readers`` (a SQLAlchemy connection in a transaction, PostgreSQL only)."""
    # Replicas starting together would race on CREATE TABLE's catalog rows.
    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(8211330)")
    conn.exec_driver_sql(DDL)


def announce(s: Any, generation: int, gist_id: str | None) -> None:
    """Tell the listening replicas, when ``s`` commits, that ``generation`` changed ``gist_id``."""
    from sqlalchemy import text

    payload = f"{generation} {gist_id}" if gist_id else str(generation)
    s.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": payload})


def wait_for_readers(engine: Any, generation: int, except_id: str = "") -> bool:
    """Block until every replica holding a live lease has applied ``generation`` (True), or
    :data:`WAIT_LIMIT` has passed or the database fails (False, logged: the write stands)."""
    deadline = time.monotonic() + WAIT_LIMIT
    delay = 0.001
    try:
        while True:
            conn = engine.raw_connection()
            try:
                cur = conn.cursor()
                cur.execute(WAITING, (generation, except_id))
                waiting = cur.fetchone()[0]
                cur.close()
                conn.commit()
            finally:
                conn.close()
            if not waiting:
                return True
            if time.monotonic() > deadline:
                log.warning(
                    "%d replica(s) did not acknowledge generation %d within %.0f s",
                    waiting,
                    generation,
                    WAIT_LIMIT,
                )
                return False
            time.sleep(delay)
            delay = min(2 * delay, 0.02)
    except Exception as e:  # the write has committed: report, never undo or retry it
        log.warning("could not wait for the replicas to acknowledge generation %d: %s", generation, e)
        return False


class ChangeFeed:
    """This process's gist states, kept exact by listening for changes (one thread, one connection)."""

    def __init__(self, url: str, *, lease: float = LEASE, renew_every: float = RENEW_EVERY):
        from .jobs import replica_id

        self.conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.id = replica_id()
        self.lease, self.renew_every = lease, renew_every
        self._states: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._version = 0  # moves whenever a state is forgotten: a read begun before may not be kept
        self._applied = 0  # the newest generation whose changes are forgotten
        self._required = 0  # the database's generation at the last renewal
        self._behind_since: float | None = None
        self._trusted_until = 0.0  # time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the request's side

    def trusted(self) -> bool:
        return time.monotonic() < self._trusted_until and self._applied >= self._required

    def state(self, gist_id: str) -> tuple[int, int] | None:
        """The gist's ``(revision, serial)`` if held and trusted, else None (then read it)."""
        if not self.trusted():
            return None
        return self._states.get(gist_id)

    def mark(self) -> int:
        """Take before reading a state from the database; give to :meth:`remember`."""
        return self._version

    def remember(self, gist_id: str, state: tuple[int, int], mark: int) -> None:
        """Hold ``state``, read after :meth:`mark` gave ``mark``, unless a change was heard since."""
        with self._lock:
            if self._version != mark:
                return
            if len(self._states) >= MAX_STATES:
                self._states.pop(next(iter(self._states)))
            self._states[gist_id] = state

    def forget(self, gist_ids) -> None:
        """Drop these gists' states now (this process wrote them)."""
        with self._lock:
            for gist_id in gist_ids:
                self._states.pop(gist_id, None)
            self._version += 1

    # ------------------------------------------------------------------ the listener

    def start(self) -> ChangeFeed:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="change-feed", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening and drop this replica's lease, so writers stop waiting for it."""
        self._stop.set()
        self._trusted_until = 0.0
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:  # wake the listener from its wait for notifications
            import psycopg

            with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                conn.execute("SELECT pg_notify(%s, 'wake')", (CHANNEL,))
        except Exception:
            pass
        thread.join(timeout)

    def _reset(self) -> None:
        with self._lock:
            self._states.clear()
            self._version += 1
            self._trusted_until = 0.0

    def _hear(self, payload: str) -> None:
        generation, _, gist_id = payload.partition(" ")
        if not generation.isdigit():
            return  # 'wake', or not ours
        with self._lock:
            if gist_id:
                self._states.pop(gist_id, None)
                self._version += 1
            self._applied = max(self._applied, int(generation))
            if self._applied >= self._required:
                self._behind_since = None

    def _report(self, conn, fresh: bool = False) -> int:
        """Renew the lease, acknowledging what is applied; learn the database's generation.
        Return the generation acknowledged (behind :attr:`_applied` if that moved meanwhile)."""
        sent = time.monotonic()
        applied = self._applied
        row = conn.execute(
            REPORT, {"id": self.id, "lease": self.lease, "seen": None if fresh else applied}
        ).fetchone()
        current = int(row[0] or 0)
        with self._lock:
            if fresh:  # every change so far is applied once nothing read before ``current`` is held
                # (a state read after the reset, before a write its NOTIFY has not brought yet)
                self._states.clear()
                self._version += 1
                self._applied = max(self._applied, current)
            if current > self._applied:
                self._required = max(self._required, current)
                if self._behind_since is None:
                    self._behind_since = sent
                elif sent - self._behind_since > self.renew_every:
                    # Heard nothing of what the database did (cannot happen on a live LISTEN
                    # connection; never trust that): forget everything instead.
                    self._states.clear()
                    self._version += 1
                    self._applied = self._required
            if self._applied >= self._required:
                self._behind_since = None
            self._trusted_until = sent + self.lease - MARGIN
        return current if fresh else applied

    def _run(self) -> None:
        import psycopg

        backoff = 0.05
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.conninfo,
                    autocommit=True,
                    connect_timeout=5,
                    application_name=APPLICATION,
                    tcp_user_timeout=int(self.lease * 1000),
                    **KEEPALIVE,
                ) as conn:
                    with _answer_within(conn, self.lease):
                        conn.execute(f"LISTEN {CHANNEL}")
                        self._reset()  # changes made while nobody listened were never heard
                        acknowledged = self._report(conn, fresh=True)
                        conn.execute("DELETE FROM cache_readers WHERE expires < now() - interval '1 hour'")
                    backoff = 0.05
                    due = time.monotonic() + self.renew_every
                    while not self._stop.is_set():
                        if self._applied == acknowledged:  # else acknowledge at once, without waiting
                            wait = max(0.0, due - time.monotonic())
                            for note in conn.notifies(timeout=wait, stop_after=1):
                                self._hear(note.payload)
                        if self._stop.is_set():
                            break
                        if self._applied != acknowledged or time.monotonic() >= due:
                            with _answer_within(conn, self.lease):
                                acknowledged = self._report(conn)
                            due = time.monotonic() + self.renew_every
                    conn.execute("DELETE FROM cache_readers WHERE id = %s", (self.id,))
            except Exception as e:
                self._reset()
                if not self._stop.is_set():
                    log.warning("change feed: %s; reading gist states from the database meanwhile", e)
                    self._stop.wait(backoff)
                    backoff = min(2 * backoff, 2.0)


@contextmanager
def _answer_within(conn, seconds: float) -> Iterator[None]:
    """Cut ``conn`` if the statements inside take longer than ``seconds``.

    A statement on a connection whose far end went silent without closing it (the database's
    host lost, a proxy on the way stalled) would wait for as long as the link stays half-open,
    and the replica would stay on the slow path all that time; cut, the listener connects again."""
    # The watchdog cuts through a duplicate of the socket taken now, and closed (under ``gate``)
    # once the statements are done: a watchdog that went off as they ended (cancel() cannot stop
    # it then) finds it closed and cuts nothing, neither this connection, healthy again, nor
    # whatever later took its file descriptor's number.
    sock = socket.socket(fileno=socket.dup(conn.fileno()))
    gate = threading.Lock()
    watchdog = threading.Timer(seconds, _sever, (sock, gate))
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()
        with gate:
            sock.close()


def _sever(sock: socket.socket, gate: threading.Lock) -> None:
    """Shut the connection's socket down under it: its pending read fails, and the listener reconnects."""
    with gate:
        if sock.fileno() == -1:
            return  # the statements finished in time
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the connection is gone already: nothing is waiting on it
