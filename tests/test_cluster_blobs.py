"""Two `caffezoo serve` replicas (real processes) on one PostgreSQL and one radosgw bucket:
a replica killed with SIGKILL in the middle of an owner's upload leaves no blob visible,
and the owner's retry against the other replica succeeds."""

from __future__ import annotations

import hashlib
import os
import threading

import httpx
import pytest
from ceph_helpers import BUCKET
from web_helpers import fresh_postgres, publish

from caffezoo.server import Storage
from caffezoo.server.blobstore import open_store
from caffezoo.server.devcluster import Replica

PART = 5 << 20
DATA = os.urandom(PART + (2 << 20))  # two parts: the first is in the store before the kill
SHA1 = hashlib.sha1(DATA).hexdigest()


@pytest.fixture
def replicas(ceph, s3_env, postgres_url, tmp_path):
    db = fresh_postgres(postgres_url)
    env = {**ceph.env(), "CAFFEZOO_S3_PART_SIZE": str(PART), "CAFFEZOO_HOME": str(tmp_path / "home")}
    args = ["--database-url", db, "--blobs-url", s3_env, "--no-check-links", "--log-level", "warning"]
    started = []
    try:
        for name in ("a", "b"):
            started.append(Replica(tmp_path / "replicas", name, args=args, env=env, tied=True).start())
        yield db, started
    finally:
        for r in started:
            r.kill()


def test_a_replica_killed_mid_upload_leaves_nothing_and_the_retry_succeeds(replicas, s3_env):
    db, (a, b) = replicas
    storage = Storage(db)
    token = storage.create_token("owen")
    publish(
        storage,
        "owen",
        "Big Net",
        caffemodel="m.caffemodel",
        caffemodel_url="http://127.0.0.1:9/x",
        sha1=SHA1,
    )
    storage.close()
    store = open_store(s3_env)
    headers = {"Authorization": f"token {token}"}
    first_part_up = threading.Event()
    hold = threading.Event()

    def body():
        yield DATA[: PART + (1 << 20)]
        first_part_up.set()
        hold.wait(60)  # the rest never comes: the replica dies first
        yield DATA[PART + (1 << 20) :]

    outcome = {}

    def upload():
        try:
            outcome["response"] = httpx.put(
                f"{a.url}/blobs/sha1/{SHA1}", content=body(), headers=headers, timeout=60
            )
        except httpx.HTTPError as e:
            outcome["error"] = e

    t = threading.Thread(target=upload)
    t.start()
    try:
        assert first_part_up.wait(30)
        # Wait until replica a has sent the first part into a multipart upload: bytes are in the store.
        for _ in range(600):
            ups = store.client.list_multipart_uploads(Bucket=BUCKET, Prefix=store.key("")).get("Uploads", [])
            if ups and store.client.list_parts(
                Bucket=BUCKET, Key=ups[0]["Key"], UploadId=ups[0]["UploadId"]
            ).get("Parts"):
                break
            threading.Event().wait(0.05)
        else:
            pytest.fail("replica a never started a multipart upload")
        a.kill()
    finally:
        hold.set()
        t.join(60)
    assert "error" in outcome or outcome["response"].status_code >= 500, outcome
    # Nothing is visible under the name: not to the store, not to the other replica.
    assert store.stat(SHA1) is None and list(store.list()) == []
    assert httpx.get(f"{b.url}/blobs/sha1/{SHA1}").status_code == 404
    # The owner retries against the other replica.
    r = httpx.put(f"{b.url}/blobs/sha1/{SHA1}", content=DATA, headers=headers, timeout=60)
    assert r.status_code == 201, r.text
    got = httpx.get(f"{b.url}/blobs/sha1/{SHA1}", timeout=60)
    assert got.status_code == 200 and hashlib.sha1(got.content).hexdigest() == SHA1
    # The dead replica's unfinished upload is invisible, and is what stale-upload cleanup removes.
    assert store.abort_stale_uploads(older_than=0) == 1
    assert store.stat(SHA1).size == len(DATA)
    store.close()
