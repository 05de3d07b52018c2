"""The Gist API's per-request serial read on PostgreSQL: batched, exact, and surviving
connections the database drops."""

from __future__ import annotations

import asyncio

import psycopg
from web_helpers import fresh_postgres, publish

from caffezoo.server import Storage


def test_concurrent_reads_get_each_their_own_gists_state(postgres_url):
    store = Storage(fresh_postgres(postgres_url))
    ids = [publish(store, "hana", f"Net {i}") for i in range(20)]
    before = store.state(ids[3])
    store.update_gist(ids[3], "hana", description="changed")
    asked = [*ids, "missing-one", ids[3], "x" * 32, *ids]

    async def main():
        return await asyncio.gather(*(store.state_async(i) for i in asked))

    got = asyncio.run(main())
    assert got == [store.state(i) for i in asked]
    assert got[len(ids)] is None and got[len(ids) + 2] is None
    assert got[3][1] == before[1] + 1  # the description change moved the serial
    store.close()


def test_reads_survive_the_database_dropping_the_connections(postgres_url):
    url = fresh_postgres(postgres_url)
    store = Storage(url)
    gid = publish(store, "hana", "Restarted Net")

    async def main():
        before = await asyncio.gather(*(store.state_async(gid) for _ in range(10)))
        # What a database restart does to open connections: every backend of ours ends.
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (url.rsplit("/", 1)[1],),
            ).fetchone()[0]
        assert killed >= 1
        store.update_gist(gid, "hana", description="after")
        after = await asyncio.gather(*(store.state_async(gid) for _ in range(10)))
        return before, after

    before, after = asyncio.run(main())
    assert len(set(before)) == 1 and len(set(after)) == 1
    assert after[0] == store.state(gid) and after[0][1] == before[0][1] + 1
    store.close()
