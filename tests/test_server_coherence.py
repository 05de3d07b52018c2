"""Gist states held in memory on PostgreSQL (:mod:`caffezoo.server.coherence`): read with no
query while nothing changes, and never stale once a write has returned -- through another
storage, another replica, a listener the database dropped, or a replica killed outright."""

from __future__ import annotations

import asyncio
import socket
import threading

import httpx
import psycopg
import pytest
from download_helpers import wait_for
from replica_helpers import replica
from sqlalchemy.engine import make_url
from web_helpers import fresh_postgres, publish

from caffezoo.server import Storage
from caffezoo.server.coherence import APPLICATION, CHANNEL, ChangeFeed, _answer_within, _sever


@pytest.fixture
def pg_db(postgres_url) -> str:
    return fresh_postgres(postgres_url)


def read(store: Storage, gist_id: str):
    return asyncio.run(store.state_async(gist_id))


def held(store: Storage, gist_id: str):
    """Read until the state is answered from memory (the feed's first lease takes a moment)."""
    wait_for(lambda: read(store, gist_id) and store._feed.state(gist_id) is not None, what="a held state")
    return store._feed.state(gist_id)


def live_leases(url: str, behind: int | None = None) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        sql = "SELECT count(*) FROM cache_readers WHERE expires > now()"
        if behind is not None:
            return conn.execute(sql + " AND seen < %s", (behind,)).fetchone()[0]
        return conn.execute(sql).fetchone()[0]


def generation(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT value FROM zoo_meta WHERE key = 'generation'").fetchone()[0]


def test_a_held_state_needs_no_query_and_a_write_elsewhere_replaces_it_at_once(pg_db):
    reader, writer = Storage(pg_db), Storage(pg_db)  # two replicas' storages
    try:
        gid = publish(writer, "hana", "Held Net")
        assert held(reader, gid) == writer.state(gid)
        for n in range(30):
            writer.update_gist(gid, "hana", description=f"change {n}")
            # The writer returned: the reader has already forgotten the old state.
            assert reader._feed.state(gid) is None
            assert read(reader, gid) == writer.state(gid)
        writer.delete_gist(gid, "hana")
        assert read(reader, gid) is None
    finally:
        reader.close()
        writer.close()


def test_a_listener_the_database_drops_leaves_no_stale_state(pg_db):
    reader, writer = Storage(pg_db), Storage(pg_db)
    try:
        gid = publish(writer, "hana", "Dropped Net")
        held(reader, gid)
        for n in range(3):
            with psycopg.connect(pg_db, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = %s AND datname = current_database()",
                    (APPLICATION,),
                ).fetchone()[0]
            assert killed == 1
            writer.update_gist(gid, "hana", description=f"while deaf {n}")
            assert read(reader, gid) == writer.state(gid)
            assert held(reader, gid) == writer.state(gid)  # listening again, and holding
    finally:
        reader.close()
        writer.close()


def test_leases_end_with_the_storage_and_a_writer_alone_waits_for_nobody(pg_db):
    reader = Storage(pg_db)
    gid = publish(reader, "hana", "Leased Net")
    held(reader, gid)
    assert live_leases(pg_db) == 1
    reader.close()
    assert live_leases(pg_db) == 0
    writer = Storage(pg_db)
    writer.update_gist(gid, "hana", description="nobody listens")
    writer.close()


def test_a_replica_killed_outright_holds_writes_up_for_its_lease_only(pg_db):
    store = Storage(pg_db)
    token = store.create_token("wanda")
    gid = publish(store, "wanda", "Killed Net")
    auth = {"Authorization": f"token {token}"}
    with replica(pg_db, "--no-check-links") as a, replica(pg_db, "--no-check-links") as b:
        assert httpx.get(f"{b.url}/gists/{gid}").status_code == 200
        wait_for(lambda: live_leases(pg_db) >= 1, what="B's lease")
        b.kill()  # no goodbye: its lease stays until it expires
        r = httpx.patch(
            f"{a.url}/gists/{gid}", headers=auth, json={"description": "after B died"}, timeout=60
        )
        assert r.status_code == 200
        # A answered only once no live lease was behind its write: B's had run out.
        assert live_leases(pg_db, behind=generation(pg_db)) == 0
        assert httpx.get(f"{a.url}/gists/{gid}").json()["description"] == "after B died"
    store.close()


def test_replicas_writing_in_turn_each_see_the_others_write_at_once(pg_db):
    store = Storage(pg_db)
    token = store.create_token("wanda")
    gid = publish(store, "wanda", "Turns Net")
    store.close()
    auth = {"Authorization": f"token {token}"}
    with replica(pg_db, "--no-check-links") as a, replica(pg_db, "--no-check-links") as b:
        with httpx.Client() as http:
            for r in (a, b):  # both hold the state
                for _ in range(3):
                    assert http.get(f"{r.url}/gists/{gid}").status_code == 200
            for n in range(20):
                writer, reader = (a, b) if n % 2 else (b, a)
                text = f"turn {n}"
                w = http.patch(f"{writer.url}/gists/{gid}", headers=auth, json={"description": text})
                assert w.status_code == 200
                assert http.get(f"{reader.url}/gists/{gid}").json()["description"] == text
                assert http.get(f"{writer.url}/gists/{gid}").json()["description"] == text


def test_a_write_committed_while_the_feed_starts_is_not_acknowledged_before_it_is_applied(pg_db):
    """LISTEN, a request reads a state, a write commits, the first renewal: that renewal
    acknowledges the write's generation, so the state read before it must not stay held."""
    store = Storage(pg_db)
    feed = ChangeFeed(pg_db)  # the listener's steps, driven by hand in the racy order
    try:
        gid = publish(store, "hana", "Starting Net")
        old = store.state(gid)
        with psycopg.connect(feed.conninfo, autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            feed._reset()
            mark = feed.mark()  # a request starts reading the state...
            store.update_gist(gid, "hana", description="moved")  # ...a write commits, unheard yet
            feed.remember(gid, old, mark)  # ...and the request holds what it read
            feed._report(conn, fresh=True)  # the lease now says the write is applied
            assert feed.state(gid) != old
    finally:
        store.close()


class StallingProxy:
    """A TCP proxy to PostgreSQL that can go silent on the connections it carries without closing
    them (as a database host that lost power, or a stalled middlebox, looks from the client)."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.silent = threading.Event()  # connections open before now carry nothing more
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.held += [client, server]
            stalls = self.silent.is_set()  # connections made while silent flow normally
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b, stalls), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, started_silent: bool) -> None:
        try:
            while data := src.recv(65536):
                if self.silent.is_set() and not started_silent:
                    return  # swallow this and everything after; keep both ends open
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()
        for s in self.held:
            s.close()


def test_a_listener_whose_database_goes_silent_reconnects_instead_of_waiting_forever(pg_db):
    Storage(pg_db).close()  # the tables
    url = make_url(pg_db)
    proxy = StallingProxy((url.host, url.port))
    feed = ChangeFeed(url.set(port=proxy.port).render_as_string(hide_password=False)).start()
    try:
        wait_for(feed.trusted, what="the feed's first lease")
        proxy.silent.set()  # the live connection now hangs on its next renewal
        wait_for(lambda: not feed.trusted(), what="trust to lapse while the renewal hangs", timeout=30)
        # A new connection flows: the hung one is cut after a lease, and trust comes back.
        wait_for(feed.trusted, what="trust again over a new connection", timeout=30)
    finally:
        feed.close()
        proxy.close()


def test_a_watchdog_going_off_as_its_statements_end_cuts_nothing(pg_db):
    # Timer.cancel() cannot stop a watchdog that has already decided to go off: at the end of a
    # lease it can cut the connection after its statements finished, or a socket that took its
    # file descriptor's number since. Run it late, as that watchdog would.
    with psycopg.connect(pg_db, autocommit=True) as conn:
        before = set(threading.enumerate())
        with _answer_within(conn, 3600):
            conn.execute("SELECT 1")
            (watchdog,) = [t for t in set(threading.enumerate()) - before if isinstance(t, threading.Timer)]
        assert watchdog.function is _sever
        watchdog.function(*watchdog.args)
        assert conn.execute("SELECT 2").fetchone() == (2,)
