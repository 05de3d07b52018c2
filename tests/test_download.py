"""`caffezoo download`, `caffezoo cache` and the seed's script, as people and machines run them.

Real processes against the fault server: killed mid-file, run twice at once, run under a
file-size limit; after each, the final path holds the right file or nothing.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from download_helpers import (
    blob,
    cache_blob,
    no_temp_files,
    partial_files,
    partial_size,
    sha1,
    wait_for,
    weights_model,
)
from fault_server import FaultServer
from model_helpers import ROOT

import caffezoo.download
from caffezoo.errors import FrontMatterError

DATA = blob(200_000, seed=11)
BIG = blob(3 << 20, seed=12)  # big enough to be written to disk (1 MiB batches) before it ends


@pytest.fixture
def srv():
    with FaultServer() as s:
        yield s


def fast_env(**extra: str) -> dict[str, str]:
    return {"CAFFEZOO_TIMEOUT": "5", "CAFFEZOO_RETRIES": "2", **extra}


@pytest.fixture(autouse=True)
def _fast(monkeypatch):
    for k, v in fast_env().items():
        monkeypatch.setenv(k, v)


def popen(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "caffezoo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


# -- the command ------------------------------------------------------------------------


def test_download_then_already_there(cli, srv, tmp_path):
    srv.route("/w", DATA)
    m = weights_model(tmp_path / "net", srv.url("/w"), DATA)
    r = cli("download", m)
    assert r.code == 0, r.stderr
    assert f"downloaded 195.3 KiB from {srv.url('/w')}, sha1 ok: {m / 'net.caffemodel'}" in r.stdout
    assert (m / "net.caffemodel").read_bytes() == DATA
    r = cli("download", m)
    assert r.code == 0 and "already there, sha1 ok" in r.stdout
    assert len(srv.requests_for("/w")) == 1
    assert no_temp_files(m)


def test_already_there_needs_no_network_stack(cli, srv, tmp_path):
    srv.route("/w", DATA)
    m = weights_model(tmp_path / "net", srv.url("/w"), DATA)
    assert cli("download", m).code == 0
    code = (
        "import sys, caffezoo.download as d; r = d.download(sys.argv[1]); "
        "print(r.status, 'httpx' in sys.modules, 'filelock' in sys.modules)"
    )
    p = subprocess.run([sys.executable, "-c", code, str(m)], capture_output=True, text=True, timeout=60)
    assert p.stdout.split() == ["present", "False", "False"], p.stderr


def test_json_output_and_verify(cli, srv, tmp_path, caffezoo_home):
    srv.route("/w", DATA)
    m = weights_model(tmp_path / "net", srv.url("/w"), DATA)
    r = cli("download", "--json", m)
    (out,) = json.loads(r.stdout)
    assert out == {
        "model": str(m),
        "ok": True,
        "error": None,
        "path": str(m / "net.caffemodel"),
        "status": "downloaded",
        "sha1": sha1(DATA),
        "sha256": None,
        "size": len(DATA),
        "source": srv.url("/w"),
        "blob": str(cache_blob(caffezoo_home, sha1(DATA))),
        "how": "link",
        "sources": [srv.url("/w")],
        "bad_sources": [],
    }
    r = cli("download", "--json", "--verify", m)
    assert json.loads(r.stdout)[0]["status"] == "present"
    weights = m / "net.caffemodel"
    st = weights.stat()
    os.chmod(weights, 0o644)
    with open(weights, "r+b") as f:  # rot that keeps size and mtime: the record cannot see it
        f.write(bytes([DATA[0] ^ 0xFF]))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert json.loads(cli("download", "--json", m).stdout)[0]["status"] == "present"
    r = cli("download", "--json", "--verify", m)
    assert json.loads(r.stdout)[0]["status"] == "downloaded" and weights.read_bytes() == DATA


def test_quiet_prints_nothing_on_success(cli, srv, tmp_path):
    srv.route("/w", DATA)
    r = cli("download", "-q", weights_model(tmp_path / "net", srv.url("/w"), DATA))
    assert (r.code, r.stdout, r.stderr) == (0, "", "")


def test_output_symlink_and_usage_errors(cli, srv, tmp_path, caffezoo_home):
    srv.route("/w", DATA)
    m = weights_model(tmp_path / "net", srv.url("/w"), DATA)
    out = tmp_path / "elsewhere" / "alex.caffemodel"
    r = cli("download", m, "-o", out, "--symlink")
    assert r.code == 0, r.stderr
    assert out.is_symlink() and Path(os.readlink(out)) == cache_blob(caffezoo_home, sha1(DATA))
    assert not (m / "net.caffemodel").exists()
    r = cli("download", m, m, "-o", out)
    assert r.code == 2 and "--output takes exactly one MODEL" in r.stderr
    r = cli("download", m, "--symlink", "--copy")
    assert r.code == 2 and "exclude each other" in r.stderr


def test_several_models_one_failing(cli, srv, tmp_path):
    srv.route("/w", DATA)
    good = weights_model(tmp_path / "good", srv.url("/w"), DATA)
    bad = weights_model(tmp_path / "bad", srv.url("/missing"), blob(100, seed=1))
    r = cli("download", "--json", bad, good, "nosuchmodel")
    assert r.code == 1
    out = json.loads(r.stdout)
    assert [o["ok"] for o in out] == [False, True, False]
    assert "HTTP 404 Not Found" in out[0]["error"]
    assert "no such directory, and not a bundled model" in out[2]["error"]
    assert f"error: {bad}: net.caffemodel: could not download it" in r.stderr
    assert (good / "net.caffemodel").read_bytes() == DATA
    assert not (bad / "net.caffemodel").exists()


@pytest.mark.parametrize(
    "faults, message",
    [
        ({"corrupt": True}, "wrong file: sha1: expected"),
        ({"statuses": [404]}, "HTTP 404 Not Found"),
        ({"statuses": [500] * 5}, "HTTP 500 Internal Server Error"),
        ({"statuses": [429], "retry_after": "9999"}, "asks to retry after 9999 s"),
        ({"content_length": 150_000}, "wrong file: sha1: expected"),
        (
            {"content_type": "text/html", "body": b"<html>log in</html>"},
            "sent a web page, not the file",
        ),
    ],
)
def test_every_failing_fault_exits_1_and_leaves_no_file(cli, srv, tmp_path, faults, message):
    srv.route("/w", **{"body": DATA, **faults})
    m = weights_model(tmp_path / "net", srv.url("/w"), DATA)
    r = cli("download", m)
    assert r.code == 1
    assert message in r.stderr and srv.url("/w") in r.stderr
    assert not (m / "net.caffemodel").exists() and no_temp_files(m)


def test_a_weights_url_that_does_not_parse_is_an_error_line(cli_process, tmp_path):
    m = weights_model(tmp_path / "net", "http://127.0.0.1:99999/w", DATA)
    r = cli_process("download", m)
    assert r.code == 1 and "Traceback" not in r.stderr
    assert "url http://127.0.0.1:99999/w: not a valid URL: Port out of range" in r.stderr
    assert not (m / "net.caffemodel").exists() and no_temp_files(m)


def test_missing_front_matter_keys_are_named(cli, tmp_path):
    from model_helpers import write_model

    m = write_model(tmp_path / "nourl", "name: X\ncaffemodel: x.caffemodel\n")
    r = cli("download", m)
    assert r.code == 1
    assert f"{m / 'readme.md'}: download needs the keys caffemodel_url, sha1 in the front matter" in r.stderr
    with pytest.raises(FrontMatterError):
        caffezoo.download.download(m)


def test_bundled_model_offline_fails_fast_and_clearly(cli, monkeypatch, caffezoo_home):
    monkeypatch.setenv("CAFFEZOO_OFFLINE", "1")
    r = cli("download", "bvlc_alexnet")
    assert r.code == 1
    assert "bvlc_alexnet.caffemodel: not in the cache" in r.stderr and "CAFFEZOO_OFFLINE is set" in r.stderr
    assert not (caffezoo_home / "models" / "bvlc_alexnet" / "bvlc_alexnet.caffemodel").exists()


def test_token_goes_to_the_gist_api_host_and_not_across_a_redirect(cli, monkeypatch, tmp_path):
    with FaultServer("127.0.0.1") as api, FaultServer("127.0.0.2") as storage:
        storage.route("/blob", DATA)
        api.route("/w", redirect=storage.url("/blob"))
        monkeypatch.setenv("CAFFEZOO_GIST_API", api.url(""))
        monkeypatch.setenv("CAFFEZOO_TOKEN", "t0ken")
        r = cli("download", weights_model(tmp_path / "net", api.url("/w"), DATA))
        assert r.code == 0, r.stderr
        assert api.requests_for("/w")[0].headers["authorization"] == "Bearer t0ken"
        assert "authorization" not in storage.requests_for("/blob")[0].headers


def test_mirrors_from_the_environment_and_the_front_matter(cli, monkeypatch, srv, tmp_path):
    digest = sha1(DATA)
    with FaultServer("127.0.0.2") as mirror:
        mirror.route(f"/blobs/sha1/{digest}", DATA)
        m = weights_model(tmp_path / "net", srv.url("/gone"), DATA, mirrors=f"[{srv.url('/fm-mirror')}]")
        srv.route("/fm-mirror", DATA)
        r = cli("download", "--json", m)
        assert json.loads(r.stdout)[0]["source"] == srv.url("/fm-mirror")  # url 404, then front-matter mirror
        (m / "net.caffemodel").unlink()
        assert cli("cache", "rm", "--all").code == 0
        monkeypatch.setenv("CAFFEZOO_MIRRORS", mirror.url(""))
        r = cli("download", "--json", m)
        assert json.loads(r.stdout)[0]["source"] == f"{mirror.url('')}/blobs/sha1/{digest}"


def test_corrupt_cache_blob_is_caught_and_repaired(cli, srv, tmp_path, caffezoo_home):
    srv.route("/w", DATA)
    m = weights_model(tmp_path / "net", srv.url("/w"), DATA)
    assert cli("download", m).code == 0
    cached = cache_blob(caffezoo_home, sha1(DATA))
    os.chmod(cached, 0o644)
    with open(cached, "r+b") as f:  # bit rot in the cache (the model file shares the inode)
        f.write(b"\0\0\0")
    r = cli("cache", "verify")
    assert r.code == 1 and f"{cached}: corrupt: its bytes hash to" in r.stderr
    r = cli("download", m)
    assert r.code == 0, r.stderr
    assert "is not the expected file" in r.stderr
    assert (m / "net.caffemodel").read_bytes() == DATA
    assert cli("cache", "verify", sha1(DATA)[:10]).code == 0


def test_cache_commands(cli, srv, tmp_path, caffezoo_home):
    srv.route("/w", DATA)
    m = weights_model(tmp_path / "net", srv.url("/w"), DATA)
    cli("download", m)
    r = cli("cache", "ls", "--json")
    (entry,) = json.loads(r.stdout)
    assert entry["sha1"] == sha1(DATA) and entry["used_by"] == [str(m / "net.caffemodel")]
    assert sha1(DATA) in cli("cache", "ls").stdout
    r = cli("cache", "prune", "--json")
    assert json.loads(r.stdout)["blobs"] == []  # still linked from the model directory
    (m / "net.caffemodel").unlink()
    r = cli("cache", "prune", "--dry-run")
    assert r.code == 0 and "would remove 1 blob(s)" in r.stdout
    assert cli("cache", "prune").code == 0
    assert json.loads(cli("cache", "ls", "--json").stdout) == []
    r = cli("cache", "rm", "abc")
    assert r.code == 2 and "at least 7 hex digits" in r.stderr
    r = cli("cache", "rm", "abcdef0")
    assert r.code == 2 and "no such blob" in r.stderr


# -- real processes -------------------------------------------------------------------------


def test_kill_9_mid_file_then_resume(srv, tmp_path, caffezoo_home, cli_process):
    route = srv.route("/w", BIG, etag='"big"', stall_after=(len(BIG) - 100_000, 60))
    m = weights_model(tmp_path / "net", srv.url("/w"), BIG)
    p = popen("download", m)
    try:
        wait_for(lambda: partial_size(caffezoo_home) >= 1 << 20, what="a partial file on disk")
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
    assert p.returncode == -signal.SIGKILL
    kept = partial_size(caffezoo_home)
    assert not (m / "net.caffemodel").exists() and no_temp_files(m)
    route.stall_after = None
    r = cli_process("download", m)
    assert r.code == 0, r.stderr
    assert (m / "net.caffemodel").read_bytes() == BIG
    resumed = srv.requests_for("/w")[-1]
    assert resumed.headers["range"] == f"bytes={kept}-" and resumed.headers["if-range"] == '"big"'
    assert partial_files(caffezoo_home) == []


def test_ctrl_c_exits_130_and_keeps_the_bytes(srv, tmp_path, caffezoo_home):
    srv.route("/w", BIG, stall_after=(len(BIG) - 100_000, 60))
    m = weights_model(tmp_path / "net", srv.url("/w"), BIG)
    p = popen("download", m)
    wait_for(lambda: partial_size(caffezoo_home) >= 1 << 20, what="a partial file on disk")
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130 and "error: interrupted; the bytes received are kept" in err
    assert "Traceback" not in err
    assert not (m / "net.caffemodel").exists()
    assert partial_size(caffezoo_home) >= 1 << 20


# -- in pieces ------------------------------------------------------------------------------

PIECES = blob(16 << 20, seed=14)  # with -c 4: pieces of 2 MiB


def sidecar_runs(home: Path) -> list[list[int]]:
    """The runs the sidecar of the (one) partial download lists as written."""
    for part in partial_files(home):
        try:
            return json.loads(part.with_suffix(".json").read_text()).get("runs", [])
        except (OSError, ValueError):
            continue
    return []


def held_from_0(home: Path) -> int:
    """Where the run of bytes that the sidecar lists from byte 0 ends."""
    runs = sidecar_runs(home)
    return runs[0][1] if runs and runs[0][0] == 0 else 0


def interrupt_in_pieces(srv, tmp_path, home, sig):
    """A `download -c 4` stopped by ``sig`` once pieces 0-2 are done and piece 3 has begun.

    Returns where the bytes it kept are: from 0 to past 6 MiB (pieces of 2 MiB).
    """
    # A link of 16 MiB/s a connection: one is not enough, the pieces go to four. Nothing past
    # 7 MiB comes.
    route = srv.route("/w", PIECES, etag='"v1"', stall_at=7 << 20, rate=16 << 20)
    m = weights_model(tmp_path / "net", srv.url("/w"), PIECES)
    p = popen("download", "-c", "4", m)
    try:
        wait_for(lambda: held_from_0(home) >= 6 << 20, what="pieces 0-2 in the sidecar")
        p.send_signal(sig)
        _, err = p.communicate(timeout=30)
    finally:
        p.kill()
    route.stall_at = None
    return m, route, p.returncode, err, held_from_0(home)  # pieces 0, 1, 2 and maybe part of 3


def test_kill_9_in_pieces_keeps_every_piece_done(srv, tmp_path, caffezoo_home, cli_process):
    m, route, code, _, held = interrupt_in_pieces(srv, tmp_path, caffezoo_home, signal.SIGKILL)
    assert code == -signal.SIGKILL and not (m / "net.caffemodel").exists()
    before = len(srv.requests_for("/w"))
    r = cli_process("download", "-c", "4", m)
    assert r.code == 0, r.stderr
    assert (m / "net.caffemodel").read_bytes() == PIECES
    again = srv.requests_for("/w")[before:]
    assert srv.served(again, 0, held) == 0  # not one byte it had was fetched again
    assert srv.served(again, held, len(PIECES)) >= len(PIECES) - held
    assert len(again) > 1 and all(r.headers["if-range"] == '"v1"' for r in again)  # each piece: If-Range
    assert partial_files(caffezoo_home) == []


def test_ctrl_c_in_pieces_exits_130_and_keeps_them(srv, tmp_path, caffezoo_home, cli_process):
    m, route, code, err, held = interrupt_in_pieces(srv, tmp_path, caffezoo_home, signal.SIGINT)
    assert code == 130 and "error: interrupted; the bytes received are kept" in err
    assert "Traceback" not in err and held > 6 << 20
    before = len(srv.requests_for("/w"))
    assert cli_process("download", m).code == 0
    assert srv.served(srv.requests_for("/w")[before:], 0, held) == 0
    assert (m / "net.caffemodel").read_bytes() == PIECES


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_the_bytes_of_the_piece_in_progress(srv, tmp_path, caffezoo_home, sig):
    # While bytes come, the sidecar lists a piece's progress at most once a second; the last of
    # them are listed as the transfer stops, when the process exits (its atexit hook). Leaving
    # through os._exit without it made the next run fetch them again.
    srv.route("/w", PIECES, etag='"v1"', stall_at=9 << 20, rate=16 << 20)  # piece 4 stops halfway
    m = weights_model(tmp_path / "net", srv.url("/w"), PIECES)
    p = popen("download", "-c", "4", m)
    try:
        wait_for(lambda: held_from_0(caffezoo_home) >= 8 << 20, what="pieces 0-3 in the sidecar")
        wait_for(lambda: partial_size(caffezoo_home) >= 9 << 20, what="piece 4 written up to the stall")
        p.send_signal(sig)
        p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 128 + sig and held_from_0(caffezoo_home) == 9 << 20


@pytest.mark.parametrize("damage", ["unreadable", "lying"])
def test_a_damaged_sidecar_is_never_trusted(srv, tmp_path, caffezoo_home, cli_process, damage):
    m, route, _, _, held = interrupt_in_pieces(srv, tmp_path, caffezoo_home, signal.SIGKILL)
    (part,) = partial_files(caffezoo_home)
    if damage == "unreadable":
        part.with_suffix(".json").write_text('{"runs": [[0, 7340032')
    else:  # it still lists 7 MiB as written, but the bytes are not those any more
        with open(part, "r+b") as f:
            f.write(bytes(1 << 20))
    before = len(srv.requests_for("/w"))
    r = cli_process("download", m)
    assert r.code == 0, r.stderr
    assert (m / "net.caffemodel").read_bytes() == PIECES
    again = srv.requests_for("/w")[before:]
    assert srv.served(again, 0, held) >= held  # what it held was fetched again
    if damage == "unreadable":
        assert "was not trusted (its record does not parse)" in r.stderr
    else:
        assert "wrong bytes after resuming" in r.stderr


def test_sources_from_the_environment_and_the_front_matter_share_the_pieces(
    srv, tmp_path, caffezoo_home, cli_process
):
    data = PIECES
    with FaultServer("127.0.0.2") as mirror:
        mirror.route(f"/blobs/sha1/{sha1(data)}", data, rate=8 << 20)
        srv.route("/w", data, rate=8 << 20)
        m = weights_model(tmp_path / "net", srv.url("/w"), data)
        r = cli_process("download", "--json", m, env={"CAFFEZOO_MIRRORS": mirror.url("")})
    assert r.code == 0, r.stderr
    (out,) = json.loads(r.stdout)
    assert sorted(out["sources"]) == sorted([srv.url("/w"), f"{mirror.url('')}/blobs/sha1/{sha1(data)}"])
    assert (m / "net.caffemodel").read_bytes() == data


@pytest.mark.parametrize(
    "args, said",
    [
        (
            ["--limit-rate", "fast"],
            "--limit-rate: expected bytes a second such as 10M, 500k or 2000, got 'fast'",
        ),
        (["--limit-rate", ""], "--limit-rate: expected bytes a second such as 10M, 500k or 2000, got ''"),
        (["--limit-rate=-5"], "--limit-rate: expected bytes a second such as 10M, 500k or 2000, got '-5'"),
        (["--limit-rate", "0"], "--limit-rate: expected at least 1 byte a second, got '0'"),
        (["--limit-rate", "0.5"], "--limit-rate: expected at least 1 byte a second, got '0.5'"),
        (["-c", "0"], "'--connections' / '-c': 0 is not in the range 1<=x<=64"),
        (["-c", "10000"], "'--connections' / '-c': 10000 is not in the range 1<=x<=64"),
        (["-c", "many"], "'--connections' / '-c': 'many' is not a valid int"),
        (["--per-host", "0"], "'--per-host': 0 is not in the range 1<=x<=64"),
        (["--per-host", "-3"], "'--per-host': -3 is not in the range 1<=x<=64"),
    ],
)
def test_bad_connection_and_rate_options_say_what_is_expected(cli, srv, tmp_path, args, said):
    srv.route("/w", DATA)
    m = weights_model(tmp_path / "net", srv.url("/w"), DATA)
    r = cli("download", *args, m)
    assert r.code == 2 and said in r.stderr and "Traceback" not in r.stderr
    assert srv.requests_for("/w") == [] and not (m / "net.caffemodel").exists()  # refused before any request


@pytest.mark.parametrize("rate", ["100M", "500k", "1.5G", "2000000", "64MiB/s"])
def test_rate_limits_in_curls_words_are_taken(cli, srv, tmp_path, rate):
    srv.route("/w", DATA)
    m = weights_model(tmp_path / "net", srv.url("/w"), DATA)
    r = cli("download", "--limit-rate", rate, m)
    assert r.code == 0, r.stderr
    assert (m / "net.caffemodel").read_bytes() == DATA


def test_one_connection_with_c_1(cli, srv, tmp_path):
    srv.route("/w", PIECES, rate=16 << 20)  # -c 4 would split it (see interrupt_in_pieces)
    m = weights_model(tmp_path / "net", srv.url("/w"), PIECES)
    r = cli("download", "-c", "1", m)
    assert r.code == 0, r.stderr
    assert [q.headers.get("range") for q in srv.requests_for("/w")] == [None]  # one plain GET
    assert (m / "net.caffemodel").read_bytes() == PIECES


def test_per_host_caps_the_connections_to_one_host(cli, srv, tmp_path):
    srv.route("/w", PIECES, rate=16 << 20)
    m = weights_model(tmp_path / "net", srv.url("/w"), PIECES)
    r = cli("download", "-c", "4", "--per-host", "2", m)
    assert r.code == 0, r.stderr
    assert srv.peak_whole() == 2  # split (more than one), and never more than two at once
    assert (m / "net.caffemodel").read_bytes() == PIECES


def test_two_processes_fetch_the_blob_once(srv, tmp_path):
    data = blob(1 << 20, seed=13)
    route = srv.route("/w", data, trickle=(64 * 1024, 0.1))  # about 1.6 s
    a = weights_model(tmp_path / "a", srv.url("/w"), data)
    b = weights_model(tmp_path / "b", srv.url("/w"), data)
    procs = [popen("download", a), popen("download", b)]
    results = [(p.wait(timeout=60), *p.communicate()) for p in procs]
    assert [r[0] for r in results] == [0, 0], results
    assert sum("another process is downloading it" in r[2] for r in results) == 1  # one waited
    assert route.bodies_sent == 1 and len(srv.requests_for("/w")) == 1
    assert os.path.samefile(a / "net.caffemodel", b / "net.caffemodel")
    assert (a / "net.caffemodel").read_bytes() == data


def test_file_size_limit_stands_in_for_a_full_disk(srv, tmp_path, caffezoo_home, cli_process):
    srv.route("/w", BIG)
    m = weights_model(tmp_path / "net", srv.url("/w"), BIG)
    limit = 1 << 20

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    p = popen("download", m, preexec_fn=small_disk)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1, err
    assert "file too large (a file-size limit such as `ulimit -f` is in force)" in err
    assert "the next run resumes" in err
    assert not (m / "net.caffemodel").exists() and no_temp_files(m)
    assert 0 < partial_size(caffezoo_home) <= limit
    r = cli_process("download", m)  # room again: carries on from the bytes kept
    assert r.code == 0, r.stderr
    assert (m / "net.caffemodel").read_bytes() == BIG
    assert srv.requests_for("/w")[-1].headers["range"].startswith("bytes=")


def test_progress_bar_on_a_terminal(srv, tmp_path):
    import pty

    srv.route("/w", BIG, trickle=(256 * 1024, 0.02))
    m = weights_model(tmp_path / "net", srv.url("/w"), BIG)
    leader, follower = pty.openpty()
    p = subprocess.Popen(
        [sys.executable, "-m", "caffezoo", "download", str(m)],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "COLUMNS": "150", "TERM": "xterm"},
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    p.wait(timeout=60)
    os.close(leader)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert p.returncode == 0, screen
    assert "3.0/3.0 MiB" in screen and "MB/s" in screen and "downloaded" in screen


# -- the seed's script ---------------------------------------------------------------------


SEED = ROOT / "scripts" / "download_model_binary.py"


def seed(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SEED), *args], capture_output=True, text=True, timeout=60)


def test_seed_script_downloads_then_says_already_exists(srv, tmp_path):
    srv.route("/w", DATA)
    m = weights_model(tmp_path / "net", srv.url("/w"), DATA)
    r = seed(str(m))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "...100%, 0 MB" in r.stdout and "seconds passed" in r.stdout
    assert (m / "net.caffemodel").read_bytes() == DATA
    r = seed(str(m))
    assert (r.returncode, r.stdout) == (0, "Model already exists.\n")


def test_seed_script_wrong_bytes(srv, tmp_path):
    srv.route("/w", DATA, corrupt=True)
    m = weights_model(tmp_path / "net", srv.url("/w"), DATA)
    r = seed(str(m))
    assert r.returncode == 1
    assert r.stdout.splitlines()[-1] == "ERROR: model did not download correctly! Run this again."
    assert not (m / "net.caffemodel").exists()


def test_seed_script_bad_directory(tmp_path):
    from model_helpers import write_model

    r = seed(str(tmp_path / "nothing"))
    assert r.returncode == 2
    assert r.stdout == f"ERROR: {tmp_path / 'nothing'}: no such directory\n"
    assert "error: argument dirname: Must be valid Caffe model directory with a correct readme.md" in r.stderr
    m = write_model(tmp_path / "nokeys", "name: X\n")
    r = seed(str(m))
    assert r.returncode == 2 and "download needs the keys caffemodel, caffemodel_url, sha1" in r.stdout


def test_seed_script_accepts_caffes_models_path_for_bundled_models(monkeypatch):
    monkeypatch.setenv("CAFFEZOO_OFFLINE", "1")
    r = seed("models/bvlc_googlenet")
    assert r.returncode == 1
    assert "bvlc_googlenet.caffemodel: not in the cache" in r.stdout
