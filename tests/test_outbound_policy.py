"""The outbound-URL policy: no URL a user writes reaches inside the server's network.

A loopback "internal service" stands for what the server can reach and visitors cannot.
Under the default policy it must see no request from the link checker, the mirror or a
wiki import, whatever spelling of its address a URL uses and whatever redirect leads
there; opted in (``--allow-private-urls``, ``--allow-network``) it does.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from fault_server import FaultServer
from web_helpers import publish, web_for

from caffezoo import _http
from caffezoo.server.links import check_links, link_client, probe
from caffezoo.server.mirror import Mirror, MirrorOptions
from caffezoo.server.tables import MirrorSource
from caffezoo.server.wiki import import_page, parse_page

DATA = os.urandom(50_000)
SHA1 = hashlib.sha1(DATA).hexdigest()
DEFAULT = _http.Policy()
LAB = _http.Policy(allow_private=True)
# The redirector below binds 127.0.0.2: allowed as "a public host" by an allow-list of
# that one address, so that what is tested is the redirect's target, not its first hop.
VIA_REDIRECTOR = _http.Policy(networks=("127.0.0.2/32",))


def spellings(port: int, path: str = "/secret") -> list[str]:
    """The internal service's address, in every spelling a URL can give it."""
    return [
        f"http://127.0.0.1:{port}{path}",
        f"http://localhost:{port}{path}",
        f"http://LocalHost:{port}{path}",
        f"http://127.1:{port}{path}",
        f"http://2130706433:{port}{path}",
        f"http://0x7f000001:{port}{path}",
        f"http://0177.0.0.1:{port}{path}",
        f"http://0.0.0.0:{port}{path}",  # Linux connects 0.0.0.0 to the local host
        f"http://[::ffff:127.0.0.1]:{port}{path}",
        f"http://[::ffff:7f00:1]:{port}{path}",
        f"http://[::1]:{port}{path}",
        f"http://user:pw@127.0.0.1:{port}{path}",
    ]


@pytest.fixture
def internal():
    """The service inside the network: every request it sees is an escape."""
    with FaultServer() as srv:
        srv.route("/secret", DATA)
        yield srv


@pytest.fixture
def redirector():
    with FaultServer(host="127.0.0.2") as srv:
        yield srv


def test_every_address_that_is_not_public_is_refused():
    refused = [
        "127.0.0.1",
        "127.255.255.254",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # the cloud's metadata service
        "100.64.0.1",  # CGNAT
        "100.100.100.200",  # Alibaba's metadata service, inside CGNAT
        "0.0.0.0",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.0.192",  # Oracle's metadata service
        "198.18.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",  # AWS's metadata service over IPv6
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2001:db8::1",
    ]
    for address in refused:
        with pytest.raises(_http.Refused) as e:
            DEFAULT.check_ip(address)
        assert str(e.value) == "refused by policy", address
    for address in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        DEFAULT.check_ip(address)
    LAB.check_ip("127.0.0.1")
    lab_net = _http.Policy(networks=("10.20.0.0/16",))
    lab_net.check_ip("10.20.3.4")
    lab_net.check_ip("::ffff:10.20.3.4")
    with pytest.raises(_http.Refused):
        lab_net.check_ip("10.21.0.1")
    with pytest.raises(ValueError, match="10.0.0.0/8"):
        _http.Policy(networks=("not-a-network",))
    assert all(_http.not_public(ipaddress.ip_address(a)) for a in refused)


def test_the_link_checker_never_reaches_the_internal_service(store, internal):
    urls = spellings(internal.port)
    for i, url in enumerate(urls):
        publish(store, "eve", f"Scan {i}", caffemodel="n.caffemodel", caffemodel_url=url, sha1="2" * 40)
    results = check_links(store, policy=DEFAULT, rate=1000, retries=0)
    assert internal.requests == []
    assert {r.url for r in results} == set(urls)
    for r in results:
        assert not r.reachable and r.status is None and r.size is None
        assert r.error in ("refused by policy", "not a valid URL"), r.url  # httpx refuses 0177.0.0.1
    # Opted in, the same checker does reach it: the refusal above was the policy's.
    again = check_links(store, urls[:1], policy=LAB, rate=1000, retries=0)
    assert again[0].reachable and again[0].size == len(DATA) and len(internal.requests) == 1


def test_redirects_to_the_internal_service_are_refused_at_every_hop(internal, redirector):
    targets = spellings(internal.port)
    statuses = [301, 302, 303, 307, 308]
    for i, target in enumerate(targets):
        status = statuses[i % len(statuses)]

        def moved(route, h, target=target, status=status) -> None:
            h._small(status, b"moved", {"Location": target})

        redirector.route(f"/r{i}", handler=moved)
    redirector.route("/chain", redirect=redirector.url("/r0"))  # a hop through an allowed host first
    redirector.route("/relative", handler=lambda route, h: h._small(302, b"", {"Location": "/chain"}))
    with link_client(VIA_REDIRECTOR) as client:
        for path in [f"/r{i}" for i in range(len(targets))] + ["/chain", "/relative"]:
            result = probe(client, redirector.url(path), retries=0)
            # httpx itself rejects a Location of 0177.0.0.1 (octal) as an invalid URL.
            odd = path == f"/r{targets.index(next(t for t in targets if '0177' in t))}"
            expected = "connection failed" if odd else "refused by policy"
            assert (result.reachable, result.error) == (False, expected), path
    assert internal.requests == []
    assert len(redirector.requests) >= len(targets) + 2  # the first hops did go out
    with link_client(LAB) as client:
        assert probe(client, redirector.url("/chain"), retries=0).reachable
    assert internal.requests != []


def test_errors_published_are_fixed_phrases_never_the_socket_s_words(store, redirector):
    from gist_helpers import free_port

    closed = f"http://127.0.0.2:{free_port()}/w"
    redirector.route("/teapot", statuses=[418] * 10)
    redirector.route("/gone", statuses=[410] * 10)
    with link_client(VIA_REDIRECTOR, timeout=2) as client:
        dead = probe(client, closed, retries=0)
        teapot = probe(client, redirector.url("/teapot"), retries=0)
        gone = probe(client, redirector.url("/gone"), retries=0)
        ftp = probe(client, "file:///etc/passwd", retries=0)
    assert dead.error == "cannot connect"
    assert teapot.error == "HTTP 418 I'm a Teapot" or teapot.error.startswith("HTTP 418")
    assert gone.error == "HTTP 410 Gone"
    assert not ftp.reachable and "/etc/passwd" not in ftp.error
    for p in (dead, teapot, gone, ftp):
        assert "refused" not in p.error.lower() or p.error == "refused by policy"
        assert "errno" not in p.error.lower() and "127.0.0.2" not in p.error


def test_a_source_that_trickles_is_cut_off_by_the_probe_deadline(redirector):
    redirector.route("/slow", DATA, trickle=(1, 0.3))

    def slow_headers(route, h) -> None:  # headers one byte at a time: no read ever times out
        import time

        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n":
            h.wfile.write(bytes([byte]))
            h.wfile.flush()
            time.sleep(0.3)

    redirector.route("/slow-headers", handler=slow_headers)
    with link_client(VIA_REDIRECTOR, timeout=5) as client:
        result = probe(client, redirector.url("/slow-headers"), retries=0, deadline=1.0)
    assert (result.reachable, result.error) == (False, "no answer in time")


# ------------------------------------------------------------------------------------ the mirror


def weights(store, url: str, sha1: str = SHA1, name: str = "Mirror Net", size: int | None = None) -> str:
    keys = dict(caffemodel="m.caffemodel", caffemodel_url=url, sha1=sha1)
    if size is not None:
        keys["size"] = size
    return publish(store, "eve", name, **keys)


def test_the_mirror_never_copies_internal_urls(store, internal, redirector, tmp_path):
    redirector.route("/to-internal", redirect=f"http://localhost:{internal.port}/secret")
    urls = spellings(internal.port) + [redirector.url("/to-internal")]
    for i, url in enumerate(urls):
        weights(store, url, name=f"Internal {i}")
    mirror = Mirror(tmp_path / "blobs", MirrorOptions(policy=VIA_REDIRECTOR))
    results = mirror.sync(store)
    assert internal.requests == []
    assert {r.url for r in results} == set(urls)  # every model naming the SHA-1 was a candidate
    assert {(r.status, r.error) for r in results} == {("refused", "refused by policy")}
    assert not mirror.has(SHA1) and not (tmp_path / "blobs" / "sha1").exists()
    # Opted in, it is mirrored (the first source that works; the others are not needed).
    lab = Mirror(tmp_path / "blobs", MirrorOptions(policy=LAB))
    done = lab.sync(store, everything=True)
    assert done[-1].status == "mirrored" and lab.path(SHA1).read_bytes() == DATA


@pytest.mark.parametrize(
    "source", ["file:///etc/passwd", "/etc/passwd", "file:///etc/hostname", "/etc/hostname"]
)
def test_the_mirror_never_copies_server_files(store, database_url, tmp_path, source):
    path = Path(source.removeprefix("file://"))
    if not path.is_file():
        pytest.skip(f"{path} is not on this machine")
    sha1 = hashlib.sha1(path.read_bytes()).hexdigest()  # the attacker knows (or guesses) the hash
    gid = weights(store, source, sha1=sha1, name="Local File Net")
    for policy in (DEFAULT, LAB):  # not even a lab's opt-in lets the server read its own files
        mirror = Mirror(tmp_path / "blobs", MirrorOptions(policy=policy))
        [result] = mirror.sync(store, everything=True)
        assert (result.status, result.error) == ("refused", "refused by policy")
        assert not mirror.has(sha1)
    secret = path.read_bytes()
    assert not any(p.is_file() and p.read_bytes() == secret for p in tmp_path.rglob("*"))
    with web_for(database_url, tmp_path, seed=False) as w:  # the badge tells nothing of the file
        assert "not mirrored here" in w.get(f"/models/{gid}").text
        assert w.http.get(f"/api/models/{gid}").json()["weights"]["mirrored"] is False
        assert w.http.get(f"/blobs/sha1/{sha1}").status_code == 404


def test_a_trickling_source_is_cut_off_and_does_not_block_the_round(store, redirector, tmp_path):
    slow = os.urandom(5000)
    redirector.route("/slow", slow, trickle=(1, 0.2))  # a byte every 0.2 s: no read ever times out
    redirector.route("/fast", DATA)
    weights(store, redirector.url("/slow"), sha1=hashlib.sha1(slow).hexdigest(), name="Slow Net")
    weights(store, redirector.url("/fast"), name="Fast Net")
    options = MirrorOptions(policy=VIA_REDIRECTOR, concurrency=2, min_rate=1000, grace=1.0, timeout=5)
    mirror = Mirror(tmp_path / "blobs", options)
    results = {r.url: r for r in mirror.sync(store)}
    assert results[redirector.url("/fast")].status == "mirrored"
    cut = results[redirector.url("/slow")]
    assert cut.status == "failed" and "slower than" in cut.error
    assert not mirror.has(hashlib.sha1(slow).hexdigest())
    # The deadline cuts off a source that keeps up the rate but never ends.
    options = MirrorOptions(policy=VIA_REDIRECTOR, fetch_seconds=1.0, min_rate=1, timeout=5)
    [result] = Mirror(tmp_path / "blobs", options).sync(store, everything=True)
    assert result.status == "failed" and "took longer than the 1 s" in result.error


def endless(route, h: BaseHTTPRequestHandler) -> None:
    """No Content-Length, no end: bytes until the client hangs up."""
    h.send_response(200)
    h.send_header("Connection", "close")
    h.end_headers()
    chunk = b"\0" * 65536
    try:
        for _ in range(2000):  # 128 MiB at most, should the cap fail
            h.wfile.write(chunk)
            route.bodies_sent += len(chunk)
    except OSError:
        pass
    h.close_connection = True


def test_the_byte_cap_holds_without_content_length_or_size(store, redirector, tmp_path):
    redirector.route("/endless", handler=endless)
    weights(store, redirector.url("/endless"), sha1="9" * 40, name="Endless Net")
    mirror = Mirror(tmp_path / "blobs", MirrorOptions(policy=VIA_REDIRECTOR, max_bytes=300_000))
    [result] = mirror.sync(store)
    assert result.status == "failed" and "more than the expected 300000 bytes" in result.error
    on_disk = sum(p.stat().st_size for p in (tmp_path / "blobs").rglob("*") if p.is_file())
    assert on_disk <= 300_000
    # A front matter size above the server's maximum is not even tried.
    weights(store, redirector.url("/endless"), sha1="8" * 40, name="Huge Net", size=10**12)
    before = len(redirector.requests)
    results = {r.sha1: r for r in mirror.sync(store, everything=True)}
    assert results["8" * 40].status == "failed" and "maximum" in results["8" * 40].error
    assert len(redirector.requests) == before + 1  # only the endless one, again


def test_a_dead_url_does_not_squat_a_sha1_another_model_serves(store, redirector, tmp_path):
    redirector.route("/dead", statuses=[404] * 100)
    redirector.route("/alive", DATA)
    weights(store, redirector.url("/dead"), name="Dead Net")  # first: the older model
    weights(store, redirector.url("/alive"), name="Alive Net")
    mirror = Mirror(tmp_path / "blobs", MirrorOptions(policy=VIA_REDIRECTOR))
    results = mirror.sync(store)
    assert [(r.url, r.status) for r in results] == [
        (redirector.url("/dead"), "failed"),
        (redirector.url("/alive"), "mirrored"),
    ]
    assert mirror.path(SHA1).read_bytes() == DATA


def test_failed_sources_back_off_like_the_link_checker(store, redirector, tmp_path):
    redirector.route("/dead", statuses=[404] * 100)
    weights(store, redirector.url("/dead"), sha1="7" * 40, name="Dead Net")
    mirror = Mirror(tmp_path / "blobs", MirrorOptions(policy=VIA_REDIRECTOR))
    assert [r.status for r in mirror.sync(store)] == ["failed"]
    assert mirror.sync(store) == []  # backing off: not tried again in the next round
    assert len(redirector.requests_for("/dead")) == 1
    with store.session() as s:
        row = s.get(MirrorSource, ("7" * 40, redirector.url("/dead")))
        assert row.failures == 1 and (row.next_try - row.tried_at).total_seconds() == 3600
    mirror.sync(store, everything=True)
    with store.session() as s:
        row = s.get(MirrorSource, ("7" * 40, redirector.url("/dead")))
        assert row.failures == 2 and (row.next_try - row.tried_at).total_seconds() == 7200


# ------------------------------------------------------------------------------------ wiki import


def test_wiki_import_does_not_follow_a_gist_s_raw_url_inside(store, internal, scripted):
    """The Gist API is the operator's choice; a gist's raw_url is its author's."""
    api = scripted()
    gist_id = "a" * 32
    gist = {
        "id": gist_id,
        "owner": {"login": "eve"},
        "files": {
            "readme.md": {
                "filename": "readme.md",
                "truncated": True,
                "size": len(DATA),
                "raw_url": f"http://2130706433:{internal.port}/secret",
            }
        },
    }
    api.script("GET", f"/gists/{gist_id}", (200, gist))
    page = parse_page(f"# Zoo\n\n### Section\n\n* [Net](https://gist.github.com/eve/{gist_id}): a net\n")
    from caffezoo.gist import GistClient

    with GistClient(api.url, token=None, retries=0, policy=DEFAULT) as client:
        report = import_page(store, page, client=client)
    assert list(report.failed) == [gist_id] and "refused by policy" in report.failed[gist_id]
    assert internal.requests == [] and len(api.requests()) == 1  # the API itself was asked
    with GistClient(api.url, token=None, retries=0, policy=LAB) as client:
        import_page(store, page, client=client)
    assert [r.path for r in internal.requests] == ["/secret"]  # opted in, it is fetched


def test_wiki_import_cli_refuses_by_default_and_opts_in(cli, tmp_path, monkeypatch, internal, scripted):
    api = scripted()
    gist_id = "b" * 32
    readme = "---\nname: Net\n---\nA net.\n"
    files = {"readme.md": {"filename": "readme.md", "truncated": True, "size": len(readme)}}
    files["readme.md"]["raw_url"] = f"http://[::ffff:127.0.0.1]:{internal.port}/readme"
    internal.route("/readme", readme.encode())
    api.script("GET", f"/gists/{gist_id}", (200, {"id": gist_id, "owner": {"login": "eve"}, "files": files}))
    monkeypatch.setenv("CAFFEZOO_GIST_API", api.url)
    monkeypatch.setenv("CAFFEZOO_DATABASE_URL", f"sqlite:///{tmp_path / 'w.db'}")
    page = tmp_path / "p.md"
    page.write_text(f"# Zoo\n\n### Section\n\n* [Net](https://gist.github.com/eve/{gist_id}): a net\n")
    r = cli("wiki", "import", page)
    assert r.code == 1 and "refused by policy" in r.stderr and internal.requests == []
    r = cli("wiki", "import", page, "--allow-network", "127.0.0.0/8")
    assert r.code == 0, r.stderr
    assert [q.path for q in internal.requests] == ["/readme"]
    assert cli("wiki", "import", page, "--allow-network", "nonsense").code != 0


# ------------------------------------------------------------------------------------ the CLI


def test_serve_commands_take_the_policy_flags(cli, tmp_path, monkeypatch, internal):
    from caffezoo.server import Storage

    db = f"sqlite:///{tmp_path / 'c.db'}"
    monkeypatch.setenv("CAFFEZOO_DATABASE_URL", db)
    store = Storage(db)
    weights(store, f"http://127.1:{internal.port}/secret")
    store.close()
    r = cli("serve", "check-links", "--json")
    assert r.code == 1 and '"error": "refused by policy"' in r.stdout
    r = cli("serve", "mirror", "--blobs-dir", tmp_path / "b")
    assert r.code == 1 and "refused" in r.stderr and "refused by policy" in r.stderr
    assert internal.requests == []
    r = cli("serve", "mirror", "--blobs-dir", tmp_path / "b", "--all", "--allow-network", "127.0.0.1/32")
    assert r.code == 0, r.stderr
    assert (tmp_path / "b" / "sha1" / SHA1).read_bytes() == DATA
    r = cli("serve", "check-links", "--all", "--allow-private-urls", "--json")
    assert r.code == 0 and '"reachable": true' in r.stdout


def test_the_policy_is_the_client_s_own_not_the_process_s(internal):
    """A policy client and a plain one side by side: neither changes the other."""
    with _http.client(policy=DEFAULT) as guarded, _http.client() as plain:
        with pytest.raises(_http.Refused):
            guarded.get(internal.url("/secret"))
        assert plain.get(internal.url("/secret")).content == DATA
        with pytest.raises(_http.Refused):
            guarded.get(internal.url("/secret"))
    with _http.client(policy=DEFAULT) as guarded, pytest.raises(httpx.HTTPError):
        guarded.get("file:///etc/passwd")


def test_pages_show_refusals_and_never_socket_errors(database_url, tmp_path, internal):
    from caffezoo.server.links import Probe, record

    with web_for(database_url, tmp_path, seed=False) as w:
        refused = weights(w.storage, f"http://0x7f000001:{internal.port}/secret", name="Refused Net")
        check_links(w.storage, policy=DEFAULT, rate=1000, retries=0)
        old_url = "http://old.example/w"
        old = weights(w.storage, old_url, name="Old Row Net", sha1="6" * 40)
        # A row recorded before errors were fixed phrases: its socket text must not be shown.
        record(w.storage, [Probe(old_url, False, error="ConnectError: [Errno 111] Connection refused")])
        page = w.get(f"/models/{refused}").text
        assert "unreachable: refused by policy" in page
        assert w.http.get(f"/api/models/{refused}").json()["weights"]["error"] == "refused by policy"
        page = w.get(f"/models/{old}").text + w.get("/").text + w.http.get("/api/models").text
        assert "Connection refused" not in page and "Errno" not in page
        assert w.http.get(f"/api/models/{old}").json()["weights"]["error"] == "connection failed"
    assert internal.requests == []


def test_a_round_takes_each_owner_in_turn(store, tmp_path):
    from caffezoo.server.mirror import wanted

    for i in range(3):
        publish(
            store,
            "mallory",
            f"Flood {i}",
            caffemodel="m.caffemodel",
            caffemodel_url=f"http://x/{i}",
            sha1=f"{i}" * 40,
        )
    publish(
        store, "alice", "Alice Net", caffemodel="m.caffemodel", caffemodel_url="http://a/w", sha1="a" * 40
    )
    publish(store, "bob", "Bob Net", caffemodel="m.caffemodel", caffemodel_url="http://b/w", sha1="0" * 40)
    order = wanted(store, lambda sha1: False)
    assert [w.sha1[0] for w in order] == ["0", "a", "1", "2"]  # mallory, alice, mallory, mallory
    assert order[0].sources == (("http://x/0", None), ("http://b/w", None))  # bob's URL is a source too
    assert [w.sha1 for w in wanted(store, lambda sha1: sha1 == "a" * 40)] == ["0" * 40, "1" * 40, "2" * 40]


def test_wiki_import_bounds_the_bytes_of_one_gist(store, redirector, scripted, monkeypatch):
    import caffezoo.server.wiki as wiki
    from caffezoo.gist import GistClient

    monkeypatch.setattr(wiki, "GIST_BYTES", 1 << 20)  # the bound, made small enough to test
    redirector.route("/endless", handler=endless)
    api = scripted()
    gist_id = "c" * 32
    files = {"readme.md": {"filename": "readme.md", "truncated": True, "raw_url": redirector.url("/endless")}}
    api.script("GET", f"/gists/{gist_id}", (200, {"id": gist_id, "owner": {"login": "eve"}, "files": files}))
    page = parse_page(f"# Zoo\n\n### Section\n\n* [Net](https://gist.github.com/eve/{gist_id}): a net\n")
    with GistClient(api.url, token=None, retries=0, policy=VIA_REDIRECTOR) as client:
        report = import_page(store, page, client=client)
    assert "more than the 1048576 bytes allowed" in report.failed[gist_id]
    assert redirector.routes["/endless"].bodies_sent < 64 << 20  # the client hung up long before


def gzip_bomb(route, h: BaseHTTPRequestHandler) -> None:
    """256 MiB of zeros in a 256 KiB gzip body, sent though the mirror asked for identity."""
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    body = b"".join(packer.compress(b"\0" * (1 << 20)) for _ in range(256)) + packer.flush()
    h.send_response(200)
    h.send_header("Content-Encoding", "gzip")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def test_a_compressed_answer_is_not_inflated_past_the_byte_cap(store, redirector, tmp_path):
    # Decoding one 256 KiB read of a gzip bomb makes a 256 MiB chunk before any cap can look
    # at it: with a byte cap in force, an answer compressed against our Accept-Encoding:
    # identity is refused before it is decoded at all.
    redirector.route("/bomb", handler=gzip_bomb)
    weights(store, redirector.url("/bomb"), sha1="7" * 40, name="Bomb Net")
    mirror = Mirror(tmp_path / "blobs", MirrorOptions(policy=VIA_REDIRECTOR, max_bytes=300_000))
    [result] = mirror.sync(store)
    assert result.status == "failed" and "compressed" in result.error
    assert not any(p.is_file() and p.stat().st_size for p in (tmp_path / "blobs").rglob("*"))


def test_wiki_import_does_not_inflate_a_compressed_raw_url(store, redirector, scripted, monkeypatch):
    # 256 KiB on the wire is well inside the byte bound, but httpx inflated it to 256 MiB in
    # memory (a 512 KiB bomb took the process to 1.1 GB): the bound must hold for what is
    # decoded, so a fetch under the policy does not inflate at all.
    import caffezoo.server.wiki as wiki
    from caffezoo.gist import GistClient

    monkeypatch.setattr(wiki, "GIST_BYTES", 1 << 20)
    redirector.route("/bomb", handler=gzip_bomb)
    api = scripted()
    gist_id = "d" * 32
    files = {"readme.md": {"filename": "readme.md", "truncated": True, "raw_url": redirector.url("/bomb")}}
    api.script("GET", f"/gists/{gist_id}", (200, {"id": gist_id, "owner": {"login": "eve"}, "files": files}))
    page = parse_page(f"# Zoo\n\n### Section\n\n* [Net](https://gist.github.com/eve/{gist_id}): a net\n")
    with GistClient(api.url, token=None, retries=0, policy=VIA_REDIRECTOR) as client:
        report = import_page(store, page, client=client)
    assert list(report.failed) == [gist_id] and "compressed" in report.failed[gist_id]
    asked = redirector.requests_for("/bomb")
    assert asked and all(
        {k.lower(): v for k, v in r.headers.items()}["accept-encoding"] == "identity" for r in asked
    )
