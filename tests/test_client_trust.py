"""Client trust levels: a model directory from a gist does not read this machine's files.

``caffezoo gist download ID d && caffezoo download d`` with ``caffemodel_url:
file:///etc/passwd`` must read nothing, print no digest, and say how to opt in
(``--allow-local``); the weights may never replace one of the model's own files.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest
from model_helpers import write_model
from web_helpers import DEPLOY

PASSWD = Path("/etc/passwd")


def gist_model(gists, tmp_path: Path, cli, front_matter: str, name: str = "d") -> Path:
    """Serve a model with ``front_matter`` as a gist and download it as the victim would."""
    readme = "---\n" + front_matter.strip("\n") + "\n---\nA net.\n"
    gist_id = uuid.uuid4().hex
    files = {
        n: {"filename": n, "content": c} for n, c in (("readme.md", readme), ("deploy.prototxt", DEPLOY))
    }
    gists.script(
        "GET", f"/gists/{gist_id}", (200, {"id": gist_id, "owner": {"login": "eve"}, "files": files})
    )
    target = tmp_path / name
    r = cli("gist", "download", gist_id, target)
    assert r.code == 0, r.stderr
    return target


@pytest.fixture
def zoo(scripted, monkeypatch):
    """A Gist API that serves what the test scripts (function-scoped: no session-wide server)."""
    api = scripted()
    monkeypatch.setenv("CAFFEZOO_GIST_API", api.url)
    return api


def test_a_gist_naming_a_local_file_reads_nothing(zoo, cli, tmp_path):
    secret = PASSWD.read_bytes()
    real = hashlib.sha1(secret).hexdigest()
    for sha1 in (real, "0" * 40):  # the right hash, and a wrong one whose answer would leak it
        d = gist_model(
            zoo,
            tmp_path,
            cli,
            f"name: Trap\ncaffemodel: w.caffemodel\ncaffemodel_url: file://{PASSWD}\nsha1: {sha1}",
            name=f"trap-{sha1[:4]}",
        )
        r = cli("download", d)
        assert r.code != 0
        assert "caffemodel_url" in r.stderr and "--allow-local" in r.stderr
        assert real not in r.stdout + r.stderr  # no digest of the file was computed or shown
        assert not (d / "w.caffemodel").exists()
        assert not any(p.is_file() and p.read_bytes() == secret for p in tmp_path.rglob("*"))
    home = Path(os.environ["CAFFEZOO_HOME"])
    assert not any(p.is_file() and p.read_bytes() == secret for p in home.rglob("*"))


def test_local_mirrors_in_front_matter_are_refused_too(zoo, cli, tmp_path):
    d = gist_model(
        zoo,
        tmp_path,
        cli,
        "name: Trap\ncaffemodel: w.caffemodel\ncaffemodel_url: http://127.0.0.1:9/w\n"
        f"sha1: {'1' * 40}\nmirrors: [file:///etc/hostname]",
    )
    r = cli("download", d)
    assert r.code != 0 and "mirrors[0]" in r.stderr and "--allow-local" in r.stderr


def test_allow_local_is_the_user_s_opt_in(zoo, cli, tmp_path):
    blob = tmp_path / "lab" / "w.caffemodel"
    blob.parent.mkdir()
    blob.write_bytes(os.urandom(4096))
    sha1 = hashlib.sha1(blob.read_bytes()).hexdigest()
    d = gist_model(
        zoo,
        tmp_path,
        cli,
        f"name: Lab Net\ncaffemodel: w.caffemodel\ncaffemodel_url: {blob.as_uri()}\nsha1: {sha1}",
    )
    assert cli("download", d).code != 0
    r = cli("download", d, "--allow-local")
    assert r.code == 0, r.stderr
    assert (d / "w.caffemodel").read_bytes() == blob.read_bytes()


def test_file_mirrors_the_user_set_herself_stay_allowed(cli, tmp_path, monkeypatch):
    data = os.urandom(4096)
    sha1 = hashlib.sha1(data).hexdigest()
    mirror = tmp_path / "mirror"
    (mirror / "blobs" / "sha1").mkdir(parents=True)
    (mirror / "blobs" / "sha1" / sha1).write_bytes(data)
    monkeypatch.setenv("CAFFEZOO_MIRRORS", mirror.as_uri())
    d = write_model(
        tmp_path / "net",
        f"name: Net\ncaffemodel: w.caffemodel\ncaffemodel_url: http://127.0.0.1:9/w\nsha1: {sha1}",
        files={"deploy.prototxt": DEPLOY},
    )
    r = cli("download", d)
    assert r.code == 0, r.stderr
    assert (d / "w.caffemodel").read_bytes() == data


def test_the_weights_never_replace_the_model_s_own_files(zoo, cli, tmp_path, monkeypatch):
    data = os.urandom(4096)
    sha1 = hashlib.sha1(data).hexdigest()
    mirror = tmp_path / "mirror"
    (mirror / "blobs" / "sha1").mkdir(parents=True)
    (mirror / "blobs" / "sha1" / sha1).write_bytes(data)
    monkeypatch.setenv("CAFFEZOO_MIRRORS", mirror.as_uri())  # the bytes would be there to install
    for i, own in enumerate(
        ("deploy.prototxt", "readme.md", "README.md", "Deploy.prototxt", "train_val.prototxt")
    ):
        d = gist_model(
            zoo,
            tmp_path,
            cli,
            f"name: Clash\ncaffemodel: {own}\ncaffemodel_url: http://127.0.0.1:9/w\nsha1: {sha1}",
            name=f"clash-{i}",
        )
        before = {p.name: p.read_bytes() for p in d.iterdir()}
        r = cli("download", d)
        assert r.code != 0, own
        assert "caffemodel" in r.stderr and "own files" in r.stderr and own in r.stderr
        assert {p.name: p.read_bytes() for p in d.iterdir()} == before  # nothing was replaced
        assert "caffemodel" in cli("validate", d).stderr + cli("validate", d).stdout
    # Any other file of the model info counts too, and --output elsewhere is fine.
    d = write_model(
        tmp_path / "notes",
        f"name: Notes\ncaffemodel: notes.txt\ncaffemodel_url: http://127.0.0.1:9/w\nsha1: {sha1}",
        files={"deploy.prototxt": DEPLOY, "notes.txt": "my notes\n"},
    )
    r = cli("download", d)
    assert r.code != 0 and "notes.txt" in r.stderr and (d / "notes.txt").read_text() == "my notes\n"
    r = cli("download", d, "--output", tmp_path / "elsewhere.caffemodel")
    assert r.code == 0, r.stderr
    assert (tmp_path / "elsewhere.caffemodel").read_bytes() == data


def test_names_windows_reads_as_the_model_s_own_files_clash_too(zoo, cli, tmp_path, monkeypatch):
    """Windows drops trailing dots and spaces and reads ``name::$DATA`` as ``name``; a
    case-insensitive file system folds case: each of these would overwrite the prototxt or
    readme there, so each is refused everywhere (a model directory moves between machines)."""
    data = os.urandom(4096)
    sha1 = hashlib.sha1(data).hexdigest()
    mirror = tmp_path / "mirror"
    (mirror / "blobs" / "sha1").mkdir(parents=True)
    (mirror / "blobs" / "sha1" / sha1).write_bytes(data)
    monkeypatch.setenv("CAFFEZOO_MIRRORS", mirror.as_uri())
    for i, own in enumerate(
        (
            "deploy.prototxt.",
            "deploy.prototxt ",
            "Deploy.Prototxt. .",
            "readme.md.",
            "README.MD ",
            "readme.md::$DATA",
            "README.md::$data",
            "deploy.prototxt::$DATA",
            "notes.txt.",
            "solver.prototxt...",
        )
    ):
        d = write_model(
            tmp_path / f"win-{i}",
            f"name: Clash\ncaffemodel: '{own}'\ncaffemodel_url: http://127.0.0.1:9/w\nsha1: {sha1}",
            files={"deploy.prototxt": DEPLOY, "notes.txt": "my notes\n"},
        )
        before = {p.name: p.read_bytes() for p in d.iterdir()}
        r = cli("download", d)
        assert r.code != 0, own
        # Refused as a clash, or (trailing blanks) by the file-name rules: either way, by key.
        assert "caffemodel" in r.stderr and ("own files" in r.stderr or "blanks" in r.stderr), own
        assert {p.name: p.read_bytes() for p in d.iterdir()} == before, own
    # A name that merely starts like one of them is the user's to pick.
    d = write_model(
        tmp_path / "fine",
        f"name: Fine\ncaffemodel: deploy.prototxt.caffemodel\ncaffemodel_url: http://127.0.0.1:9/w\nsha1: {sha1}",
        files={"deploy.prototxt": DEPLOY},
    )
    r = cli("download", d)
    assert r.code == 0, r.stderr
    assert (d / "deploy.prototxt.caffemodel").read_bytes() == data
