"""The zoo at scale-out, measured on real engines in one run, printing ratios.

    python benchmarks/cluster.py [--blob-mib 64] [--runs 5]

Blob GET throughput (this file's ``blob_*`` functions): one weights file in a
single-node Ceph RADOS Gateway (started here, memstore), fetched with curl

- straight from the gateway (a presigned URL): the baseline;
- through ``caffezoo serve --blobs-url s3://...``, streamed by the server;
- through ``caffezoo serve --blobs-url s3://... --blobs-redirect`` (``curl -L``:
  one 302, then the gateway);
- as a control, through ``caffezoo serve --blobs-dir`` holding the same bytes: what
  the server's sending costs when it has no store to read from;

one download at a time and four at once, each contender interleaved with the
others ``--runs`` times; medians in MiB/s and the ratio to the baseline (goal:
>= 0.9x). Other parts of the scale-out measurements live in their own functions.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from caffezoo.server.devcluster import Ceph, Replica  # noqa: E402

BLOB_GOAL = 0.9


# --------------------------------------------------------------------------- blob GET throughput


def blob_setup(tmp: Path, size: int) -> tuple[Ceph, dict[str, str], list[Replica], str]:
    """Ceph with one blob of ``size`` random bytes; a streaming and a redirecting zoo server on it,
    and, as a control, a zoo server with the same blob in a local directory."""
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
    servers = []
    for name, extra in (
        ("streamed", s3),
        ("redirected", [*s3, "--blobs-redirect"]),
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
        urls[f"zoo server ({name})"] = f"{servers[-1].url}/blobs/sha1/{sha1}"
    return ceph, urls, servers, sha1


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
    return {name: parallel * size / (1 << 20) / statistics.median(t) for name, t in times.items()}


def blob_report(results: dict[int, dict[str, float]]) -> bool:
    ok = True
    for parallel, mibs in results.items():
        base = mibs["radosgw (direct)"]
        print(
            f"\nblob GET, {parallel} download{'s' if parallel > 1 else ''} at once (median MiB/s, ratio to direct):"
        )
        for name, value in mibs.items():
            ratio = value / base
            if name in ("zoo server (streamed)", "zoo server (redirected)"):
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
    ceph = servers = None
    try:
        ceph, urls, servers, _ = blob_setup(tmp, size_mib << 20)
        results = {p: blob_throughput(urls, size_mib << 20, runs, p) for p in (1, 4)}
        return blob_report(results)
    finally:
        for r in servers or []:
            r.kill()
        if ceph is not None:
            ceph.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blob-mib", type=int, default=64, help="size of the blob (memstore keeps it in RAM)")
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    print(f"blob: {a.blob_mib} MiB in a single-node Ceph RADOS Gateway on 127.0.0.1; {a.runs} runs each")
    blob_benchmark(a.blob_mib, a.runs)


if __name__ == "__main__":
    main()
