"""`caffezoo serve migrate`: a single-machine zoo (SQLite + blob directory) copied into a
cluster (PostgreSQL + radosgw), every SHA-1 checked, safe to repeat and to interrupt."""

from __future__ import annotations

import hashlib
import json
import os

import httpx
import pytest
from gist_helpers import start_uvicorn
from web_helpers import fresh_postgres, publish

from caffezoo.errors import UsageError
from caffezoo.server import Storage
from caffezoo.server.blobstore import LocalStore, open_store
from caffezoo.server.migrate import migrate
from caffezoo.server.seed import seed_bundled

BLOBS = [os.urandom(200_000 + i) for i in range(3)]
SHA1S = [hashlib.sha1(b).hexdigest() for b in BLOBS]


@pytest.fixture
def old_zoo(tmp_path):
    """A zoo as one machine runs it: SQLite, the bundled models, a user's model with a token,
    and a blob directory holding three weights files."""
    db = f"sqlite:///{tmp_path / 'old' / 'server.db'}"
    store = Storage(db)
    seed_bundled(store)
    token = store.create_token("owen")
    gid = publish(
        store,
        "owen",
        "Migrating Net",
        caffemodel="m.caffemodel",
        caffemodel_url="http://127.0.0.1:9/m",
        sha1=SHA1S[0],
    )
    store.close()
    blobs = LocalStore(tmp_path / "old" / "blobs")
    for sha1, data in zip(SHA1S, BLOBS):
        blobs.put(sha1, [data])
    return db, str(blobs.root), token, gid


@pytest.fixture
def cluster_db(postgres_url) -> str:
    return fresh_postgres(postgres_url)


def counts(url: str) -> dict[str, int]:
    from sqlalchemy import func, select

    from caffezoo.server.tables import Base

    s = Storage(url)
    with s.session() as ses:
        out = {t.name: ses.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}
    s.close()
    return out


def test_migrate_copies_rows_and_blobs_and_the_cluster_serves_them(old_zoo, cluster_db, s3_env, tmp_path):
    db, blobs_dir, token, gid = old_zoo
    report = migrate(db, blobs_dir, cluster_db, s3_env, batch=7)
    assert report.ok and report.blobs_copied == 3 and report.blobs_present == 0
    source = counts(db)
    assert {t: n for t, n in counts(cluster_db).items() if t != "zoo_meta"} == {
        t: n for t, n in source.items() if t != "zoo_meta"
    }
    assert report.rows["gists"] == (source["gists"], 0)
    target = Storage(cluster_db)
    assert target.user_for_token(token) == "owen"  # the old tokens still work
    assert target.create_token("newcomer")  # ids continue after the copied ones (sequences reset)
    publish(target, "newcomer", "After The Move")
    from caffezoo.server import create_app

    app = create_app(storage=target, blobs_url=s3_env, cache_dir=tmp_path / "svg")
    server, thread, base = start_uvicorn(app)
    try:
        found = httpx.get(f"{base}/api/models", params={"q": "Migrating"}).json()["models"]
        assert [m["id"] for m in found] == [gid] and found[0]["weights"]["mirrored"] is True
        assert httpx.get(f"{base}/gists/{gid}").json()["files"]["readme.md"]["content"].startswith("---")
        for sha1, data in zip(SHA1S, BLOBS):
            assert httpx.get(f"{base}/blobs/sha1/{sha1}").content == data
    finally:
        server.should_exit = True
        thread.join(10)
        target.close()
        app.state.mirror.store.close()
    again = migrate(db, blobs_dir, cluster_db, s3_env)
    assert (
        sum(c for c, _ in again.rows.values()) == 0 and again.blobs_copied == 0 and again.blobs_present == 3
    )


def test_an_interrupted_migration_continues_and_copies_nothing_twice(old_zoo, cluster_db, s3_env):
    db, blobs_dir, _, _ = old_zoo
    seen: list = []

    def dies_after(n: int):
        def step(s):
            seen.append(s)
            if len(seen) == n:
                raise KeyboardInterrupt  # as a kill between two batches

        return step

    def dies_after_first_blob(s):
        seen.append(s)
        if s.table == "blob" and s.copied:
            raise KeyboardInterrupt  # as a kill between two blobs

    # Interrupted among the rows, then among the blobs, then left to finish.
    with pytest.raises(KeyboardInterrupt):
        migrate(db, blobs_dir, cluster_db, s3_env, batch=3, on_step=dies_after(5))
    rows_first = sum(s.copied for s in seen if s.table != "blob")
    total_rows = sum(n for t, n in counts(db).items() if t != "zoo_meta")
    assert 0 < rows_first < total_rows
    seen.clear()
    with pytest.raises(KeyboardInterrupt):
        migrate(db, blobs_dir, cluster_db, s3_env, batch=3, on_step=dies_after_first_blob)
    rows_second = sum(s.copied for s in seen if s.table != "blob")
    assert rows_first + rows_second == total_rows
    assert [s.copied for s in seen if s.table == "blob"] == [1]
    final = migrate(db, blobs_dir, cluster_db, s3_env, batch=3)
    assert sum(c for c, _ in final.rows.values()) == 0  # every row arrived exactly once
    assert (final.blobs_copied, final.blobs_present) == (2, 1)
    assert sorted(b.sha1 for b in open_store(s3_env).list()) == sorted(SHA1S)


def test_a_damaged_blob_is_reported_not_copied(old_zoo, cluster_db, s3_env, cli):
    db, blobs_dir, _, _ = old_zoo
    (LocalStore(blobs_dir).path(SHA1S[1])).write_bytes(b"bit rot")
    r = cli("serve", "migrate", "--from-database-url", db, "--from-blobs-dir", blobs_dir,
            "--database-url", cluster_db, "--blobs-url", s3_env, "--json")  # fmt: skip
    assert r.code == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["blobs"] == {"copied": 2, "present": 0}
    assert len(out["failed"]) == 1 and out["failed"][0].startswith(SHA1S[1]) and "sha1" in out["failed"][0]
    assert open_store(s3_env).stat(SHA1S[1]) is None
    r = cli("serve", "migrate", "--from-database-url", db, "--from-blobs-dir", blobs_dir,
            "--database-url", cluster_db, "--blobs-url", s3_env)  # fmt: skip
    assert (
        r.code == 1
        and "0 rows copied" in r.stderr
        and "0 blobs copied (2 already there), 1 failed" in r.stderr
    )


def test_migrate_refuses_what_is_not_a_zoo(tmp_path, cli, s3_env):
    target = f"sqlite:///{tmp_path / 'new.db'}"
    r = cli("serve", "migrate", "--from-database-url", f"sqlite:///{tmp_path / 'nope.db'}",
            "--from-blobs-dir", tmp_path, "--database-url", target, "--blobs-url", s3_env)  # fmt: skip
    assert r.code != 0 and "no such SQLite file" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "nope.db").exists()
    (tmp_path / "other.db").write_bytes(b"")
    r = cli("serve", "migrate", "--from-database-url", f"sqlite:///{tmp_path / 'other.db'}",
            "--from-blobs-dir", tmp_path, "--database-url", target, "--blobs-url", s3_env)  # fmt: skip
    assert r.code != 0 and "not a caffezoo server database" in r.stderr
    r = cli("serve", "migrate", "--from-database-url", target, "--from-blobs-dir", tmp_path,
            "--database-url", target, "--blobs-url", s3_env)  # fmt: skip
    assert r.code != 0 and "the same" in r.stderr


def test_a_target_holding_other_rows_under_the_same_keys_is_refused(old_zoo, cluster_db, s3_env):
    # The target's user 1 is someone else: skipping the source's user 1 as "already there" would
    # hand its gists (and the tokens pointing at id 1) to that stranger.
    db, blobs_dir, token, _ = old_zoo
    stranger = Storage(cluster_db)
    stranger_token = stranger.create_token("mallory")
    stranger.close()
    with pytest.raises(UsageError, match=r"table users: the target database holds a different row"):
        migrate(db, blobs_dir, cluster_db, s3_env)
    assert counts(cluster_db)["gists"] == counts(cluster_db)["zoo_entries"] == 0  # refused before writing
    target = Storage(cluster_db)
    assert target.user_for_token(token) is None and target.user_for_token(stranger_token) == "mallory"
    target.close()
