"""A download in pieces over several connections and sources, against misbehaving servers on 127.0.0.1.

Each test names what a source does wrong; after it, the file is right (or the error says who
failed and why), and the servers' own counts say which bytes were fetched, and how often.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading

import pytest
from download_helpers import blob, sha1, wait_for
from fault_server import FaultServer

from caffezoo.errors import ChecksumError, DiskSpaceError, DownloadError
from caffezoo.fetch import BlobCache, Expected, fetch_blob, normalize
from caffezoo.fetch import transfer as transfer_module
from caffezoo.fetch.ordered_hash import BUDGET
from caffezoo.fetch.transfer import SEGMENTED_MIN, Transfer

MiB = 1 << 20
DATA = blob(SEGMENTED_MIN + 4 * MiB, seed=21)  # large enough to be fetched in pieces
SHA1 = sha1(DATA)
OPTIONS = {"timeout": 10.0, "retries": 2}


@pytest.fixture
def srv():
    with FaultServer() as s:
        yield s


@pytest.fixture
def other():
    with FaultServer("127.0.0.2") as s:  # another host
        yield s


def run(tmp_path, *urls, data=DATA, events=None, **options) -> Transfer:
    """A Transfer into a fresh cache, run to the end; the caller looks at what it did."""
    partial = BlobCache(tmp_path / "cache").claim(sha1(data))
    t = Transfer(
        [normalize(u) for u in urls],
        partial,
        Expected(sha1(data)),
        report=events.append if events is not None else None,
        **{**OPTIONS, **options},
    )
    try:
        digests, _ = t.run()
        assert digests.sha1 == sha1(data) and partial.path.read_bytes() == data
        return t
    finally:
        partial.close()


def ranges(server: FaultServer, path: str) -> list[tuple[int, int | None]]:
    """The byte ranges asked for, in order (``(0, None)`` for a plain GET)."""
    out = []
    for r in server.requests_for(path):
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", r.headers.get("range", "bytes=0-"))
        out.append((int(m.group(1)), int(m.group(2)) + 1 if m.group(2) else None))
    return out


def covered(asked: list[tuple[int, int | None]], size: int) -> bool:
    at = 0
    for start, end in sorted(asked, key=lambda r: r[0]):
        if start > at:
            return False
        at = max(at, size if end is None else end)
    return at == size


# -- pieces ------------------------------------------------------------------------------------


def test_a_large_file_comes_in_pieces_hashed_as_they_land_out_of_order(srv, tmp_path, monkeypatch):
    monkeypatch.setattr(transfer_module, "PROBE_TIME", 0)  # the link is measured at the 2nd write
    first_piece_waits = threading.Event()
    route = srv.route("/w", DATA, stall_after=(MiB, first_piece_waits), rate=8 * MiB)
    done = []
    worker = threading.Thread(target=lambda: done.append(run(tmp_path, srv.url("/w"))))
    worker.start()
    try:  # the first piece's end waits until three later pieces have landed
        wait_for(lambda: route.bodies_sent >= 3, what="three pieces after the first")
    finally:
        first_piece_waits.set()
        worker.join(60)
    (t,) = done
    asked = ranges(srv, "/w")
    assert asked[0] == (0, None)  # a plain GET first: it says the length and Accept-Ranges
    assert len(asked) > 3
    assert covered(asked, len(DATA))
    assert route.bytes_sent < len(DATA) + t.connections * MiB  # a piece cut short sends a little more
    hasher = t.partial.hasher
    assert hasher.peak_buffered <= BUDGET
    assert hasher.read_back < len(DATA)  # never the whole file a second time


def test_a_small_file_takes_one_connection(srv, tmp_path):
    data = blob(SEGMENTED_MIN - 1, seed=22)
    srv.route("/w", data)
    run(tmp_path, srv.url("/w"), data=data)
    assert ranges(srv, "/w") == [(0, None)]


def test_a_server_that_ignores_ranges_gets_one_stream(srv, tmp_path):
    route = srv.route("/w", DATA, ignore_range=True)
    run(tmp_path, srv.url("/w"))
    assert ranges(srv, "/w") == [(0, None)] and route.bodies_sent == 1


def test_one_connection_when_asked_for_one(srv, tmp_path):
    srv.route("/w", DATA)
    run(tmp_path, srv.url("/w"), connections=1)
    assert ranges(srv, "/w") == [(0, None)]


def test_a_source_that_answers_200_to_ranges_is_left_to_the_others(srv, other, tmp_path):
    srv.route("/w", DATA, rate=16 * MiB)
    no_ranges = other.route("/w", DATA, ignore_range=True)
    t = run(tmp_path, srv.url("/w"), other.url("/w"))
    assert no_ranges.bodies_sent == 0 and t.sources() == [srv.url("/w")]
    assert t.feeds[1].ranges is False and not t.feeds[1].failed


# -- several sources -------------------------------------------------------------------------


def test_two_capped_sources_share_the_pieces(srv, other, tmp_path):
    a = srv.route("/w", DATA, total_rate=8 * MiB)  # each source gives 8 MiB/s, however asked
    b = other.route("/w", DATA, total_rate=8 * MiB)
    t = run(tmp_path, srv.url("/w"), other.url("/w"))
    assert all(end is not None or start > 0 for start, end in ranges(other, "/w"))  # ranges only
    assert covered(ranges(srv, "/w") + ranges(other, "/w"), len(DATA))
    assert sorted(t.sources()) == sorted([srv.url("/w"), other.url("/w")])
    have = t.partial.runs.by_key()
    assert min(have.values()) >= len(DATA) // 4  # about half each: neither waits for the other
    assert a.bytes_sent and b.bytes_sent


def test_a_faster_source_gets_more_of_the_pieces(srv, other, tmp_path):
    srv.route("/w", DATA, total_rate=2 * MiB)
    other.route("/w", DATA, total_rate=16 * MiB)
    t = run(tmp_path, srv.url("/w"), other.url("/w"))
    have = t.partial.runs.by_key()
    assert have[other.url("/w")] > 2 * have[srv.url("/w")]  # by measured bytes a second


def test_a_source_that_lies_in_one_piece_is_named_and_the_file_is_right(srv, other, tmp_path):
    srv.route("/w", DATA, rate=8 * MiB)

    def lie_once(route, handler):
        route.corrupt = route.hits == 1  # its first answer has one byte flipped; then it is honest
        handler._send_body(route, head=False)

    liar = other.route("/w", DATA, rate=8 * MiB, handler=lie_once)
    events = []
    t = run(tmp_path, srv.url("/w"), other.url("/w"), events=events)
    assert t.bad == [other.url("/w")]
    (warning,) = [e for e in events if e.kind == "warning"]
    assert warning.source == other.url("/w") and "sent wrong bytes (at " in warning.message
    first = ranges(other, "/w")[0]
    at = int(re.search(r"at (\d+)-", warning.message).group(1))
    assert first[0] <= at < first[1]  # the flipped byte is found where it was sent
    assert liar.hits >= 1 and t.feeds[1].failed.startswith("sent wrong bytes")


def test_sources_that_all_send_the_same_wrong_file(srv, other, tmp_path):
    wrong = blob(len(DATA), seed=23)
    srv.route("/w", wrong, rate=8 * MiB)
    other.route("/w", wrong, rate=8 * MiB)
    partial = BlobCache(tmp_path / "cache").claim(SHA1)
    t = Transfer([normalize(srv.url("/w")), normalize(other.url("/w"))], partial, Expected(SHA1), **OPTIONS)
    with pytest.raises(ChecksumError) as err:
        t.run()
    partial.discard()
    lines = str(err.value).splitlines()
    assert lines[1].startswith(f"  url {srv.url('/w')}: wrong file: sha1: expected {SHA1}, got {sha1(wrong)}")
    assert lines[2].startswith(f"  url {other.url('/w')}: wrong file: sha1")
    assert t.bad == []  # they agree with each other: none of them is singled out


def test_a_source_that_dies_midway_loses_its_pieces_to_the_others(srv, other, tmp_path):
    srv.route("/w", DATA, rate=8 * MiB)
    dying = other.route("/w", DATA, rate=8 * MiB, die_after=2 * MiB)
    events = []
    run(tmp_path, srv.url("/w"), other.url("/w"), events=events)
    assert dying.dead  # and yet the file is right: the others fetched what it did not send
    assert any(e.kind in ("retry", "fail") and e.source == other.url("/w") for e in events)


def test_a_silent_source_loses_its_piece_without_waiting_for_the_timeout(srv, other, tmp_path, monkeypatch):
    monkeypatch.setattr(transfer_module, "STALL", 1.0)
    srv.route("/w", DATA, rate=8 * MiB)
    other.route("/w", DATA, rate=8 * MiB, stall_after=(64 << 10, 60.0))  # its first answer stops
    events = []
    run(tmp_path, srv.url("/w"), other.url("/w"), events=events, timeout=30.0)
    assert not any("no answer" in e.message for e in events)  # nobody waited the 30 s out


def test_a_local_file_and_a_server_together(srv, tmp_path):
    mirror = tmp_path / "shared-cache"
    (mirror / "blobs" / "sha1").mkdir(parents=True)
    (mirror / "blobs" / "sha1" / SHA1).write_bytes(DATA)
    route = srv.route("/w", DATA, rate=4 * MiB)
    got = fetch_blob(
        [srv.url("/w")], sha1=SHA1, mirrors=[mirror.as_uri()], blobs_dir=tmp_path / "cache", **OPTIONS
    )
    assert got.path.read_bytes() == DATA and got.status == "downloaded"
    assert got.source == f"{mirror.as_uri()}/blobs/sha1/{SHA1}"  # mirrors first, and it is fast
    assert route.bytes_sent < len(DATA)


# -- politeness ----------------------------------------------------------------------------------


def test_429_with_retry_after_halves_the_sources_share(srv, tmp_path):
    hits = []

    def busy_once_split(route, handler):
        if "range" in handler.headers and not hits:  # the first ranged request: too many of us
            hits.append(1)
            return handler._small(429, b"slow down", {"Retry-After": "1"})
        handler._send_body(route, head=False)

    srv.route("/w", DATA, rate=8 * MiB, handler=busy_once_split)
    events = []
    t = run(tmp_path, srv.url("/w"), events=events)
    assert t.feeds[0].share == t.connections // 2
    assert any(
        e.kind == "retry" and "HTTP 429" in e.message and "retrying in 1.0 s" in e.message for e in events
    )


def test_connections_to_one_host_are_capped_across_sources(srv, tmp_path):
    srv.route("/a", DATA, rate=8 * MiB)
    srv.route("/b", DATA, rate=8 * MiB)
    run(tmp_path, srv.url("/a"), srv.url("/b"), connections=6, per_host=2)
    assert srv.peak_whole() == 2


def test_a_rate_limit_still_gets_the_file(srv, tmp_path):
    srv.route("/w", DATA)
    got = fetch_blob([srv.url("/w")], sha1=SHA1, blobs_dir=tmp_path / "cache", limit_rate="64M", **OPTIONS)
    assert got.path.read_bytes() == DATA


def test_every_source_failing_says_what_each_did(srv, other, tmp_path):
    srv.route("/w", DATA, statuses=[503] * 50)
    with pytest.raises(DownloadError) as err:
        run(tmp_path, srv.url("/w"), other.url("/missing"))
    lines = str(err.value).splitlines()
    assert "from any of 2 source(s)" in lines[0]
    assert "HTTP 503 Service Unavailable" in lines[1] and "gave up after" in lines[1]
    assert lines[2].startswith(f"  url {other.url('/missing')}: HTTP 404 Not Found")


def test_a_first_source_with_another_length_does_not_shut_out_the_right_one(srv, other, tmp_path):
    srv.route("/w", DATA + b"x", rate=8 * MiB)  # another version of the file: the first to answer
    right = other.route("/w", DATA, rate=8 * MiB)
    t = run(tmp_path, srv.url("/w"), other.url("/w"))
    assert t.feeds[0].failed.startswith("wrong file: sha1") and t.sources() == [other.url("/w")]
    assert right.bytes_sent >= len(DATA)


def test_a_liar_that_fails_while_it_is_compared_is_still_named(srv, other, tmp_path):
    srv.route(
        "/w", DATA, total_rate=3 * MiB
    )  # honest and slow: it holds fewer bytes, so it is suspected first

    def lie_then_die_when_asked_from_0(route, handler):
        # Only blaming the other source asks this one for its bytes from 0: it then hangs up for good.
        if route.dead or handler.headers.get("range", "").startswith("bytes=0-"):
            route.die_after = 0
            handler.connection.shutdown(socket.SHUT_RDWR)
            handler.close_connection = True
            return
        handler._send_body(route, head=False)

    other.route("/w", DATA, rate=16 * MiB, corrupt=True, handler=lie_then_die_when_asked_from_0)
    t = run(tmp_path, srv.url("/w"), other.url("/w"))
    assert t.bad == [other.url("/w")] and t.sources() == [srv.url("/w")]


def test_on_resume_a_changed_file_costs_only_its_own_bytes(srv, other, tmp_path):
    # An earlier run left 0-4 MiB from the first source and 4-8 MiB from the second, then died.
    a, b = normalize(srv.url("/w")), normalize(other.url("/w"))
    cache = BlobCache(tmp_path / "cache")
    p = cache.claim(SHA1)
    p.total = len(DATA)
    p.validators.update({a.url: '"a1"', b.url: '"b1"'})
    p.write_at(0, [DATA[: 4 * MiB]], a.url)
    p.write_at(4 * MiB, [DATA[4 * MiB : 8 * MiB]], b.url)
    p.save()
    os.close(p._fd)
    p.hasher.close()
    meta = json.loads(p.meta_path.read_text())
    meta["owner"]["pid"] = 0  # gone
    p.meta_path.write_text(json.dumps(meta))
    # The first source's file was touched since (a new ETag, the same bytes); the second's was not.
    srv.route("/w", DATA, etag='"a2"')
    other.route("/w", DATA, etag='"b1"')
    partial = cache.claim(SHA1)
    try:
        digests, _ = Transfer([a, b], partial, Expected(SHA1), **OPTIONS).run()
        assert digests.sha1 == SHA1 and partial.path.read_bytes() == DATA
        kept = partial.runs.of(b.url)  # the second source's bytes were kept
        assert any(start <= 4 * MiB and 8 * MiB <= end for start, end in kept)
    finally:
        partial.close()
    asked = ranges(srv, "/w")[1:] + ranges(other, "/w")  # after the first answer said "changed"
    assert all(end is not None and end <= 4 * MiB or start >= 8 * MiB for start, end in asked)


def test_a_source_whose_validator_flaps_gives_up_instead_of_running_forever(srv, tmp_path):
    # Two machines behind one name, each with its own ETag for the same file (Apache's
    # inode-based ETags): every other answer says the file changed.
    def two_backends(route, handler):
        route.etag = f'"backend-{route.hits % 2}"' if route.hits < 2000 else '"backend-0"'
        handler._send_body(route, head=False)

    route = srv.route("/w", DATA, rate=4 * MiB, handler=two_backends)  # slow enough to be split
    with pytest.raises(DownloadError) as err:
        run(tmp_path, srv.url("/w"), retries=0)
    assert "the file changed (If-Range" in str(err.value) and "gave up after" in str(err.value)
    assert route.hits < 2000  # it gave up while the file kept changing


def test_a_first_source_claiming_more_than_the_disk_holds_does_not_stop_the_others(srv, other, tmp_path):
    srv.route("/w", DATA, content_length=1 << 60)  # a length no disk takes, and no size to say it lies
    other.route("/w", DATA)
    t = run(tmp_path, srv.url("/w"), other.url("/w"))
    assert "not enough disk space" in t.feeds[0].failed and t.sources() == [other.url("/w")]


def test_the_last_source_claiming_more_than_the_disk_holds_is_a_disk_error(srv, tmp_path):
    srv.route("/w", DATA, content_length=1 << 60)
    with pytest.raises(DiskSpaceError, match="not enough disk space .* more bytes needed"):
        run(tmp_path, srv.url("/w"))
