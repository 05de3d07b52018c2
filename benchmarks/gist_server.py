"""GET /gists/{id} on the caffezoo server: throughput and p50/p99 latency.

    PYTHONPATH=src python benchmarks/gist_server.py [--duration 5]

Runs `caffezoo serve` (one uvicorn worker, uvloop + httptools when installed)
on SQLite and on a throwaway PostgreSQL cluster, and drives it with `wrk` at
1, 8 and 32 concurrent connections on loopback. The baseline, measured in the
same run on the same machine, is a bare uvicorn ASGI app answering the same
JSON bytes with no framework and no database: ratios say what the API costs
on top of the HTTP server itself. Goal (SQLite, 32 clients): >= 1,000 req/s
and p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import httpx

from caffezoo.server.devcluster import serve_command

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from gist_helpers import free_port, temporary_postgres  # noqa: E402

CONCURRENCY = (1, 8, 32)

BASELINE_APP = """
import sys
BODY = open(sys.argv[1], "rb").read()
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json; charset=utf-8")]})
    await send({"type": "http.response.body", "body": BODY})
import uvicorn
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
            loop="uvloop", http="httptools")
"""


def wait_up(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server {' '.join(proc.args)} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"server at {url} did not start")


@contextmanager
def process(args: list[str], url: str, env: dict[str, str] | None = None):
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_up(url, proc)
        yield proc
    finally:
        proc.terminate()
        proc.wait(20)


def seed(base: str, database_url: str) -> str:
    """A user, a token and a gist shaped like a model's info; return the gist's URL."""
    from caffezoo.server import Storage

    store = Storage(database_url)
    token = store.create_token("bench")
    store.close()
    deploy = "".join(
        f'layer {{ name: "conv{i}" type: "Convolution" bottom: "x" top: "x" '
        f"convolution_param {{ num_output: 64 kernel_size: 3 }} }}\n"
        for i in range(60)
    )
    readme = "---\nname: Bench Net\ncaffemodel: bench.caffemodel\nlicense: MIT\n---\n\n" + "Prose. " * 200
    r = httpx.post(
        f"{base}/gists",
        headers={"Authorization": f"Bearer {token}"},
        json={
            "description": "Bench Net",
            "files": {"readme.md": {"content": readme}, "deploy.prototxt": {"content": deploy}},
        },
    )
    r.raise_for_status()
    return f"{base}/gists/{r.json()['id']}"


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, connections: int, duration: int, script: str | None = None) -> dict[str, float]:
    """Drive ``url`` (with a wrk Lua ``script`` choosing the paths, when given)."""
    threads = min(connections, 2)
    extra = ["-s", script] if script else []
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", *extra, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pct = {
        m[0]: float(m[1]) * _UNITS[m[2]]
        for m in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} error responses from {url}")
    return {"rps": rps, "p50_ms": pct["50"], "p99_ms": pct["99"]}


def measure(url: str, duration: int) -> dict[int, dict[str, float]]:
    wrk(url, 8, 1)  # warm up (caches, connection pools)
    return {c: wrk(url, c, duration) for c in CONCURRENCY}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian package `wrk`)")
    tmp = Path(tempfile.mkdtemp(prefix="caffezoo-bench-"))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), CAFFEZOO_HOME=str(tmp))
    results: dict[str, dict[int, dict[str, float]]] = {}
    body = b""
    try:
        for kind in ("sqlite", "postgresql"):
            ctx = (
                temporary_postgres() if kind == "postgresql" else nullcontext(f"sqlite:///{tmp / 'bench.db'}")
            )
            with ctx as database_url:
                port = free_port()
                base = f"http://127.0.0.1:{port}"
                cmd = serve_command(port, database_url=database_url, log_level="warning")
                with process(cmd, f"{base}/gists/none", env):
                    url = seed(base, database_url)
                    body = httpx.get(url).content
                    results[kind] = measure(url, args.duration)
        (tmp / "body.json").write_bytes(body)
        port = free_port()
        (tmp / "baseline.py").write_text(BASELINE_APP)
        with process(
            [sys.executable, str(tmp / "baseline.py"), str(tmp / "body.json"), str(port)],
            f"http://127.0.0.1:{port}/",
            env,
        ):
            results["baseline"] = measure(f"http://127.0.0.1:{port}/", args.duration)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"GET /gists/{{id}} ({len(body)} bytes of JSON), wrk --latency, {args.duration} s per point, "
        f"{os.cpu_count()} CPUs; baseline = bare uvicorn app answering the same bytes"
    )
    print(f"{'target':<11} {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs baseline':>12}")
    for kind in ("baseline", "sqlite", "postgresql"):
        for c, r in results[kind].items():
            ratio = r["rps"] / results["baseline"][c]["rps"]
            print(
                f"{kind:<11} {c:>7} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {ratio:>11.2f}x"
            )
    goal = results["sqlite"][32]
    ok = goal["rps"] >= 1000 and goal["p99_ms"] < 50
    print(
        f"goal (SQLite, 32 clients: >= 1000 req/s, p99 < 50 ms): {'met' if ok else 'MISSED'} "
        f"({goal['rps']:.0f} req/s, p99 {goal['p99_ms']:.1f} ms)"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
