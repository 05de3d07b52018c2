"""How fast is `caffezoo download` next to curl, sha1sum, Caffe's own script and pooch?

    python benchmarks/download.py [--size-mib 256] [--runs 5]

Serves a random file from nginx on 127.0.0.1 (a private nginx on a free port,
with a temporary configuration; nginx and curl must be installed) and times,
as whole processes, from one run:

- ``curl -o``                       the transfer alone, the floor;
- ``curl -o`` then ``sha1sum``      what a careful person does by hand;
- Caffe's script's logic            ``urlretrieve``, then SHA-1 of the whole file read into memory;
- ``pooch.retrieve``                with ``known_hash="sha1:..."``;
- ``caffezoo download``             a fresh cache each run;
- ``caffezoo download`` again       weights already there and verified.

``--baseline-src OTHER/src`` adds another caffezoo source tree as a contender (before/after).
Each contender runs once to warm up, then ``--runs`` times, interleaved so
that the machine's noise hits every one alike. Prints medians, the ratios of
caffezoo to each, peak RSS (from ``wait4``) and the issue's goals.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {tmp}/t; proxy_temp_path {tmp}/t; fastcgi_temp_path {tmp}/t;
    uwsgi_temp_path {tmp}/t; scgi_temp_path {tmp}/t;
    server {{ listen 127.0.0.1:{port}; root {www}; default_type application/octet-stream; }}
}}
"""

SEED_LOGIC = """\
import hashlib, sys, urllib.request
url, out, sha1 = sys.argv[1:]
urllib.request.urlretrieve(url, out)
with open(out, "rb") as f:
    ok = hashlib.sha1(f.read()).hexdigest() == sha1
sys.exit(0 if ok else 1)
"""

POOCH = """\
import sys, pooch
url, path, sha1 = sys.argv[1:]
pooch.retrieve(url, known_hash="sha1:" + sha1, fname="w.caffemodel", path=path, progressbar=False)
"""


def fail(message: str) -> None:
    sys.stderr.write(f"benchmarks/download.py: {message}\n")
    sys.exit(2)


def find(tool: str, path: str | None = None) -> str:
    found = path if path and os.access(path, os.X_OK) else None
    found = found or shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if not found:
        package = {"sha1sum": "coreutils"}.get(tool, tool)
        fail(f"{tool} is not installed (Debian: apt-get install {package}); the benchmark needs it")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(tmp: Path, www: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    (tmp / "t").mkdir()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, www=www, port=port))
    proc = subprocess.Popen(
        [find("nginx"), "-c", str(conf), "-p", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"nginx did not start: {proc.stderr.read().decode(errors='replace').strip()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    fail("nginx did not start listening within 10 s")
    raise AssertionError


def timed(cmd: list[str], env: dict[str, str], rss_file: Path) -> tuple[float, int]:
    """Wall time and peak RSS (bytes) of one process, which must succeed.

    GNU time measures the RSS: a child forked from this (large) Python process would
    report this process's memory as its own peak.
    """
    t0 = time.perf_counter()
    proc = subprocess.run(
        [find("time", "/usr/bin/time"), "-f", "%M", "-o", str(rss_file), *cmd],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        fail(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return elapsed, int(rss_file.read_text().split()[-1]) * 1024


def make_file(path: Path, size: int) -> str:
    h = hashlib.sha1()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 1 << 22))
            f.write(block)
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="Another caffezoo source tree (its src/ directory), run as one more contender in the "
        "same rounds: a before/after comparison, e.g. of a worktree of main",
    )
    args = parser.parse_args()
    curl = find("curl")
    find("sha1sum")
    find("nginx")
    find("time", "/usr/bin/time")
    try:
        import pooch  # noqa: F401
    except ImportError:
        fail("pooch is not installed (pip install pooch; it is in caffezoo's test extra)")

    tmp = Path(tempfile.mkdtemp(prefix="caffezoo-bench-"))
    tmp.chmod(0o755)  # nginx's workers run as an unprivileged user
    www = tmp / "www"
    www.mkdir(mode=0o755)
    size = args.size_mib << 20
    print(f"making a {args.size_mib} MiB file in {tmp} ...", flush=True)
    digest = make_file(www / "w.caffemodel", size)
    (www / "w.caffemodel").chmod(0o644)
    nginx, port = start_nginx(tmp, www)
    url = f"http://127.0.0.1:{port}/w.caffemodel"
    model = tmp / "model"
    model.mkdir()
    (model / "readme.md").write_text(
        textwrap.dedent(f"""\
        ---
        name: Benchmark Net
        caffemodel: w.caffemodel
        caffemodel_url: {url}
        sha1: {digest}
        license: unrestricted
        ---
        A random file.
        """)
    )
    out = tmp / "out.bin"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as users run it
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["CAFFEZOO_HOME"] = str(tmp / "home")
    cz = [sys.executable, "-m", "caffezoo", "download", "--quiet", str(model)]

    def clean() -> None:
        out.unlink(missing_ok=True)
        (model / "w.caffemodel").unlink(missing_ok=True)
        shutil.rmtree(tmp / "home", ignore_errors=True)
        shutil.rmtree(tmp / "pooch", ignore_errors=True)

    contenders = {
        "curl -o": [curl, "-sS", "-o", str(out), url],
        "curl -o; sha1sum": ["sh", "-c", f'"{curl}" -sS -o "{out}" "{url}" && sha1sum "{out}"'],
        "Caffe script logic": [sys.executable, "-c", SEED_LOGIC, url, str(out), digest],
        "pooch.retrieve": [sys.executable, "-c", POOCH, url, str(tmp / "pooch"), digest],
        "caffezoo download": cz,
    }
    envs = {}
    if args.baseline_src:
        contenders["caffezoo (baseline)"] = cz
        envs["caffezoo (baseline)"] = dict(env, PYTHONPATH=str(args.baseline_src.resolve()))
    times: dict[str, list[float]] = {name: [] for name in contenders}
    rss: dict[str, int] = dict.fromkeys(contenders, 0)
    rerun: list[float] = []
    rss_rerun = 0
    rss_file = tmp / "rss"
    try:
        t, _ = timed([curl, "-sS", "-o", "/dev/null", url], env, rss_file)
        print(f"nginx check: curl -o /dev/null moves {size / t / 1e6:.0f} MB/s (whole process)")
        for rnd in range(args.runs + 1):  # round 0 warms up (page cache, bytecode) and is not counted
            names = list(contenders)
            names = names[rnd % len(names) :] + names[: rnd % len(names)]  # rotate the order
            for name in names:
                clean()
                t, peak = timed(contenders[name], envs.get(name, env), rss_file)
                if rnd:
                    times[name].append(t)
                    rss[name] = max(rss[name], peak)
                if name == "caffezoo download":
                    t, peak = timed(cz, env, rss_file)  # weights in place and verified: the O(1) path
                    if rnd:
                        rerun.append(t)
                        rss_rerun = max(rss_rerun, peak)
            print(f"round {rnd}/{args.runs} done", flush=True)
    finally:
        nginx.terminate()
        nginx.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    med = {name: statistics.median(ts) for name, ts in times.items()}
    ours = med["caffezoo download"]
    print(f"\n{args.size_mib} MiB over loopback from nginx, median of {args.runs} runs, whole processes")
    print(f"{'':22} {'median s':>9} {'MB/s':>7} {'caffezoo/this':>14} {'peak RSS MiB':>13}")
    for name in contenders:
        print(
            f"{name:22} {med[name]:9.3f} {size / med[name] / 1e6:7.0f} {ours / med[name]:13.2f}x "
            f"{rss[name] / 2**20:13.1f}"
        )
    rerun_med = statistics.median(rerun)
    print(
        f"{'caffezoo re-run':22} {rerun_med:9.3f} {'':7} {'':14} {rss_rerun / 2**20:13.1f}"
        "   (weights already there and verified)"
    )
    by_hand = ours / med["curl -o; sha1sum"]
    curl_o = ours / med["curl -o"]
    speedup = med["pooch.retrieve"] / ours
    peak = rss["caffezoo download"] / 2**20
    goals = [  # (goal, measured, met)
        ("<= 0.7x (curl -o; sha1sum)", f"{by_hand:.2f}x", by_hand <= 0.7),
        ("<= 1.05x curl -o", f"{curl_o:.2f}x", curl_o <= 1.05),
        (">= 3x faster than pooch", f"{speedup:.2f}x", speedup >= 3),
        ("peak RSS < 64 MiB", f"{peak:.2f} MiB", peak < 64),
        ("re-run < 0.3 s", f"{rerun_med:.2f} s", rerun_med < 0.3),
    ]
    print("\ngoals (from the downloads issue):")
    for what, measured, met in goals:
        print(f"  {'met ' if met else 'MISS'}  {what:30} measured {measured}")


if __name__ == "__main__":
    main()
