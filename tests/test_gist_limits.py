"""Hostile input to the Gist API and the client, on a real server over SQLite and PostgreSQL:
odd names, long or broken text, ambiguous and deep JSON, racing writers, slow headers,
private database files, and gists imported from another zoo."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from contextlib import contextmanager

import httpx
import pytest
from gist_helpers import free_port, start_uvicorn
from web_helpers import readme

from caffezoo.errors import GistError
from caffezoo.gist import download
from caffezoo.gist.rules import MAX_DESCRIPTION, MAX_FILES, MAX_JSON_DEPTH, file_name_problem

GIST_ID = "aa5c96d6e8d1e2a0c1f0"

# Names a reader would misread: bidi overrides and isolates, zero-width and BOM,
# DEL and C0/C1 controls, line separators, odd spaces, and slashes or dots that are none.
BAD_CHARS = [
    "\u202e",  # right-to-left override: "evil\u202etxt.sh" shows as "evilhs.txt"
    "\u202a",
    "\u200b",
    "\u200c",
    "\u200d",
    "\u200e",
    "\u200f",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\ufeff",
    "\u00ad",  # soft hyphen: invisible
    "\x7f",
    "\x01",
    "\x1b",
    "\x85",
    "\x9b",
    "\u2028",
    "\u00a0",
    "\u3000",
    "\u2215",  # division slash
    "\u2044",  # fraction slash
    "\uff0f",  # fullwidth solidus
    "\u29f8",  # big solidus
    "\uff3c",  # fullwidth reverse solidus
    "\uff0e",  # fullwidth full stop
    "\u2024",  # one dot leader
    "\ue000",  # private use
]


def _post(zoo, body, path: str = "/gists", method: str = "POST") -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return zoo.http.request(method, path, content=content, headers={"Content-Type": "application/json"})


def _unchanged(zoo, g: dict, files: dict[str, str]) -> None:
    after = zoo.http.get(f"/gists/{g['id']}").json()
    assert {n: f["content"] for n, f in after["files"].items()} == files
    assert len(after["history"]) == len(g["history"])


# --------------------------------------------------------------------------- the one name rule


@pytest.mark.parametrize("char", BAD_CHARS, ids=lambda c: f"U+{ord(c):04X}")
def test_the_name_rule_names_the_code_point(char):
    why = file_name_problem(f"deploy{char}prototxt")
    assert why is not None and f"U+{ord(char):04X}" in why


@pytest.mark.parametrize(
    "name",
    ["deploy.prototxt", "readme.md", "Modèle (v2).txt", "模型.prototxt", "a b.txt", "x" * 255, "é" * 127],
)
def test_ordinary_names_pass(name):
    assert file_name_problem(name) is None


@pytest.mark.parametrize(
    "name",
    ["x" * 256, "é" * 128, ".hidden", " lead.txt", "trail.txt ", "con", "COM1.txt", "..", ""]
    + ["trail.txt.", "trail.", "\u0301", "\u0301a.txt", "\u20dd.txt"],
)
def test_long_hidden_blank_and_device_names_fail(name):
    assert file_name_problem(name) is not None


def test_the_front_matter_refuses_the_same_names(tmp_path):
    from caffezoo.validate import validate

    d = tmp_path / "m"
    d.mkdir()
    (d / "readme.md").write_text(readme("Net", caffemodel="w\u202eledomeffac.caffemodel"))
    problems = [str(p) for p in validate(d) if p.severity == "error"]
    assert any("caffemodel" in p and "U+202E" in p for p in problems), problems


# --------------------------------------------------------------------------- the server refuses


@pytest.mark.parametrize("char", BAD_CHARS[:12] + ["\x7f", "\x9b", "\u2215", "\uff0f", "\uff0e"])
def test_names_with_invisible_or_lookalike_characters_are_422(zoo, char):
    name = f"evil{char}txt.sh"
    r = _post(zoo, {"files": {name: {"content": "x"}}})
    assert r.status_code == 422, r.text
    err = r.json()["errors"][0]
    assert (err["field"], err["code"]) == ("files", "invalid") and f"U+{ord(char):04X}" in err["message"]
    # and as the target of a rename
    g = zoo.create({"a.txt": "a"})
    r = zoo.http.patch(f"/gists/{g['id']}", json={"files": {"a.txt": {"filename": name}}})
    assert r.status_code == 422, r.text
    _unchanged(zoo, g, {"a.txt": "a"})


# Pairs one file system or one reader takes for one name: case, NFC/NFD, NFKC, ß/SS.
CLASHING = [
    ("a.txt", "A.TXT"),
    ("caf\u00e9.txt", "cafe\u0301.txt"),
    ("\ufb01le.txt", "file.txt"),
    ("Stra\u00dfe.txt", "STRASSE.txt"),
    ("\u2460.txt", "1.txt"),
]


@pytest.mark.parametrize("pair", CLASHING, ids=lambda p: ascii(p[1]))
def test_names_equal_but_for_case_or_unicode_form_are_422_on_create_and_rename(zoo, pair):
    first, second = pair
    r = _post(zoo, {"files": {first: {"content": "one"}, second: {"content": "two"}}})
    assert r.status_code == 422, r.text
    err = r.json()["errors"][0]
    assert (err["field"], err["code"]) == ("files", "already_exists") and repr(second) in err["message"]
    g = zoo.create({first: "one", "b.txt": "two"})
    r = zoo.http.patch(f"/gists/{g['id']}", json={"files": {"b.txt": {"filename": second}}})
    assert r.status_code == 422, r.text
    _unchanged(zoo, g, {first: "one", "b.txt": "two"})


def test_name_length_is_counted_in_bytes(zoo):
    assert zoo.create({"é" * 126 + ".t": "x"})["files"]
    r = _post(zoo, {"files": {"é" * 128: {"content": "x"}}})
    assert r.status_code == 422 and "256 bytes" in r.text


def test_descriptions_have_a_limit_and_no_controls(zoo):
    ok = zoo.create({"a.txt": "x"}, description="d" * MAX_DESCRIPTION + "")
    assert len(ok["description"]) == MAX_DESCRIPTION
    assert zoo.create({"a.txt": "x"}, description="line one\n\tline two")["description"].endswith("two")
    for description in ("d" * (MAX_DESCRIPTION + 1), "bell\x07", "esc\x1b[31m", "c1\x9b"):
        r = _post(zoo, {"description": description, "files": {"a.txt": {"content": "x"}}})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "description", r.text
        r = _post(zoo, {"description": description}, f"/gists/{ok['id']}", "PATCH")
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "description", r.text
    assert zoo.http.get(f"/gists/{ok['id']}").json()["description"] == "d" * MAX_DESCRIPTION


def test_file_count_has_a_limit(zoo):
    files = {f"f{i}.txt": {"content": "x"} for i in range(MAX_FILES + 1)}
    r = _post(zoo, {"files": files})
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "too_large", r.text


@pytest.mark.parametrize(
    "raw",
    [
        b'{"files": {"a\\ud800.txt": {"content": "x"}}}',
        b'{"files": {"a.txt": {"content": "x\\udfff"}}}',
        b'{"description": "\\ud800", "files": {"a.txt": {"content": "x"}}}',
        b'{"description": "ok\\udc00", "files": {"\\ud83d.txt": {"content": "\\ud800"}}}',
    ],
)
def test_lone_surrogates_anywhere_are_422(zoo, raw):
    r = _post(zoo, raw)
    assert r.status_code == 422, r.text
    assert r.json()["message"] == "Validation Failed"


def test_lone_surrogates_in_updates_are_422(zoo):
    g = zoo.create({"a.txt": "a"})
    for raw in (
        b'{"files": {"a.txt": {"filename": "b\\ud800"}}}',
        b'{"files": {"a.txt": {"content": "\\udc80"}}}',
        b'{"files": {"n\\ud800": {"content": "new"}}}',
        b'{"description": "\\ud800"}',
    ):
        r = _post(zoo, raw, f"/gists/{g['id']}", "PATCH")
        assert r.status_code == 422, (raw, r.text)
    _unchanged(zoo, g, {"a.txt": "a"})


def test_a_key_given_twice_is_422_not_the_last_wins(zoo):
    raw = b'{"files": {"a.txt": {"content": "first"}, "a.txt": {"content": "second"}}}'
    r = _post(zoo, raw)
    assert r.status_code == 422 and "'a.txt' appears twice" in r.text, r.text
    r = _post(zoo, b'{"description": "a", "description": "b", "files": {"x": {"content": "x"}}}')
    assert r.status_code == 422 and "'description' appears twice" in r.text


def test_two_entries_naming_one_file_are_422(zoo):
    g = zoo.create({"a.txt": "a", "b.txt": "b"})
    for files in (
        {"a.txt": {"filename": "c.txt"}, "b.txt": {"filename": "c.txt"}},
        {"a.txt": {"filename": "C.txt"}, "b.txt": {"filename": "c.txt"}},
        {"a.txt": {"filename": "n.txt"}, "n.txt": {"content": "new"}},
        {"new.txt": {"content": "1"}, "b.txt": {"filename": "new.txt"}},
    ):
        r = zoo.http.patch(f"/gists/{g['id']}", json={"files": files})
        assert r.status_code == 422 and r.json()["errors"][0]["code"] == "already_exists", (files, r.text)
    _unchanged(zoo, g, {"a.txt": "a", "b.txt": "b"})


def test_json_problem_counts_levels_and_containers_and_stops_past_the_limits():
    from caffezoo.gist.rules import json_problem

    assert all(json_problem(v) is None for v in (1, "x", [], {}, {"a": [1, {"b": []}]}))
    assert json_problem([[]] * 100 + [[[[[]]]]], depth=4) == "nested deeper than 4 levels"
    assert json_problem([[]] * 100 + [[[[[]]]]], depth=5) is None
    deep: list = []
    inner = deep
    for _ in range(50):
        inner.append([])
        inner = inner[0]
    assert json_problem(deep, depth=10) == "nested deeper than 10 levels"
    assert json_problem([[]] * 10, containers=10) == "more than 10 objects and arrays"
    assert json_problem([[]] * 9, containers=10) is None


def test_a_body_of_a_million_arrays_is_400(zoo):
    raw = b'{"files": {"a.txt": {"content": "x"}}, "x": [' + b",".join([b"[]"] * 1_000_000) + b"]}"
    r = _post(zoo, raw)
    assert r.status_code == 400 and "more than" in r.json()["message"], r.text[:300]


@pytest.mark.parametrize("item", [b"[]", b"{}", b"1.5", b'"ab"', b"1000"])
def test_a_wide_body_is_refused_before_it_is_parsed(item):
    """--body-bytes counts a body's bytes: parsing one must not cost many times more. Parsed,
    a 30 MiB body of empty arrays was 700 MB of lists, and one of short strings 12 times its
    size, before any width check ran: such a body is refused from its bytes."""
    import tracemalloc

    from caffezoo.gist.rules import MAX_FILES
    from caffezoo.server.api import parse_body
    from caffezoo.server.errors import ApiError

    raw = b'{"files": {"a.txt": {"content": "x"}}, "x": [' + b",".join([item] * 1_000_000) + b"]}"
    tracemalloc.start()
    try:
        with pytest.raises(ApiError) as refused:
            parse_body(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refused.value.status == 400 and "Problems parsing JSON: more than" in refused.value.message
    assert peak < 2 * len(raw), (item, peak, len(raw))  # the bytes, and their text
    # The widest gist request there is still parses.
    files = {f"f{i}.txt": {"content": "x", "filename": f"g{i}.txt"} for i in range(MAX_FILES)}
    wide = {"description": "d", "public": False, "files": files}
    assert parse_body(json.dumps(wide).encode()) == wide


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5000, 1_000_000])
def test_deep_json_is_400_not_a_recursion_error(zoo, depth):
    raw = b'{"files": {"a.txt": {"content": "x"}}, "x": ' + b"[" * depth + b"]" * depth + b"}"
    r = _post(zoo, raw)
    assert r.status_code == 400 and "nested deeper" in r.json()["message"], r.text[:300]
    # unclosed, and in a PATCH
    g = zoo.create({"a.txt": "a"})
    r = _post(zoo, b'{"files": ' + b'{"a": ' * depth, f"/gists/{g['id']}", "PATCH")
    assert r.status_code == 400, r.text[:300]
    _unchanged(zoo, g, {"a.txt": "a"})


def test_a_huge_model_name_is_listed_cut_to_the_description_limit(zoo):
    """The readme's `name` is listed on /, /api/models and in gist lists: a 30 KB one (front
    matter past 32 KiB is not read at all) would make every index page that big."""
    g = zoo.create({"readme.md": readme("N" * 30_000)}, public=True)
    listed = httpx.get(f"{zoo.url}/api/models", params={"per_page": 100}).json()
    models = listed["models"] if isinstance(listed, dict) else listed
    mine = [m for m in models if m.get("id") == g["id"]]
    assert mine and len(mine[0]["name"]) <= MAX_DESCRIPTION and mine[0]["name"].endswith("…")
    # The catalog stores it cut too, so no page that shows it whole can be that big.
    from caffezoo.server import catalog

    with zoo.server.storage.session() as s:
        stored = catalog.get_entry(s, g["id"]).name
    assert len(stored) == MAX_DESCRIPTION and stored.endswith("…")


# --------------------------------------------------------------------------- racing writers


def test_deleting_gists_while_creating_ones_with_their_content_never_answers_500(zoo):
    """Deletes racing creates of the same content, free-running, on both databases: every
    answer is a success and every new gist whole. (The free race hits the PostgreSQL
    deadlock only now and then; the next test forces it.)"""
    content = {"readme.md": readme("Shared"), "deploy.prototxt": 'name: "shared"\n'}
    body = {"files": {n: {"content": c} for n, c in content.items()}}
    other = zoo.other()
    failures: list[str] = []
    pairs = 6

    def delete(gist_id: str, barrier: threading.Barrier) -> None:
        with httpx.Client(base_url=zoo.url, headers={"Authorization": f"token {zoo.token}"}) as c:
            barrier.wait()
            r = c.delete(f"/gists/{gist_id}", timeout=120)
            if r.status_code != 204:
                failures.append(f"delete {r.status_code} {r.text}")

    def create(made: list[dict], barrier: threading.Barrier) -> None:
        with httpx.Client(base_url=zoo.url, headers={"Authorization": f"token {other.token}"}) as c:
            barrier.wait()
            r = c.post("/gists", json=body, timeout=120)
            if r.status_code != 201:
                failures.append(f"create {r.status_code} {r.text}")
            else:
                made.append(r.json())

    for i in range(8):
        victims = [zoo.create(content) for _ in range(pairs)]
        barrier = threading.Barrier(2 * pairs)
        made: list[dict] = []
        threads = [threading.Thread(target=delete, args=(v["id"], barrier)) for v in victims]
        threads += [threading.Thread(target=create, args=(made, barrier)) for _ in range(pairs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == [], f"round {i}: {failures}"
        # The new gists are whole: every file's bytes are there, in the JSON and at raw_url.
        for g in made:
            g = zoo.http.get(f"/gists/{g['id']}").json()
            assert {n: f["content"] for n, f in g["files"].items()} == content
            assert all(httpx.get(f["raw_url"]).text == content[n] for n, f in g["files"].items())
        assert all(zoo.http.get(f"/gists/{v['id']}").status_code == 404 for v in victims)


def test_a_delete_and_a_create_held_into_a_deadlock_on_postgresql_both_succeed(postgres_url):
    """The same race, made certain. Both writers update the catalog's counter row late in
    their transactions; holding that row, the test lets the delete queue for it first,
    then the create (which by then references the shared blobs). Released, the delete
    tries to remove a blob the create references and waits for it, while the create
    waits for the counter the delete holds: PostgreSQL fails one to break the deadlock,
    and without retries that was a 500."""
    import psycopg
    from web_helpers import fresh_postgres

    from caffezoo.server import create_app

    url = fresh_postgres(postgres_url)
    app = create_app(url)
    server, thread, base = start_uvicorn(app)
    store = app.state.storage
    owner, other = store.create_token("owner"), store.create_token("other")
    content = {"readme.md": {"content": readme("Shared")}, "deploy.prototxt": {"content": 'name: "s"\n'}}
    answers: list[int] = []

    def send(method: str, path: str, token: str, **kw) -> None:
        r = httpx.request(method, base + path, headers={"Authorization": f"token {token}"}, timeout=120, **kw)
        answers.append(r.status_code)

    def waiting_for_locks() -> int:
        with psycopg.connect(url) as watch:
            return watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            ).fetchone()[0]

    try:
        with psycopg.connect(url) as lock:
            for _ in range(5):
                victim = httpx.post(
                    base + "/gists", json={"files": content}, headers={"Authorization": f"token {owner}"}
                ).json()["id"]
                lock.execute("SELECT value FROM zoo_meta WHERE key = 'generation' FOR UPDATE")
                first = threading.Thread(target=send, args=("DELETE", f"/gists/{victim}", owner))
                second = threading.Thread(
                    target=send, args=("POST", "/gists", other), kwargs={"json": {"files": content}}
                )
                for t, queued in ((first, 1), (second, 2)):
                    t.start()
                    while waiting_for_locks() < queued:  # queued behind the held counter row
                        assert t.is_alive(), answers
                lock.rollback()
                first.join()
                second.join()
        assert sorted(answers) == [201] * 5 + [204] * 5, answers
    finally:
        server.should_exit = True
        thread.join(10)
        store.close()


# --------------------------------------------------------------------------- the client refuses


def _served(scripted, monkeypatch, files: dict) -> object:
    api = scripted()
    monkeypatch.setenv("CAFFEZOO_GIST_API", api.url)
    gist = {
        "id": GIST_ID,
        "html_url": f"{api.url}/x/{GIST_ID}",
        "owner": {"login": "x"},
        "files": files,
    }
    api.script("GET", f"/gists/{GIST_ID}", (200, gist))
    return api


@pytest.mark.parametrize("char", BAD_CHARS, ids=lambda c: f"U+{ord(c):04X}")
def test_download_refuses_names_the_server_would_refuse(scripted, tmp_path, monkeypatch, char):
    name = f"evil{char}txt.sh"
    files = {
        "readme.md": {"filename": "readme.md", "size": 11, "content": readme("Evil")},
        name: {"filename": name, "size": 4, "content": "evil"},
    }
    _served(scripted, monkeypatch, files)
    with pytest.raises(GistError) as e:
        download(GIST_ID, tmp_path / "out")
    assert "nothing was written" in str(e.value) and repr(name) in str(e.value)
    assert f"U+{ord(char):04X}" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_download_refuses_two_entries_with_one_file_name(scripted, tmp_path, monkeypatch):
    files = {
        "readme.md": {"filename": "readme.md", "size": 11, "content": readme("Twice")},
        "other": {"filename": "readme.md", "size": 5, "content": "evil\n"},
    }
    _served(scripted, monkeypatch, files)
    with pytest.raises(GistError, match="two entries are named 'readme.md'"):
        download(GIST_ID, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("pair", CLASHING, ids=lambda p: ascii(p[1]))
def test_download_refuses_names_one_file_system_takes_for_one(scripted, tmp_path, monkeypatch, pair):
    files = {
        "readme.md": {"filename": "readme.md", "size": 11, "content": readme("Clash")},
        pair[0]: {"filename": pair[0], "size": 3, "content": "one"},
        pair[1]: {"filename": pair[1], "size": 3, "content": "two"},
    }
    _served(scripted, monkeypatch, files)
    with pytest.raises(GistError) as e:
        download(GIST_ID, tmp_path / "out")
    assert "nothing was written" in str(e.value) and repr(pair[1]) in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_cli_download_names_the_file_in_one_line(cli, scripted, tmp_path, monkeypatch):
    name = "deploy\u2215..\u2215x"
    files = {
        "readme.md": {"filename": "readme.md", "size": 11, "content": readme("Slash")},
        name: {"filename": name, "size": 1, "content": "x"},
    }
    _served(scripted, monkeypatch, files)
    r = cli("gist", "download", GIST_ID, tmp_path / "out")
    assert r.code != 0 and "U+2215" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- files and connections


def test_the_sqlite_database_and_its_side_files_are_private(tmp_path):
    from caffezoo.server import Storage

    old = os.umask(0o022)
    try:
        store = Storage(f"sqlite:///{tmp_path / 'private' / 'zoo.db'}")
        store.create_token("alice")
        store.create_gist("alice", "d", False, {"a.txt": b"secret\n"})
        made = sorted(p.name for p in (tmp_path / "private").iterdir())
        assert "zoo.db" in made and "zoo.db-wal" in made, made
        for p in (tmp_path / "private").iterdir():
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, (p.name, oct(p.stat().st_mode))
        store.close()
    finally:
        os.umask(old)


@contextmanager
def _slow_header_server(protocol_name: str, tmp_path, log_level: str = "warning"):
    """The zoo under uvicorn in a thread, with a 1-second deadline on request heads; yields its port."""
    from caffezoo.server import create_app, protocols

    app = create_app(f"sqlite:///{tmp_path / 'slow.db'}")
    options = protocols.connection_options(header_timeout=1.0)
    base = {"h11": protocols.H11HeaderDeadline, "httptools": protocols.HttpToolsHeaderDeadline}[protocol_name]
    options["http"] = type(base.__name__, (base,), {"header_timeout": 1.0})
    server, thread, _ = start_uvicorn(app, log_level=log_level, **options)
    try:
        yield server.config.port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize("protocol_name", ["h11", "httptools"])
def test_a_connection_that_never_finishes_its_headers_is_closed(protocol_name, tmp_path):
    with _slow_header_server(protocol_name, tmp_path) as port:
        # A whole request is answered, and the connection stays open for the next one.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET /gists/public HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            # Then a second request that stops half-way through its headers: closed.
            s.sendall(b"GET /gists/public HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            assert s.recv(65536) == b""  # the server closed it (30 s socket timeout otherwise)
        # A fresh connection that sends a line and then nothing: closed too.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET / HTTP/1.1\r\n")
            assert s.recv(65536) == b""


@pytest.mark.parametrize("protocol_name", ["h11", "httptools"])
def test_an_endless_request_head_is_431_before_the_deadline(protocol_name, tmp_path):
    import uvicorn

    from caffezoo.server import create_app, protocols

    base = {"h11": protocols.H11HeaderDeadline, "httptools": protocols.HttpToolsHeaderDeadline}[protocol_name]
    options = protocols.connection_options()
    options["http"] = type(base.__name__, (base,), {"header_timeout": 600.0})
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(f"sqlite:///{tmp_path / 'big.db'}"),
            host="127.0.0.1",
            port=port,
            log_level="critical",
            lifespan="off",
            **options,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive()
            threading.Event().wait(0.02)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            answer = b""
            try:
                for _ in range(64):  # 4 MiB of header lines, never ending
                    s.sendall(b"X-Pad: " + b"a" * 65536 + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                while chunk := s.recv(65536):
                    answer += chunk
            except ConnectionResetError:
                pass
            assert answer == b"" or answer.split(b"\r\n", 1)[0].split(b" ")[1] in (b"431", b"400")
    finally:
        server.should_exit = True
        thread.join(10)


def test_serve_uses_the_header_deadline_and_keep_alive():
    from caffezoo.server import protocols

    options = protocols.connection_options()
    assert issubclass(options["http"], protocols._HeaderDeadline)
    assert options["timeout_keep_alive"] == protocols.KEEP_ALIVE_TIMEOUT
    assert options["h11_max_incomplete_event_size"] == protocols.MAX_HEADER_BYTES
    assert options["http"].max_head_bytes == protocols.MAX_HEADER_BYTES


# --------------------------------------------------------------------------- imported gists


def test_an_imported_gist_is_read_only_to_the_local_user_of_the_same_name(zoo, database_url, monkeypatch):
    """`wiki import` keeps a gist's owner name, so `USER/ID` means the same gist here and
    there; the local account of that name must not gain the gist with it."""
    from caffezoo.server import create_app
    from caffezoo.server.wiki import import_page, parse_page

    source = zoo
    g = source.create({"readme.md": readme("Imported"), "deploy.prototxt": 'name: "n"\n'}, public=True)
    page = f"# Zoo\n\n### Section\n\n* [Imported](https://gist.github.com/{source.login}/{g['id']}): it\n"
    monkeypatch.delenv("CAFFEZOO_TOKEN")
    app = create_app(database_url)
    server, thread, url = start_uvicorn(app)
    try:
        target = app.state.storage
        report = import_page(target, parse_page(page), fetch=True)
        assert report.fetched == [g["id"]]
        # Someone registers the same name on the importing zoo.
        token = target.create_token(source.login)
        with httpx.Client(base_url=url, headers={"Authorization": f"token {token}"}) as local:
            r = local.patch(f"/gists/{g['id']}", json={"files": {"deploy.prototxt": {"content": "evil"}}})
            assert r.status_code == 403 and "read-only" in r.json()["message"], r.text
            r = local.patch(f"/gists/{g['id']}", json={"description": "mine now"})
            assert r.status_code == 403
            assert local.delete(f"/gists/{g['id']}").status_code == 403
            copy = local.get(f"/gists/{g['id']}").json()
            assert copy["files"]["deploy.prototxt"]["content"] == 'name: "n"\n'
            assert copy["description"] == g["description"] and copy["owner"]["login"] == source.login
            # Their own gists are theirs as ever.
            mine = local.post("/gists", json={"files": {"a.txt": {"content": "a"}}})
            assert mine.status_code == 201
            assert local.patch(f"/gists/{mine.json()['id']}", json={"description": "x"}).status_code == 200
        # The import itself still brings changes made at the source.
        source.http.patch(f"/gists/{g['id']}", json={"files": {"deploy.prototxt": {"content": "v2\n"}}})
        again = import_page(target, parse_page(page), fetch=True)
        assert again.fetched == [g["id"]]
        assert {f.filename: f.content for f in target.get_gist(g["id"]).files}["deploy.prototxt"] == b"v2\n"
        assert target.get_gist(g["id"]).imported_from == source.url
    finally:
        server.should_exit = True
        thread.join(10)
        app.state.storage.close()


def test_a_database_made_before_imports_were_marked_gets_the_column(database_url):
    from sqlalchemy import text

    from caffezoo.server import Storage

    store = Storage(database_url)
    store.create_token("old")
    g = store.create_gist("old", "d", True, {"a.txt": b"a\n"})
    with store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE gists DROP COLUMN imported_from"))
    store.close()
    store = Storage(database_url)  # as an older caffezoo left it
    try:
        assert store.get_gist(g.id).imported_from is None
        assert store.update_gist(g.id, "old", description="still mine").description == "still mine"
    finally:
        store.close()


# --------------------------------------------------------------------------- retries do not repeat a write


def _fail_the_first_read_after_a_commit(store) -> dict:
    """Make the database refuse, as a racing writer would, the first SELECT after a commit."""
    from sqlalchemy import event

    if store.is_sqlite:
        import sqlite3

        def refusal():
            return sqlite3.OperationalError("database is locked")
    else:
        import psycopg

        def refusal():
            return psycopg.errors.DeadlockDetected("deadlock detected")

    state = {"armed": False, "fired": 0}

    @event.listens_for(store.engine, "commit")
    def _arm(conn):
        state["armed"] = True

    @event.listens_for(store.engine, "before_cursor_execute")
    def _refuse(conn, cursor, statement, params, context, many):
        if state["armed"] and not state["fired"] and statement.lstrip().upper().startswith("SELECT"):
            state["fired"] += 1
            raise refusal()

    return state


def test_a_refused_read_after_a_create_commits_does_not_create_a_second_gist(store):
    from sqlalchemy import func, select

    from caffezoo.server.tables import Gist

    store.create_token("alice")
    state = _fail_the_first_read_after_a_commit(store)
    g = store.create_gist("alice", "once", True, {"a.txt": b"x"})
    assert state["fired"] == 1 and g.description == "once"
    with store.session() as s:
        assert s.scalars(select(Gist.id)).all() == [g.id]
        assert s.scalar(select(func.count()).select_from(Gist)) == 1


def test_a_refused_read_after_a_rename_commits_does_not_rename_twice(store):
    from caffezoo.server.storage import FileChange

    store.create_token("alice")
    g = store.create_gist("alice", None, True, {"a.txt": b"x", "b.txt": b"y"})
    state = _fail_the_first_read_after_a_commit(store)
    after = store.update_gist(g.id, "alice", changes={"a.txt": FileChange(filename="c.txt")})
    assert state["fired"] == 1
    assert sorted(f.filename for f in after.files) == ["b.txt", "c.txt"]


@pytest.mark.parametrize("protocol_name", ["h11", "httptools"])
def test_a_whole_head_over_the_cap_sent_at_once_is_431(protocol_name, tmp_path):
    """A complete head of ~100 KiB (many short headers, one write) is over the 64 KiB cap
    even though no single read left it unfinished past the cap; a head under it is served."""
    from caffezoo.server import protocols

    with _slow_header_server(protocol_name, tmp_path, log_level="critical") as port:
        pad = b"X-B: b\r\n"
        for lines, status in ((protocols.MAX_HEADER_BYTES // len(pad) - 10, b"200"), (12_500, b"431")):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(b"GET /gists/public HTTP/1.1\r\nHost: x\r\n" + pad * lines + b"\r\n")
                answer = b""
                try:
                    while b"\r\n" not in answer and (chunk := s.recv(65536)):
                        answer += chunk
                except ConnectionResetError:
                    pass
                assert answer.split(b" ", 2)[1] == status, (lines, answer[:80])


def _raw_post(url: str, token: str, head_extra: str) -> socket.socket:
    """A POST /gists whose head is sent and whose body is not (yet)."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=60)
    s.sendall(
        (
            f"POST /gists HTTP/1.1\r\nHost: {host}\r\nAuthorization: token {token}\r\n"
            f"Content-Type: application/json\r\n{head_extra}\r\n"
        ).encode()
    )
    return s


def test_gist_bodies_share_a_budget_and_a_deadline(tmp_path):
    """A token holder's slow bodies reserve their stated length (a chunked one the 30 MiB cap)
    before a byte is read: past --body-bytes the next is 503 unread; past --body-deadline a body
    still coming is 408 and its reservation comes back."""
    from download_helpers import answer_while_trickling, wait_for

    from caffezoo.server import create_app
    from caffezoo.server.work import Limits

    app = create_app(
        f"sqlite:///{tmp_path / 'zoo.db'}", limits=Limits(body_bytes=1_500_000, body_deadline=2.0)
    )
    server, thread, url = start_uvicorn(app)
    try:
        token = app.state.storage.create_token("slowpoke")
        bodies = app.state.api_bodies
        slow = _raw_post(url, token, "Content-Length: 1000000\r\n")
        wait_for(lambda: bodies.answers == 1, what="the slow body's reservation")
        assert bodies.bytes == 1_000_000
        auth = {"Authorization": f"token {token}"}
        big = {"files": {"a.txt": {"content": "x" * 600_000}}}
        refused = httpx.post(f"{url}/gists", json=big, headers=auth, timeout=60)
        assert refused.status_code == 503 and refused.headers["retry-after"].isdigit(), refused.text
        assert "too many request bodies" in refused.json()["message"]
        chunked = _raw_post(url, token, "Transfer-Encoding: chunked\r\n")
        chunked.settimeout(30)  # answered before its first chunk is read: it would hold the 30 MiB cap
        assert chunked.recv(65536).startswith(b"HTTP/1.1 503 ")
        chunked.close()
        small = httpx.post(f"{url}/gists", json={"files": {"a.txt": {"content": "x"}}}, headers=auth)
        assert small.status_code == 201, small.text  # what fits in the rest is taken
        answer = answer_while_trickling(slow)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 2 seconds" in answer, answer
        wait_for(lambda: bodies.answers == 0, what="the reservation back")
        assert httpx.post(f"{url}/gists", json=big, headers=auth, timeout=60).status_code == 201
    finally:
        server.should_exit = True
        thread.join(10)
        app.state.storage.close()
