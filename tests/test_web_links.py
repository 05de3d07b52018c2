"""Link health: the checker against the fault-injecting server; the CLI; the server's
background checker; what pages and the API show."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import httpx
import pytest
from fault_server import FaultServer
from gist_helpers import free_port
from web_helpers import publish, web_for

from caffezoo import _http
from caffezoo.server import Storage, catalog
from caffezoo.server.links import check_links, due_urls, link_client, probe
from caffezoo.server.tables import LinkCheck

BODY = bytes(range(256)) * 40  # 10,240 bytes
LAB = _http.Policy(allow_private=True)  # the test origins are on loopback: opted in, as a lab would


def model_for(store, url: str, name: str = "Linked Net") -> str:
    return publish(store, "lena", name, caffemodel="n.caffemodel", caffemodel_url=url, sha1="2" * 40)


def row(store, url: str) -> LinkCheck:
    with store.session() as s:
        return s.get(LinkCheck, url)


def head_refused(route, h) -> None:
    if h.command == "HEAD":
        return h._small(405, b"no HEAD here")
    h._send_body(route, False)


@pytest.fixture
def origin():
    with FaultServer() as srv:
        yield srv


def test_head_is_enough_when_it_works(store, origin):
    origin.route("/w.caffemodel", BODY)
    url = origin.url("/w.caffemodel")
    model_for(store, url)
    [result] = check_links(store, policy=LAB, rate=100)
    assert (result.reachable, result.status, result.size) == (True, 200, len(BODY))
    assert [r.method for r in origin.requests_for("/w.caffemodel")] == ["HEAD"]
    r = row(store, url)
    assert r.reachable and r.size == len(BODY) and r.failures == 0
    assert r.next_check - r.checked_at == timedelta(days=1)
    assert due_urls(store) == [] and due_urls(store, all_urls=True) == [url]


def test_a_url_too_long_to_record_is_not_probed(store, origin):
    origin.route("/w.caffemodel", BODY)
    model_for(store, origin.url("/w.caffemodel"), "Short URL Net")
    model_for(store, origin.url("/w.caffemodel?" + "x" * 3000), "Long URL Net")
    results = check_links(store, policy=LAB, rate=100)
    assert [r.url for r in results] == [origin.url("/w.caffemodel")] and results[0].reachable
    assert len(origin.requests) == 1


def test_a_server_refusing_head_gets_a_one_byte_range_get(store, origin):
    origin.route("/w.caffemodel", BODY, handler=head_refused)
    result = probe(link_client(LAB), origin.url("/w.caffemodel"))
    assert (result.reachable, result.status, result.size) == (True, 206, len(BODY))
    methods = [(r.method, r.headers.get("range")) for r in origin.requests_for("/w.caffemodel")]
    assert methods == [("HEAD", None), ("GET", "bytes=0-0")]


def test_dead_links_back_off_doubling_and_recover(store, origin):
    origin.route("/gone", b"", statuses=[404] * 100)
    url = origin.url("/gone")
    model_for(store, url)
    [r1] = check_links(store, policy=LAB, rate=100, retries=0)
    assert (r1.reachable, r1.status) == (False, 404) and "404" in r1.error
    first = row(store, url)
    assert first.failures == 1 and first.next_check - first.checked_at == timedelta(hours=1)
    assert due_urls(store) == []  # not due again yet
    check_links(store, [url], policy=LAB, rate=100, retries=0)
    second = row(store, url)
    assert second.failures == 2 and second.next_check - second.checked_at == timedelta(hours=2)
    for _ in range(10):
        check_links(store, [url], policy=LAB, rate=100, retries=0)
    assert row(store, url).next_check - row(store, url).checked_at == timedelta(days=7)  # capped
    origin.route("/gone", BODY)  # the host is back
    check_links(store, [url], policy=LAB, rate=100)
    assert row(store, url).reachable and row(store, url).failures == 0


def test_transient_errors_are_retried_and_retry_after_is_honoured(store, origin):
    origin.route("/flaky", BODY, statuses=[503, 502])
    assert probe(link_client(LAB), origin.url("/flaky"), retries=2, backoff=0.01).reachable
    assert len(origin.requests_for("/flaky")) == 3
    origin.route("/busy", BODY, statuses=[429], retry_after="1")
    t0 = time.monotonic()
    assert probe(link_client(LAB), origin.url("/busy"), retries=1, backoff=0.01).reachable
    assert time.monotonic() - t0 >= 0.9  # waited as told, not the 10 ms backoff
    origin.route("/down", BODY, statuses=[500] * 10)
    result = probe(link_client(LAB), origin.url("/down"), retries=2, backoff=0.01)
    assert (result.reachable, result.status) == (False, 500) and len(origin.requests_for("/down")) == 3


def test_unreachable_hosts_and_odd_urls(store):
    dead = f"http://127.0.0.1:{free_port()}/w.caffemodel"
    result = probe(link_client(LAB, timeout=2), dead, retries=1, backoff=0.01)
    assert not result.reachable and result.status is None
    assert result.error == "cannot connect"  # never the socket's words ("Connection refused")
    ftp = probe(link_client(LAB), "ftp://example.org/w.caffemodel")
    assert not ftp.reachable and "only http" in ftp.error


def test_redirects_are_followed_and_loops_stop(origin):
    origin.route("/real", BODY)
    origin.route("/moved", redirect=origin.url("/real"))
    assert probe(link_client(LAB), origin.url("/moved")).size == len(BODY)
    origin.route("/loop", redirect=origin.url("/loop"))
    result = probe(_http.client(policy=LAB, max_redirects=3), origin.url("/loop"))
    assert not result.reachable and "redirect" in result.error


def test_requests_stay_under_the_rate(store, origin):
    for i in range(5):
        origin.route(f"/w{i}", BODY)
        model_for(store, origin.url(f"/w{i}"), name=f"Rate Net {i}")
    # 2 a second: the times are seen where the requests arrive, after the loopback's and the
    # scheduler's jitter (tens of ms on a loaded machine). A late request shortens the gap
    # after it, so one gap alone can look short; the span of all five cannot, and no two
    # requests may come as a burst.
    check_links(store, policy=LAB, rate=2)
    times = sorted(r.time for r in origin.requests)
    assert len(times) == 5
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert times[-1] - times[0] >= 4 * 0.5 - 0.1  # 2 a second at most, on average
    assert min(gaps) >= 0.25  # and never a burst


def test_a_round_of_checks_is_recorded_in_batches(store, origin):
    """Each record moves the pages' cache generation on: not once per probe."""
    for i in range(4):
        origin.route(f"/b{i}", BODY)
        model_for(store, origin.url(f"/b{i}"), name=f"Batch Net {i}")

    def generation() -> int:
        with store.session() as s:
            return catalog.generation(s)

    seen: list[tuple[str, int]] = []
    before = generation()
    results = check_links(
        store, policy=LAB, rate=100, record_every=3600, on_result=lambda p: seen.append((p.url, generation()))
    )
    assert len(results) == 4 and all(r.reachable for r in results)
    assert [g for _, g in seen] == [before] * 4  # nothing written during the round...
    assert generation() == before + 1  # ...and all of it at its end, at once
    assert all(row(store, r.url).reachable for r in results)
    seen.clear()
    check_links(
        store,
        [r.url for r in results],
        policy=LAB,
        rate=100,
        record_every=0,
        on_result=lambda p: seen.append((p.url, generation())),
    )
    assert [g for _, g in seen] == [before + 1, before + 2, before + 3, before + 4]  # each, when asked


def test_check_links_cli_and_what_pages_show(cli, origin, tmp_path, monkeypatch):
    db = f"sqlite:///{tmp_path / 'links.db'}"
    monkeypatch.setenv("CAFFEZOO_DATABASE_URL", db)
    origin.route("/ok", BODY)
    origin.route("/dead", b"", statuses=[410] * 10)
    with web_for(db, tmp_path, seed=False) as w:
        good = model_for(w.storage, origin.url("/ok"), "Good Link Net")
        bad = model_for(w.storage, origin.url("/dead"), "Dead Link Net")
        r = cli("serve", "check-links", "--allow-private-urls", "--json", "--rate", "100")
        assert r.code == 1  # one is unreachable
        results = {x["url"]: x for x in json.loads(r.stdout)}
        assert results[origin.url("/ok")]["reachable"] and results[origin.url("/dead")]["status"] == 410
        assert cli("serve", "check-links", "--allow-private-urls").stderr.strip() == "nothing is due"
        html = w.get("/").text
        assert html.count("weights reachable") == 1 and html.count("weights unreachable") == 1
        assert "10.2 KB" in html  # the size the checker saw
        page = w.get(f"/models/{bad}").text
        assert "unreachable: HTTP 410" in page
        api = w.http.get(f"/api/models/{good}").json()["weights"]
        assert api["reachable"] is True and api["status"] == 200 and api["checked_size"] == len(BODY)
        assert api["checked_at"].endswith("Z")


def test_the_server_checks_links_in_the_background(origin, tmp_path):
    """`caffezoo serve` as a real process: its checker thread probes what is due."""
    from caffezoo.server import Storage

    db = f"sqlite:///{tmp_path / 'bg.db'}"
    origin.route("/w", BODY)
    store = Storage(db)
    gid = model_for(store, origin.url("/w"))
    store.close()
    port = free_port()
    env = dict(os.environ, CAFFEZOO_DATABASE_URL=db)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "caffezoo",
            "serve",
            "--port",
            str(port),
            "--check-every",
            "0.2",
            "--link-rate",
            "50",
            "--allow-private-urls",  # the origin is on loopback
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        data = None
        while time.monotonic() < deadline:
            try:
                data = httpx.get(f"http://127.0.0.1:{port}/api/models/{gid}").json()["weights"]
                if data["checked_at"]:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert data is not None and data["reachable"] is True and data["checked_size"] == len(BODY)
        assert [r.method for r in origin.requests_for("/w")] == ["HEAD"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def test_urls_and_errors_are_printed_as_text_not_markup(cli, origin, tmp_path, monkeypatch):
    """A weights URL is the front matter's words: rich markup in it is printed, not obeyed."""
    db = f"sqlite:///{tmp_path / 'markup.db'}"
    monkeypatch.setenv("CAFFEZOO_DATABASE_URL", db)
    origin.route("/[/red]w[bold]", b"", statuses=[404] * 10)
    url = origin.url("/[/red]w[bold]")
    store = Storage(db)
    model_for(store, url)
    store.close()
    r = cli("serve", "check-links", "--allow-private-urls", "--rate", "100")
    assert r.code == 1 and f"unreachable {url} HTTP 404" in r.stderr
    r = cli("serve", "mirror", "--allow-private-urls", "--blobs-dir", tmp_path / "blobs")
    assert r.code == 1 and f"failed {'2' * 40} from {url}: " in r.stderr


def test_a_content_range_of_thousands_of_digits_is_a_size_not_a_crash(store, origin):
    """int() refuses over 4,300 digits: the probe read it raw and raised out of the link checker."""

    def huge_range(route, h):
        h._small(200, b"", {"Content-Range": "bytes 0-0/" + "0" * 4400 + "12"})

    origin.route("/w.caffemodel", BODY, handler=huge_range)
    result = probe(link_client(LAB), origin.url("/w.caffemodel"))
    assert (result.reachable, result.size) == (True, 12)
