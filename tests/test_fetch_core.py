"""caffezoo.fetch against a misbehaving HTTP server on 127.0.0.1: each fault, then the disk."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from download_helpers import blob, cache_blob, partial_files, sha1
from fault_server import FaultServer

from caffezoo.errors import ChecksumError, DiskSpaceError, DownloadError, OfflineError, UsageError
from caffezoo.fetch import BlobCache, Source, fetch_blob, fetch_to, mirror_url, origin
from caffezoo.fetch.partial import owner

DATA = blob(300_000, seed=1)
SHA1 = sha1(DATA)
FAST = {"timeout": 2.0, "retries": 2}  # keep failing tests quick


@pytest.fixture
def srv():
    with FaultServer() as s:
        yield s


@pytest.fixture
def dest(tmp_path) -> Path:
    return tmp_path / "model" / "net.caffemodel"


def fetch(dest: Path, *urls, events=None, **kw):
    kw = {**FAST, **kw}
    return fetch_to(
        dest,
        urls,
        sha1=kw.pop("sha1", SHA1),
        progress=events.append if events is not None else None,
        **kw,
    )


def assert_clean(dest: Path) -> None:
    """After a failure: nothing at the final path, nothing half-written beside it."""
    assert not dest.exists()
    if dest.parent.exists():
        assert [p.name for p in dest.parent.iterdir() if p.name.endswith(".tmp")] == []


# -- the plain path ---------------------------------------------------------------------


def test_download_links_a_verified_read_only_blob(srv, dest, caffezoo_home):
    srv.route("/w", DATA)
    got = fetch(dest, srv.url("/w"))
    assert got.status == "downloaded" and got.how == "link"
    assert dest.read_bytes() == DATA
    cached = cache_blob(caffezoo_home, SHA1)
    assert os.path.samefile(dest, cached)
    assert not os.access(cached, os.W_OK) or os.geteuid() == 0
    assert cached.stat().st_mode & 0o222 == 0
    assert partial_files(caffezoo_home) == []


def test_second_run_is_a_stat_and_no_request(srv, dest):
    srv.route("/w", DATA)
    fetch(dest, srv.url("/w"))
    events = []
    again = fetch(dest, srv.url("/w"), events=events)
    assert again.status == "present"
    assert len(srv.requests_for("/w")) == 1
    assert events == []  # not even a hash of the file


def test_a_file_changed_behind_our_back_is_rehashed_and_replaced(srv, dest):
    srv.route("/w", DATA)
    fetch(dest, srv.url("/w"))
    os.chmod(dest, 0o644)
    with open(dest, "r+b") as f:  # same size, new bytes, new mtime
        f.seek(10)
        f.write(b"\0" * 10)
    events = []
    got = fetch(dest, srv.url("/w"), events=events)
    assert got.status == "downloaded" and dest.read_bytes() == DATA
    assert any(e.kind == "check" for e in events)  # it was re-hashed, not trusted


def test_verify_rehashes_even_when_the_record_matches(srv, dest):
    srv.route("/w", DATA)
    fetch(dest, srv.url("/w"))
    st = dest.stat()
    os.chmod(dest, 0o644)
    with open(dest, "r+b") as f:
        f.write(b"X")
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))  # hide the change from the record
    assert fetch(dest, srv.url("/w")).status == "present"  # the record cannot see it...
    got = fetch(dest, srv.url("/w"), verify=True)  # ...a full re-hash does
    assert got.status == "downloaded" and dest.read_bytes() == DATA


def test_same_blob_for_two_destinations_is_fetched_once(srv, tmp_path):
    srv.route("/w", DATA)
    a = fetch(tmp_path / "a" / "w.caffemodel", srv.url("/w"))
    b = fetch(tmp_path / "b" / "w.caffemodel", srv.url("/w"))
    assert (a.status, b.status) == ("downloaded", "cached")
    assert len(srv.requests_for("/w")) == 1
    assert os.path.samefile(a.path, b.path)


def test_symlink_and_copy_installs(srv, tmp_path, caffezoo_home):
    srv.route("/w", DATA)
    s = fetch(tmp_path / "s" / "w", srv.url("/w"), how="symlink")
    c = fetch(tmp_path / "c" / "w", srv.url("/w"), how="copy")
    assert s.how == "symlink" and os.path.islink(s.path)
    assert os.readlink(s.path) == str(cache_blob(caffezoo_home, SHA1))
    assert c.how == "copy" and not os.path.samefile(c.path, cache_blob(caffezoo_home, SHA1))
    assert s.path.read_bytes() == c.path.read_bytes() == DATA
    assert fetch(tmp_path / "c" / "w", srv.url("/w")).status == "present"


def test_hard_link_across_file_systems_falls_back_to_a_copy(srv, caffezoo_home):
    shm = Path("/dev/shm")
    assert shm.is_dir() and os.stat(shm).st_dev != os.stat(caffezoo_home).st_dev, (
        "test needs /dev/shm as tmpfs"
    )
    srv.route("/w", DATA)
    target = shm / f"caffezoo-test-{os.getpid()}" / "w.caffemodel"
    try:
        got = fetch(target, srv.url("/w"))
        assert got.how == "copy" and target.read_bytes() == DATA
    finally:
        target.unlink(missing_ok=True)
        target.parent.rmdir()


def test_size_and_sha256_are_checked_when_given(srv, dest):
    import hashlib

    srv.route("/w", DATA)
    good = fetch(dest, srv.url("/w"), sha256=hashlib.sha256(DATA).hexdigest(), size=len(DATA))
    assert good.sha256 == hashlib.sha256(DATA).hexdigest()
    other = dest.with_name("other")
    with pytest.raises(DownloadError, match=f"the file has {len(DATA)} bytes, expected {len(DATA) + 1}"):
        fetch(other, srv.url("/w"), size=len(DATA) + 1, blobs_dir=dest.parent / "fresh-cache")
    assert_clean(other)


def test_wrong_sha256_with_right_sha1_fails(srv, dest, tmp_path):
    srv.route("/w", DATA)
    with pytest.raises(ChecksumError, match="sha256: expected 0000"):
        fetch(dest, srv.url("/w"), sha256="0" * 64)
    assert_clean(dest)


# -- broken connections and resume -------------------------------------------------------


def test_dropped_connection_resumes_with_range_and_if_range(srv, dest):
    srv.route("/w", DATA, drop_after=100_000, etag='"v1"')
    events = []
    assert fetch(dest, srv.url("/w"), events=events).status == "downloaded"
    assert dest.read_bytes() == DATA
    first, second = srv.requests_for("/w")
    assert "range" not in first.headers
    assert second.headers["range"] == "bytes=100000-"
    assert second.headers["if-range"] == '"v1"'
    assert any(e.kind == "retry" and "broke after 100000 bytes" in e.message for e in events)


def test_weak_etag_is_not_used_but_last_modified_is(srv, dest):
    srv.route("/w", DATA, drop_after=1000, etag='W/"weak"', last_modified="Wed, 21 Oct 2015 07:28:00 GMT")
    fetch(dest, srv.url("/w"))
    assert srv.requests_for("/w")[1].headers["if-range"] == "Wed, 21 Oct 2015 07:28:00 GMT"


def test_server_ignoring_range_restarts_cleanly(srv, dest):
    route = srv.route("/w", DATA, drop_after=100_000, ignore_range=True)
    assert fetch(dest, srv.url("/w")).status == "downloaded"
    assert dest.read_bytes() == DATA
    first, second = srv.requests_for("/w")  # no third: the 200 was written from byte 0 at once
    assert second.headers["range"] == "bytes=100000-" and route.bodies_sent == 1


def test_validator_change_between_attempts_restarts_from_zero(srv, dest):
    route = srv.route("/w", DATA, drop_after=100_000, etag='"v1"')

    def serve(r, handler):
        if r.hits > 1:
            r.etag = '"v2"'  # re-published (same bytes) between the attempts
        handler._send_body(r, head=False)

    route.handler = serve
    assert fetch(dest, srv.url("/w")).status == "downloaded"
    second = srv.requests_for("/w")[1]
    assert second.headers["if-range"] == '"v1"'  # asked for the rest of v1...
    assert route.bodies_sent == 1  # ...and got the whole of v2, written from byte 0
    assert dest.read_bytes() == DATA


def test_last_modified_change_between_attempts_restarts_from_zero(srv, dest):
    route = srv.route("/w", DATA, drop_after=100_000, last_modified="Mon, 01 Jan 2024 00:00:00 GMT")

    def serve(r, handler):
        if r.hits > 1:
            r.last_modified = "Tue, 02 Jan 2024 00:00:00 GMT"
        handler._send_body(r, head=False)

    route.handler = serve
    assert fetch(dest, srv.url("/w")).status == "downloaded"
    assert srv.requests_for("/w")[1].headers["if-range"] == "Mon, 01 Jan 2024 00:00:00 GMT"
    assert route.bodies_sent == 1 and dest.read_bytes() == DATA


def test_file_really_changed_on_the_server_fails_on_sha1(srv, dest):
    route = srv.route("/w", DATA, drop_after=100_000, etag='"v1"')

    def serve(r, handler):
        if r.hits > 1:
            r.body, r.etag = blob(len(DATA), seed=99), '"v2"'
        handler._send_body(r, head=False)

    route.handler = serve
    with pytest.raises(ChecksumError, match=f"sha1: expected {SHA1}, got"):
        fetch(dest, srv.url("/w"))
    assert_clean(dest)


def test_stall_longer_than_the_timeout_is_retried_and_resumed(srv, dest):
    srv.route("/w", DATA, stall_after=(150_000, 5))
    events = []
    assert fetch(dest, srv.url("/w"), timeout=0.5, events=events).status == "downloaded"
    assert any(e.kind == "retry" and "no answer" in e.message for e in events)
    assert srv.requests_for("/w")[1].headers["range"].startswith("bytes=")


def test_trickle_is_slow_but_not_a_failure(srv, dest):
    data = blob(40_000, seed=2)
    # ten pauses of 0.1 s: the whole answer takes longer than the timeout, no pause does
    srv.route("/slow", data, trickle=(4000, 0.1))
    got = fetch(dest, srv.url("/slow"), sha1=sha1(data), timeout=0.5)
    assert got.status == "downloaded" and dest.read_bytes() == data
    assert len(srv.requests_for("/slow")) == 1


def test_resume_after_wrong_bytes_gets_one_clean_retry(srv, dest):
    route = srv.route("/w", DATA, drop_after=100_000)
    real = DATA

    def serve(r, handler):
        # the second answer (a resumed range) carries wrong bytes; the third is the full file
        r.body = blob(len(DATA), seed=5) if r.hits == 2 else real
        handler._send_body(r, head=False)

    route.handler = serve
    events = []
    assert fetch(dest, srv.url("/w"), events=events).status == "downloaded"
    assert any("wrong bytes after resuming" in e.message for e in events)
    assert "range" not in srv.requests_for("/w")[2].headers


# -- wrong answers --------------------------------------------------------------------------


def test_wrong_bytes_fail_and_leave_nothing(srv, dest, caffezoo_home):
    srv.route("/w", DATA, corrupt=True)
    with pytest.raises(ChecksumError) as err:
        fetch(dest, srv.url("/w"))
    msg = str(err.value)
    assert f"sha1: expected {SHA1}" in msg and srv.url("/w") in msg
    assert_clean(dest)
    assert not cache_blob(caffezoo_home, SHA1).exists()
    assert partial_files(caffezoo_home) == []


def test_a_web_page_instead_of_the_file_says_so(srv, dest):
    srv.route("/w", b"<html>Sign in to download</html>", content_type="text/html; charset=utf-8")
    with pytest.raises(ChecksumError, match=r"sent a web page.*\?dl=1"):
        fetch(dest, srv.url("/w"))
    assert_clean(dest)


def test_content_length_larger_than_the_body(srv, dest):
    # The server promises 1000 more bytes than it has and hangs up; the resume finds nothing
    # left (416) and the SHA-1 of what arrived decides: it is the right file.
    srv.route("/w", DATA, content_length=len(DATA) + 1000)
    assert fetch(dest, srv.url("/w")).status == "downloaded"
    assert dest.read_bytes() == DATA
    assert srv.requests_for("/w")[-1].headers["range"] == f"bytes={len(DATA)}-"


def test_content_length_smaller_than_the_body(srv, dest):
    srv.route("/w", DATA, content_length=len(DATA) - 1000)
    with pytest.raises(ChecksumError, match=f"wrong file: sha1: expected {SHA1}, got "):
        fetch(dest, srv.url("/w"))
    assert_clean(dest)


def test_not_found_names_status_and_host(srv, dest):
    with pytest.raises(DownloadError) as err:
        fetch(dest, srv.url("/missing"))
    assert f"HTTP 404 Not Found from 127.0.0.1:{srv.port}" in str(err.value)
    assert err.value.exit_code == 1
    assert len(srv.requests_for("/missing")) == 1  # a 404 is not retried
    assert_clean(dest)


def test_server_errors_then_success(srv, dest):
    srv.route("/w", DATA, statuses=[500, 503])
    events = []
    assert fetch(dest, srv.url("/w"), events=events).status == "downloaded"
    assert len(srv.requests_for("/w")) == 3
    assert [e.message.split(";")[0] for e in events if e.kind == "retry"] == [
        f"HTTP 500 Internal Server Error from 127.0.0.1:{srv.port}",
        f"HTTP 503 Service Unavailable from 127.0.0.1:{srv.port}",
    ]


def test_retries_are_bounded_with_a_clear_message(srv, dest):
    srv.route("/w", DATA, statuses=[502] * 10)
    with pytest.raises(
        DownloadError, match=r"HTTP 502 Bad Gateway .* \(gave up after 3 attempts, 0 bytes kept\)"
    ):
        fetch(dest, srv.url("/w"), retries=2)
    assert len(srv.requests_for("/w")) == 3
    assert_clean(dest)


def test_429_retry_after_is_honoured(srv, dest):
    srv.route("/w", DATA, statuses=[429], retry_after="1")
    events = []
    assert fetch(dest, srv.url("/w"), events=events).status == "downloaded"
    first, second = srv.requests_for("/w")
    assert second.time - first.time >= 0.9
    assert any("retrying in 1.0 s" in e.message for e in events)


def test_a_very_long_retry_after_gives_up_on_the_source(srv, dest):
    srv.route("/w", DATA, statuses=[503] * 3, retry_after="86400")
    with pytest.raises(DownloadError, match="asks to retry after 86400 s"):
        fetch(dest, srv.url("/w"))
    assert len(srv.requests_for("/w")) == 1


def test_connection_refused_is_retried_then_reported(dest):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(DownloadError, match=f"cannot connect to 127.0.0.1:{port}.*gave up after 2 attempts"):
        fetch(dest, f"http://127.0.0.1:{port}/w", retries=1)
    assert_clean(dest)


# -- redirects and credentials -----------------------------------------------------------


@pytest.mark.parametrize("other_host", ["127.0.0.2", "127.0.0.1"])  # another host, another port
def test_redirect_to_another_origin_drops_authorization(dest, other_host):
    with FaultServer("127.0.0.1") as first, FaultServer(other_host) as other:
        other.route("/blob", DATA)
        first.route("/w", redirect=other.url("/blob"))
        auth = {origin(first.url("/")): "Bearer s3cret"}
        assert fetch(dest, first.url("/w"), auth=auth).status == "downloaded"
        assert first.requests_for("/w")[0].headers["authorization"] == "Bearer s3cret"
        assert "authorization" not in other.requests_for("/blob")[0].headers


def test_credentials_go_only_to_their_origin(srv, dest):
    srv.route("/w", DATA)
    fetch(dest, srv.url("/w"), auth={"http://127.0.0.1:1": "Bearer elsewhere"})
    assert "authorization" not in srv.requests_for("/w")[0].headers


# -- sources, mirrors, offline -------------------------------------------------------------


def test_mirrors_come_first_and_sha1_decides(srv, dest):
    with FaultServer("127.0.0.2") as mirror:
        mirror.route(f"/blobs/sha1/{SHA1}", DATA)
        srv.route("/w", DATA)
        got = fetch(dest, srv.url("/w"), mirrors=[mirror.url("")])
        assert got.source == mirror_url(mirror.url(""), SHA1)
        assert srv.requests_for("/w") == []


def test_bad_mirror_falls_through_to_the_url(srv, dest):
    with FaultServer("127.0.0.2") as mirror:
        mirror.route(f"/blobs/sha1/{SHA1}", blob(len(DATA), seed=7))  # wrong bytes
        srv.route("/w", DATA)
        events = []
        got = fetch(dest, srv.url("/w"), mirrors=[mirror.url("/"), srv.url("/nothing")], events=events)
        assert got.source == srv.url("/w")
        assert [e.kind for e in events].count("fail") == 2


def test_every_source_failing_lists_each(srv, dest):
    srv.route("/bad", blob(10, seed=3))
    with pytest.raises(DownloadError) as err:
        fetch(dest, srv.url("/bad"), srv.url("/missing"), mirrors=[srv.url("/m")])
    assert type(err.value) is DownloadError  # not a ChecksumError: not every source sent bytes
    lines = str(err.value).splitlines()
    assert "from any of 3 source(s)" in lines[0]
    assert lines[1].startswith(f"  mirror {srv.url('/m')}/blobs/sha1/{SHA1}: HTTP 404")
    assert lines[2].startswith(f"  url {srv.url('/bad')}: wrong file: sha1: expected")
    assert lines[3].startswith(f"  url {srv.url('/missing')}: HTTP 404")
    assert "CAFFEZOO_MIRRORS" in lines[-1]


def test_a_url_that_does_not_parse_fails_alone(srv, dest):
    srv.route("/w", DATA)
    events = []
    got = fetch(dest, "http://127.0.0.1:99999/w", "http://[::1/w", srv.url("/w"), events=events)
    assert got.source == srv.url("/w") and dest.read_bytes() == DATA
    assert [e.message for e in events if e.kind == "fail"] == [
        "not a valid URL: Port out of range 0-65535",
        "not a valid URL: Invalid IPv6 URL",
    ]
    with pytest.raises(DownloadError, match=r"url http://\[::1/w: not a valid URL"):
        fetch(dest.with_name("other"), "http://[::1/w", blobs_dir=dest.parent / "fresh-cache")
    assert_clean(dest.with_name("other"))


def test_local_path_and_file_url_sources(tmp_path, dest):
    src = tmp_path / "w.bin"
    src.write_bytes(DATA)
    assert fetch(dest, str(src)).status == "downloaded"
    other = tmp_path / "second" / "w"
    assert fetch(other, src.as_uri(), blobs_dir=tmp_path / "other-cache").status == "downloaded"
    assert other.read_bytes() == DATA


def test_a_local_source_that_is_not_a_file_fails_alone(srv, tmp_path, dest):
    srv.route("/w", DATA)
    events = []
    got = fetch(dest, tmp_path, srv.url("/w"), events=events)  # a directory, then the file
    assert got.source == srv.url("/w") and dest.read_bytes() == DATA
    assert [e.message for e in events if e.kind == "fail"] == [f"{tmp_path} is not a file"]


def test_file_mirror_base_is_another_cache(srv, tmp_path, dest):
    srv.route("/w", DATA)
    shared = tmp_path / "shared"
    fetch(tmp_path / "x", srv.url("/w"), blobs_dir=shared / "blobs")  # fills a cache someone shares
    got = fetch(dest, srv.url("/gone"), mirrors=[shared.as_uri()])
    assert got.source == mirror_url(shared.as_uri(), SHA1)


def test_offline_uses_the_cache_and_fails_fast_without_it(srv, dest, tmp_path):
    srv.route("/w", DATA)
    with pytest.raises(OfflineError, match="not in the cache .* CAFFEZOO_OFFLINE"):
        fetch(dest, srv.url("/w"), offline=True)
    assert srv.requests == []
    assert_clean(dest)
    fetch(tmp_path / "first", srv.url("/w"))
    assert fetch(dest, srv.url("/w"), offline=True).status == "cached"
    src = tmp_path / "local.bin"
    src.write_bytes(DATA)
    assert fetch(tmp_path / "third", src, offline=True, blobs_dir=tmp_path / "c3").status == "downloaded"


def test_a_destination_that_is_not_a_file_is_refused_untouched(srv, tmp_path):
    # (a pipe too, but a test of it would hang where the check is missing: hashing waits forever)
    import socket

    srv.route("/w", DATA)
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own
    link = tmp_path / "link"
    link.symlink_to(null)
    sock = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock))
        for target in (null, link, sock):
            with pytest.raises(DownloadError, match=f"{target} is not a regular file"):
                fetch(target, srv.url("/w"))
        assert stat.S_ISSOCK(os.lstat(sock).st_mode)
    assert stat.S_ISCHR(os.lstat(null).st_mode) and link.is_symlink()
    assert srv.requests == []


def test_an_unusable_cache_directory_is_a_clear_error(srv, dest, tmp_path):
    srv.route("/w", DATA)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(DownloadError, match=f"{not_a_dir}.*: Not a directory"):
        fetch(dest, srv.url("/w"), blobs_dir=not_a_dir)
    assert_clean(dest)


def test_not_enough_disk_space_fails_before_any_request(srv, dest):
    srv.route("/w", DATA)
    with pytest.raises(DiskSpaceError, match="not enough disk space .* more bytes needed"):
        fetch(dest, srv.url("/w"), size=1 << 60)
    assert srv.requests == []
    assert_clean(dest)


def test_google_drive_confirm_page(srv, dest):
    page = (
        "<html><body>Google Drive can't scan this file for viruses."
        f'<form id="download-form" action="{srv.url("/download")}" method="get">'
        '<input type="submit" value="Download anyway"/>'
        '<input type="hidden" name="id" value="FILEID"><input type="hidden" name="export" value="download">'
        '<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u-1"></form>'
        "</body></html>"
    ).encode()
    srv.route("/uc", page, content_type="text/html; charset=utf-8")
    srv.route("/download", DATA)
    got = fetch_to(dest, [Source(srv.url("/uc?export=download&id=FILEID"), drive=True)], sha1=SHA1, **FAST)
    assert got.status == "downloaded"
    assert srv.requests_for("/download")[0].path == "/download?id=FILEID&export=download&confirm=t&uuid=u-1"


def test_google_drive_page_without_a_way_on(srv, dest):
    srv.route("/uc", b"<html>Quota exceeded</html>", content_type="text/html")
    with pytest.raises(DownloadError, match="Google Drive answered with a web page"):
        fetch_to(dest, [Source(srv.url("/uc?id=F"), drive=True)], sha1=SHA1, **FAST)
    assert_clean(dest)


# -- the cache ------------------------------------------------------------------------------


def test_corrupt_cached_blob_is_detected_removed_and_fetched_again(srv, tmp_path, caffezoo_home):
    srv.route("/w", DATA)
    fetch_blob([srv.url("/w")], sha1=SHA1, **FAST)
    cached = cache_blob(caffezoo_home, SHA1)
    os.chmod(cached, 0o644)
    with open(cached, "r+b") as f:
        f.seek(1000)
        f.write(b"rot")
    events = []
    got = fetch_blob([srv.url("/w")], sha1=SHA1, progress=events.append, **FAST)
    assert got.status == "downloaded" and cached.read_bytes() == DATA
    assert any(e.kind == "warning" and "is corrupt" in e.message for e in events)
    assert len(srv.requests_for("/w")) == 2


def test_a_blob_that_cannot_be_put_in_place_leaves_a_writable_partial(srv, tmp_path):
    srv.route("/w", DATA)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / "sha1").write_text("in the way")  # the rename into sha1/ fails
    with pytest.raises(DownloadError, match=f"{blobs / 'sha1'}: File exists"):
        fetch_blob([srv.url("/w")], sha1=SHA1, blobs_dir=blobs, **FAST)
    (kept,) = (blobs / ".partial").glob("*.part")
    assert kept.read_bytes() == DATA
    assert kept.stat().st_mode & 0o200  # the next run (not root) can open it to resume


def test_partial_of_a_dead_process_is_adopted_and_resumed(srv, caffezoo_home):
    srv.route("/w", DATA, etag='"e"')
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = {**owner(), "pid": int(done.stdout), "start": "1"}
    pdir = caffezoo_home / "cache" / "blobs" / ".partial"
    pdir.mkdir(parents=True)
    (pdir / f"{SHA1}.dead.part").write_bytes(DATA[:120_000])
    meta = {"owner": dead, "url": srv.url("/w"), "etag": '"e"'}
    (pdir / f"{SHA1}.dead.json").write_text(json.dumps(meta))
    got = fetch_blob([srv.url("/w")], sha1=SHA1, **FAST)
    assert got.status == "downloaded"
    (req,) = srv.requests_for("/w")
    assert req.headers["range"] == "bytes=120000-" and req.headers["if-range"] == '"e"'
    assert partial_files(caffezoo_home) == []


def test_partial_of_a_live_process_is_left_alone(srv, caffezoo_home):
    srv.route("/w", DATA)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pdir = caffezoo_home / "cache" / "blobs" / ".partial"
        pdir.mkdir(parents=True)
        theirs = pdir / f"{SHA1}.live.part"
        theirs.write_bytes(DATA[:1000])
        proc = Path(f"/proc/{live.pid}/stat").read_text().rpartition(")")[2].split()
        meta = {**owner(), "pid": live.pid, "start": proc[19]}
        (pdir / f"{SHA1}.live.json").write_text(json.dumps({"owner": meta}))
        fetch_blob([srv.url("/w")], sha1=SHA1, **FAST)
        assert "range" not in srv.requests_for("/w")[0].headers
        assert theirs.read_bytes() == DATA[:1000]
    finally:
        live.kill()
        live.wait()


def test_a_hung_lock_holder_is_waited_for_only_while_its_bytes_move(srv, caffezoo_home):
    from filelock import FileLock

    srv.route("/w", DATA)
    lock = FileLock(caffezoo_home / "cache" / "blobs" / ".locks" / f"{SHA1}.lock")
    (caffezoo_home / "cache" / "blobs" / ".locks").mkdir(parents=True)
    with lock:  # held and never released by a "process" that makes no progress
        events = []
        got = fetch_blob([srv.url("/w")], sha1=SHA1, progress=events.append, timeout=0.25, retries=1)
    assert got.status == "downloaded"
    assert any(e.kind == "wait" for e in events)


def test_cache_maintenance(srv, tmp_path, caffezoo_home):
    srv.route("/a", DATA)
    other = blob(5000, seed=4)
    srv.route("/b", other)
    fetch_to(tmp_path / "m" / "a", [srv.url("/a")], sha1=SHA1, **FAST)
    fetch_blob([srv.url("/b")], sha1=sha1(other), **FAST)  # cached, used by nothing
    cache = BlobCache()
    entries = {b.sha1: b for b in cache.entries()}
    assert set(entries) == {SHA1, sha1(other)}
    assert entries[SHA1].users == [str(tmp_path / "m" / "a")]
    assert [r.ok for r in cache.verify()] == [True, True]
    report = cache.prune(dry_run=True)
    assert report.blobs == [sha1(other)] and cache_blob(caffezoo_home, sha1(other)).exists()
    report = cache.prune()
    assert report.blobs == [sha1(other)] and report.bytes == len(other)
    assert [b.sha1 for b in cache.entries()] == [SHA1]
    cache.remove(cache.find([SHA1[:8]]))
    assert cache.entries() == [] and (tmp_path / "m" / "a").read_bytes() == DATA
    left = cache.partial_dir / f"{SHA1}.gone.part"  # of a process that died long ago
    left.write_bytes(b"x")
    (cache.partial_dir / f"{SHA1}.gone.json").write_text(json.dumps({"owner": {**owner(), "pid": 0}}))
    torn = cache.partial_dir / f".{SHA1}.gone.json.0123.tmp"  # a sidecar's write, killed
    torn.write_text("{")
    os.utime(torn, (0, 0))
    report = cache.prune()
    assert report.partials == [left.name] and not left.exists()
    assert report.other == [torn.name] and not torn.exists()


@pytest.mark.parametrize(
    "option, said",
    [
        ({"per_host": -1}, "per_host: expected a whole number from 1 to 64, got -1"),
        ({"per_host": 0}, "per_host: expected a whole number from 1 to 64, got 0"),
        ({"connections": 0}, "connections: expected a whole number from 1 to 64, got 0"),
        ({"connections": -4}, "connections: expected a whole number from 1 to 64, got -4"),
        ({"connections": 10_000}, "connections: expected a whole number from 1 to 64, got 10000"),
        ({"limit_rate": float("nan")}, "expected at least 1 byte a second, got nan"),
        ({"limit_rate": float("inf")}, "expected at least 1 byte a second, got inf"),
    ],
)
def test_connection_options_out_of_range_are_refused_before_any_request(srv, tmp_path, option, said):
    # per_host=-1 used to wait forever for a host slot; 10000 connections meant 10000 threads.
    srv.route("/w", DATA)
    with pytest.raises(UsageError) as err:
        fetch_blob([srv.url("/w")], sha1=SHA1, blobs_dir=tmp_path / "cache", **option, **FAST)
    assert said in str(err.value) and srv.requests_for("/w") == []
