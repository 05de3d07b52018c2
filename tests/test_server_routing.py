"""The server's routes (``caffezoo.server.routing``) over HTTP on 127.0.0.1: what changed
when they left FastAPI's per-route machinery for Starlette's routes, and what must not."""

from __future__ import annotations

import logging
import threading

import httpx
import pytest
from gist_helpers import start_uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from web_helpers import publish

from caffezoo.server.routing import Router
from caffezoo.server.storage import FileChange


def test_a_gist_answers_head_with_the_headers_of_its_get_and_no_body(zoo):
    gid = zoo.create({"readme.md": "# head\n"})["id"]
    got, head = zoo.http.get(f"/gists/{gid}"), zoo.http.head(f"/gists/{gid}")
    assert got.status_code == head.status_code == 200
    assert head.content == b""
    for name in ("content-type", "content-length", "x-content-type-options"):
        assert head.headers[name] == got.headers[name]


def test_a_method_no_route_takes_gets_405_not_another_routes_answer(zoo):
    gid = zoo.create({"readme.md": "# put\n"})["id"]
    r = zoo.http.put(f"/gists/{gid}", json={"description": "x"})
    assert r.status_code == 405
    # Every method the path takes, however many endpoints declare them.
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "HEAD", "PATCH", "POST", "DELETE"}
    assert zoo.http.get(f"/gists/{gid}").json()["description"] == "d"  # nothing changed


def test_path_parameters_reach_the_endpoint_decoded_and_unknown_ones_are_404(zoo):
    gid = zoo.create({"readme.md": "# raw\n"})["id"]
    sha = zoo.http.get(f"/gists/{gid}").json()["history"][0]["version"]
    r = zoo.http.get(f"/gists/{gid}/{sha}")
    assert r.status_code == 200 and r.json()["id"] == gid
    assert zoo.http.get(f"/gists/{gid}/{'0' * 40}").status_code == 404
    # Sent as written (httpx would fold the dot segment): the endpoint gets "..", decoded,
    # and refuses it as no revision's hex, as it did behind FastAPI.
    dots = zoo.http.build_request("GET", "/").url.copy_with(raw_path=f"/gists/{gid}/%2e%2e".encode())
    r = zoo.http.send(zoo.http.build_request("GET", dots))
    assert r.status_code == 422 and r.json()["message"] == "Validation Failed"


def test_a_def_endpoint_runs_in_the_thread_pool_and_an_async_one_on_the_loop():
    router = Router()
    seen: dict[str, threading.Thread] = {}

    @router.get("/blocking/{name}")
    def blocking(request, name: str):
        seen[name] = threading.current_thread()
        return PlainTextResponse(name)

    @router.get("/async/{name}")
    async def on_loop(request, name: str):
        seen[name] = threading.current_thread()
        return PlainTextResponse(name)

    app = Starlette(routes=router.routes)
    server, thread, base = start_uvicorn(app)
    try:
        assert httpx.get(f"{base}/blocking/a%20b").text == "a b"
        assert httpx.get(f"{base}/async/c").text == "c"
        assert httpx.post(f"{base}/async/c").status_code == 405
    finally:
        server.should_exit = True
        thread.join(10)
    assert seen["c"] is thread  # uvicorn's loop runs in the thread start_uvicorn made
    assert seen["a b"] is not thread


def test_a_models_picture_is_drawn_for_the_revision_its_query_names(web):
    store = web.storage
    gid = publish(store, "rita", "Rita Net", files={"deploy.prototxt": _LAYER.format("oldconv")})
    old = store.get_gist(gid).history[-1].version
    store.update_gist(
        gid, "rita", changes={"deploy.prototxt": FileChange(content=_LAYER.format("newconv").encode())}
    )
    new = web.get(f"/models/{gid}/net.svg")
    assert new.status_code == 200 and "newconv" in new.text and "oldconv" not in new.text
    r = web.get(f"/models/{gid}/net.svg", params={"rev": old})
    assert r.status_code == 200, r.text
    assert "oldconv" in r.text and "newconv" not in r.text
    for bad in ("zz", "<script>", "0" * 41):
        assert web.get(f"/models/{gid}/net.svg", params={"rev": bad}).status_code == 404


_LAYER = 'input: "data" input_shape {{ dim: 1 dim: 3 dim: 8 dim: 8 }}\nlayer {{ name: "{0}" type: "Convolution" bottom: "data" top: "{0}" convolution_param {{ num_output: 4 kernel_size: 3 }} }}\n'


def test_the_request_log_counts_no_body_bytes_for_a_head(zoo):
    """uvicorn sends no body to a HEAD: its line says 0 bytes, as a blob's HEAD always did."""
    gid = zoo.create({"readme.md": "# logged\n"})["id"]
    access, seen = logging.getLogger("caffezoo.access"), logging.Handler()
    lines: list[logging.LogRecord] = []
    seen.emit = lines.append  # on the logger itself: a configured log may not propagate
    level = access.level
    access.addHandler(seen)
    access.setLevel(logging.INFO)
    try:
        for method in ("GET", "HEAD"):
            zoo.http.request(method, f"/gists/{gid}", headers={"X-Request-ID": f"{method}-{gid}"})
    finally:
        access.removeHandler(seen)
        access.setLevel(level)
    sent = {r.request_id: r.fields["bytes"] for r in lines}
    assert sent[f"GET-{gid}"] > 0
    assert sent[f"HEAD-{gid}"] == 0


def test_a_login_with_a_nul_is_a_404_for_api_clients_not_a_500(zoo):
    """A path parameter arrives decoded, %00 included, and PostgreSQL refuses a NUL in text."""
    for path in ("/users/%00", "/users/a%00b", "/users/" + "a" * 5000):
        r = zoo.http.get(path, headers={"Accept": "application/json"})
        assert r.status_code == 404, (path, r.status_code)
        assert r.json()["message"] == "Not Found"


def test_a_path_with_a_slash_too_many_is_404_never_a_redirect_to_the_requests_host(zoo):
    # Starlette's default would answer 307 to http://{Host}/gists: a visitor chose the link.
    r = zoo.http.get("/gists/", headers={"Host": "evil.example"})
    assert r.status_code == 404 and "evil.example" not in r.headers.get("location", "")
    assert zoo.http.get("/healthz/", headers={"Host": "evil.example"}).status_code == 404


def test_a_workers_health_endpoints_do_not_redirect_to_the_requests_host_either(tmp_path):
    from caffezoo.server import Storage
    from caffezoo.server.health import health_app

    storage = Storage(f"sqlite:///{tmp_path / 'zoo.db'}")
    server, thread, base = start_uvicorn(health_app(storage))
    try:
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        r = httpx.get(f"{base}/readyz/", headers={"Host": "evil.example"})
        assert r.status_code == 404 and "location" not in r.headers
        # GitHub's error shape, as the web app answers: not FastAPI's {"detail": ...}
        assert r.json()["message"] == "Not Found"
        assert httpx.post(f"{base}/healthz").json()["message"] == "Method Not Allowed"
    finally:
        server.should_exit = True
        thread.join(10)
        storage.close()


def test_a_method_declared_twice_on_one_path_is_refused_when_declared():
    router = Router()

    @router.get("/x/{name}")
    async def first(request, name: str):
        return PlainTextResponse(name)

    with pytest.raises(ValueError, match="GET /x/{name} is declared twice"):

        @router.route("/x/{name}", ["POST", "GET"])
        async def second(request, name: str):
            return PlainTextResponse(name)
