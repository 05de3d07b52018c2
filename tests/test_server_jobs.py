"""Background jobs across replicas: leases in the database (both engines, racing threads),
and real `caffezoo serve` replicas on one PostgreSQL probing a loopback origin."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from download_helpers import wait_for
from fault_server import FaultServer
from replica_helpers import replica, start_replica
from web_helpers import fresh_postgres, publish

from caffezoo import _http
from caffezoo.server import Storage
from caffezoo.server.jobs import Leases, job_key
from caffezoo.server.links import check_links, is_due
from caffezoo.server.mirror import Mirror, MirrorOptions
from caffezoo.server.tables import JobLease, LinkCheck

BODY = b"w" * 4096
LAB = _http.Policy(allow_private=True)  # the test origins are on loopback: opted in, as a lab would
MIRROR_LAB = MirrorOptions(policy=LAB)
PRIVATE = "--allow-private-urls"


def lease_row(store, kind: str, subject: str) -> JobLease | None:
    with store.session() as s:
        return s.get(JobLease, (kind, job_key(subject)))


def linked_model(store, url: str, name: str = "Leased Net") -> str:
    return publish(store, "lena", name, caffemodel="n.caffemodel", caffemodel_url=url, sha1="2" * 40)


# --------------------------------------------------------------------------- leases, in-process


def test_a_job_is_held_by_one_owner_until_finished_or_expired(store):
    a, b = Leases(store, ttl=60, owner="a"), Leases(store, ttl=60, owner="b")
    assert a.claim("link", "http://x/w") and not b.claim("link", "http://x/w")
    assert not a.claim("link", "http://x/w")  # a claim is not re-entrant either: one run at a time
    assert b.claim("link", "http://x/other")  # other jobs, other kinds are independent
    assert b.claim("mirror", "http://x/w")
    assert a.held() == ["http://x/w"]
    a.finish("link", "http://x/w")
    assert lease_row(store, "link", "http://x/w").owner is None
    assert b.claim("link", "http://x/w")
    b.finish("link", "http://x/w", cooldown=3600)  # e.g. a failed fetch: nobody retries this period
    assert not a.claim("link", "http://x/w")
    short = Leases(store, ttl=0.0, owner="dead")  # a holder whose lease ran out (stopped renewing)
    assert short.claim("link", "http://x/ttl")
    assert a.claim("link", "http://x/ttl")
    assert lease_row(store, "link", "http://x/ttl").owner == "a"


def test_finishing_or_renewing_touches_only_ones_own_leases(store):
    a, b = Leases(store, ttl=60, owner="a"), Leases(store, ttl=60, owner="b")
    assert a.claim("link", "u1")
    b.finish("link", "u1")  # not b's: no effect
    assert lease_row(store, "link", "u1").owner == "a"
    assert b.renew() == 0 and a.renew() == 1
    assert b.release_all() == 0 and a.release_all() == 1
    assert b.claim("link", "u1")


def test_only_jobs_in_progress_are_renewed(store):
    """A job whose end could not be recorded must not stay held for ever by a live process."""
    a = Leases(store, ttl=60, owner="a")
    assert a.claim("link", "u1") and a.claim("link", "u2")
    assert a.renew() == 2
    with pytest.raises(RuntimeError), store.session(write=True) as s:
        a.finish("link", "u1", session=s)  # recorded with the result, but that transaction is lost
        raise RuntimeError("the database went away")
    assert lease_row(store, "link", "u1").owner == "a"  # still "held" in the database...
    assert a.renew() == 1  # ...but only u2 is in progress here: u1's row will expire
    b = Leases(store, ttl=60, owner="b")
    assert not b.claim("link", "u2")
    a.release_all()
    assert a.renew() == 0 and b.claim("link", "u2")


def test_a_claim_is_rolled_back_when_the_job_was_done_meanwhile(store):
    a = Leases(store, owner="a")
    assert not a.claim("link", "u", still_due=lambda s: False)
    assert lease_row(store, "link", "u") is None  # nothing left held
    assert a.claim("link", "u", still_due=lambda s: True)


def test_hostile_subjects_are_keyed_not_stored_as_keys(store):
    a = Leases(store, owner="a")
    long_url = "http://x/" + "é" * 5000 + "\U0001f600'; DROP TABLE job_leases; --"
    assert a.claim("link", long_url)
    row = lease_row(store, "link", long_url)
    assert row.subject == long_url and row.key == job_key(long_url) and len(row.key) == 40


def test_racing_threads_claim_a_job_exactly_once(store):
    """Many claimants at the same moment (a connection each): one wins, on both engines."""
    claimants = [Leases(store, owner=f"r{i}") for i in range(8)]
    for round_ in range(5):
        barrier, won = threading.Barrier(len(claimants)), []

        def go(leases, round_=round_, barrier=barrier, won=won):
            barrier.wait()
            if leases.claim("link", f"http://race/{round_}"):
                won.append(leases.owner)

        threads = [threading.Thread(target=go, args=(c,)) for c in claimants]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(won) == 1, won


def test_a_stale_round_skips_what_another_replica_just_checked(store):
    """Replica B listed the URL as due before A's round recorded it: B must not probe it again."""
    with FaultServer() as origin:
        origin.route("/w", BODY)
        url = origin.url("/w")
        linked_model(store, url)
        a, b = Leases(store, owner="a"), Leases(store, owner="b")
        stale = [url]  # what B's due list said
        assert [r.url for r in check_links(store, policy=LAB, rate=100, leases=a)] == [url]
        assert check_links(store, policy=LAB, rate=100, leases=b) == []  # due_urls is fresh: nothing
        with store.session() as s:
            assert not is_due(s, url)
        # B's stale list, with the due check after the claim: skipped as well.
        assert not b.claim("link", stale[0], lambda s: is_due(s, url))
        assert len(origin.requests_for("/w")) == 1
        assert lease_row(store, "link", url).owner is None  # released with the record


def test_mirror_jobs_are_shared_by_replicas_sharing_a_store(store, tmp_path):
    data = b"weights!" * 1000
    sha1 = hashlib.sha1(data).hexdigest()
    with FaultServer() as origin:
        origin.route("/m.caffemodel", data)
        publish(
            store,
            "mira",
            "Mirrored Net",
            caffemodel="m.caffemodel",
            caffemodel_url=origin.url("/m.caffemodel"),
            sha1=sha1,
        )
        shared = Mirror(tmp_path / "blobs", MIRROR_LAB)
        a, b = Leases(store, owner="a"), Leases(store, owner="b")
        assert a.claim("mirror", shared.job(sha1))  # A is fetching it right now
        assert Mirror(tmp_path / "blobs", MIRROR_LAB).sync(store, leases=b) == []  # B leaves it to A
        assert len(origin.requests_for("/m.caffemodel")) == 0
        a.finish("mirror", shared.job(sha1))
        [r] = shared.sync(store, leases=b)
        assert r.status == "mirrored" and len(origin.requests_for("/m.caffemodel")) == 1
        assert shared.sync(store, leases=a) == []  # present: nothing to do
        # A store of its own (another directory, another machine) is its own job.
        assert Mirror(tmp_path / "elsewhere", MIRROR_LAB).job(sha1) != shared.job(sha1)


def test_a_failed_mirror_fetch_is_not_retried_by_another_replica_in_the_same_period(store, tmp_path):
    with FaultServer() as origin:
        origin.route("/gone", b"", statuses=[404] * 100)
        publish(
            store,
            "mira",
            "Gone Net",
            caffemodel="g.caffemodel",
            caffemodel_url=origin.url("/gone"),
            sha1="7" * 40,
        )
        a, b = Leases(store, owner="a"), Leases(store, owner="b")
        [r] = Mirror(tmp_path / "blobs", MIRROR_LAB).sync(store, leases=a, retry_after=3600)
        assert r.status == "failed"
        seen = len(origin.requests_for("/gone"))
        assert Mirror(tmp_path / "blobs", MIRROR_LAB).sync(store, leases=b, retry_after=3600) == []
        assert len(origin.requests_for("/gone")) == seen


# --------------------------------------------------------------------------- real replicas


@pytest.fixture
def pg_db(postgres_url) -> str:
    return fresh_postgres(postgres_url)


@pytest.fixture
def origin():
    with FaultServer() as srv:
        yield srv


PERIOD = 1.0  # --recheck-after: a reachable URL is due again this long after its check


def test_two_replicas_probe_each_url_once_per_period(pg_db, origin):
    def slow(route, h):  # a probe takes 0.3 s: replicas ticking every 0.1 s overlap it
        time.sleep(0.3)
        h._send_body(route, h.command == "HEAD")

    origin.route("/w", BODY, handler=slow)
    url = origin.url("/w")
    store = Storage(pg_db)
    linked_model(store, url)
    args = (
        PRIVATE,
        "--check-every",
        "0.1",
        "--recheck-after",
        str(PERIOD),
        "--link-rate",
        "100",
        "--lease-ttl",
        "10",
    )
    with replica(pg_db, *args) as a, replica(pg_db, *args) as b:
        wait_for(lambda: len(origin.requests_for("/w")) >= 5, what="five probes")
        assert a.stop() == 0 and b.stop() == 0
    arrivals = [r.time for r in origin.requests_for("/w")]
    assert all(r.method == "HEAD" for r in origin.requests_for("/w"))
    # A URL is claimed only once due, i.e. PERIOD after the previous probe was recorded,
    # which was after that probe arrived: two replicas probing in the same period would
    # show here as a gap far below PERIOD (they each tick every 0.1 s).
    gaps = [b_ - a_ for a_, b_ in zip(arrivals, arrivals[1:])]
    assert min(gaps) >= PERIOD, gaps
    # Shut down gracefully: every lease was released.
    with store.session() as s:
        assert s.query(JobLease).filter(JobLease.owner.is_not(None)).count() == 0
    store.close()


def test_a_killed_replicas_lease_is_taken_over_after_it_expires(pg_db, origin):
    hold = threading.Event()
    prober: list[int | None] = []  # the process behind each probe
    replicas: dict[str, int] = {}

    def a_hangs(route, h):
        pid = _peer_pid(h.client_address[1])
        prober.append(pid)
        if pid != replicas.get("b"):  # A's probes (its retries too; it may probe before the
            hold.wait(120)  # test knows its pid) hang until A dies; B's go through
            return
        h._send_body(route, h.command == "HEAD")

    origin.route("/slow", BODY, handler=a_hangs)
    url = origin.url("/slow")
    store = Storage(pg_db)
    linked_model(store, url)
    ttl = 3.0
    args = (PRIVATE, "--check-every", "0.2", "--link-rate", "100", "--lease-ttl", str(ttl))
    try:
        with replica(pg_db, *args) as a:
            wait_for(lambda: len(prober) >= 1, what="A's probe")
            # A probe that timed out is recorded and its lease handed back until the next round
            # (every 0.2 s) claims it again: on a loaded machine the test may read in between.
            held = wait_for(
                lambda: (row := lease_row(store, "link", url)) and row.owner and row, what="A's lease"
            )
            assert held.owner.split(":")[1] == str(a.pid)
            with replica(pg_db, *args) as b:
                replicas["b"] = b.pid
                time.sleep(ttl)  # A is alive and renewing: B must keep off
                assert set(prober) == {a.pid}  # A's probe may time out and retry; B never probes
                assert lease_row(store, "link", url).owner == held.owner
                expires_at_kill = lease_row(store, "link", url).expires
                a.kill()
                checked = wait_for(
                    lambda: (row := _check(store, url)) is not None and row.reachable and row,
                    what="B's probe after A's lease expired",
                )
                assert b.pid in prober
                taken = lease_row(store, "link", url)
                assert taken.claimed_at >= expires_at_kill  # not before A's last renewal ran out
                assert checked.checked_at >= expires_at_kill
                assert b.proc.poll() is None
    finally:
        hold.set()
        store.close()


def _peer_pid(port: int) -> int | None:
    """The child of this process whose loopback TCP connection goes out from ``port``. Only
    children are looked at: reading every descriptor of every process on a busy machine took
    long enough for a replica's probe to time out first."""
    inode = next(
        (
            fields[9]
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
            if int((fields := line.split())[1].rsplit(":", 1)[1], 16) == port
        ),
        None,
    )
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != os.getpid():
                continue
            for fd in (stat.parent / "fd").iterdir():
                if os.readlink(fd) == f"socket:[{inode}]":
                    return int(stat.parent.name)
        except (OSError, ValueError, IndexError):
            pass  # gone meanwhile
    return None


def _check(store, url: str) -> LinkCheck | None:
    with store.session() as s:
        return s.get(LinkCheck, url)


def test_role_web_runs_no_jobs_and_role_worker_runs_them(pg_db, origin):
    origin.route("/w", BODY)
    url = origin.url("/w")
    store = Storage(pg_db)
    gid = linked_model(store, url)
    args = (PRIVATE, "--check-every", "0.1", "--link-rate", "100", "--mirror", "--mirror-every", "0.1")
    with replica(pg_db, "--role", "web", *args) as web:
        api = httpx.get(f"{web.url}/api/models/{gid}")
        assert api.status_code == 200 and api.json()["weights"]["checked_at"] is None
        time.sleep(2)  # twenty rounds, had it run any
        assert origin.requests == []
        with replica(pg_db, "--role", "worker", *args) as worker:
            assert httpx.get(f"{worker.url}/readyz").json()["status"] == "ready"
            assert httpx.get(f"{worker.url}/gists/{gid}").status_code == 404  # health only
            wait_for(lambda: origin.requests_for("/w"), what="the worker's probe")
            wait_for(
                lambda: httpx.get(f"{web.url}/api/models/{gid}").json()["weights"]["checked_at"],
                what="the web replica to show the worker's check",
            )
    store.close()


def test_sigterm_releases_the_lease_of_the_job_in_progress(pg_db, origin):
    release = threading.Event()

    def slow(route, h):
        release.wait(30)
        h._send_body(route, h.command == "HEAD")

    origin.route("/s", BODY, handler=slow)
    url = origin.url("/s")
    store = Storage(pg_db)
    linked_model(store, url)
    r = start_replica(
        pg_db, PRIVATE, "--check-every", "0.2", "--link-rate", "100", "--graceful-timeout", "20"
    )
    try:
        wait_for(lambda: origin.requests_for("/s"), what="the probe")
        assert lease_row(store, "link", url).owner.split(":")[1] == str(r.pid)
        r.proc.send_signal(15)
        time.sleep(0.5)
        release.set()  # the probe in progress finishes...
        assert r.proc.wait(60) == 0
        row = lease_row(store, "link", url)
        assert row.owner is None  # ...is recorded, and the lease handed back
        assert _check(store, url).reachable
    finally:
        release.set()
        if r.proc.poll() is None:
            r.kill()
        store.close()


def test_replicas_see_each_others_writes_at_once(pg_db):
    store = Storage(pg_db)
    token = store.create_token("wanda")
    auth = {"Authorization": f"token {token}"}
    with replica(pg_db, "--no-check-links") as a, replica(pg_db, "--no-check-links") as b:
        readme = "---\nname: Shared Net\n---\nFirst words.\n"
        gist = httpx.post(
            f"{a.url}/gists", headers=auth, json={"public": True, "files": {"readme.md": {"content": readme}}}
        )
        assert gist.status_code == 201
        gid = gist.json()["id"]
        for _ in range(3):  # B's caches are warm
            assert "First words" in httpx.get(f"{b.url}/gists/{gid}").json()["files"]["readme.md"]["content"]
            assert "Shared Net" in httpx.get(f"{b.url}/models/{gid}").text
            assert "Shared Net" in httpx.get(f"{b.url}/").text
        for n in range(5):
            new = f"---\nname: Renamed Net {n}\n---\nWords {n}.\n"
            r = httpx.patch(
                f"{a.url}/gists/{gid}", headers=auth, json={"files": {"readme.md": {"content": new}}}
            )
            assert r.status_code == 200
            # Straight after A answered, B answers with the new state: API, model page, index.
            assert httpx.get(f"{b.url}/gists/{gid}").json()["files"]["readme.md"]["content"] == new
            assert f"Renamed Net {n}" in httpx.get(f"{b.url}/models/{gid}").text
            assert f"Renamed Net {n}" in httpx.get(f"{b.url}/").text
        assert httpx.delete(f"{a.url}/gists/{gid}", headers=auth).status_code == 204
        assert httpx.get(f"{b.url}/gists/{gid}").status_code == 404
    store.close()


def test_due_period_comes_from_recheck_after(store):
    with FaultServer() as origin:
        origin.route("/w", BODY)
        url = origin.url("/w")
        linked_model(store, url)
        check_links(store, policy=LAB, rate=100, ok_every=timedelta(seconds=5))
        row = _check(store, url)
        assert row.next_check - row.checked_at == timedelta(seconds=5)


def test_serve_refuses_bad_role_and_lease_flags(cli_process, tmp_path):
    env = {"CAFFEZOO_HOME": str(tmp_path)}
    bad = cli_process("serve", "--role", "primary", env=env)
    assert bad.code == 2 and "'primary' is not one of 'all', 'web', 'worker'" in bad.stderr
    for flag, value in (("--lease-ttl", "0"), ("--recheck-after", "-1"), ("--graceful-timeout", "-5")):
        r = cli_process("serve", flag, value, env=env)
        assert r.code == 2 and flag in r.stderr and "Traceback" not in r.stderr
