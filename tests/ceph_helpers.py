"""A real single-node Ceph cluster with its S3 gateway (radosgw) for the blob-store suites.

The cluster starts once per session (about 1.5 s, memstore: data lives in RAM);
each test gets its own prefix in one bucket and everything under it is deleted
afterwards. The start-up recipe is :mod:`caffezoo.server.devcluster`'s, shared
with ``make cluster`` and ``benchmarks/cluster.py``.

Registered as a pytest plugin by conftest; import plain helpers by name.
"""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from caffezoo.server.devcluster import Ceph

__all__ = ["ceph", "s3_env", "s3_store", "BUCKET", "empty_prefix", "put_random_blob"]

BUCKET = "caffezoo-test"


@pytest.fixture(scope="session")
def ceph(tmp_path_factory):
    """The running cluster (its ``endpoint``, ``access_key``, ``secret_key``, ``env()``)."""
    cluster = Ceph(tmp_path_factory.mktemp("ceph"), tied=True)
    try:
        cluster.start()
        _client(cluster).create_bucket(Bucket=BUCKET)
        yield cluster
    finally:
        cluster.kill()  # memstore keeps nothing worth a graceful stop


def _client(cluster: Ceph):
    from caffezoo.server.blobstore import _s3_client

    return _client_cache.setdefault(
        cluster.endpoint, _s3_client(cluster.endpoint, "us-east-1", cluster.access_key, cluster.secret_key)
    )


_client_cache: dict = {}


def empty_prefix(cluster: Ceph, prefix: str) -> None:
    """Delete every object and unfinished multipart upload under ``prefix`` (memstore is RAM)."""
    s3 = _client(cluster)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", ()):
            s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=BUCKET, Prefix=prefix):
        for up in page.get("Uploads", ()):
            s3.abort_multipart_upload(Bucket=BUCKET, Key=up["Key"], UploadId=up["UploadId"])


@pytest.fixture
def s3_env(ceph, monkeypatch):
    """The AWS variables pointing at the gateway, set for this test; yields a fresh ``s3://`` URL."""
    for k, v in ceph.env().items():
        monkeypatch.setenv(k, v)
    prefix = "t-" + uuid.uuid4().hex[:12]
    yield f"s3://{BUCKET}/{prefix}"
    empty_prefix(ceph, prefix + "/")


@pytest.fixture
def s3_store(s3_env):
    """An :class:`~caffezoo.server.blobstore.S3Store` under this test's own prefix."""
    from caffezoo.server.blobstore import open_store

    store = open_store(s3_env)
    yield store
    store.close()


def put_random_blob(blobs_url: str, size: int) -> tuple[bytes, str]:
    """``size`` random bytes stored as a blob under ``blobs_url`` (``s3://...``); (bytes, SHA-1)."""
    from caffezoo.server.blobstore import open_store

    data = os.urandom(size)
    sha1 = hashlib.sha1(data).hexdigest()
    store = open_store(blobs_url)
    try:
        store.put(sha1, [data])
    finally:
        store.close()
    return data, sha1
