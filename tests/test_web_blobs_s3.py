"""The server's blobs in a real S3 store (Ceph's RADOS Gateway): streamed with Range,
If-Range and ETag as from a directory, or handed out as presigned redirects that the
client's mirror logic follows (its token never reaches the store); owners' uploads
land in the bucket only when their SHA-1 matches."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx
import pytest
from ceph_helpers import put_random_blob
from download_helpers import wait_for
from gist_helpers import start_uvicorn
from model_helpers import write_model
from web_helpers import publish, self_signed_cert

from caffezoo.server.protocols import connection_options

DATA = os.urandom(300_000)
SHA1 = hashlib.sha1(DATA).hexdigest()


class RecordingProxy:
    """A reverse proxy in front of the gateway that records what clients send it.

    ``drop_after``: the first GET answer breaks off after that many body bytes (a resume follows).
    ``fail_first``: the first GET is answered with this status instead (a store's passing error).
    The Host header goes through unchanged: presigned URLs are signed for the host the client saw.
    """

    def __init__(self, upstream: str, drop_after: int | None = None, fail_first: int | None = None):
        self.seen: list[dict[str, str]] = []
        self.drop_after, self.fail_first = drop_after, fail_first
        outer = self
        up = urlsplit(upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                outer.seen.append({k.lower(): v for k, v in self.headers.items()})
                if outer.fail_first is not None:
                    status, outer.fail_first = outer.fail_first, None
                    error = b"<Error><Code>SlowDown</Code></Error>"
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                with (
                    httpx.Client() as c,
                    c.stream("GET", f"{up.scheme}://{up.netloc}{self.path}", headers=headers) as r,
                ):
                    self.send_response(r.status_code)
                    for k, v in r.headers.items():
                        if k.lower() not in ("connection", "transfer-encoding"):
                            self.send_header(k, v)
                    self.end_headers()
                    sent, limit = 0, outer.drop_after
                    outer.drop_after = None
                    for chunk in r.iter_raw():
                        if limit is not None and sent + len(chunk) > limit:
                            self.wfile.write(chunk[: limit - sent])
                            self.wfile.flush()
                            self.close_connection = True
                            return
                        self.wfile.write(chunk)
                        sent += len(chunk)

            def do_HEAD(self):  # a ranged answer asks the blob's size first (HeadObject)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                r = httpx.head(f"{up.scheme}://{up.netloc}{self.path}", headers=headers)
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(k, v)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def s3_web_for(blobs_url: str, tmp_path, redirect: bool, accel: str | None = None, splice: bool = False):
    """A zoo server in this process on ``blobs_url``; yields (app, base URL, client). ``splice``:
    run it on the protocols ``serve`` uses, which offer to splice the store's bytes to the client."""
    from contextlib import contextmanager

    @contextmanager
    def run():
        from caffezoo.server import create_app

        app = create_app(
            f"sqlite:///{tmp_path / f'zoo{accel is not None:d}.db'}",
            blobs_url=blobs_url,
            blobs_redirect=redirect,
            blobs_accel=accel,
            cache_dir=tmp_path / "svg",
        )
        server, thread, base = start_uvicorn(app, **(connection_options() if splice else {}))
        http = httpx.Client(base_url=base, timeout=60)
        try:
            yield app, base, http
        finally:
            http.close()
            server.should_exit = True
            thread.join(10)
            app.state.storage.close()
            app.state.mirror.store.close()

    return run()


@pytest.fixture(params=["stream", "redirect"])
def s3_web(request, s3_env, tmp_path):
    with s3_web_for(s3_env, tmp_path, request.param == "redirect") as w:
        yield w


@pytest.mark.parametrize("splice", [False, True], ids=["streamed", "spliced"])
def test_streamed_blobs_answer_range_if_range_and_etag(s3_env, tmp_path, splice):
    with s3_web_for(s3_env, tmp_path, redirect=False, splice=splice) as (app, base, http):
        app.state.mirror.store.put(SHA1, [DATA])
        url = f"/blobs/sha1/{SHA1}"
        r = http.get(url)
        assert r.status_code == 200 and r.content == DATA and r.headers["etag"] == f'"{SHA1}"'
        assert r.headers["accept-ranges"] == "bytes" and r.headers["content-length"] == str(len(DATA))
        r = http.get(url, headers={"Range": "bytes=1000-1999"})
        assert r.status_code == 206 and r.content == DATA[1000:2000]
        assert r.headers["content-range"] == f"bytes 1000-1999/{len(DATA)}"
        r = http.get(url.upper().replace("/BLOBS/SHA1/", "/blobs/sha1/"), headers={"Range": "bytes=-10"})
        assert r.status_code == 206 and r.content == DATA[-10:]
        r = http.get(url, headers={"Range": "bytes=299990-", "If-Range": f'"{SHA1}"'})
        assert r.status_code == 206 and r.content == DATA[299990:]
        r = http.get(url, headers={"Range": "bytes=0-9", "If-Range": '"something-else"'})
        assert r.status_code == 200 and r.content == DATA
        r = http.get(url, headers={"Range": "bytes=0-9,20-29"})  # several ranges: the whole file
        assert r.status_code == 200 and r.content == DATA
        r = http.get(url, headers={"Range": "bytes=9-0"})  # nonsense is ignored, as RFC 9110 allows
        assert r.status_code == 200 and r.content == DATA
        r = http.get(url, headers={"Range": "bytes=" + "9" * 5000 + "-"})  # no giant int parsing
        assert r.status_code == 200 and r.content == DATA
        r = http.get(url, headers={"Range": "bytes=-0"})
        assert r.status_code == 416
        r = http.get(url, headers={"Range": f"bytes={len(DATA)}-"})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(DATA)}"
        r = http.get(url, headers={"If-None-Match": f'"{SHA1}"'})
        assert r.status_code == 304 and r.content == b""
        r = http.head(url)
        assert r.status_code == 200 and r.headers["content-length"] == str(len(DATA)) and r.content == b""
        assert http.get(f"/blobs/sha1/{'4' * 40}").status_code == 404
        assert http.get("/blobs/sha1/../../etc/passwd").status_code == 404


def hang_up_after_one_chunk(url: str, times: int = 3) -> None:
    """``times`` clients that read one chunk of ``url``'s body and hang up."""
    for _ in range(times):
        with httpx.Client() as c, c.stream("GET", url) as r:
            assert r.status_code == 200
            next(r.iter_raw())


def test_a_client_that_leaves_mid_stream_does_not_stall_the_server(s3_env, tmp_path):
    big = os.urandom(12 << 20)  # several read-ahead chunks
    sha1 = hashlib.sha1(big).hexdigest()
    with s3_web_for(s3_env, tmp_path, redirect=False) as (app, base, http):
        app.state.mirror.store.put(sha1, [big])
        hang_up_after_one_chunk(f"{base}/blobs/sha1/{sha1}")
        r = http.get(f"/blobs/sha1/{sha1}")
        assert r.status_code == 200 and hashlib.sha1(r.content).hexdigest() == sha1
        r = http.get(f"/blobs/sha1/{sha1}", headers={"Range": "bytes=6000000-6000009"})
        assert r.content == big[6000000:6000010]


def test_redirects_hand_out_short_lived_presigned_urls(s3_env, tmp_path):
    with s3_web_for(s3_env, tmp_path, redirect=True) as (app, base, http):
        app.state.mirror.store.put(SHA1, [DATA])
        url = f"/blobs/sha1/{SHA1}"
        r = http.get(url)
        assert r.status_code == 302 and r.headers["cache-control"] == "no-store"
        location = r.headers["location"]
        assert "X-Amz-Expires=300" in location and "X-Amz-Signature=" in location
        assert httpx.get(location).content == DATA
        assert httpx.get(location, headers={"Range": "bytes=5-9"}).content == DATA[5:10]
        tampered = location.replace(SHA1, "0" * 40)
        assert httpx.get(tampered).status_code == 403  # a signature covers one blob only
        r = http.head(url)  # a URL signed for GET would refuse HEAD: answered here
        assert r.status_code == 200 and r.headers["content-length"] == str(len(DATA))
        assert http.get(f"/blobs/sha1/{'4' * 40}").status_code == 404  # no redirect to nothing
        # A blob another replica stored a moment ago is found (the presence cache is checked).
        other = hashlib.sha1(b"x").hexdigest()
        from caffezoo.server.blobstore import open_store

        replica = open_store(s3_env)
        replica.put(other, [b"x"])
        replica.close()
        assert http.get(f"/blobs/sha1/{other}").status_code == 302


def test_owners_uploads_land_in_the_bucket_only_when_verified(s3_web):
    app, base, http = s3_web
    storage, store = app.state.storage, app.state.mirror.store
    owner = storage.create_token("owen")
    other = storage.create_token("otto")
    gid = publish(
        storage,
        "owen",
        "Net",
        caffemodel="m.caffemodel",
        caffemodel_url="http://127.0.0.1:9/x",
        sha1=SHA1,
        size=len(DATA),
    )

    def put(body, token, sha1=SHA1):
        return http.put(f"/blobs/sha1/{sha1}", content=body, headers={"Authorization": f"token {token}"})

    assert put(DATA, other).status_code == 403
    wrong = put(DATA[:-1] + b"x", owner)
    assert wrong.status_code == 422 and "nothing was stored" in wrong.json()["message"]
    assert put(DATA + b"extra", owner).status_code == 413
    assert store.stat(SHA1) is None and list(store.list()) == []
    ok = put((DATA[i : i + 7000] for i in range(0, len(DATA), 7000)), owner)  # chunked, no length
    assert ok.status_code == 201 and ok.json() == {
        "sha1": SHA1,
        "size": len(DATA),
        "status": "stored",
        "url": f"/blobs/sha1/{SHA1}",
    }
    assert put(DATA, owner).json()["status"] == "present"
    assert b"".join(store.get(SHA1)) == DATA
    assert http.get(f"/blobs/sha1/{SHA1}", follow_redirects=True).content == DATA
    for _ in range(10):  # a loaded machine may find the render lane late (503, Retry-After)
        page = http.get(f"/models/{gid}", headers={"Accept": "text/html"})
        if page.status_code != 503:
            break
        time.sleep(float(page.headers.get("retry-after", "1")))
    assert page.status_code == 200 and "mirrored here" in page.text
    assert http.get(f"/api/models/{gid}").json()["weights"]["mirrored"] is True


@pytest.mark.parametrize("redirect", [False, True], ids=["stream", "redirect"])
def test_client_downloads_through_the_mirror_from_the_bucket(ceph, s3_env, tmp_path, monkeypatch, redirect):
    """caffezoo's own download (CAFFEZOO_MIRRORS, a token for the zoo) gets verified bytes from
    a server whose blobs are in radosgw, resuming a broken transfer; the store never sees the token."""
    proxy = RecordingProxy(ceph.endpoint, drop_after=100_000)
    monkeypatch.setenv("CAFFEZOO_S3_PUBLIC_ENDPOINT", proxy.url)  # presigned URLs point clients here
    try:
        with s3_web_for(s3_env, tmp_path, redirect) as (app, base, http):
            app.state.mirror.store.put(SHA1, [DATA])
            model = write_model(
                tmp_path / "net",
                f"name: Net\ncaffemodel: m.caffemodel\ncaffemodel_url: http://127.0.0.1:9/gone\nsha1: {SHA1}",
            )
            monkeypatch.setenv("CAFFEZOO_MIRRORS", base)
            monkeypatch.setenv("CAFFEZOO_GIST_API", base)
            monkeypatch.setenv("CAFFEZOO_TOKEN", "czt_secret_for_the_zoo_only")
            monkeypatch.setenv("CAFFEZOO_RETRIES", "3")
            from caffezoo.download import download

            if not redirect:  # streamed: the break is simulated on the server's side of the store
                proxy.drop_after = None
            fetched = download(model)
            assert fetched.path.read_bytes() == DATA
            if redirect:
                assert len(proxy.seen) == 2, proxy.seen  # broken off, then resumed
                assert proxy.seen[1]["range"] == "bytes=100000-"
                assert all("authorization" not in h for h in proxy.seen)
                assert all("czt_secret" not in v for h in proxy.seen for v in h.values())
            else:
                assert proxy.seen == []  # streamed: the client never talks to the store
    finally:
        proxy.close()


def test_serve_refuses_a_store_it_cannot_use(cli_process, ceph, s3_env, tmp_path):
    from gist_helpers import free_port

    env = {**ceph.env(), "CAFFEZOO_HOME": str(tmp_path)}
    port = str(free_port())
    r = cli_process("serve", "--port", port, "--blobs-url", "s3://no-such-bucket-here/x", env=env)
    assert r.code != 0 and "'no-such-bucket-here' does not exist" in r.stderr and "Traceback" not in r.stderr
    r = cli_process(
        "serve", "--port", port, "--blobs-url", s3_env, env={**env, "AWS_SECRET_ACCESS_KEY": "wrong"}
    )
    assert r.code != 0 and "credentials" in r.stderr and "Traceback" not in r.stderr
    r = cli_process("serve", "--port", port, "--blobs-redirect", env=env)
    assert r.code != 0 and "--blobs-redirect needs --blobs-url" in r.stderr
    r = cli_process("serve", "--port", port, "--blobs-accel", "/_s3/", env=env)
    assert r.code != 0 and "--blobs-accel needs --blobs-url" in r.stderr
    accel = ("--blobs-url", s3_env, "--blobs-accel")
    r = cli_process("serve", "--port", port, *accel, "/_s3/", "--blobs-redirect", env=env)
    assert r.code != 0 and "choose one" in r.stderr
    no_endpoint = {"AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_S3": "", "CAFFEZOO_S3_ENDPOINT": ""}
    r = cli_process("serve", "--port", port, *accel, "/_s3/", env={**env, **no_endpoint})
    assert (
        r.code != 0 and "--blobs-accel needs the store's address" in r.stderr and "Traceback" not in r.stderr
    )
    r = cli_process("serve", "--port", port, *accel, "http://x/../", env=env)
    assert r.code != 0 and "not a URL path prefix" in r.stderr and "Traceback" not in r.stderr
    r = cli_process("serve", "--port", port, "--blobs-dir", tmp_path, "--blobs-url", s3_env, env=env)
    assert r.code != 0 and "not both" in r.stderr


def test_the_mirror_fetches_into_the_bucket(cli, s3_env, tmp_path, monkeypatch, caffezoo_home):
    from fault_server import FaultServer

    from caffezoo.server import Storage

    db = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("CAFFEZOO_DATABASE_URL", db)
    with FaultServer() as origin:
        origin.route("/m", DATA, drop_after=100_000)  # the fetch resumes before it goes up
        origin.route("/bad", os.urandom(1000))
        store = Storage(db)
        publish(store, "mo", "Net", caffemodel="m.caffemodel", caffemodel_url=origin.url("/m"), sha1=SHA1)
        publish(
            store, "mo", "Liar", caffemodel="l.caffemodel", caffemodel_url=origin.url("/bad"), sha1="3" * 40
        )
        store.close()
        r = cli("serve", "mirror", "--blobs-url", s3_env, "--allow-private-urls", "--json")
        assert r.code == 1  # the liar failed
        results = {x["sha1"]: x["status"] for x in json.loads(r.stdout)}
        assert results == {SHA1: "mirrored", "3" * 40: "failed"}
        from caffezoo.server.blobstore import open_store

        bucket = open_store(s3_env)
        assert [b.sha1 for b in bucket.list()] == [SHA1] and b"".join(bucket.get(SHA1)) == DATA
        staging = caffezoo_home / "cache" / "server" / "staging"
        assert staging.is_dir() and list((staging / "sha1").glob("*")) == []  # fetched there, then moved up
        r = cli("serve", "mirror", "--blobs-url", s3_env, "--allow-private-urls", "--json")
        # Not fetched twice; the liar's source backs off before it is tried again.
        assert json.loads(r.stdout) == []
        assert len([q for q in origin.requests_for("/m") if q.method == "GET"]) == 2  # broken once, resumed


def test_a_store_that_is_down_is_a_503_not_a_traceback(tmp_path, monkeypatch):
    from gist_helpers import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    for redirect, splice in ((False, False), (True, False), (False, True)):
        with s3_web_for("s3://caffezoo-down/x", tmp_path, redirect, splice=splice) as (app, base, http):
            r = http.get(f"/blobs/sha1/{SHA1}")
            assert r.status_code == 503 and "blob store is unavailable" in r.json()["message"]
            assert (
                "127.0.0.1" not in r.text and "caffezoo-down" not in r.text
            )  # the store's address is internal
    with s3_web_for("s3://caffezoo-down/x", tmp_path, False) as (app, base, http):
        token = app.state.storage.create_token("owen")
        publish(
            app.state.storage,
            "owen",
            "N",
            caffemodel="m.caffemodel",
            caffemodel_url="http://127.0.0.1:9/",
            sha1=SHA1,
        )
        r = http.put(f"/blobs/sha1/{SHA1}", content=DATA, headers={"Authorization": f"token {token}"})
        assert r.status_code == 503 and "nothing was stored" in r.json()["message"]
        assert "127.0.0.1" not in r.text and "caffezoo-down" not in r.text


def test_clients_that_stop_reading_do_not_hold_the_threads_other_streams_need(s3_env, tmp_path):
    # Each slow reader's read-ahead fills up; a reader thread parked on a full queue per client
    # would let as many stalled clients as the loop's executor has workers stop every stream.
    import socket

    big = os.urandom(24 << 20)
    sha1 = hashlib.sha1(big).hexdigest()
    workers = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default size
    with s3_web_for(s3_env, tmp_path, redirect=False) as (app, base, http):
        app.state.mirror.store.put(sha1, [big])
        port = int(base.rsplit(":", 1)[1])
        stalled = []
        try:
            for _ in range(workers + 2):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.connect(("127.0.0.1", port))
                s.sendall(f"GET /blobs/sha1/{sha1} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert s.recv(12) == b"HTTP/1.1 200"  # answered, then never read again
                stalled.append(s)
            with httpx.Client(timeout=60) as c:
                r = c.get(f"{base}/blobs/sha1/{sha1}", headers={"Range": "bytes=20000000-20000009"})
            assert r.status_code == 206 and r.content == big[20000000:20000010]
        finally:
            for s in stalled:
                s.close()


# ---------------------------------------------------------------- spliced: store socket -> client socket


@pytest.fixture
def spliced(ceph, s3_env, tmp_path, monkeypatch):
    """A blob of 12 MiB in the bucket; the server (on serve's protocols) reaches the store
    through a RecordingProxy. Yields (blob, sha1, base URL, client, proxy)."""
    big, sha1 = put_random_blob(s3_env, 12 << 20)
    proxy = RecordingProxy(ceph.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    try:
        with s3_web_for(s3_env, tmp_path, redirect=False, splice=True) as (app, base, http):
            yield big, sha1, base, http, proxy
    finally:
        proxy.close()


def _pipes() -> int:
    """Pipes this process holds open (a splice holds one while it moves a body)."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
        except OSError:
            pass
    return n


def test_spliced_answers_come_from_the_servers_own_get_to_the_store(spliced, caplog):
    import logging

    big, sha1, base, http, proxy = spliced
    with caplog.at_level(logging.INFO, logger="caffezoo.access"):
        r = http.get(f"/blobs/sha1/{sha1}")
    assert r.status_code == 200 and r.content == big and r.headers["content-length"] == str(len(big))
    logged = [x.fields for x in caplog.records if x.name == "caffezoo.access"]
    assert [x["bytes"] for x in logged if x["path"] == f"/blobs/sha1/{sha1}"] == [len(big)]
    r = http.get(f"/blobs/sha1/{sha1}", headers={"Range": "bytes=5000000-5999999"})
    assert r.status_code == 206 and r.content == big[5000000:6000000]
    assert r.headers["content-range"] == f"bytes 5000000-5999999/{len(big)}"
    plain = [h for h in proxy.seen if "boto" not in h.get("user-agent", "").lower()]
    # Not boto3's GETs (they carry its User-Agent): the server's own, one per answer.
    assert [h.get("range") for h in plain] == [None, "bytes=5000000-5999999"]
    assert all(h["connection"] == "close" for h in plain)


def test_spliced_answers_keep_the_connection_for_the_next_request(spliced):
    import socket

    big, sha1, base, http, proxy = spliced
    port = int(base.rsplit(":", 1)[1])
    ask = f"GET /blobs/sha1/{sha1} HTTP/1.1\r\nHost: x\r\nRange: bytes=%d-%d\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        # Two requests at once (pipelined): the second answer must start where the first body ends.
        s.sendall((ask % (0, 999_999) + ask % (7_000_000, 7_000_009)).encode())
        f = s.makefile("rb")
        for start, stop in ((0, 1_000_000), (7_000_000, 7_000_010)):
            assert f.readline().startswith(b"HTTP/1.1 206")
            head = {}
            while (line := f.readline()) not in (b"\r\n", b""):
                k, _, v = line.decode().partition(":")
                head[k.lower()] = v.strip()
            assert int(head["content-length"]) == stop - start
            assert f.read(stop - start) == big[start:stop]


def test_a_client_that_leaves_mid_splice_costs_the_server_nothing(spliced):
    big, sha1, base, http, proxy = spliced
    pipes = _pipes()
    hang_up_after_one_chunk(f"{base}/blobs/sha1/{sha1}")
    r = http.get(f"/blobs/sha1/{sha1}")
    assert r.status_code == 200 and hashlib.sha1(r.content).hexdigest() == sha1
    wait_for(lambda: _pipes() == pipes, 10, "the splices' pipes closed")


def test_a_store_answer_that_breaks_off_cuts_the_clients_connection(
    ceph, s3_env, tmp_path, monkeypatch, caplog
):
    import logging

    big, sha1 = put_random_blob(s3_env, 4 << 20)
    proxy = RecordingProxy(ceph.endpoint, drop_after=1_000_000)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    try:
        with s3_web_for(s3_env, tmp_path, redirect=False, splice=True) as (app, base, http):
            with caplog.at_level(logging.INFO, logger="caffezoo.access"):
                with pytest.raises(httpx.RemoteProtocolError):  # a body shorter than its length, then EOF
                    http.get(f"/blobs/sha1/{sha1}")
                r = http.get(f"/blobs/sha1/{sha1}")  # the next answer is whole
            assert r.status_code == 200 and r.content == big
            # The log says what the clients got: the cut answer's bytes up to the break, not its length.
            logged = [x.fields["bytes"] for x in caplog.records if x.name == "caffezoo.access"]
            assert len(logged) == 2 and 0 < logged[0] <= 1_000_000 and logged[1] == len(big)
    finally:
        proxy.close()


def test_a_client_that_stops_reading_a_splice_is_cut_after_the_idle_timeout(spliced, monkeypatch):
    import socket

    from caffezoo.server import splice

    monkeypatch.setattr(splice, "IDLE_TIMEOUT", 1.0)
    big, sha1, base, http, proxy = spliced
    port = int(base.rsplit(":", 1)[1])
    pipes = _pipes()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    try:
        s.sendall(f"GET /blobs/sha1/{sha1} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert s.recv(12) == b"HTTP/1.1 200"
        # Meanwhile other clients are answered: a stalled splice holds no thread and no loop.
        r = http.get(f"/blobs/sha1/{sha1}", headers={"Range": "bytes=100-109"})
        assert r.status_code == 206 and r.content == big[100:110]
        time.sleep(3)  # past the idle timeout: the server has closed its end
        s.settimeout(10)
        got = 0
        while chunk := s.recv(1 << 20):
            got += len(chunk)
        assert 0 < got < len(big)
    finally:
        s.close()
    wait_for(lambda: _pipes() == pipes, 10, "the splice's pipe closed")


def test_a_replica_whose_clock_lags_the_stores_still_splices(spliced, monkeypatch):
    import datetime

    import botocore.auth

    # boto3's own requests pass with a clock minutes off (the gateway allows 15); the server's
    # presigned GET must too, or every download of a lagging replica is a 503.
    real = botocore.auth.get_current_datetime
    lag = datetime.timedelta(minutes=5)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: real(*a, **k) - lag)
    big, sha1, base, http, proxy = spliced
    r = http.get(f"/blobs/sha1/{sha1}", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == big[100:200]
    # One GET, the server's own (boto3's would carry its User-Agent): spliced, not streamed.
    assert [(h.get("range"), "boto" in h.get("user-agent", "").lower()) for h in proxy.seen] == [
        ("bytes=100-199", False)
    ]


def test_a_store_error_on_the_spliced_get_is_retried_as_a_streamed_one(ceph, s3_env, tmp_path, monkeypatch):
    big, sha1 = put_random_blob(s3_env, 2 << 20)
    # A gateway's passing 503 (SlowDown): boto3 retries it; the server's own GET asks once.
    proxy = RecordingProxy(ceph.endpoint, fail_first=503)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    try:
        with s3_web_for(s3_env, tmp_path, redirect=False, splice=True) as (app, base, http):
            r = http.get(f"/blobs/sha1/{sha1}")
            assert r.status_code == 200 and r.content == big
            boto = ["boto" in h.get("user-agent", "").lower() for h in proxy.seen]
            assert boto == [False, True]  # the server's own GET (the 503), then boto3's, streamed
    finally:
        proxy.close()


def test_serves_protocols_over_tls_send_blobs_through_tls(s3_env, tmp_path):
    """A splice writes to the TCP socket under the TLS layer: offered there, it would put plain
    bytes in the middle of the encrypted stream."""
    import ssl

    from caffezoo.server import create_app

    key, cert = self_signed_cert(tmp_path, "IP:127.0.0.1")
    app = create_app(f"sqlite:///{tmp_path / 'zoo.db'}", blobs_url=s3_env, cache_dir=tmp_path / "svg")
    app.state.mirror.store.put(SHA1, [DATA])
    server, thread, base = start_uvicorn(
        app, ssl_keyfile=str(key), ssl_certfile=str(cert), **connection_options()
    )
    try:
        tls = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=base.replace("http:", "https:"), verify=tls, timeout=30) as http:
            r = http.get(f"/blobs/sha1/{SHA1}")
            assert r.status_code == 200 and r.content == DATA
            r = http.get(f"/blobs/sha1/{SHA1}", headers={"Range": "bytes=1000-"})
            assert r.status_code == 206 and r.content == DATA[1000:]
    finally:
        server.should_exit = True
        thread.join(10)
        app.state.storage.close()
        app.state.mirror.store.close()
