"""The caffezoo server's Gist API, over HTTP on 127.0.0.1, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import zipfile
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from gist_helpers import free_port

GIST_SIMPLE_KEYS = {
    "url",
    "forks_url",
    "commits_url",
    "id",
    "node_id",
    "git_pull_url",
    "git_push_url",
    "html_url",
    "files",
    "public",
    "created_at",
    "updated_at",
    "description",
    "comments",
    "comments_enabled",
    "user",
    "comments_url",
    "owner",
    "forks",
    "history",
    "fork_of",
    "truncated",
}
BASE_GIST_KEYS = GIST_SIMPLE_KEYS - {"forks", "history", "fork_of"}


def test_create_answers_201_with_location_and_github_shape(zoo):
    r = zoo.http.post(
        "/gists",
        json={
            "description": "My Net",
            "files": {
                "readme.md": {"content": "---\nname: My Net\n---\n"},
                "deploy.prototxt": {"content": 'name: "n"\n'},
            },
        },
    )
    assert r.status_code == 201
    g = r.json()
    assert r.headers["location"] == f"{zoo.url}/gists/{g['id']}" == g["url"]
    assert set(g) == GIST_SIMPLE_KEYS
    assert g["public"] is False and g["description"] == "My Net" and g["truncated"] is False
    assert g["owner"]["login"] == zoo.login and g["user"] is None
    f = g["files"]["readme.md"]
    assert set(f) == {"filename", "type", "language", "raw_url", "size", "truncated", "content", "encoding"}
    assert (f["content"], f["size"], f["truncated"], f["language"]) == (
        "---\nname: My Net\n---\n",
        21,
        False,
        "Markdown",
    )
    assert [h["change_status"] for h in g["history"]] == [{"total": 4, "additions": 4, "deletions": 0}]
    assert g["history"][0]["url"] == f"{zoo.url}/gists/{g['id']}/{g['history'][0]['version']}"
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-content-type-options"] == "nosniff"


def test_public_accepts_bool_or_string_and_defaults_to_secret(zoo):
    assert zoo.create({"a.txt": "a"})["public"] is False
    r = zoo.http.post("/gists", json={"public": "true", "files": {"a.txt": {"content": "a"}}})
    assert r.status_code == 201 and r.json()["public"] is True


def test_anyone_reads_by_id_and_unknown_ids_are_404(zoo):
    g = zoo.create({"a.txt": "hello"})
    anon = httpx.get(f"{zoo.url}/gists/{g['id']}")
    assert anon.status_code == 200 and anon.json()["files"]["a.txt"]["content"] == "hello"
    missing = httpx.get(f"{zoo.url}/gists/0123456789abcdef0123")
    assert missing.status_code == 404
    assert missing.json()["message"] == "Not Found" and "documentation_url" in missing.json()


def test_update_adds_replaces_renames_deletes_and_keeps_the_rest(zoo):
    g = zoo.create({"keep.txt": "k", "old.txt": "o", "gone.txt": "g", "change.txt": "1"})
    r = zoo.http.patch(
        f"/gists/{g['id']}",
        json={
            "files": {
                "old.txt": {"filename": "new.txt"},
                "gone.txt": None,
                "change.txt": {"content": "2"},
                "added.txt": {"content": "a"},
            }
        },
    )
    assert r.status_code == 200, r.text
    files = {n: f["content"] for n, f in r.json()["files"].items()}
    assert files == {"keep.txt": "k", "new.txt": "o", "change.txt": "2", "added.txt": "a"}
    # An object with neither content nor filename deletes too, as on GitHub.
    r = zoo.http.patch(f"/gists/{g['id']}", json={"files": {"added.txt": {}}})
    assert set(r.json()["files"]) == {"keep.txt", "new.txt", "change.txt"}
    assert [h["version"] for h in r.json()["history"]][-1] == g["history"][0]["version"]
    assert len(r.json()["history"]) == 3


def test_post_to_a_gist_updates_it_like_patch(zoo):
    """The Ruby `gist -u` tool that Caffe's upload script used sends POST /gists/ID."""
    g = zoo.create({"a.txt": "1"})
    r = zoo.http.post(f"/gists/{g['id']}", json={"description": "new", "files": {"b.txt": {"content": "2"}}})
    assert r.status_code == 200 and set(r.json()["files"]) == {"a.txt", "b.txt"}
    assert r.json()["description"] == "new"


def test_description_only_or_same_content_makes_no_revision(zoo):
    g = zoo.create({"a.txt": "1"})
    r = zoo.http.patch(f"/gists/{g['id']}", json={"description": "other"})
    assert r.json()["description"] == "other" and len(r.json()["history"]) == 1
    r = zoo.http.patch(f"/gists/{g['id']}", json={"files": {"a.txt": {"content": "1"}}})
    assert len(r.json()["history"]) == 1


def test_every_revision_stays_readable(zoo):
    g = zoo.create({"a.txt": "one"})
    zoo.http.patch(
        f"/gists/{g['id']}", json={"files": {"a.txt": {"content": "two"}, "b.txt": {"content": "b"}}}
    )
    head = zoo.http.get(f"/gists/{g['id']}").json()
    first, second = head["history"][1]["version"], head["history"][0]["version"]
    old = httpx.get(f"{zoo.url}/gists/{g['id']}/{first}").json()
    assert {n: f["content"] for n, f in old["files"].items()} == {"a.txt": "one"}
    assert httpx.get(f"{zoo.url}/gists/{g['id']}/{second}").json()["files"]["a.txt"]["content"] == "two"
    commits = httpx.get(f"{zoo.url}/gists/{g['id']}/commits").json()
    assert [c["version"] for c in commits] == [second, first]
    assert httpx.get(f"{zoo.url}/gists/{g['id']}/{'0' * 40}").status_code == 404
    bad = httpx.get(f"{zoo.url}/gists/{g['id']}/not-a-sha")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "sha"
    # raw_url of the old revision still serves the old bytes
    assert httpx.get(old["files"]["a.txt"]["raw_url"]).text == "one"


def test_only_the_owner_changes_a_gist_others_get_404(zoo):
    g = zoo.create({"a.txt": "1"})
    other = zoo.other()
    assert (
        other.http.patch(f"/gists/{g['id']}", json={"files": {"a.txt": {"content": "x"}}}).status_code == 404
    )
    assert other.http.post(f"/gists/{g['id']}", json={"description": "x"}).status_code == 404
    assert other.http.delete(f"/gists/{g['id']}").status_code == 404
    anon = httpx.patch(f"{zoo.url}/gists/{g['id']}", json={"description": "x"})
    assert anon.status_code == 401 and anon.json()["message"] == "Requires authentication"
    assert httpx.post(f"{zoo.url}/gists", json={"files": {"a": {"content": "a"}}}).status_code == 401
    assert zoo.http.get(f"/gists/{g['id']}").json()["files"]["a.txt"]["content"] == "1"


@pytest.mark.parametrize("header", ["Bearer {}", "token {}", "bearer {}"])
def test_both_auth_schemes_are_accepted(zoo, header):
    r = httpx.post(
        f"{zoo.url}/gists",
        json={"files": {"a.txt": {"content": "a"}}},
        headers={"Authorization": header.format(zoo.token)},
    )
    assert r.status_code == 201 and r.json()["owner"]["login"] == zoo.login


@pytest.mark.parametrize("header", ["token nope", "Bearer", "Basic dXNlcjpwYXNz", "token {}x"])
def test_bad_credentials_are_401_even_for_reads(zoo, header):
    g = zoo.create({"a.txt": "a"})
    r = httpx.get(f"{zoo.url}/gists/{g['id']}", headers={"Authorization": header.format(zoo.token)})
    assert r.status_code == 401 and r.json()["message"] == "Bad credentials"


def _post(zoo, body: bytes | dict, path: str = "/gists", method: str = "POST") -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return zoo.http.request(method, path, content=content, headers={"Content-Type": "application/json"})


BAD_CREATES = [
    ({"files": {"a/b.txt": {"content": "x"}}}, "files", "invalid"),
    ({"files": {"..": {"content": "x"}}}, "files", "invalid"),
    ({"files": {"a\u0007.txt": {"content": "x"}}}, "files", "invalid"),
    ({"files": {"a.txt": {"content": ""}}}, "files", "missing_field"),
    ({"files": {"a.txt": {"content": "  \n"}}}, "files", "missing_field"),
    ({"files": {"a.txt": {"content": "nul\u0000byte"}}}, "files", "invalid"),
    ({"files": {"a.txt": {"content": 5}}}, "files", "invalid"),
    ({"files": {"a.txt": {}}}, "files", "missing_field"),
    ({"files": {"a.txt": "text"}}, "files", "invalid"),
    ({"files": {"a.txt": {"content": "x", "filename": "b"}}}, "filename", "invalid"),
    ({"files": {}}, "files", "missing_field"),
    ({"files": []}, "files", "invalid"),
    ({"description": "no files"}, "files", "missing_field"),
    ({"files": {"a.txt": {"content": "x"}}, "secret": True}, "secret", "invalid"),
    ({"files": {"a.txt": {"content": "x"}}, "public": "yes"}, "public", "invalid"),
    ({"files": {"a.txt": {"content": "x"}}, "description": 3}, "description", "invalid"),
    ({"files": {"a.txt": {"content": "x"}}, "description": "a\u0000b"}, "description", "invalid"),
    ({"files": {"A.txt": {"content": "x"}, "a.txt": {"content": "y"}}}, "files", "already_exists"),
    ({"files": {"big.txt": {"content": "x" * (10 * 1024 * 1024 + 1)}}}, "files", "too_large"),
]


@pytest.mark.parametrize("body,field,code", BAD_CREATES)
def test_bad_creates_are_422_with_a_github_errors_list(zoo, body, field, code):
    r = _post(zoo, body)
    assert r.status_code == 422, r.text
    assert r.json()["message"] == "Validation Failed"
    assert (r.json()["errors"][0]["field"], r.json()["errors"][0]["code"]) == (field, code)


@pytest.mark.parametrize(
    "raw,status",
    [
        (b'{"files": {"a.txt": {"content": "\xff\xfe binary"}}}', 422),  # not UTF-8
        (b'{"files": {"a.txt": {"content": "\\ud800"}}}', 422),  # a lone surrogate escape
        (b'{"files": ', 400),
        (b'["files"]', 400),
        (b"", 400),
    ],
)
def test_undecodable_bodies(zoo, raw, status):
    r = _post(zoo, raw)
    assert r.status_code == status, r.text
    assert "message" in r.json()


def test_oversized_bodies_are_413(zoo):
    body = b'{"files": {"a.txt": {"content": "' + b"x" * (31 * 1024 * 1024) + b'"}}}'
    r = _post(zoo, body)
    assert r.status_code == 413 and "too large" in r.json()["message"]


@pytest.mark.parametrize(
    "files,code",
    [
        ({"missing.txt": None}, "missing"),
        ({"missing.txt": {"filename": "x.txt"}}, "missing"),
        ({"a.txt": {"filename": "b.txt"}}, "already_exists"),
        ({"a.txt": {"filename": "c/d"}}, "invalid"),
        ({"a.txt": None, "b.txt": None}, "missing_field"),
    ],
)
def test_bad_updates_are_422_and_change_nothing(zoo, files, code):
    g = zoo.create({"a.txt": "a", "b.txt": "b"})
    r = zoo.http.patch(f"/gists/{g['id']}", json={"files": files})
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == code, r.text
    after = zoo.http.get(f"/gists/{g['id']}").json()
    assert {n: f["content"] for n, f in after["files"].items()} == {"a.txt": "a", "b.txt": "b"}
    assert len(after["history"]) == 1


def test_update_needs_description_or_files_and_refuses_public(zoo):
    g = zoo.create({"a.txt": "a"})
    assert _post(zoo, {}, f"/gists/{g['id']}", "PATCH").status_code == 422
    r = _post(zoo, {"description": "a\u0000b"}, f"/gists/{g['id']}", "PATCH")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "description"
    r = _post(zoo, {"public": True}, f"/gists/{g['id']}", "PATCH")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "public"


def test_swapping_two_names_in_one_update_loses_nothing(zoo):
    g = zoo.create({"a.txt": "A", "b.txt": "B"})
    r = zoo.http.patch(
        f"/gists/{g['id']}", json={"files": {"a.txt": {"filename": "b.txt"}, "b.txt": {"filename": "a.txt"}}}
    )
    assert {n: f["content"] for n, f in r.json()["files"].items()} == {"a.txt": "B", "b.txt": "A"}


def test_delete_is_204_then_everything_is_404(zoo):
    g = zoo.create({"a.txt": "a"})
    raw = g["files"]["a.txt"]["raw_url"]
    assert zoo.http.delete(f"/gists/{g['id']}").status_code == 204
    assert zoo.http.get(f"/gists/{g['id']}").status_code == 404
    assert httpx.get(raw).status_code == 404
    assert zoo.http.delete(f"/gists/{g['id']}").status_code == 404


def test_lists_page_with_link_headers_and_since(zoo):
    ids = [zoo.create({f"{i}.txt": str(i)}, public=i % 2 == 0)["id"] for i in range(5)]
    mine = zoo.http.get("/gists", params={"per_page": 2})
    assert mine.status_code == 200 and len(mine.json()) == 2
    assert set(mine.json()[0]) == BASE_GIST_KEYS
    assert "content" not in next(iter(mine.json()[0]["files"].values()))
    links = mine.links
    assert "page=2" in links["next"]["url"] and "page=3" in links["last"]["url"]
    seen = []
    url = "/gists?per_page=2"
    while url:
        r = zoo.http.get(url)
        seen += [g["id"] for g in r.json()]
        url = r.links.get("next", {}).get("url")
    assert sorted(seen) == sorted(ids)  # secret ones too: it is the caller's own list
    public = httpx.get(f"{zoo.url}/users/{zoo.login}/gists").json()
    assert sorted(g["id"] for g in public) == sorted(ids[0::2])
    assert httpx.get(f"{zoo.url}/users/{zoo.login}/gists", params={"per_page": 500}).status_code == 200
    future = httpx.get(f"{zoo.url}/users/{zoo.login}/gists", params={"since": "2999-01-01T00:00:00Z"})
    assert future.json() == [] and "link" not in future.headers
    past = httpx.get(f"{zoo.url}/users/{zoo.login}/gists", params={"since": "2000-01-01T00:00:00Z"})
    assert len(past.json()) == 3
    page2 = httpx.get(f"{zoo.url}/users/{zoo.login}/gists", params={"per_page": 2, "page": 2})
    assert len(page2.json()) == 1 and 'rel="prev"' in page2.headers["link"]


@pytest.mark.parametrize(
    "params",
    [
        {"per_page": "x"},
        {"per_page": "0"},
        {"page": "-1"},
        {"since": "yesterday"},
        {"since": "9999-12-31T23:59:59-23:59"},
        {"since": "0001-01-01T00:00:00+14:00"},
    ],
)
def test_bad_list_parameters_are_422(zoo, params):
    r = httpx.get(f"{zoo.url}/users/{zoo.login}/gists", params=params)
    assert r.status_code == 422 and r.json()["errors"]


def test_unknown_user_list_is_404(zoo):
    assert httpx.get(f"{zoo.url}/users/nobody-here-{zoo.login}/gists").status_code == 404


def test_big_files_are_truncated_in_json_and_whole_at_raw_url(zoo):
    big = "0123456789abcdé\n" * 70000  # ~1.1 MB, with 2-byte characters to cut through
    g = zoo.create({"big.prototxt": big, "small.txt": "s"})
    f = zoo.http.get(f"/gists/{g['id']}").json()["files"]["big.prototxt"]
    assert f["truncated"] is True and f["size"] == len(big.encode())
    assert big.startswith(f["content"]) and 1024 * 1024 - 2 <= len(f["content"].encode()) <= 1024 * 1024
    raw = httpx.get(f["raw_url"])
    assert raw.content == big.encode()
    other = zoo.other().login  # (the other user exists: it is the owner who must match)
    assert httpx.get(f["raw_url"].replace(f"/{zoo.login}/", f"/{other}/")).status_code == 404
    assert raw.headers["content-type"] == "text/plain; charset=utf-8"
    assert (
        raw.headers["x-content-type-options"] == "nosniff"
        and "sandbox" in raw.headers["content-security-policy"]
    )


def test_more_than_300_files_truncates_the_list(zoo):
    g = zoo.create({f"f{i:03}.txt": str(i) for i in range(301)})
    assert g["truncated"] is True and len(g["files"]) == 300 and "f300.txt" not in g["files"]


def _caffe_download(base: str, gist: str, models: Path) -> Path:
    """Caffe's download_model_from_gist.sh, with gist.github.com replaced by the server."""
    script = r"""
set -e
GIST=$1
DIRNAME=${2:-./models}
GIST_DIR=$(echo $GIST | tr '/' '-')
MODEL_DIR="$DIRNAME/$GIST_DIR"
mkdir -p $MODEL_DIR
wget -q "$BASE/$GIST/download" -O $MODEL_DIR/gist.zip
unzip -q -j $MODEL_DIR/gist.zip -d $MODEL_DIR
rm $MODEL_DIR/gist.zip
"""
    for tool in ("wget", "unzip"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (Debian package `{tool}`, see .ci/run)")
    subprocess.run(
        ["bash", "-c", script, "caffe", gist, str(models)],
        check=True,
        env={"BASE": base, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    return models / gist.replace("/", "-")


@pytest.mark.parametrize("with_user", [False, True])
def test_caffe_download_script_unpacks_the_zip(zoo, tmp_path, with_user):
    files = {"readme.md": "---\nname: Z\n---\nprose\n", "deploy.prototxt": 'name: "z"\n'}
    g = zoo.create(files)
    gist = f"{zoo.login}/{g['id']}" if with_user else g["id"]
    out = _caffe_download(zoo.url, gist, tmp_path / "models")
    assert {p.name: p.read_text() for p in out.iterdir()} == files


def test_zip_of_someone_elses_path_is_404(zoo):
    g = zoo.create({"a.txt": "a"})
    assert httpx.get(f"{zoo.url}/{zoo.other().login}/{g['id']}/download").status_code == 404
    z = zipfile.ZipFile(BytesIO(httpx.get(f"{zoo.url}/{zoo.login}/{g['id']}/download").content))
    assert [n.split("/", 1)[1] for n in z.namelist()] == ["", "a.txt"]


def test_concurrent_updates_lose_nothing_and_number_revisions_without_gaps(zoo):
    g = zoo.create({"shared.txt": "0"})
    n = 24
    errors: list[str] = []

    def patch(i: int) -> None:
        with httpx.Client(
            base_url=zoo.url, headers={"Authorization": f"Bearer {zoo.token}"}, timeout=120
        ) as c:
            r = c.patch(
                f"/gists/{g['id']}",
                json={"files": {f"f{i:02}.txt": {"content": str(i)}, "shared.txt": {"content": f"by {i}"}}},
            )
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text}")

    threads = [threading.Thread(target=patch, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    final = zoo.http.get(f"/gists/{g['id']}").json()
    assert set(final["files"]) == {"shared.txt"} | {f"f{i:02}.txt" for i in range(n)}
    assert all(final["files"][f"f{i:02}.txt"]["content"] == str(i) for i in range(n))
    history = final["history"]
    assert len(history) == n + 1 and len({h["version"] for h in history}) == n + 1
    # Each revision adds exactly one file to its predecessor: none was lost or merged away.
    counts = [len(httpx.get(h["url"]).json()["files"]) for h in reversed(history)]
    assert counts == list(range(1, n + 2))


def test_server_errors_never_leak_as_500(zoo):
    """A sweep of odd requests: every answer is a 4xx in GitHub's shape, never a 500."""
    g = zoo.create({"a.txt": "a"})
    odd = [
        ("GET", "/gists/%2e%2e"),
        ("GET", f"/gists/{g['id']}/{'f' * 40}"),
        ("PUT", "/gists"),
        ("GET", "/users/%00/gists"),
        ("GET", f"/x/{g['id']}/raw/{'0' * 40}/a.txt"),
        ("PATCH", f"/gists/{g['id']}"),
        ("GET", "/gists?page=99999999999999999999"),
        ("GET", f"/{zoo.login}/{g['id']}/raw/{'0' * 40}/a%00"),
        ("GET", "/users/a%00b/gists"),
        ("GET", f"/a%00/{g['id']}/download"),
        ("GET", "/a.b/download"),
        ("DELETE", "/gists/" + "a" * 100),
    ]
    for method, path in odd:
        r = zoo.http.request(method, path)
        assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text)
        assert "message" in r.json()


def test_token_create_prints_once_and_stores_only_a_hash(cli_process, tmp_path):
    db = tmp_path / "tokens.db"
    r = cli_process("serve", "token", "create", "alice", "--database-url", f"sqlite:///{db}")
    assert r.code == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("czt_") and len(token) > 30 and "shown once" in r.stderr
    assert token.encode() not in db.read_bytes()
    from caffezoo.server import Storage

    store = Storage(f"sqlite:///{db}")
    assert store.user_for_token(token) == "alice" and store.user_for_token(token + "x") is None
    store.close()
    bad = cli_process("serve", "token", "create", "bad/name", "--database-url", f"sqlite:///{db}")
    assert bad.code == 2 and "not a valid user name" in bad.stderr and "Traceback" not in bad.stderr
    bad = cli_process(
        "serve", "token", "create", "x--y", "--database-url", f"sqlite:///{tmp_path / 'new.db'}"
    )
    assert bad.code == 2 and "not a valid user name" in bad.stderr
    assert not (tmp_path / "new.db").exists()  # a refused name makes no database


def test_server_options_before_a_subcommand_are_refused_not_dropped(cli_process, tmp_path):
    """`caffezoo serve --database-url URL token create alice` printed a token that URL's
    server refused: the option was the server's, dropped, and the token went to the default
    SQLite database under CAFFEZOO_HOME."""
    home, db = tmp_path / "home", tmp_path / "meant.db"
    r = cli_process(
        "serve",
        "--database-url",
        f"sqlite:///{db}",
        "token",
        "create",
        "alice",
        env={"CAFFEZOO_HOME": str(home)},
    )
    assert r.code == 2 and "--database-url before `token` would be ignored" in r.stderr
    assert "czt_" not in r.stdout and not db.exists() and not home.exists()


def test_a_database_that_cannot_be_opened_is_one_clear_line(cli, tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    urls = [
        "not a url",
        "nonsense://x",
        f"postgresql://zoo:s3cret@127.0.0.1:{free_port()}/zoo",
        f"sqlite:///{tmp_path / 'file' / 'zoo.db'}",
    ]
    for url in urls:
        for args in (
            ["serve", "token", "create", "alice"],
            ["wiki", "export"],
            ["serve", "--no-check-links", "--port", str(free_port())],
        ):
            r = cli(*args, "--database-url", url)
            assert r.code == 1 and r.stderr.startswith("error: cannot open the database "), (url, args, r)
            assert "--database-url or CAFFEZOO_DATABASE_URL" in r.stderr and "s3cret" not in r.stderr
            assert len(r.stderr.splitlines()) == 1 and r.stdout == ""


def test_serve_runs_uvicorn_on_the_given_port(tmp_path):
    import os
    import sys
    import time

    port = free_port()
    env = dict(os.environ, CAFFEZOO_HOME=str(tmp_path))
    p = subprocess.Popen(
        [sys.executable, "-m", "caffezoo", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/gists/0123456789abcdef0123")
                break
            except httpx.TransportError:
                if p.poll() is not None or time.monotonic() > deadline:
                    p.kill()  # (reading its output while it runs would wait for ever)
                    pytest.fail(f"caffezoo serve did not answer: {p.communicate()[0].decode()}")
                time.sleep(0.2)
        assert r.status_code == 404 and r.json()["message"] == "Not Found"
        assert (tmp_path / "server.db").is_file()
    finally:
        p.terminate()
        p.wait(20)


def test_serve_refuses_a_taken_port_or_a_bad_one_clearly(cli_process, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = cli_process(
            "serve", "--port", port, "--no-check-links", env={"CAFFEZOO_HOME": str(tmp_path)}, timeout=60
        )
    assert r.code == 2 and "Traceback" not in r.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use; choose another --port" in r.stderr
    r = cli_process("serve", "--port", "99999")
    assert r.code == 2 and "--port" in r.stderr
    r = cli_process(
        "serve", "--log-level", "bogus", "--port", free_port(), env={"CAFFEZOO_HOME": str(tmp_path)}
    )
    assert r.code == 2 and "Invalid value for '--log-level'" in r.stderr and "Traceback" not in r.stderr
