"""`caffezoo serve --blobs-accel /_s3/` behind real nginx, blobs in real radosgw: the replica
answers a blob GET (404s, HEAD, Range decisions, validators) and nginx streams the body from
the store through its internal location; clients see what a streamed answer shows them."""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from ceph_helpers import BUCKET
from model_helpers import write_model
from test_web_blobs_s3 import RecordingProxy, s3_web_for
from web_helpers import self_signed_cert

from caffezoo.server.devcluster import Nginx, stop_pids

pytestmark = pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed")

DATA = os.urandom(300_000)
SHA1 = hashlib.sha1(DATA).hexdigest()
URL = f"/blobs/sha1/{SHA1}"
PREFIX = "/_s3/"
# What a streamed answer carries that an accel answer must carry too (nginx adds Server, Date).
SAME = (
    "etag",
    "cache-control",
    "accept-ranges",
    "content-type",
    "content-length",
    "content-range",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "cross-origin-opener-policy",
    "permissions-policy",
    "content-security-policy",
)


@contextmanager
def zoo(ceph, blobs_url: str, tmp_path, accel: str | None):
    """A replica in this process on ``blobs_url`` (with ``--blobs-accel accel``), nginx in front."""
    with s3_web_for(blobs_url, tmp_path, redirect=False, accel=accel) as (app, base, _):
        lb = Nginx(tmp_path / f"nginx-{bool(accel)}", [base], accel=accel, store=ceph.endpoint, tied=True)
        try:
            lb.start()
            with httpx.Client(base_url=lb.url, timeout=60) as http:
                yield app, lb, http
        finally:
            stop_pids(lb.pid_files)


@pytest.fixture
def accel(ceph, s3_env, tmp_path):
    with zoo(ceph, s3_env, tmp_path, PREFIX) as z:
        z[0].state.mirror.store.put(SHA1, [DATA])
        yield z


def test_nginx_streams_the_body_with_the_replicas_headers(ceph, s3_env, accel, tmp_path):
    app, lb, http = accel
    with zoo(ceph, s3_env, tmp_path, None) as (_, _, streamed):
        for headers in (
            {},
            {"Range": "bytes=1000-1999"},
            {"Range": "bytes=1000-1999", "If-Range": '"stale"'},
        ):
            want, got = streamed.get(URL, headers=headers), http.get(URL, headers=headers)
            assert (got.status_code, got.content) == (want.status_code, want.content), headers
            assert {h: got.headers.get(h) for h in SAME} == {h: want.headers.get(h) for h in SAME}
            assert not [h for h in got.headers if h.startswith(("x-amz", "x-rgw", "x-accel", "x-caffezoo"))]
            assert "last-modified" not in got.headers and got.headers["x-request-id"]
    for headers in ({}, {"Range": "bytes=1000-1999"}):  # asked directly, the replica sends no body
        r = httpx.get(lb.upstreams[0] + URL, headers=headers)
        assert r.content == b"" and r.headers["x-accel-redirect"].startswith(PREFIX + BUCKET + "/")
        assert f"/sha1/{SHA1}?X-Amz-Algorithm=" in r.headers["x-accel-redirect"]
    assert r.headers["x-caffezoo-store-range"] == "bytes=1000-1999"
    r = http.get(URL)
    assert r.status_code == 200 and r.content == DATA and r.headers["etag"] == f'"{SHA1}"'
    assert r.headers["content-length"] == str(len(DATA)) and r.headers["accept-ranges"] == "bytes"
    r = http.get(URL, headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 206 and r.content == DATA[1000:2000]
    assert r.headers["content-range"] == f"bytes 1000-1999/{len(DATA)}"
    r = http.get(URL, headers={"Range": "bytes=-10", "If-Range": f'"{SHA1}"'})  # our validator: honoured
    assert r.status_code == 206 and r.content == DATA[-10:]
    r = http.get(URL, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})  # another file's: all of it
    assert r.status_code == 200 and r.content == DATA
    r = http.get(URL, headers={"Range": f"bytes={len(DATA)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(DATA)}"
    r = http.get(URL, headers={"If-None-Match": f'"{SHA1}"'})
    assert r.status_code == 304 and r.content == b""
    r = http.head(URL)  # a URL signed for GET would refuse HEAD: the replica answers it
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == str(len(DATA))
    assert r.headers["etag"] == f'"{SHA1}"'
    # A client's Host, credentials or conditions never reach the store (its signature covers Host).
    r = http.get(URL, headers={"Host": "store.example", "Authorization": "token x", "If-Match": '"x"'})
    assert r.status_code == 200 and r.content == DATA


def test_a_missing_blob_is_the_replicas_404_and_the_internal_prefix_is_closed(accel):
    app, lb, http = accel
    r = http.get(f"/blobs/sha1/{'4' * 40}")
    assert r.status_code == 404 and "this server has no blob" in r.json()["message"]
    r = http.get(f"/blobs/sha1/{'4' * 40}", headers={"Range": "bytes=0-9"})
    assert r.status_code == 404 and "this server has no blob" in r.json()["message"]
    # From outside, the internal location is not there: not even with a valid signature.
    signed = app.state.mirror.store.presigned_url(SHA1, 60, internal=True)
    path_query = signed.split("://", 1)[1].split("/", 1)[1]
    for path in (PREFIX + path_query, "/%5Fs3/" + path_query, PREFIX):
        r = http.get(path)
        assert r.status_code == 404 and DATA[:100] not in r.content, path


def test_the_clients_mirror_resumes_with_range_and_if_range_through_nginx(accel, tmp_path, monkeypatch):
    app, lb, http = accel
    proxy = RecordingProxy(lb.url, drop_after=100_000)  # the first answer breaks off; the client resumes
    try:
        model = write_model(
            tmp_path / "net",
            f"name: Net\ncaffemodel: m.caffemodel\ncaffemodel_url: http://127.0.0.1:9/gone\nsha1: {SHA1}",
        )
        monkeypatch.setenv("CAFFEZOO_MIRRORS", proxy.url)
        monkeypatch.setenv("CAFFEZOO_RETRIES", "3")
        from caffezoo.download import download

        assert download(model).path.read_bytes() == DATA
        gets = [h for h in proxy.seen if "range" in h]
        assert gets and gets[-1]["range"] == "bytes=100000-" and gets[-1]["if-range"] == f'"{SHA1}"'
    finally:
        proxy.close()


class _FailingStore(BaseHTTPRequestHandler):
    """An S3 endpoint in trouble: every GET is a 503 whose body names its bucket."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"<Error><Code>SlowDown</Code><BucketName>secret-bucket</BucketName></Error>"
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_store_failure_is_never_cached_for_good_nor_shows_the_stores_words(ceph, s3_env, accel, tmp_path):
    app, lb, http = accel
    store = app.state.mirror.store
    assert http.get(URL).status_code == 200  # the replica now believes the blob is there...
    store.client.delete_object(Bucket=store.bucket, Key=store.key(SHA1))  # ... it is gone meanwhile
    for headers in ({}, {"Range": "bytes=0-9"}):
        r = http.get(URL, headers=headers)
        assert r.status_code == 404 and "immutable" not in r.headers.get("cache-control", ""), r.headers
        assert b"NoSuchKey" not in r.content and BUCKET.encode() not in r.content
    failing = ThreadingHTTPServer(("127.0.0.1", 0), _FailingStore)
    threading.Thread(target=failing.serve_forever, daemon=True).start()
    store.put(SHA1, [DATA])
    sick = Nginx(
        tmp_path / "nginx-sick",
        lb.upstreams,
        accel=PREFIX,
        store=f"http://127.0.0.1:{failing.server_port}",
        tied=True,
    )
    try:
        sick.start()
        for headers in ({}, {"Range": "bytes=0-9"}):
            r = httpx.get(sick.url + URL, headers=headers)
            assert r.status_code == 502 and "immutable" not in r.headers.get("cache-control", ""), r.headers
            assert b"secret-bucket" not in r.content
    finally:
        stop_pids(sick.pid_files)
        failing.shutdown()
        failing.server_close()


class _ForgingStore(_FailingStore):
    """Someone between nginx and an https store, with a certificate nobody vouches for."""

    def do_GET(self):
        body = b"forged" * 1000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_an_https_store_must_show_a_certificate_that_is_trusted(accel, tmp_path, monkeypatch):
    """boto checks the store's certificate when a replica streams; nginx must too, or anyone on
    the way could hand out other bytes under the blob's SHA-1, cached by everyone for a year."""
    app, lb, http = accel
    key, cert = self_signed_cert(tmp_path, "DNS:localhost")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    forger = ThreadingHTTPServer(("127.0.0.1", 0), _ForgingStore)
    forger.socket = tls.wrap_socket(forger.socket, server_side=True)
    threading.Thread(target=forger.serve_forever, daemon=True).start()
    try:
        for trusted in (None, cert):  # the system's CAs; then what boto is told to trust
            if trusted:
                monkeypatch.setenv("AWS_CA_BUNDLE", str(trusted))
            store = f"https://localhost:{forger.server_port}"
            mitm = Nginx(
                tmp_path / f"nginx-mitm-{bool(trusted)}", lb.upstreams, accel=PREFIX, store=store, tied=True
            )
            try:
                mitm.start()
                r = httpx.get(mitm.url + URL)
                assert (r.status_code, b"forged" in r.content) == ((200, True) if trusted else (502, False))
            finally:
                stop_pids(mitm.pid_files)
    finally:
        forger.shutdown()
        forger.server_close()
