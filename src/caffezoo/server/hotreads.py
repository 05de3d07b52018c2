"""The read on every Gist API request's path, made cheap on PostgreSQL.

>>> states = GistStates("postgresql://zoo@db/zoo")       # doctest: +SKIP
>>> await states.get("aa5a315d61ae9438b18d")              # doctest: +SKIP
(3, 7)

``GET /gists/{id}`` answers from a cache of serialized JSON keyed on the gist's
``serial``. Most requests find the serial held in memory (:mod:`.coherence`);
the others -- a gist not held yet, a replica whose change feed is not trusted at
the moment -- read it here, from the database. Profiled at 32 clients on 2 cores,
that read was most of PostgreSQL's cost: a hop to a worker thread, a
connection checked out of SQLAlchemy's pool with a pre-ping ``SELECT 1`` (and
its ``BEGIN``), the ``SELECT``, a ``COMMIT`` -- three round trips or more and
two thread switches per request, with 40 threads contending for the GIL while
PostgreSQL's backends wanted the same cores.

Here the read stays on the event loop, in autocommit, on at most ``size``
psycopg async connections, and concurrent requests share queries: the ids
asked for while the connections are busy are read together in the next
``SELECT ... WHERE id = ANY(%s)``. A request only ever joins a query sent
*after* it arrived, so its answer is never older than the request: batching
saves round trips without serving a stale serial.
"""

from __future__ import annotations

import asyncio

__all__ = ["GistStates"]

SQL = "SELECT id, revision, serial FROM gists WHERE id = ANY(%s)"


class GistStates:
    """``(revision, serial)`` of gists by id, read in batches; one instance per event loop."""

    def __init__(self, url: str, size: int = 2):
        # 2 measured best on 2 cores at 32 clients: more connections let PostgreSQL's
        # backends crowd out the server; with 1, a slow query holds up every request.
        self.conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.size = size
        self._idle: list = []
        self._pending: dict[str, list[asyncio.Future]] = {}
        self._running: set[asyncio.Task] = set()

    async def get(self, gist_id: str) -> tuple[int, int] | None:
        """The gist's ``(revision, serial)`` as of a read begun after this call, or None."""
        fut = asyncio.get_running_loop().create_future()
        self._pending.setdefault(gist_id, []).append(fut)
        if len(self._running) < self.size:
            task = asyncio.create_task(self._drain())
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return await fut

    async def _drain(self) -> None:
        """Read what is pending, batch after batch, until nothing is."""
        import psycopg

        conn = None
        batch: dict[str, list[asyncio.Future]] = {}
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                rows: dict[str, tuple[int, int]] | None = None
                for attempt in (0, 1):  # a connection the database dropped (a restart): once more
                    try:
                        conn = conn or await self._connect()
                        rows = await self._read(conn, list(batch))
                        break
                    except Exception as e:  # every waiter gets an answer, even from a bug
                        if conn is not None:
                            await conn.close()
                            conn = None
                        if attempt == 0 and isinstance(e, psycopg.OperationalError):
                            continue
                        _settle(batch, error=e)
                        break
                if rows is not None:
                    _settle(batch, rows=rows)
        except BaseException as e:  # cancelled (the loop is closing): nobody is left waiting
            _settle(batch, error=ConnectionError(f"gist state read abandoned: {e!r}"))
            _settle(self._pending, error=ConnectionError(f"gist state read abandoned: {e!r}"))
            if conn is not None:
                await conn.close()
                conn = None
            raise
        finally:
            if conn is not None:
                self._idle.append(conn)

    async def _connect(self):
        import psycopg

        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True, connect_timeout=5)

    @staticmethod
    async def _read(conn, ids: list[str]) -> dict[str, tuple[int, int]]:
        cur = await conn.execute(SQL, (ids,), prepare=True)
        return {gid: (rev, serial) for gid, rev, serial in await cur.fetchall()}

    def close(self) -> None:
        for conn in self._idle:
            conn.pgconn.finish()  # no awaiting: this may run outside the connections' loop
        self._idle.clear()


def _settle(
    batch: dict[str, list[asyncio.Future]],
    rows: dict[str, tuple[int, int]] | None = None,
    error: BaseException | None = None,
) -> None:
    for gist_id, futs in batch.items():
        for f in futs:
            if f.done():  # a request whose client went away is cancelled
                continue
            if error is not None:
                f.set_exception(error)
            else:
                f.set_result((rows or {}).get(gist_id))
