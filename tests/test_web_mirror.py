"""The mirror: weights fetched through the downloads engine into the blob store, served
at /blobs/sha1/<sha1> with Range, uploaded by owners; and a client download through the
mirror once the origin is gone."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from fault_server import FaultServer
from gist_helpers import free_port
from model_helpers import write_model
from web_helpers import publish

from caffezoo import _http
from caffezoo.server import Storage
from caffezoo.server.mirror import Mirror, MirrorOptions

LAB = MirrorOptions(policy=_http.Policy(allow_private=True))  # the test origins are on loopback

DATA = os.urandom(300_000)
SHA1 = hashlib.sha1(DATA).hexdigest()


def weights_model(store, url: str, owner: str = "mo", sha1: str = SHA1, size: int | None = len(DATA)) -> str:
    keys = dict(caffemodel="m.caffemodel", caffemodel_url=url, sha1=sha1)
    if size is not None:
        keys["size"] = size
    return publish(store, owner, "Mirrored Net", **keys)


@pytest.fixture
def origin():
    with FaultServer() as srv:
        yield srv


def test_sync_fetches_verified_blobs_and_skips_wrong_ones(store, origin, tmp_path):
    origin.route("/good", DATA)
    bad = os.urandom(1000)
    origin.route("/bad", bad)
    weights_model(store, origin.url("/good"))
    publish(
        store, "mo", "Lying Net", caffemodel="l.caffemodel", caffemodel_url=origin.url("/bad"), sha1="3" * 40
    )
    mirror = Mirror(tmp_path / "blobs", LAB)
    results = {r.sha1: r for r in mirror.sync(store)}
    assert results[SHA1].status == "mirrored" and mirror.path(SHA1).read_bytes() == DATA
    assert results["3" * 40].status == "failed" and "sha1" in results["3" * 40].error.lower()
    assert not mirror.has("3" * 40)
    assert mirror.sync(store) == []  # what it has is not fetched again; the failed source backs off
    assert [r.sha1 for r in mirror.sync(store, everything=True)] == ["3" * 40]  # unless told to retry now
    assert len([r for r in origin.requests_for("/good") if r.method == "GET"]) == 1


def test_blobs_are_served_with_range_and_etag(web):
    mirror: Mirror = web.app.state.mirror
    path = mirror.path(SHA1)
    path.parent.mkdir(parents=True)
    path.write_bytes(DATA)
    url = f"/blobs/sha1/{SHA1}"
    r = web.http.get(url)
    assert r.status_code == 200 and r.content == DATA and r.headers["etag"] == f'"{SHA1}"'
    assert r.headers["accept-ranges"] == "bytes"
    r = web.http.get(url, headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 206 and r.content == DATA[1000:2000]
    assert r.headers["content-range"] == f"bytes 1000-1999/{len(DATA)}"
    r = web.http.get(url, headers={"Range": "bytes=299990-", "If-Range": f'"{SHA1}"'})
    assert r.status_code == 206 and r.content == DATA[299990:]
    r = web.http.get(url, headers={"Range": "bytes=0-9", "If-Range": '"something-else"'})
    assert r.status_code == 200 and len(r.content) == len(DATA)
    r = web.http.head(url)
    assert r.status_code == 200 and r.headers["content-length"] == str(len(DATA)) and r.content == b""
    assert web.http.get(url, headers={"Range": f"bytes={len(DATA)}-"}).status_code == 416
    assert web.http.get(f"/blobs/sha1/{'4' * 40}").status_code == 404
    assert web.http.get("/blobs/sha1/../../etc/passwd").status_code == 404
    assert web.http.get("/blobs/sha1/xyz").status_code == 404


def test_owners_upload_weights_checked_on_arrival(web):
    owner_token = web.storage.create_token("owen")
    other_token = web.storage.create_token("otto")
    gid = weights_model(web.storage, "http://127.0.0.1:9/none", owner="owen")
    url = f"/blobs/sha1/{SHA1}"

    def put(body: bytes, token: str | None, sha1: str = SHA1) -> httpx.Response:
        headers = {"Authorization": f"token {token}"} if token else {}
        return web.http.put(f"/blobs/sha1/{sha1}", content=body, headers=headers)

    assert put(DATA, None).status_code == 401
    assert put(DATA, "czt_wrong").status_code == 401
    assert put(DATA, other_token).status_code == 403  # otto has no model with that sha1
    assert put(DATA, owner_token, sha1="5" * 40).status_code == 403
    wrong = put(DATA[:-1] + b"x", owner_token)
    assert wrong.status_code == 422 and "nothing was stored" in wrong.json()["message"]
    too_big = put(DATA + b"extra", owner_token)
    assert too_big.status_code == 413
    assert web.http.get(url).status_code == 404
    mirror: Mirror = web.app.state.mirror
    assert list((mirror.root / ".partial").glob("*.part")) == []  # no leftovers
    ok = put(DATA, owner_token)
    assert ok.status_code == 201 and ok.json()["sha1"] == SHA1
    assert web.http.get(url).content == DATA
    assert put(DATA, owner_token).json()["status"] == "present"
    page = web.get(f"/models/{gid}").text
    assert "mirrored here" in page and f"export CAFFEZOO_MIRRORS={web.url}" in page
    assert web.http.get(f"/api/models/{gid}").json()["weights"]["mirror_url"].endswith(url)


def test_client_downloads_through_the_mirror_after_the_origin_is_gone(tmp_path, cli_process):
    """caffezoo serve --mirror (a real process) copies the weights; the origin dies; a client
    with CAFFEZOO_MIRRORS pointing at the server still gets verified weights."""
    db = f"sqlite:///{tmp_path / 'mirror.db'}"
    blobs = tmp_path / "server-blobs"
    origin = FaultServer().__enter__()
    origin.route("/m.caffemodel", DATA)
    origin_url = origin.url("/m.caffemodel")
    store = Storage(db)
    weights_model(store, origin_url)
    store.close()
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "caffezoo",
            "serve",
            "--port",
            str(port),
            "--mirror",
            "--mirror-every",
            "0.2",
            "--no-check-links",
            "--blobs-dir",
            str(blobs),
            "--allow-private-urls",  # the origin is on loopback
            "--log-level",
            "warning",
        ],
        env=dict(os.environ, CAFFEZOO_DATABASE_URL=db),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.head(f"{server}/blobs/sha1/{SHA1}").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("the server did not mirror the weights in time")
        origin.__exit__(None, None, None)  # the origin is gone for good
        assert httpx.get(f"{server}/blobs/sha1/{SHA1}").content == DATA
        model = write_model(
            tmp_path / "client" / "net",
            "\n".join(
                [
                    "name: Mirrored Net",
                    "caffemodel: m.caffemodel",
                    f"caffemodel_url: {origin_url}",
                    f"sha1: {SHA1}",
                ]
            ),
        )
        r = cli_process(
            "download",
            model,
            env={"CAFFEZOO_MIRRORS": server, "CAFFEZOO_HOME": str(tmp_path / "client-home")},
        )
        assert r.code == 0, r.stderr
        assert (model / "m.caffemodel").read_bytes() == DATA
        # Without the mirror the same download fails: the origin really is gone.
        other = write_model(
            tmp_path / "client" / "net2",
            "\n".join(
                [
                    "name: Mirrored Net",
                    "caffemodel: m.caffemodel",
                    f"caffemodel_url: {origin_url}",
                    f"sha1: {SHA1}",
                ]
            ),
        )
        r = cli_process(
            "download", other, env={"CAFFEZOO_HOME": str(tmp_path / "client-home2"), "CAFFEZOO_MIRRORS": ""}
        )
        assert r.code != 0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def test_serve_mirror_cli_once(cli, tmp_path, monkeypatch, origin):
    db = f"sqlite:///{tmp_path / 'once.db'}"
    monkeypatch.setenv("CAFFEZOO_DATABASE_URL", db)
    origin.route("/m", DATA)
    store = Storage(db)
    weights_model(store, origin.url("/m"))
    store.close()
    r = cli("serve", "mirror", "--allow-private-urls", "--blobs-dir", tmp_path / "b", "--json")
    assert r.code == 0, r.stderr
    assert '"status": "mirrored"' in r.stdout
    assert (tmp_path / "b" / "sha1" / SHA1).read_bytes() == DATA
    r = cli("serve", "mirror", "--allow-private-urls", "--blobs-dir", tmp_path / "b")
    assert r.code == 0 and "nothing to fetch" in r.stderr


def raw_request(base: str, head: str, body: bytes) -> bytes:
    """Send ``head`` (without its blank line) and ``body`` as they are; return the answer's start."""
    host, port = base.rsplit("/", 1)[-1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(head.encode() + b"\r\n\r\n" + body)
        return s.recv(65536)


ZEROS_THEN_10 = "0" * 4400 + "10"  # httptools reads it as the 10 it is; int() refuses 4,300+ digits


def test_a_content_length_of_thousands_of_digits_is_no_server_error_on_upload(web):
    token = web.storage.create_token("zed")
    weights_model(web.storage, "http://127.0.0.1:9/none", owner="zed")
    answer = raw_request(
        web.url,
        f"PUT /blobs/sha1/{SHA1} HTTP/1.1\r\nHost: x\r\nAuthorization: token {token}\r\n"
        f"Content-Length: {ZEROS_THEN_10}\r\nConnection: close",
        b"0123456789",
    )
    assert answer.startswith(b"HTTP/1.1 422 "), answer[:200]  # read as 10 bytes: the wrong file


def test_a_content_length_of_thousands_of_digits_is_no_server_error_on_the_gist_api(web):
    token = web.storage.create_token("zoe")
    body = b'{"files":{}}'.ljust(10)[:10]
    answer = raw_request(
        web.url,
        f"POST /gists HTTP/1.1\r\nHost: x\r\nAuthorization: token {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {ZEROS_THEN_10}\r\nConnection: close",
        body,
    )
    assert answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 422 ")), answer[:200]


def test_a_client_gone_mid_upload_is_no_server_error(web):
    """A visitor who closes the connection halfway through a body is not a bug: no traceback."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    token = web.storage.create_token("zia")
    weights_model(web.storage, "http://127.0.0.1:9/none", owner="zia")
    heads = [
        f"PUT /blobs/sha1/{SHA1} HTTP/1.1\r\nHost: x\r\nAuthorization: token {token}\r\nContent-Length: {len(DATA)}",
        f"POST /gists HTTP/1.1\r\nHost: x\r\nAuthorization: token {token}\r\nContent-Length: 100000",
    ]
    host, port = web.url.rsplit("/", 1)[-1].rsplit(":", 1)
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "caffezoo")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        for head in heads:
            with socket.create_connection((host, int(port)), timeout=60) as s:
                s.sendall(head.encode() + b"\r\n\r\n" + b"x" * 1000)
            time.sleep(0.5)  # the server reads on, finds the connection gone, and answers nobody
        assert web.http.get("/healthz").status_code == 200
        time.sleep(0.5)
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    assert [r.getMessage() for r in records if r.levelno >= logging.ERROR or r.exc_info] == []
