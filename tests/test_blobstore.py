"""The blob store interface, against a local directory and a real Ceph RADOS Gateway:
verified writes (nothing visible until the SHA-1 matches), ranged reads, stat, list, delete."""

from __future__ import annotations

import hashlib
import os

import pytest
from ceph_helpers import BUCKET

from caffezoo.errors import ChecksumError, UsageError
from caffezoo.server.blobstore import BlobStoreError, LocalStore, S3Store, open_store

DATA = os.urandom(300_000)
SHA1 = hashlib.sha1(DATA).hexdigest()
EMPTY_SHA1 = hashlib.sha1(b"").hexdigest()


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "blobs")
    return request.getfixturevalue("s3_store")


def chunks(data: bytes, n: int = 65536):
    for i in range(0, len(data), n):
        yield data[i : i + n]


def test_put_get_stat_list_delete(store):
    assert store.stat(SHA1) is None and not store.has(SHA1) and list(store.list()) == []
    info = store.put(SHA1, chunks(DATA))
    assert (info.sha1, info.size) == (SHA1, len(DATA))
    assert store.stat(SHA1).size == len(DATA) and store.has(SHA1)
    assert b"".join(store.get(SHA1)) == DATA
    assert [(b.sha1, b.size) for b in store.list()] == [(SHA1, len(DATA))]
    assert store.delete(SHA1) is True
    assert store.stat(SHA1) is None and list(store.list()) == []
    assert store.delete(SHA1) is False
    with pytest.raises(KeyError):
        b"".join(store.get(SHA1))


def test_stream_gives_the_whole_blob_and_its_size(store):
    with pytest.raises(KeyError):
        store.stream(SHA1)
    store.put(SHA1, chunks(DATA))
    try:
        info, body = store.stream(SHA1)
        assert (info.sha1, info.size) == (SHA1, len(DATA))
        got = list(body)
        assert b"".join(got) == DATA
        assert max(map(len, got)) < 128 * 1024 or isinstance(store, LocalStore)  # heap-sized reads
    finally:
        store.delete(SHA1)


def test_ranged_reads(store):
    store.put(SHA1, chunks(DATA))
    try:
        assert b"".join(store.get(SHA1, 1000, 2000)) == DATA[1000:2000]
        assert b"".join(store.get(SHA1, 299_990)) == DATA[299_990:]
        assert b"".join(store.get(SHA1, 0, 1)) == DATA[:1]
        assert b"".join(store.get(SHA1, 5, len(DATA) + 100)) == DATA[5:]
    finally:
        store.delete(SHA1)


def test_file_objects_and_empty_blobs(store, tmp_path):
    src = tmp_path / "w.bin"
    src.write_bytes(DATA)
    with open(src, "rb") as f:
        assert store.put(SHA1, f).size == len(DATA)
    assert store.put(EMPTY_SHA1, []).size == 0
    assert b"".join(store.get(EMPTY_SHA1)) == b""
    assert sorted(b.sha1 for b in store.list()) == sorted([SHA1, EMPTY_SHA1])
    store.delete(SHA1), store.delete(EMPTY_SHA1)


def test_wrong_bytes_store_nothing(store):
    with pytest.raises(ChecksumError, match="nothing was stored"):
        store.put(SHA1, chunks(DATA[:-1] + b"x"))
    with pytest.raises(ChecksumError):
        store.put(SHA1, [])  # nothing at all is not the blob either
    assert store.stat(SHA1) is None and not store.has(SHA1) and list(store.list()) == []
    # An upload given up half-way leaves nothing behind either.
    w = store.writer(SHA1)
    w.write(DATA[:1000])
    w.abort()
    assert store.stat(SHA1) is None and list(store.list()) == []
    if isinstance(store, LocalStore):
        assert list((store.root / ".partial").glob("*")) == []


def test_a_writer_that_dies_before_commit_is_invisible(store):
    """The process is killed between write and commit: nothing under the name, ever."""
    w = store.writer(SHA1)
    w.write(DATA)
    del w  # no commit, no abort
    assert store.stat(SHA1) is None and list(store.list()) == []
    store.put(SHA1, [DATA])  # and the next writer succeeds
    assert b"".join(store.get(SHA1)) == DATA
    store.delete(SHA1)


def test_s3_multipart_commits_only_verified_bytes(s3_store):
    """One larger blob (memstore keeps it in RAM): parts go up as they fill, the object appears
    only after CompleteMultipartUpload, which is sent only when the SHA-1 matches."""
    s3_store.part_size = 5 << 20
    big = os.urandom(11 << 20)  # three parts: 5 + 5 + 1 MiB
    sha1 = hashlib.sha1(big).hexdigest()
    w = s3_store.writer(sha1)
    for c in chunks(big, 1 << 20):
        w.write(c)
    assert len(w._parts) == 2  # two parts are up already ...
    assert s3_store.stat(sha1) is None  # ... and nothing is visible
    w.commit()
    assert s3_store.stat(sha1).size == len(big)
    assert hashlib.sha1(b"".join(s3_store.get(sha1))).hexdigest() == sha1
    assert (
        b"".join(s3_store.get(sha1, (5 << 20) - 10, (5 << 20) + 10)) == big[(5 << 20) - 10 : (5 << 20) + 10]
    )
    s3_store.delete(sha1)
    # The same bytes with one flipped: parts were sent, the upload is aborted, nothing appears.
    bad = bytearray(big)
    bad[-1] ^= 1
    with pytest.raises(ChecksumError):
        s3_store.put(sha1, chunks(bytes(bad), 1 << 20))
    assert s3_store.stat(sha1) is None
    uploads = s3_store.client.list_multipart_uploads(Bucket=BUCKET, Prefix=s3_store.key("")).get(
        "Uploads", []
    )
    assert uploads == []


def test_s3_stale_multipart_uploads_are_cleared(s3_store):
    s3_store.part_size = 5 << 20
    w = s3_store.writer(SHA1)
    w.write(os.urandom(5 << 20))  # one part up, then the writer "dies"
    assert s3_store.abort_stale_uploads(older_than=3600) == 0  # young uploads may still finish
    assert s3_store.abort_stale_uploads(older_than=0) == 1
    uploads = s3_store.client.list_multipart_uploads(Bucket=BUCKET, Prefix=s3_store.key(""))
    assert uploads.get("Uploads", []) == []


def test_s3_presence_is_shared_between_processes(s3_env, s3_store):
    other = open_store(s3_env)  # another replica's view of the same bucket
    try:
        assert not other.has(SHA1)
        s3_store.put(SHA1, [DATA])
        other.refresh()
        assert other.has(SHA1) and other.stat(SHA1).size == len(DATA)
        s3_store.delete(SHA1)
        assert other.stat(SHA1) is None and not other.has(SHA1)
    finally:
        other.close()


def test_s3_presigned_url_serves_the_blob(s3_store):
    import httpx

    s3_store.put(SHA1, [DATA])
    url = s3_store.presigned_url(SHA1, 60)
    assert httpx.get(url).content == DATA
    assert httpx.get(url, headers={"Range": "bytes=10-19"}).content == DATA[10:20]
    assert httpx.get(url.replace("Signature=", "Signature=0")).status_code == 403
    s3_store.delete(SHA1)


def test_s3_errors_say_what_is_wrong(ceph, s3_env, monkeypatch):
    missing = S3Store("no-such-bucket-here")
    with pytest.raises(BlobStoreError, match="'no-such-bucket-here' does not exist"):
        missing.check()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(BlobStoreError, match="credentials"):
        S3Store(BUCKET).check()
    monkeypatch.setenv("CAFFEZOO_S3_ENDPOINT", "ftp://127.0.0.1:1")
    from caffezoo.errors import ConfigError

    with pytest.raises(ConfigError, match="CAFFEZOO_S3_ENDPOINT"):
        S3Store(BUCKET)


@pytest.mark.parametrize(
    "where, problem",
    [
        ("s3://", "expected s3://BUCKET"),
        ("s3://ab/x", "not an S3 bucket name"),
        ("s3://Upper_Case/x", "not an S3 bucket name"),
        ("http://host/blobs", "expected a directory"),
    ],
)
def test_open_store_refuses_what_it_cannot_open(where, problem):
    with pytest.raises(UsageError, match=problem):
        open_store(where)


def test_open_store_kinds(tmp_path, s3_env):
    assert isinstance(open_store(tmp_path), LocalStore)
    assert open_store(f"file://{tmp_path}").root == tmp_path
    s3 = open_store(s3_env + "/")
    assert isinstance(s3, S3Store) and s3.key(SHA1) == f"{s3_env.split('/', 3)[3]}/sha1/{SHA1}"


def test_s3_settings_prefer_caffezoo_variables_then_aws_ones(monkeypatch):
    from caffezoo.config import s3_settings
    from caffezoo.errors import ConfigError

    for k in (
        "CAFFEZOO_S3_ENDPOINT",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.delenv(k, raising=False)
    assert s3_settings().endpoint is None and s3_settings().region == "us-east-1"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://aws-style:9000/")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    assert (s3_settings().endpoint, s3_settings().region) == ("http://aws-style:9000", "eu-west-3")
    monkeypatch.setenv("CAFFEZOO_S3_ENDPOINT", "https://ours:443")
    monkeypatch.setenv("CAFFEZOO_S3_SECRET_ACCESS_KEY", "hush")
    s = s3_settings()
    assert s.endpoint == "https://ours:443" and "hush" not in repr(s)  # secrets stay out of logs
    monkeypatch.setenv("CAFFEZOO_S3_PART_SIZE", str(1 << 20))
    with pytest.raises(ConfigError, match="CAFFEZOO_S3_PART_SIZE"):
        s3_settings()
    monkeypatch.setenv("CAFFEZOO_S3_PART_SIZE", str(8 << 20))
    assert s3_settings().part_size == 8 << 20
    monkeypatch.setenv("CAFFEZOO_S3_ENDPOINT", "https://ours:99999")
    with pytest.raises(ConfigError, match="CAFFEZOO_S3_ENDPOINT"):
        s3_settings()


def test_a_bad_endpoint_is_named_by_the_variable_that_holds_it(monkeypatch):
    from caffezoo.config import s3_settings
    from caffezoo.errors import ConfigError

    monkeypatch.delenv("CAFFEZOO_S3_ENDPOINT", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "ftp://store:9000")
    with pytest.raises(ConfigError, match=r"^AWS_ENDPOINT_URL: 'ftp://store:9000' is not an http"):
        s3_settings()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://store:99999")
    with pytest.raises(ConfigError, match=r"^AWS_ENDPOINT_URL_S3: 'http://store:99999' is not a valid URL"):
        s3_settings()
