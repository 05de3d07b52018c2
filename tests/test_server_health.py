"""What an operator's load balancer sees: /healthz, /readyz, request ids, the JSON request
log, and a SIGTERM that lets an upload in flight finish."""

from __future__ import annotations

import hashlib
import json
import signal
import time

import httpx
import pytest
from gist_helpers import temporary_postgres
from replica_helpers import replica, start_replica
from web_helpers import publish

from caffezoo.server import Storage
from caffezoo.server.logs import new_request_id


def test_healthz_and_readyz_answer_json_uncached_without_auth(web):
    for path, body in (
        ("/healthz", {"status": "ok"}),
        ("/readyz", {"status": "ready", "checks": {"database": "ok", "blobs": "ok"}}),
    ):
        for headers in ({}, {"Authorization": "token not-a-token"}):  # no auth, and a bad one is ignored
            r = web.http.get(path, headers=headers)
            assert r.status_code == 200 and r.json() == body
            assert r.headers["cache-control"] == "no-store"
            assert r.headers["content-type"].startswith("application/json")


def test_request_ids_are_echoed_when_well_formed_and_made_otherwise(web):
    kept = web.http.get("/healthz", headers={"X-Request-ID": "lb-7f3a.c9:01_x"})
    assert kept.headers["x-request-id"] == "lb-7f3a.c9:01_x"
    made = {web.http.get("/gists/nope").headers["x-request-id"] for _ in range(3)}
    assert len(made) == 3 and all(len(m) == 32 and int(m, 16) >= 0 for m in made)  # fresh each time
    for hostile in ("a" * 129, "two words", 'quote"s', "semi;colon", "", "ünï"):
        got = web.http.get("/healthz", headers={"X-Request-ID": hostile.encode("utf-8")})
        assert got.headers["x-request-id"] != hostile and len(got.headers["x-request-id"]) == 32
    # Error answers and pages carry it too.
    assert web.get("/models/missing").headers["x-request-id"]
    assert new_request_id(b"ok-id") == "ok-id" and new_request_id(b"bad\nid") != "bad\nid"


def test_each_request_is_one_json_log_line_with_its_id(tmp_path):
    db = f"sqlite:///{tmp_path / 'log.db'}"
    with replica(db, "--no-check-links", home=tmp_path) as r:
        httpx.get(f"{r.url}/gists/abc", headers={"X-Request-ID": "trace-42"})
        httpx.get(f"{r.url}/a%0A%7B%22forged%22:1%7D/x")  # a newline and JSON in the path
        assert r.stop() == 0
    lines = r.log.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is JSON: nothing forged a line
    access = [x for x in records if x.get("logger") == "caffezoo.access"]
    [mine] = [x for x in access if x.get("request_id") == "trace-42"]
    assert (mine["method"], mine["path"], mine["status"]) == ("GET", "/gists/abc", 404)
    assert mine["ms"] >= 0 and mine["bytes"] > 0 and mine["ts"].endswith("Z")
    forged = [x for x in access if x["path"].startswith("/a\n")]
    assert len(forged) == 1 and "forged" not in {k for x in records for k in x}


def test_log_level_warning_drops_the_request_lines(tmp_path):
    db = f"sqlite:///{tmp_path / 'quiet.db'}"
    with replica(db, "--no-check-links", home=tmp_path, log_level="warning") as r:
        httpx.get(f"{r.url}/healthz")
        assert r.stop() == 0
    assert not [x for x in r.log_lines() if x.get("logger") == "caffezoo.access"]


def test_readiness_fails_when_the_database_is_down():
    cluster = temporary_postgres()
    url = cluster.__enter__()
    stopped = False
    try:
        with replica(url, "--no-check-links") as r:
            assert httpx.get(f"{r.url}/readyz").json()["status"] == "ready"
            cluster.__exit__(None, None, None)  # PostgreSQL stops (immediate), its files go
            stopped = True
            t0 = time.monotonic()
            down = httpx.get(f"{r.url}/readyz", timeout=30)
            assert down.status_code == 503
            assert down.json() == {"status": "unready", "checks": {"database": "unreachable", "blobs": "ok"}}
            assert "127.0.0.1" not in down.text  # the driver's words stay in the log
            assert time.monotonic() - t0 < 20  # bounded, not hanging on the dead server
            assert httpx.get(f"{r.url}/healthz").status_code == 200  # alive, only not ready
            failed = httpx.get(f"{r.url}/gists/abc", headers={"X-Request-ID": "when-db-down"})
            assert failed.status_code == 500 and failed.headers["x-request-id"] == "when-db-down"
            assert failed.json()["message"] == "Server Error"  # no driver words to the caller
            # Made outside the middleware that adds them to every other answer: still there.
            assert failed.headers["x-content-type-options"] == "nosniff"
            assert failed.headers["content-security-policy"] == "default-src 'none'"
            # The error's traceback and its request line carry the request's id (both are
            # written once the answer is out: wait for them).
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                lines = r.log_lines()
                mine = [x for x in lines if x.get("request_id") == "when-db-down"]
                if any("exc" in x for x in mine) and any(x.get("status") == 500 for x in mine):
                    break
                time.sleep(0.1)
            else:
                pytest.fail(f"no traceback and request line with the request's id in {mine}")
            assert any(x.get("status") == 500 and x.get("error") for x in mine)
            assert any(
                x.get("logger") == "caffezoo.server.health" and "unreachable" in x["msg"] for x in lines
            )
    finally:
        if not stopped:
            cluster.__exit__(None, None, None)


def test_sigterm_lets_an_upload_in_flight_finish(tmp_path):
    data = bytes(range(256)) * 4096  # 1 MiB
    sha1 = hashlib.sha1(data).hexdigest()
    db = f"sqlite:///{tmp_path / 'up.db'}"
    store = Storage(db)
    publish(store, "upa", "Uploaded Net", caffemodel="u.caffemodel", sha1=sha1)
    token = store.create_token("upa")
    store.close()
    r = start_replica(db, "--no-check-links", "--graceful-timeout", "30", home=tmp_path)
    try:

        def body():
            yield data[: 64 * 1024]
            r.proc.send_signal(signal.SIGTERM)  # mid-upload
            time.sleep(1.0)
            for i in range(64 * 1024, len(data), 64 * 1024):
                yield data[i : i + 64 * 1024]
                time.sleep(0.01)

        up = httpx.put(
            f"{r.url}/blobs/sha1/{sha1}",
            content=body(),
            headers={"Authorization": f"token {token}", "Content-Length": str(len(data))},
            timeout=60,
        )
        assert up.status_code == 201 and up.json()["status"] == "stored"
        assert r.proc.wait(60) == 0
        assert (tmp_path / "server-blobs" / "sha1" / sha1).read_bytes() == data
        with pytest.raises(httpx.ConnectError):  # gone: no new requests taken
            httpx.get(f"{r.url}/healthz")
    finally:
        if r.proc.poll() is None:
            r.kill()


def test_serve_limit_options_reach_the_server(tmp_path):
    """Each bound of `caffezoo serve` is the Limits field of its name, default included, and the
    server runs with the value given: `--draw-max-layers 2` refuses to draw AlexNet."""
    from caffezoo.cli.serve import LIMIT_OPTIONS
    from caffezoo.server.work import Limits

    assert {name: default for name, default, *_ in LIMIT_OPTIONS} == {
        name: getattr(Limits(), name) for name, *_ in LIMIT_OPTIONS
    }
    db = f"sqlite:///{tmp_path / 'limits.db'}"
    with replica(db, "--no-check-links", "--seed-bundled", "--draw-max-layers", "2", home=tmp_path) as r:
        models = httpx.get(f"{r.url}/api/models", params={"q": "alexnet"}).json()["models"]
        alexnet = next(m for m in models if m["name"] == "BAIR/BVLC AlexNet Model")
        got = httpx.get(f"{r.url}/models/{alexnet['id']}/net.svg", timeout=60)
    assert got.status_code == 422 and "over the 2 this server draws" in got.text


def test_a_started_server_keeps_its_start_up_heap_out_of_full_collections(tmp_path):
    # A full collection scanned every object of the start-up heap and stalled the event loop
    # 70-160 ms, once or twice per 5 s of traffic: the Gist API's p99 (benchmarks/cluster.py).
    import gc

    from gist_helpers import start_uvicorn

    from caffezoo.server import create_app

    app = create_app(f"sqlite:///{tmp_path / 'zoo.db'}", cache_dir=tmp_path / "svg")
    gc.unfreeze()
    server = thread = None
    try:
        server, thread, base = start_uvicorn(app, lifespan="on")
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert gc.get_freeze_count() > 0  # what start-up made is in the permanent generation
    finally:
        if server is not None:
            server.should_exit = True
            thread.join(10)
        gc.unfreeze()  # this test process goes on collecting as before, even if start-up failed
        app.state.storage.close()


def test_garbage_made_before_serving_starts_is_still_freed(tmp_path):
    # Freezing keeps whatever is tracked at that moment, garbage included: what `serve` leaves
    # behind while starting (seeding, the blob store's check, a first link-check round) would
    # stay in memory for good unless it is collected first.
    import gc
    import weakref

    from gist_helpers import start_uvicorn

    from caffezoo.server import create_app

    class Node:
        pass

    app = create_app(f"sqlite:///{tmp_path / 'zoo.db'}", cache_dir=tmp_path / "svg")
    gc.unfreeze()
    gc.disable()  # no automatic collection may free it first: only the server's own can
    try:
        cycle = Node()
        cycle.me = cycle
        gone = weakref.ref(cycle)
        del cycle
        server, thread, base = start_uvicorn(app, lifespan="on")
        try:
            assert httpx.get(f"{base}/healthz").status_code == 200
            gc.collect()
            assert gone() is None, "garbage from before start-up was frozen, never to be freed"
        finally:
            server.should_exit = True
            thread.join(10)
    finally:
        gc.enable()
        gc.unfreeze()
        app.state.storage.close()
