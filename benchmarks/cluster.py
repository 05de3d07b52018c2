"""The zoo at scale-out, measured on real engines in one run, printing ratios.

    PYTHONPATH=src python benchmarks/cluster.py [--only gist-api|jobs|blobs]
        [--duration 5] [--rounds 3] [--periods 10] [--blob-mib 64] [--runs 5]

Blob GET throughput (this file's ``blob_*`` functions): one weights file in a
single-node Ceph RADOS Gateway (started here, memstore), fetched with curl

- straight from the gateway (a presigned URL): the baseline;
- through ``caffezoo serve --blobs-url s3://...``, streamed by the server (on Linux the
  kernel splices the store's socket to the client's: ``caffezoo.server.splice``);
- through ``caffezoo serve --blobs-url s3://... --blobs-redirect`` (``curl -L``:
  one 302, then the gateway);
- through nginx in front of ``caffezoo serve --blobs-url s3://... --blobs-accel /_s3/``:
  the replica answers, nginx streams the body from the gateway (X-Accel-Redirect);
- as a control, through ``caffezoo serve --blobs-dir`` holding the same bytes: what
  the server's sending costs when it has no store to read from;

one download at a time and four at once, each contender interleaved with the
others ``--runs`` times; medians in MiB/s and the ratio to the baseline (goal:
>= 0.9x). Other parts of the scale-out measurements live in their own functions.

Gist API (``gist_api_throughput``): ``GET /gists/{id}`` driven by ``wrk`` at 32
connections on loopback, against (1) one replica on SQLite, (2) one replica on
PostgreSQL, (3) one and (4) two replicas on PostgreSQL behind nginx (a
non-daemon child on a free port, its config in a temp dir). Goals: PostgreSQL
single replica p99 < 25 ms and >= 0.8x SQLite's req/s; two replicas lose
< 10% per-core efficiency. This machine may have only 2 cores, shared by wrk,
nginx, PostgreSQL and the replicas, so two replicas cannot double the req/s:
efficiency is counted as requests per CPU-second the replicas used (from
/proc/PID/stat, during the run), two replicas against one, both behind nginx.
Four busy programs on 2 cores take turns, and a program whose core was taken
comes back to cold caches: the table counts those preemptions per request. The
control runs the same comparison for two SQLite replicas, each on its own copy
of the database: the same server sharing nothing with the other (no database,
cache, lease or change feed), so its loss is the machine's; the PostgreSQL
pair's efficiency divided by the control's is what scaling out itself costs
(below 1.00x) or not.

Jobs (``duplicate_jobs``): two replicas on one PostgreSQL run the link checker
with a short period (``--recheck-after``) over several URLs on a loopback
origin whose every request is logged; a duplicate is a URL probed twice within
one period. Also two replicas mirroring into one shared blob directory: each
blob must be fetched once. Goal: 0 duplicates.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from fault_server import FaultServer  # noqa: E402
from gist_helpers import free_port, temporary_postgres  # noqa: E402
from gist_server import seed, wrk  # noqa: E402
from replica_helpers import replica  # noqa: E402

from caffezoo.server.devcluster import ACCEL_PREFIX, Ceph, Nginx, Replica, stop_pids  # noqa: E402

BLOB_GOAL = 0.9


# --------------------------------------------------------------------------- blob GET throughput


def blob_setup(tmp: Path, size: int) -> tuple[Ceph, dict[str, str], list[Replica], list[Nginx], str]:
    """Ceph with one blob of ``size`` random bytes; a streaming, a redirecting and an accel zoo
    server (nginx in front) on it, and, as a control, a zoo server with the same blob in a local
    directory."""
    ceph = Ceph(tmp / "ceph", tied=True).start()
    env = {**ceph.env(), "CAFFEZOO_HOME": str(tmp / "home")}
    os.environ.update(env)
    from caffezoo.server.blobstore import LocalStore, S3Store

    store = S3Store("bench", "blobs")
    store.ensure_bucket()
    data = os.urandom(size)
    sha1 = hashlib.sha1(data).hexdigest()
    store.put(sha1, [data])
    LocalStore(tmp / "local").put(sha1, [data])
    urls = {"radosgw (direct)": store.presigned_url(sha1, 3600)}
    store.close()
    common = ["--no-check-links", "--log-level", "warning"]
    s3 = ["--blobs-url", "s3://bench/blobs"]
    servers, proxies = [], []
    for name, extra in (
        ("streamed", s3),
        ("redirected", [*s3, "--blobs-redirect"]),
        ("accel", [*s3, "--blobs-accel", ACCEL_PREFIX]),
        ("local directory", ["--blobs-dir", str(tmp / "local")]),
    ):
        slug = name.replace(" ", "-")
        db = f"sqlite:///{tmp / slug}.db"
        servers.append(
            Replica(
                tmp / "replicas",
                slug,
                args=[*common, *extra, "--database-url", db],
                env=env,
                tied=True,
            ).start()
        )
        base = servers[-1].url
        if name == "accel":  # its answers are for nginx to complete
            proxies.append(
                Nginx(tmp / "nginx", [base], accel=ACCEL_PREFIX, store=ceph.endpoint, tied=True).start()
            )
            base, name = proxies[-1].url, "accel, via nginx"
        urls[f"zoo server ({name})"] = f"{base}/blobs/sha1/{sha1}"
    return ceph, urls, servers, proxies, sha1


def blob_fetch(url: str, size: int, parallel: int) -> float:
    """Seconds for ``parallel`` concurrent curl downloads of ``url`` (redirects followed)."""

    def one(_):
        p = subprocess.run(
            ["curl", "-sS", "-L", "-o", "/dev/null", "-w", "%{size_download}", url],
            capture_output=True,
            text=True,
        )
        if p.returncode != 0 or int(p.stdout or 0) != size:
            raise SystemExit(f"curl {url}: {p.stderr.strip() or p.stdout} (expected {size} bytes)")

    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(parallel)))
    return time.perf_counter() - start


def blob_throughput(urls: dict[str, str], size: int, runs: int, parallel: int) -> dict[str, float]:
    """Median MiB/s of each contender, interleaved run by run so noise hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in urls}
    for url in urls.values():
        blob_fetch(url, size, parallel)  # warm up: connections, caches
    for _ in range(runs):
        for name, url in urls.items():
            times[name].append(blob_fetch(url, size, parallel))
    out = {name: parallel * size / (1 << 20) / statistics.median(t) for name, t in times.items()}
    return out | {"load": os.getloadavg()[0]}  # the machine's 1-minute load (shared: say how busy)


def blob_report(results: dict[int, dict[str, float]]) -> bool:
    ok = True
    for parallel, mibs in results.items():
        base = mibs["radosgw (direct)"]
        print(
            f"\nblob GET, {parallel} download{'s' if parallel > 1 else ''} at once (median MiB/s, ratio to direct; "
            f"load average {mibs.pop('load'):.1f} as it ended):"
        )
        for name, value in mibs.items():
            ratio = value / base
            if name.startswith(("zoo server (streamed", "zoo server (redirected", "zoo server (accel")):
                goal = "  ok" if ratio >= BLOB_GOAL else f"  below {BLOB_GOAL}x"
                ok &= ratio >= BLOB_GOAL
            else:
                goal = "  (control: nothing to read from a store)" if "local" in name else ""
            print(f"  {name:32} {value:8.0f} MiB/s  {ratio:5.2f}x{goal}")
    return ok


def blob_benchmark(size_mib: int, runs: int) -> bool:
    if not shutil.which("curl"):
        raise SystemExit("curl is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="caffezoo-bench-cluster-"))
    ceph = servers = proxies = None
    try:
        ceph, urls, servers, proxies, _ = blob_setup(tmp, size_mib << 20)
        results = {p: blob_throughput(urls, size_mib << 20, runs, p) for p in (1, 4)}
        return blob_report(results)
    finally:
        for lb in proxies or []:
            stop_pids(lb.pid_files)
        for r in servers or []:
            r.kill()
        if ceph is not None:
            ceph.kill()
        shutil.rmtree(tmp, ignore_errors=True)


CLIENTS = 32

# --------------------------------------------------------------------------- nginx

NGINX_CONF = """
worker_processes 1;
error_log {tmp}/error.log warn;
pid {tmp}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream zoo {{
        {servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://zoo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Request-ID $request_id;
        }}
    }}
}}
"""


@contextmanager
def nginx(upstreams: list[str]):
    """nginx balancing over ``upstreams`` (host:port), in the foreground as a child; yields its URL."""
    tmp = Path(tempfile.mkdtemp(prefix="caffezoo-nginx-"))
    port = free_port()
    servers = "\n        ".join(f"server {u};" for u in upstreams)
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, servers=servers, port=port))
    proc = subprocess.Popen(
        ["nginx", "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"nginx exited: {proc.stderr.read().decode()}")
            try:
                httpx.get(f"{url}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("nginx did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- Gist API throughput


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def preemptions(pids: list[int]) -> dict[int, int]:
    """Times the kernel took a CPU from each of the processes' threads while it could still run
    (``nonvoluntary_ctxt_switches``), by thread id: how crowded the cores they share are."""
    counts = {}
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                status = (task / "status").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue  # ended since the listing: the thread pool retires idle workers
            for line in status.splitlines():
                if line.startswith("nonvoluntary_ctxt_switches:"):
                    counts[int(task.name)] = int(line.split()[1])
    return counts


def preempted_since(before: dict[int, int], pids: list[int]) -> int:
    """Preemptions of ``pids`` since :func:`preemptions` gave ``before``, thread by thread: a
    thread that ended meanwhile takes its count with it, which must not subtract its past."""
    now = preemptions(pids)
    # A thread born meanwhile counts from 0, even on the id of one that ended.
    return sum(n - before.get(tid, 0) if n >= before.get(tid, 0) else n for tid, n in now.items())


def drive(url: str, duration: int, pids: list[int], clients: int = CLIENTS) -> dict[str, float]:
    """wrk at ``clients`` connections; with the CPU time ``pids`` spent during it, and how often
    they were preempted per request."""
    wrk(url, 8, 1)  # warm up: caches, connection pools
    before, taken = cpu_seconds(pids), preemptions(pids)
    result = wrk(url, clients, duration)
    used = cpu_seconds(pids) - before
    requests = result["rps"] * duration
    result["cpu_s"] = used
    result["req_per_cpu_s"] = requests / used if used else 0.0
    result["preempted_per_req"] = preempted_since(taken, pids) / requests if requests else 0.0
    result["load"] = os.getloadavg()[0]  # the machine's 1-minute load as the run ended
    return result


def gist_api_throughput(duration: int, rounds: int = 3) -> dict[str, dict[str, float]]:
    """req/s, p50/p99 and replica CPU per topology (see the module's docstring): every
    topology is up at once and measured in turn, ``rounds`` times; the median of each figure.
    On a machine others share, the load changes within a minute: alternating rounds keep one
    burst from deciding a comparison."""
    if shutil.which("wrk") is None or shutil.which("nginx") is None:
        raise SystemExit("wrk and nginx are needed (Debian packages wrk, nginx-light)")
    home = Path(tempfile.mkdtemp(prefix="caffezoo-cluster-"))
    quiet = ("--no-check-links",)
    runs: dict[str, list[dict[str, float]]] = {}
    lite, lite_copy = (f"sqlite:///{home / name}" for name in ("zoo.db", "copy.db"))
    try:
        with ExitStack() as up:
            pg = up.enter_context(temporary_postgres())
            s, a, b = (
                up.enter_context(replica(db, *quiet, home=home, log_level="warning")) for db in (lite, pg, pg)
            )
            lite_path = "/gists/" + seed(s.url, lite).rsplit("/", 1)[1]
            pg_path = "/gists/" + seed(a.url, pg).rsplit("/", 1)[1]
            # The control: a second SQLite replica on a copy of the first's database. The two
            # share no database, cache, lease or change feed: what they lose is the machine's.
            with (
                closing(sqlite3.connect(home / "zoo.db")) as source,
                closing(sqlite3.connect(home / "copy.db")) as copy,
            ):
                source.backup(copy)
            c = up.enter_context(replica(lite_copy, *quiet, home=home, log_level="warning"))
            lb1, lb2, lc1, lc2 = (
                up.enter_context(nginx([f"127.0.0.1:{r.port}" for r in pair]))
                for pair in ([a], [a, b], [s], [s, c])
            )
            targets = {
                "sqlite, 1 replica": (s.url + lite_path, [s.pid], CLIENTS),
                "postgresql, 1 replica": (a.url + pg_path, [a.pid], CLIENTS),
                "postgresql, 1 behind nginx": (lb1 + pg_path, [a.pid], CLIENTS),
                "postgresql, 2 behind nginx": (lb2 + pg_path, [a.pid, b.pid], CLIENTS),
                # The load each of the two replicas gets above, on one: the same work per replica.
                f"postgresql, 1 behind nginx, {CLIENTS // 2} clients": (lb1 + pg_path, [a.pid], CLIENTS // 2),
                "control: sqlite, 1 behind nginx": (lc1 + lite_path, [s.pid], CLIENTS),
                "control: sqlite copies, 2 behind nginx": (lc2 + lite_path, [s.pid, c.pid], CLIENTS),
            }
            for _ in range(rounds):
                for name, (url, pids, clients) in targets.items():
                    runs.setdefault(name, []).append(drive(url, duration, pids, clients))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return medians(runs)


def medians(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each topology's median of every figure over its rounds."""
    return {
        name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} | {"rounds": len(rs)}
        for name, rs in runs.items()
    }


def report_gist_api(results: dict[str, dict[str, float]], duration: int) -> None:
    print(
        f"GET /gists/{{id}}: wrk {CLIENTS} connections, {duration} s per point, median of "
        f"{results['sqlite, 1 replica']['rounds']} alternating rounds, {os.cpu_count()} CPUs "
        f"(shared by wrk, nginx, PostgreSQL and the replicas), median load average {statistics.median(r['load'] for r in results.values()):.1f}"
    )
    base = results["sqlite, 1 replica"]
    print(
        f"{'topology':<40} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'vs sqlite':>9} {'replica cpu-s':>13} "
        f"{'req/cpu-s':>9} {'preempted/req':>13}"
    )
    for name, r in results.items():
        versus = f"{r['rps'] / base['rps']:.2f}x"
        print(
            f"{name:<40} {r['rps']:>8.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {versus:>9} "
            f"{r['cpu_s']:>13.1f} {r['req_per_cpu_s']:>9.0f} {r['preempted_per_req']:>13.2f}"
        )
    pg = results["postgresql, 1 replica"]
    ratio = pg["rps"] / base["rps"]
    ok = pg["p99_ms"] < 25 and ratio >= 0.8
    print(
        f"goal PostgreSQL 1 replica: p99 < 25 ms and >= 0.8x SQLite: {'met' if ok else 'MISSED'} "
        f"(p99 {pg['p99_ms']:.1f} ms, {ratio:.2f}x)"
    )
    one, two = results["postgresql, 1 behind nginx"], results["postgresql, 2 behind nginx"]
    half = results[f"postgresql, 1 behind nginx, {CLIENTS // 2} clients"]
    eff = efficiency(two, one)
    print(
        f"goal 2 replicas lose < 10% per-core efficiency (requests per replica CPU-second, "
        f"2 vs 1 behind nginx, {CLIENTS} clients): {'met' if eff >= 0.9 else 'MISSED'} ({eff:.2f}x; "
        f"req/s {two['rps'] / one['rps']:.2f}x on {os.cpu_count()} CPUs); against one replica carrying "
        f"the same load each of the two does ({CLIENTS // 2} clients): {efficiency(two, half):.2f}x"
    )
    c1, c2 = results["control: sqlite, 1 behind nginx"], results["control: sqlite copies, 2 behind nginx"]
    machine = efficiency(c2, c1)
    print(
        f"control: 2 SQLite replicas, each on its own copy, sharing nothing, vs 1 behind nginx: {machine:.2f}x "
        f"(what this machine takes from two servers on its cores); the PostgreSQL pair against it: "
        f"{eff / machine if machine else 0.0:.2f}x (1.00x: scaling out itself costs nothing)"
    )


def efficiency(many: dict[str, float], one: dict[str, float]) -> float:
    """Requests per CPU-second of ``many`` against ``one``."""
    return many["req_per_cpu_s"] / one["req_per_cpu_s"] if one["req_per_cpu_s"] else 0.0


# --------------------------------------------------------------------------- duplicate jobs


def probes_of(origin: FaultServer, path: str) -> list[float]:
    """When the link checker's HEADs reached ``path`` (the mirror GETs the same URLs)."""
    return sorted(r.time for r in origin.requests_for(path) if r.method == "HEAD")


def duplicate_jobs(periods: int = 10, period: float = 1.0, urls: int = 4, blobs: int = 3) -> dict[str, int]:
    """Two replicas on one PostgreSQL: link probes within one period and mirror fetches per blob,
    counted from the origin's request log."""
    from caffezoo.server import Storage

    sys.path.insert(0, str(ROOT / "tests"))
    from web_helpers import publish

    home = Path(tempfile.mkdtemp(prefix="caffezoo-jobs-"))
    out: dict[str, int] = {}
    try:
        with temporary_postgres() as pg, FaultServer() as origin:

            def slow(route, h):  # a probe or fetch takes a while: replicas' rounds overlap it
                time.sleep(0.2)
                h._send_body(route, h.command == "HEAD")

            store = Storage(pg)
            for i in range(urls):
                origin.route(f"/link{i}", b"x" * 1000, handler=slow)
                publish(
                    store,
                    "jobs",
                    f"Link Net {i}",
                    caffemodel="n.caffemodel",
                    caffemodel_url=origin.url(f"/link{i}"),
                    sha1="2" * 40,
                )
            datas = [f"blob {i} ".encode() * 20000 for i in range(blobs)]
            for i, data in enumerate(datas):
                origin.route(f"/blob{i}", data, handler=slow)
                publish(
                    store,
                    "jobs",
                    f"Blob Net {i}",
                    caffemodel="b.caffemodel",
                    caffemodel_url=origin.url(f"/blob{i}"),
                    sha1=hashlib.sha1(data).hexdigest(),
                )
            store.close()
            args = (
                "--allow-private-urls",  # the origin is on loopback
                "--check-every", str(period / 10), "--recheck-after", str(period), "--link-rate", "100",
                "--mirror", "--mirror-every", str(period / 10), "--blobs-dir", str(home / "blobs"),
            )  # fmt: skip
            with (
                replica(pg, *args, home=home, log_level="warning"),
                replica(pg, *args, home=home, log_level="warning"),
            ):
                deadline = time.monotonic() + periods * period * 3 + 60
                while time.monotonic() < deadline:
                    if all(len(probes_of(origin, f"/link{i}")) >= periods for i in range(urls)):
                        break
                    time.sleep(0.1)
            probes = dups = 0
            for i in range(urls):
                times = probes_of(origin, f"/link{i}")
                probes += len(times)
                dups += sum(1 for a, b in zip(times, times[1:]) if b - a < period)
            fetches = [
                sum(1 for r in origin.requests_for(f"/blob{i}") if r.method == "GET") for i in range(blobs)
            ]
            out = {
                "urls": urls,
                "periods": periods,
                "probes": probes,
                "duplicate_probes": dups,
                "blobs": blobs,
                "blob_fetches": sum(fetches),
                "duplicate_fetches": sum(max(0, f - 1) for f in fetches),
            }
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return out


def report_jobs(r: dict[str, int]) -> None:
    print(
        f"background jobs, 2 replicas on one PostgreSQL: {r['urls']} URLs probed {r['probes']} times "
        f"over >= {r['periods']} periods, {r['duplicate_probes']} within one period; "
        f"{r['blobs']} blobs mirrored with {r['blob_fetches']} fetches, {r['duplicate_fetches']} duplicate"
    )
    ok = r["duplicate_probes"] == 0 and r["duplicate_fetches"] == 0
    print(f"goal 0 duplicate job executions: {'met' if ok else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["gist-api", "jobs", "blobs"], help="run one part")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds over the topologies")
    parser.add_argument("--periods", type=int, default=10, help="link-check periods to watch")
    parser.add_argument(
        "--blob-mib", type=int, default=64, help="size of the blob (memstore keeps it in RAM)"
    )
    parser.add_argument("--runs", type=int, default=5, help="interleaved runs of each blob contender")
    args = parser.parse_args()
    results: dict[str, object] = {}
    if args.only in (None, "gist-api"):
        results["gist_api"] = api = gist_api_throughput(args.duration, args.rounds)
        report_gist_api(api, args.duration)
    if args.only in (None, "jobs"):
        results["jobs"] = jobs = duplicate_jobs(args.periods)
        report_jobs(jobs)
    if args.only in (None, "blobs"):
        print(
            f"blob: {args.blob_mib} MiB in a single-node Ceph RADOS Gateway on 127.0.0.1; {args.runs} runs each"
        )
        blob_benchmark(args.blob_mib, args.runs)
    if results:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
