"""The gist client end to end: against the real caffezoo server (SQLite and
PostgreSQL) and, for what only GitHub or a broken server would answer, a
scripted server on 127.0.0.1."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from model_helpers import DEPLOY, ROOT

from caffezoo.errors import GistError, ModelDirError, UsageError
from caffezoo.gist import GistClient, GistRef, download, list_gists, parse_ref, upload
from caffezoo.zoo import BUNDLED_DIR

BUNDLED = ROOT / "src" / "caffezoo" / "models"
GIST_ID = "aa5a315d61ae9438b18d"


def model_copy(tmp_path: Path, name: str = "bvlc_alexnet") -> Path:
    """A bundled model as a user would have it: readme, prototxt, weights, and some clutter."""
    d = tmp_path / name
    shutil.copytree(BUNDLED / name, d)
    (d / "deploy.prototxt").write_text(DEPLOY)
    (d / "train_val.prototxt").write_text(DEPLOY.replace("Input", "Data"))
    (d / f"{name}.caffemodel").write_bytes(b"\x08\x01weights")
    (d / f"{name}.caffemodel.partial").write_bytes(b"\x08")
    (d / "mean.binaryproto").write_bytes(b"\x00\x01\x02binary")
    (d / "empty.txt").write_text("")
    (d / "extras").mkdir()
    (d / "extras" / "note.txt").write_text("in a subfolder")
    (d / ".hidden").write_text("dot file")
    return d


def remote_files(zoo, gist_id: str) -> dict[str, str]:
    return {n: f["content"] for n, f in zoo.http.get(f"/gists/{gist_id}").json()["files"].items()}


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize(
    "text,ref",
    [
        ("034c6ac3865563b69e60", GistRef("034c6ac3865563b69e60")),
        ("shelhamer/034c6ac3865563b69e60", GistRef("034c6ac3865563b69e60", "shelhamer")),
        (
            "https://gist.github.com/shelhamer/034c6ac3865563b69e60#file-readme-md",
            GistRef("034c6ac3865563b69e60", "shelhamer"),
        ),
        ("https://gist.github.com/034c6ac3865563b69e60", GistRef("034c6ac3865563b69e60")),
        (
            "https://gist.github.com/ksimonyan/211839e770f7b538e2d8/download",
            GistRef("211839e770f7b538e2d8", "ksimonyan"),
        ),
        (
            "https://api.github.com/gists/7ea9f8ac0da259866b854460f4526034",
            GistRef("7ea9f8ac0da259866b854460f4526034"),
        ),
        (
            "https://gist.github.com/7ea9f8ac0da259866b854460f4526034.git",
            GistRef("7ea9f8ac0da259866b854460f4526034"),
        ),
        ("https://ghe.example.org/gist/lab/0123abcd", GistRef("0123abcd", "lab")),
    ],
)
def test_gist_references(text, ref):
    assert parse_ref(text) == ref
    assert ref.dirname == (f"{ref.user}-{ref.id}" if ref.user else ref.id)


@pytest.mark.parametrize(
    "text", ["", "a/b/c", "../etc", "id with space", "https://gist.github.com/", "user/..", "a;rm -rf"]
)
def test_bad_gist_references(text):
    with pytest.raises(UsageError, match="is not a gist"):
        parse_ref(text)


# --------------------------------------------------------------------------- GitHub's own JSON


def github_gist(raw_base: str) -> dict:
    """A `GET /gists/{id}` answer shaped field by field as GitHub documents gist-simple."""
    owner = {
        "login": "octocat",
        "id": 1,
        "node_id": "MDQ6VXNlcjE=",
        "avatar_url": "https://github.com/images/error/octocat_happy.gif",
        "gravatar_id": "",
        "url": "https://api.github.com/users/octocat",
        "html_url": "https://github.com/octocat",
        "followers_url": "https://api.github.com/users/octocat/followers",
        "following_url": "https://api.github.com/users/octocat/following{/other_user}",
        "gists_url": "https://api.github.com/users/octocat/gists{/gist_id}",
        "starred_url": "https://api.github.com/users/octocat/starred{/owner}{/repo}",
        "subscriptions_url": "https://api.github.com/users/octocat/subscriptions",
        "organizations_url": "https://api.github.com/users/octocat/orgs",
        "repos_url": "https://api.github.com/users/octocat/repos",
        "events_url": "https://api.github.com/users/octocat/events{/privacy}",
        "received_events_url": "https://api.github.com/users/octocat/received_events",
        "type": "User",
        "site_admin": False,
    }
    sha = "db9c55113504e46fa076e7df3a04ce592e2e86d8"
    return {
        "url": f"https://api.github.com/gists/{GIST_ID}",
        "forks_url": f"https://api.github.com/gists/{GIST_ID}/forks",
        "commits_url": f"https://api.github.com/gists/{GIST_ID}/commits",
        "id": GIST_ID,
        "node_id": "MDQ6R2lzdGFhNWEzMTVkNjFhZTk0MzhiMThk",
        "git_pull_url": f"https://gist.github.com/{GIST_ID}.git",
        "git_push_url": f"https://gist.github.com/{GIST_ID}.git",
        "html_url": f"https://gist.github.com/{GIST_ID}",
        "files": {
            "readme.md": {
                "filename": "readme.md",
                "type": "text/markdown",
                "language": "Markdown",
                "raw_url": f"{raw_base}/octocat/{GIST_ID}/raw/{sha}/readme.md",
                "size": 58,
                "truncated": False,
                "encoding": "utf-8",
                "content": "---\nname: Octo Net\nlicense: MIT\ncaffe_version: '1.0'\n---\n\nA net.\n",
            },
            "deploy.prototxt": {
                "filename": "deploy.prototxt",
                "type": "text/plain",
                "language": None,
                "raw_url": f"{raw_base}/octocat/{GIST_ID}/raw/{sha}/deploy.prototxt",
                "size": len(DEPLOY.encode()),
                "truncated": True,
                "encoding": "utf-8",
                "content": DEPLOY[:40],
            },
        },
        "public": True,
        "created_at": "2010-04-14T02:15:15Z",
        "updated_at": "2011-06-20T11:34:15Z",
        "description": "Octo Net",
        "comments": 0,
        "comments_enabled": True,
        "user": None,
        "comments_url": f"https://api.github.com/gists/{GIST_ID}/comments/",
        "owner": owner,
        "forks": [],
        "history": [
            {
                "user": owner,
                "version": "57a7f021a713b1c5a6a199b54cc514735d2d462f",
                "committed_at": "2010-04-14T02:15:15Z",
                "change_status": {"deletions": 0, "additions": 180, "total": 180},
                "url": f"https://api.github.com/gists/{GIST_ID}/57a7f021a713b1c5a6a199b54cc514735d2d462f",
            }
        ],
        "fork_of": None,
        "truncated": False,
    }


def test_download_parses_githubs_documented_json_and_keeps_the_token_home(scripted, tmp_path, monkeypatch):
    api, raw = scripted(), scripted()  # two origins, like api.github.com and gist.githubusercontent.com
    api.script("GET", f"/gists/{GIST_ID}", (200, github_gist(raw.url)))
    raw.script(
        "GET",
        f"/octocat/{GIST_ID}/raw/db9c55113504e46fa076e7df3a04ce592e2e86d8/deploy.prototxt",
        (200, DEPLOY.encode()),
    )
    monkeypatch.setenv("CAFFEZOO_GIST_API", api.url)
    monkeypatch.setenv("CAFFEZOO_TOKEN", "ghp_secret_token_value")
    r = download(f"octocat/{GIST_ID}", into=tmp_path / "models")
    assert (
        r.path == tmp_path / "models" / f"octocat-{GIST_ID}"
        and r.html_url == f"https://gist.github.com/{GIST_ID}"
    )
    assert (r.path / "deploy.prototxt").read_text() == DEPLOY  # whole, through raw_url
    assert (r.path / "readme.md").read_text().startswith("---\nname: Octo Net\n")
    assert not [p for p in r.problems if p.severity == "error"]
    sent = api.requests("GET")[0].headers
    assert sent["authorization"] == "Bearer ghp_secret_token_value"
    assert sent["accept"] == "application/vnd.github+json" and sent["x-github-api-version"] == "2022-11-28"
    assert sent["user-agent"].startswith("caffezoo")
    assert "authorization" not in raw.requests("GET")[0].headers


def test_client_tolerates_missing_and_null_fields():
    from caffezoo.gist import Gist

    g = Gist.from_json({"id": 2729810, "files": None})
    assert (g.id, g.files, g.owner, g.truncated) == ("2729810", {}, None, False)
    with pytest.raises(GistError, match="not a gist"):
        Gist.from_json(["not", "a", "gist"])


@pytest.mark.parametrize(
    "change,complaint",
    [
        ({"files": ["readme.md"]}, "'files' is ['readme.md'], expected an object"),
        ({"files": {"a.txt": {"filename": 5, "content": "x"}}}, "'filename' is 5, expected a string"),
        ({"files": {"a.txt": {"content": 5}}}, "'content' is 5, expected a string"),
        (
            {"files": {"a.txt": {"content": "x", "size": "big", "truncated": True}}},
            "'size' is 'big', expected an integer",
        ),
        ({"owner": {"login": ["octocat"]}}, "'login' is ['octocat'], expected a string"),
        ({"description": {"text": "d"}}, "'description' is {'text': 'd'}, expected a string"),
    ],
)
def test_a_malformed_gist_is_an_error_not_a_crash(scripted, tmp_path, monkeypatch, change, complaint):
    api = scripted()
    monkeypatch.setenv("CAFFEZOO_GIST_API", api.url)
    api.script("GET", f"/gists/{GIST_ID}", (200, github_gist(api.url) | change))
    with pytest.raises(GistError, match=f"malformed gist {GIST_ID}: " + re.escape(complaint)):
        download(GIST_ID, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("user", ["bad/user", "../gists", "a b", "x?per_page=1", ""])
def test_a_user_name_that_is_no_name_is_refused_before_any_request(scripted, user):
    api = scripted()
    with GistClient(api.url) as c, pytest.raises(UsageError, match="is not a user name"):
        c.list(user)
    assert api.seen == []


def test_a_gist_list_that_is_not_a_list_of_gists_is_an_error(scripted, monkeypatch):
    api = scripted()
    api.script("GET", "/gists", (200, b"<html>a captive portal</html>"))
    api.script("GET", "/users/octocat/gists", (200, {"message": "not a list"}))
    with GistClient(api.url, token="t") as c:
        with pytest.raises(GistError, match="GET .*/gists.*: expected JSON, got 'text/plain'"):
            c.list()
        with pytest.raises(GistError, match="expected a list of gists"):
            c.list("octocat")


def test_more_than_300_files_or_over_10_mb_is_reported(scripted, tmp_path, monkeypatch):
    api = scripted()
    monkeypatch.setenv("CAFFEZOO_GIST_API", api.url)
    many = github_gist(api.url) | {"truncated": True}
    api.script("GET", f"/gists/{GIST_ID}", (200, many))
    with pytest.raises(
        GistError, match="more files than the API lists .300.: clone https://gist.github.com/"
    ):
        download(GIST_ID, tmp_path / "m")
    huge = github_gist(api.url)
    huge["files"]["deploy.prototxt"]["size"] = 11 * 1024 * 1024
    api.script("GET", f"/gists/{GIST_ID}", (200, huge))
    with pytest.raises(GistError, match="deploy.prototxt has 11534336 bytes, more than the API serves"):
        download(GIST_ID, tmp_path / "m")
    assert not (tmp_path / "m").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name",
    [
        "../evil.sh",
        "a/b.txt",
        "/etc/passwd",
        "con.txt",
        "nul",
        "bell\u0007.txt",
        "..",
        ".bashrc",
        "back\\slash",
    ],
)
def test_unsafe_file_names_are_refused_and_nothing_is_written(scripted, tmp_path, monkeypatch, name):
    api = scripted()
    monkeypatch.setenv("CAFFEZOO_GIST_API", api.url)
    g = github_gist(api.url)
    g["files"][name] = {"filename": name, "size": 4, "truncated": False, "content": "evil"}
    api.script("GET", f"/gists/{GIST_ID}", (200, g))
    with pytest.raises(GistError, match="refusing unsafe file names, nothing was written"):
        download(GIST_ID, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_names_differing_only_in_case_are_refused(scripted, tmp_path, monkeypatch):
    api = scripted()
    monkeypatch.setenv("CAFFEZOO_GIST_API", api.url)
    g = github_gist(api.url)
    g["files"]["README.md"] = {"filename": "README.md", "size": 1, "content": "x"}
    api.script("GET", f"/gists/{GIST_ID}", (200, g))
    with pytest.raises(GistError, match="only in case"):
        download(GIST_ID, tmp_path / "out")


# --------------------------------------------------------------------------- limits and retries


def test_short_rate_limit_waits_are_waited_out(scripted, monkeypatch, tmp_path):
    api = scripted()
    reset = str(int(time.time()) + 1)
    api.script(
        "GET",
        f"/gists/{GIST_ID}",
        (
            403,
            {"message": "API rate limit exceeded"},
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset},
        ),
        (429, {"message": "secondary rate limit"}, {"retry-after": "1"}),
        (200, github_gist(api.url)),
    )
    api.script(
        "GET",
        f"/octocat/{GIST_ID}/raw/db9c55113504e46fa076e7df3a04ce592e2e86d8/deploy.prototxt",
        (200, DEPLOY.encode()),
    )
    monkeypatch.setenv("CAFFEZOO_GIST_API", api.url)
    start = time.monotonic()
    download(GIST_ID, tmp_path / "m")
    assert time.monotonic() - start >= 1.0
    assert len(api.requests("GET", f"/gists/{GIST_ID}")) == 3


def test_long_rate_limit_waits_fail_with_the_reset_time(scripted):
    api = scripted()
    reset = int(time.time()) + 3600
    api.script(
        "GET",
        f"/gists/{GIST_ID}",
        (
            403,
            {"message": "API rate limit exceeded"},
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
        ),
    )
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(reset))
    with GistClient(api.url, max_wait=60) as c, pytest.raises(GistError, match=f"resets at {stamp}"):
        c.get(GIST_ID)
    assert len(api.requests()) == 1


def test_server_errors_are_retried_with_backoff_then_reported(scripted):
    api = scripted()
    api.script(
        "GET",
        f"/gists/{GIST_ID}",
        (502, {"message": "Bad Gateway"}),
        (503, {"message": "busy"}),
        (200, github_gist(api.url)),
    )
    with GistClient(api.url, backoff=0.01) as c:
        assert c.get(GIST_ID).description == "Octo Net"
    api.script("GET", "/gists/broken", (500, {"message": "Server Error"}))
    with (
        GistClient(api.url, backoff=0.01, retries=2) as c,
        pytest.raises(GistError, match="500 Server Error"),
    ):
        c.get("broken")
    assert len(api.requests("GET", "/gists/broken")) == 3


def test_a_create_is_not_retried_blindly(scripted):
    """A POST that failed with 5xx may have created the gist: retrying would make two."""
    api = scripted()
    api.script("POST", "/gists", (502, {"message": "Bad Gateway"}))
    with GistClient(api.url, token="t", backoff=0.01) as c, pytest.raises(GistError, match="502"):
        c.create("d", False, {"a.txt": "a"})
    assert len(api.requests("POST")) == 1


def test_no_token_for_writes_says_where_to_put_one(tmp_path, scripted, monkeypatch):
    monkeypatch.setenv("CAFFEZOO_GIST_API", scripted().url)
    with pytest.raises(GistError, match="CAFFEZOO_TOKEN or GITHUB_TOKEN, or put the token in ~/.gist"):
        upload(model_copy(tmp_path))


def test_token_from_the_gist_file(zoo, monkeypatch, tmp_path):
    """~/.gist is where the Ruby tool that Caffe's script used keeps the token."""
    monkeypatch.delenv("CAFFEZOO_TOKEN")
    (Path(os.environ["HOME"]) / ".gist").write_text(zoo.token + "\n")
    r = upload(model_copy(tmp_path))
    assert zoo.http.get(f"/gists/{r.gist_id}").json()["owner"]["login"] == zoo.login


def test_a_refused_token_is_named_but_never_printed(zoo, monkeypatch, tmp_path, cli):
    monkeypatch.setenv("CAFFEZOO_TOKEN", "czt_wrong_token_value")
    r = cli("gist", "upload", model_copy(tmp_path))
    assert r.code == 1 and "Bad credentials" in r.stderr and "was refused" in r.stderr
    assert "czt_wrong_token_value" not in r.stderr + r.stdout


# --------------------------------------------------------------------------- upload and download


def test_round_trip_of_a_bundled_model(zoo, tmp_path):
    src = model_copy(tmp_path / "src")
    readme_before = (src / "readme.md").read_text()
    r = upload(src)
    assert r.action == "create" and r.public is False and r.description == "BAIR/BVLC AlexNet Model"
    assert r.sent == sorted(p.name for p in (BUNDLED_DIR / "bvlc_alexnet").iterdir())
    assert {"deploy.prototxt", "readme.md", "solver.prototxt", "train_val.prototxt"} <= set(r.sent)
    skipped = {s.name: s.reason for s in r.skipped}
    assert set(skipped) == {
        "bvlc_alexnet.caffemodel",
        "bvlc_alexnet.caffemodel.partial",
        "mean.binaryproto",
        "empty.txt",
        "extras",
        ".hidden",
    }
    assert "never uploaded" in skipped["bvlc_alexnet.caffemodel"] and "binary" in skipped["mean.binaryproto"]
    assert "subfolder" in skipped["extras"] and "empty" in skipped["empty.txt"]
    # gist_id written back: exactly one line added, the rest byte for byte.
    after = (src / "readme.md").read_text()
    assert after.replace(f"gist_id: {r.gist_id}\n", "") == readme_before
    remote = remote_files(zoo, r.gist_id)
    assert remote["readme.md"] == after  # the uploaded readme carries its own gist_id
    out = download(r.gist_id, tmp_path / "dst")
    for name in r.sent:
        assert (out.path / name).read_bytes() == (src / name).read_bytes()
    assert sorted(p.name for p in out.path.iterdir()) == r.sent
    assert not [p for p in out.problems if p.severity == "error"]


_watched: list[tuple[str, str]] | None = (
    None  # (event, path) of file opens and listings, while a test watches
)
_hooked: list = []


def _audit(event: str, args: tuple) -> None:
    if (
        _watched is not None
        and event in ("open", "os.scandir", "os.listdir")
        and isinstance(args[0], (str, os.PathLike))
    ):
        _watched.append((event, os.fspath(args[0])))


def test_upload_reads_the_model_directory_once(zoo, tmp_path):
    """Validating, loading and collecting the model info share one listing and one read of each file."""
    global _watched
    d = model_copy(tmp_path)
    gist_id = upload(d).gist_id  # creates the gist and writes gist_id back: the next upload only reads
    (d / "deploy.prototxt").write_text(DEPLOY + "# tuned\n")
    if (
        _audit not in _hooked
    ):  # a hook stays for the process: added once, it records only while _watched is a list
        sys.addaudithook(_audit)
        _hooked.append(_audit)
    _watched = []
    try:
        r = upload(d)
    finally:
        seen, _watched = _watched, None
    assert r.action == "update" and r.sent == ["deploy.prototxt"] and r.gist_id == gist_id
    inside = [(event, Path(path).relative_to(d)) for event, path in seen if Path(path).is_relative_to(d)]
    assert [path for event, path in inside if event != "open"] == [Path(".")]  # one listing
    opened = [path.name for event, path in inside if event == "open"]
    readable = {
        p.name for p in d.iterdir() if p.is_file() and ".caffemodel" not in p.name and p.name[0] != "."
    }
    assert sorted(opened) == sorted(readable)  # each file once; weights and hidden files never


def test_public_flag_and_visibility_after_creation(zoo, tmp_path):
    r = upload(model_copy(tmp_path), public=True)
    assert r.public and zoo.http.get(f"/gists/{r.gist_id}").json()["public"] is True
    again = upload(tmp_path / "bvlc_alexnet", public=False)
    assert again.action == "unchanged" and "stays public" in again.warnings[0]


def test_update_prune_and_rename(zoo, tmp_path):
    d = model_copy(tmp_path)
    (d / "notes.txt").write_text("notes\n")
    gist_id = upload(d).gist_id
    history = lambda: zoo.http.get(f"/gists/{gist_id}").json()["history"]  # noqa: E731
    assert upload(d).action == "unchanged" and len(history()) == 2
    # Without --prune: new and changed files are sent, remote-only files are kept.
    (d / "solver.prototxt").write_text('net: "train_val.prototxt"\nbase_lr: 0.01\n')
    (d / "deploy.prototxt").write_text(DEPLOY + "# tuned\n")
    (d / "notes.txt").unlink()
    r = upload(d)
    assert r.action == "update" and r.sent == ["deploy.prototxt", "solver.prototxt"]
    assert r.kept_remote == ["notes.txt"] and r.deleted == [] and r.renamed == []
    remote = remote_files(zoo, gist_id)
    assert remote["deploy.prototxt"].endswith("# tuned\n") and "notes.txt" in remote
    assert len(history()) == 3
    # With --prune: gone files are deleted, and a local rename is a rename in the gist.
    (d / "train_val.prototxt").rename(d / "train.prototxt")
    r = upload(d, prune=True)
    assert r.renamed == [("train_val.prototxt", "train.prototxt")] and r.deleted == ["notes.txt"]
    assert r.sent == []
    assert set(remote_files(zoo, gist_id)) == {
        "readme.md",
        "deploy.prototxt",
        "solver.prototxt",
        "train.prototxt",
    }
    assert len(history()) == 4


def test_upload_changes_the_description_with_the_name(zoo, tmp_path):
    from caffezoo.frontmatter import write_keys

    d = model_copy(tmp_path)
    gist_id = upload(d).gist_id
    write_keys(d / "readme.md", {"name": "AlexNet, retrained"})
    upload(d)
    g = zoo.http.get(f"/gists/{gist_id}").json()
    assert (
        g["description"] == "AlexNet, retrained"
        and "name: AlexNet, retrained" in g["files"]["readme.md"]["content"]
    )


def test_dry_run_sends_and_writes_nothing(zoo, tmp_path):
    d = model_copy(tmp_path)
    before = (d / "readme.md").read_bytes()
    r = upload(d, dry_run=True)
    assert r.dry_run and r.action == "create" and r.gist_id is None and "readme.md" in r.sent
    assert (d / "readme.md").read_bytes() == before
    assert zoo.http.get("/gists").json() == []
    gist_id = upload(d).gist_id
    (d / "deploy.prototxt").unlink()
    r = upload(d, dry_run=True, prune=True)
    assert r.deleted == ["deploy.prototxt"] and "deploy.prototxt" in remote_files(zoo, gist_id)


def test_invalid_model_is_refused_before_any_request(zoo, tmp_path):
    d = model_copy(tmp_path)
    (d / "readme.md").write_text("---\nname: X\nsha1: nothex\n---\n")
    with pytest.raises(ModelDirError, match=r"not uploaded.*\n.*readme.md:3: sha1: expected 40 hexadecimal"):
        upload(d)
    (d / "readme.md").write_text("---\nlicense: MIT\ncaffe_version: '1'\n---\n")
    with pytest.raises(ModelDirError, match="upload needs the key name"):
        upload(d)
    assert zoo.http.get("/gists").json() == []


def test_updating_someone_elses_gist_fails_clearly(zoo, tmp_path, monkeypatch):
    d = model_copy(tmp_path)
    upload(d)
    monkeypatch.setenv("CAFFEZOO_TOKEN", zoo.other().token)
    (d / "deploy.prototxt").write_text(DEPLOY + "# mine\n")
    with pytest.raises(GistError, match="not found on 127.0.0.1 .404.; it may belong to another account"):
        upload(d)


def test_download_refuses_to_overwrite_unless_forced(zoo, tmp_path, monkeypatch):
    gist_id = upload(model_copy(tmp_path / "src")).gist_id
    monkeypatch.chdir(tmp_path)
    first = download(f"{zoo.login}/{gist_id}")
    assert first.path == Path("models") / f"{zoo.login}-{gist_id}"
    (first.path / "local.txt").write_text("mine")
    with pytest.raises(ModelDirError, match="already exists and is not empty; pass --force"):
        download(f"{zoo.login}/{gist_id}")
    assert (first.path / "local.txt").exists()
    again = download(f"{zoo.url}/{zoo.login}/{gist_id}#file-readme-md", force=True)
    assert again.path == first.path and not (first.path / "local.txt").exists()
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        f"{zoo.login}-{gist_id}"
    ]  # no leftovers


def test_download_of_a_missing_gist(zoo, tmp_path):
    with pytest.raises(GistError, match="gist 0123456789abcdef0123: not found on 127.0.0.1"):
        download("0123456789abcdef0123", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_big_files_come_whole_through_raw_url(zoo, tmp_path):
    d = model_copy(tmp_path / "src")
    big = (d / "train_val.prototxt").read_text() + "# padding é\n" * 130000  # ~1.6 MB, still valid
    (d / "train_val.prototxt").write_text(big)
    r = upload(d)
    assert zoo.http.get(f"/gists/{r.gist_id}").json()["files"]["train_val.prototxt"]["truncated"] is True
    out = download(r.gist_id, tmp_path / "dst")
    assert (out.path / "train_val.prototxt").read_text() == big


def test_list_own_and_a_users_gists(zoo, tmp_path):
    secret = upload(model_copy(tmp_path / "a")).gist_id
    public = upload(model_copy(tmp_path / "b", "bvlc_googlenet"), public=True).gist_id
    assert {g.id for g in list_gists()} == {secret, public}
    assert [g.id for g in list_gists(zoo.login)] == [public]
    assert len(list_gists(limit=1)) == 1


# --------------------------------------------------------------------------- CLI, resolver, seed scripts


def test_cli_upload_download_list(zoo, cli, tmp_path):
    d = model_copy(tmp_path)
    r = cli("gist", "upload", d, "--dry-run")
    assert (
        r.code == 0
        and "would create secret gist" in r.stdout
        and "skip    bvlc_alexnet.caffemodel" in r.stdout
    )
    r = cli("gist", "upload", d, "--json")
    import json

    data = json.loads(r.stdout)
    assert r.code == 0 and data["action"] == "create" and data["html_url"].endswith(data["gist_id"])
    r = cli("gist", "download", data["gist_id"], tmp_path / "copy")
    assert r.code == 0 and "downloaded gist" in r.stdout
    r = cli("gist", "download", data["gist_id"], tmp_path / "copy")
    assert r.code == 1 and r.stderr.startswith("error:") and "Traceback" not in r.stderr
    r = cli("gist", "list", "--json")
    assert [g["id"] for g in json.loads(r.stdout)] == [data["gist_id"]]
    r = cli("gist", "list")
    assert data["gist_id"] in r.stdout


def test_cli_prints_the_apis_words_as_text_not_markup(scripted, cli, tmp_path, monkeypatch):
    """Descriptions and file names are anyone's: rich markup in them is shown, never obeyed."""
    api = scripted()
    monkeypatch.setenv("CAFFEZOO_GIST_API", api.url)
    monkeypatch.setenv("CAFFEZOO_TOKEN", "t")
    monkeypatch.setenv("COLUMNS", "250")  # a table row on one line
    g = github_gist(api.url) | {"description": "x[/red]"}
    g["files"]["a[bold]b.txt"] = {"filename": "a[bold]b.txt", "content": "text"}
    api.script("GET", "/gists", (200, [g]))
    api.script("GET", f"/gists/{GIST_ID}", (200, g))
    api.script(
        "GET",
        f"/octocat/{GIST_ID}/raw/db9c55113504e46fa076e7df3a04ce592e2e86d8/deploy.prototxt",
        (200, DEPLOY.encode()),
    )
    r = cli("gist", "list")
    assert r.code == 0 and "x[/red]" in r.stdout and "a[bold]b.txt" in r.stdout
    r = cli("gist", "download", GIST_ID, tmp_path / "m")
    assert r.code == 0 and "a[bold]b.txt" in r.stdout


def test_model_argument_may_be_a_gist(zoo, cli, tmp_path, monkeypatch):
    d = model_copy(tmp_path)
    gist_id = upload(d).gist_id
    r = cli("show", gist_id, "--json")
    assert r.code == 0, r.stderr
    import json

    shown = json.loads(r.stdout)
    assert shown["front_matter"]["gist_id"] == gist_id and shown["title"] == "BAIR/BVLC AlexNet Model"
    assert Path(shown["path"]).is_relative_to(Path(os.environ["CAFFEZOO_HOME"]))
    monkeypatch.setenv("CAFFEZOO_OFFLINE", "1")
    monkeypatch.setenv("CAFFEZOO_GIST_API", "http://127.0.0.1:9")
    assert cli("show", f"{zoo.url}/{zoo.login}/{gist_id}").code == 0  # from the cache
    r = cli("show", "f" * 32)
    assert r.code == 1 and "not in the cache" in r.stderr


def test_seed_scripts_wrap_the_commands(zoo, tmp_path):
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "caffezoo").write_text(f'#!/bin/sh\nexec {sys.executable} -m caffezoo "$@"\n')
    (shim / "caffezoo").chmod(0o755)
    env = dict(os.environ, PATH=f"{shim}:/usr/bin:/bin", PYTHONPATH=str(ROOT / "src"))
    d = model_copy(tmp_path / "work")
    up = subprocess.run(
        ["bash", ROOT / "scripts" / "upload_model_to_gist.sh", d],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 0, up.stderr
    gist_id = (d / "readme.md").read_text().split("gist_id: ")[1].split()[0]
    down = subprocess.run(
        ["bash", ROOT / "scripts" / "download_model_from_gist.sh", gist_id, tmp_path / "m"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "m" / gist_id / "deploy.prototxt").read_text() == DEPLOY
    usage = subprocess.run(
        ["bash", ROOT / "scripts" / "download_model_from_gist.sh"], env=env, capture_output=True, text=True
    )
    assert usage.returncode == 2 and "usage: download_model_from_gist.sh <gist_id> <dirname>" in usage.stderr


def test_a_raw_url_sending_more_than_the_gist_says_is_cut_off_while_reading():
    """A hostile raw_url cannot fill the client's memory: the body is read up to the file's
    size and refused past it, not read whole and compared afterwards."""
    from fault_server import FaultServer

    with FaultServer() as server:
        server.route("/raw/big", b"x" * (8 << 20))
        client = GistClient(server.url(""), token=None, retries=0)
        with pytest.raises(GistError, match="more than 100 bytes"):
            client.raw(server.url("/raw/big"), 100)
        server.route("/raw/ok", b"y" * 100)
        assert client.raw(server.url("/raw/ok"), 100) == b"y" * 100


def test_pipes_and_devices_in_the_model_directory_are_never_waited_on(tmp_path):
    """A FIFO blocks its reader until someone writes, and /dev/zero never ends: validate says a
    prototxt that is one cannot be read, upload leaves other such files out, neither waits."""
    d = model_copy(tmp_path)
    os.mkfifo(d / "notes.txt")
    os.mkfifo(d / "extra.prototxt")  # its kind is told by its content, which cannot be read
    os.mkfifo(d / "other_deploy.prototxt")  # its kind is told by its name
    (d / "zeros.prototxt").symlink_to("/dev/zero")

    def run(*args: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                [sys.executable, "-m", "caffezoo", *args], capture_output=True, text=True, timeout=60
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"`caffezoo {' '.join(args)}` waited on a pipe")

    r = run("validate", str(d))
    errors = {line.split(":")[0] for line in r.stdout.splitlines() if ": error: " in line}
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert errors == {str(d / n) for n in ("extra.prototxt", "other_deploy.prototxt", "zeros.prototxt")}
    assert r.stdout.count("not a regular file") == 3, r.stdout
    for name in ("extra.prototxt", "other_deploy.prototxt", "zeros.prototxt"):
        (d / name).unlink()
    r = run("gist", "upload", "--dry-run", str(d))
    assert r.returncode == 0 and "skip    notes.txt: not a regular file" in r.stdout, r.stdout + r.stderr


def test_a_rate_limit_reset_beyond_any_date_is_no_traceback(scripted):
    """A reset of 400 nines is float inf: datetime.fromtimestamp raised OverflowError."""
    api = scripted()
    api.script(
        "GET",
        f"/gists/{GIST_ID}",
        (
            403,
            {"message": "API rate limit exceeded"},
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "9" * 400},
        ),
    )
    with GistClient(api.url, max_wait=60) as c, pytest.raises(GistError, match="rate limit exceeded"):
        c.get(GIST_ID)
