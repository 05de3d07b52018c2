"""How fast is `caffezoo download` next to curl, sha1sum, aria2, Caffe's own script and pooch?

    python benchmarks/download.py [--size-mib 256] [--runs 3] [--only uncapped,per-connection,two-sources]

One random file, served on 127.0.0.1, downloaded by each contender as a whole
process (start-up included) in three groups:

``uncapped``        nginx as fast as loopback goes. Contenders: ``curl -o`` (the
                    transfer alone), ``sha1sum`` of the file (the hashing alone),
                    ``curl -o; sha1sum``, Caffe's script's logic (``urlretrieve``,
                    then SHA-1 of the file read into memory), ``pooch.retrieve``,
                    ``caffezoo download`` (a fresh cache each run), with ``-c 8``,
                    and again with the weights already there.
``per-connection``  nginx with ``limit_rate``: every connection gets 25 MB/s, as
                    many weights hosts do. ``curl -o`` and ``pooch.retrieve`` (one
                    connection each), ``aria2c -x8 -s8`` (no hashing), caffezoo
                    with its default connections and with ``-c 8`` (one contender
                    when its default is 8).
``two-sources``     two hosts whose *whole* upload is capped at 25 MB/s each, however
                    many connections ask (a small Python server here: nginx can only
                    cap a connection; with per-connection caps, more connections to
                    one host would do as well as two hosts). caffezoo given both
                    (``caffemodel_url`` and the front matter's ``mirrors``), and given
                    one alone (the hosts are alike); ``aria2c -x8 -s8`` given both,
                    for reference, when it is installed.

Goals (issue 14, "link speed"), printed PASS or MISS for every caffezoo contender:
per connection, >= 3.5x faster than ``curl -o``, >= 3x faster than pooch, within
1.2x of aria2c; two sources >= 1.8x faster than the faster source alone;
uncapped, <= 1.1x the pipelined limit max(``curl -o``, ``sha1sum``); peak RSS
with 8 connections < 96 MiB (``wait4``'s ru_maxrss, through GNU time).

``--src TREE/src`` tests another source tree than this checkout's;
``--baseline-src OTHER/src`` adds one as more contenders in the same rounds
(before/after). A caffezoo without ``-c/--connections`` (an older tree) runs
as it is (one connection, for main). Each contender runs once to warm up
(page cache, bytecode; the capped ones against the uncapped server, since a
capped warm-up only costs time), then ``--runs`` times, interleaved so that the
machine's noise hits every one alike. Medians decide.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GROUPS = ("uncapped", "per-connection", "two-sources")
RATE = 25_000_000  # bytes/s: the 25 MB/s (nginx's "25m" would be 25 MiB/s)
CONNECTIONS = 8

NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {tmp}/t; proxy_temp_path {tmp}/t; fastcgi_temp_path {tmp}/t;
    uwsgi_temp_path {tmp}/t; scgi_temp_path {tmp}/t;
    server {{
        listen 127.0.0.1:{port};
        root {www};
        default_type application/octet-stream;
        location /capped/ {{ alias {www}/; limit_rate {rate}; }}
    }}
}}
"""

# Hosts that cap their whole upload: every connection to one port draws on one
# schedule of RATE bytes/s. Ranges (one per request) and If-Range as nginx does them.
CAPPED_HOSTS = r'''
import os, re, sys, threading, time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATH, RATE, HOSTS = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
SIZE = os.path.getsize(PATH)
MTIME = os.stat(PATH).st_mtime
ETAG, LAST_MODIFIED = f'"{int(MTIME):x}-{SIZE:x}"', formatdate(MTIME, usegmt=True)
CHUNK = 1 << 16


class Schedule:
    """Hands out send slots so that all connections together stay under RATE."""

    def __init__(self):
        self.lock, self.next = threading.Lock(), time.monotonic()

    def wait(self, n):
        with self.lock:
            now = time.monotonic()
            start = max(self.next, now - 0.02)  # idle time buys at most 20 ms of burst
            self.next = start + n / RATE
        if start > now:
            time.sleep(start - now)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.answer(body=False)

    def do_GET(self):
        self.answer(body=True)

    def answer(self, body):
        first, last, status = 0, SIZE - 1, 200
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if_range = self.headers.get("If-Range")
        if m and any(m.groups()) and if_range in (None, ETAG, LAST_MODIFIED):
            if m[1]:
                first, last = int(m[1]), min(int(m[2]), SIZE - 1) if m[2] else SIZE - 1
            else:
                first = max(0, SIZE - int(m[2]))
            if first > last:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{SIZE}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", ETAG)
        self.send_header("Last-Modified", LAST_MODIFIED)
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{last}/{SIZE}")
        self.end_headers()
        if not body:
            return
        try:
            with open(PATH, "rb") as f:
                while first <= last:
                    n = min(CHUNK, last - first + 1)
                    self.server.schedule.wait(n)
                    self.connection.sendfile(f, first, n)
                    first += n
        except OSError:  # the client hung up (a segment given to another source)
            self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # 16 connections at once must not wait for a SYN retry


servers = []
for _ in range(HOSTS):
    server = Server(("127.0.0.1", 0), Handler)
    server.schedule = Schedule()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    servers.append(server)
print(*(s.server_address[1] for s in servers), flush=True)
sys.stdin.read()  # until the benchmark closes the pipe
'''

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

PACKAGES = {"sha1sum": "coreutils", "aria2c": "aria2"}


def fail(message: str) -> None:
    sys.stderr.write(f"benchmarks/download.py: {message}\n")
    sys.exit(2)


def find(tool: str, path: str | None = None, why: str = "the benchmark needs it") -> str:
    found = path if path and os.access(path, os.X_OK) else None
    found = found or shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if not found:
        package = PACKAGES.get(tool, tool)
        fail(f"{tool} is not installed (Debian: apt-get install {package}); {why}")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(proc: subprocess.Popen, port: int, what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"{what} did not start: {proc.stderr.read().decode(errors='replace').strip()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    fail(f"{what} did not start listening within 10 s")


def start_nginx(tmp: Path, www: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    (tmp / "t").mkdir()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, www=www, port=port, rate=RATE))
    proc = subprocess.Popen(
        [find("nginx"), "-c", str(conf), "-p", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wait_listening(proc, port, "nginx")
    return proc, port


def start_capped_hosts(path: Path, hosts: int) -> tuple[subprocess.Popen, list[int]]:
    """``hosts`` servers of ``path`` in one process, each capped at RATE in all; their ports."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CAPPED_HOSTS, str(path), str(RATE), str(hosts)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    ports = [int(p) for p in proc.stdout.readline().split()]
    if len(ports) != hosts:
        proc.kill()
        fail(f"the capped hosts did not start: {proc.stderr.read().decode(errors='replace').strip()}")
    for port in ports:
        wait_listening(proc, port, "the capped hosts")
    return proc, ports


def check_ranges(url: str) -> None:
    """Segmented downloads need ``Accept-Ranges: bytes`` and a 206 for a Range: make sure of both."""
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10) as r:
        accepts = r.headers.get("Accept-Ranges") == "bytes"  # nginx says it on a 200, not on a 206
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=1-2"}), timeout=10) as r:
        ranges = r.status == 206 and len(r.read()) == 2
    if not (accepts and ranges):
        fail(f"{url} does not send Accept-Ranges: bytes or answer a Range with 206; the benchmark needs both")


def timed(cmd: list[str], env: dict[str, str], rss_file: Path, limit: float) -> tuple[float, int]:
    """Wall time and peak RSS (bytes) of one process, which must succeed within ``limit`` seconds.

    GNU time measures the RSS (``wait4``'s ru_maxrss: the largest process of the
    tree): a child forked from this (larger) Python process would report this
    process's memory as its own peak.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [find("time", "/usr/bin/time"), "-f", "%M", "-o", str(rss_file), *cmd],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # a hung contender is killed with its children
    )
    try:
        _, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        fail(f"{' '.join(cmd)} took more than {limit:.0f} s; killed")
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        fail(f"{' '.join(cmd)} failed ({proc.returncode}): {err.decode(errors='replace')}")
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


def write_model(directory: Path, sha1: str, url: str, mirrors: tuple[str, ...] = ()) -> Path:
    directory.mkdir(parents=True)
    listed = "".join(f"\n  - {m}" for m in mirrors)
    (directory / "readme.md").write_text(
        textwrap.dedent(f"""\
        ---
        name: Benchmark Net
        caffemodel: w.caffemodel
        caffemodel_url: {url}
        sha1: {sha1}
        license: unrestricted
        """)
        + (f"mirrors:{listed}\n" if mirrors else "")
        + "---\nA random file.\n"
    )
    return directory


@dataclass
class Tree:
    """A caffezoo source tree under test: this one, or ``--baseline-src``."""

    suffix: str  # appended to its contenders' names: "" or " (baseline)"
    env: dict[str, str]
    connections: bool  # does its `caffezoo download` take -c/--connections?
    default: int | None = None  # its default -c, when its --help says

    def download(self, model: Path, connections: int | None = None) -> list[str]:
        flag = ["-c", str(connections)] if connections and self.connections else []
        return [sys.executable, "-m", "caffezoo", "download", "--quiet", *flag, str(model)]


def probe_tree(suffix: str, env: dict[str, str]) -> Tree:
    proc = subprocess.run(
        [sys.executable, "-m", "caffezoo", "download", "--help"],
        env=dict(env, COLUMNS="200"),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        fail(f"caffezoo download --help failed with PYTHONPATH={env['PYTHONPATH']}: {proc.stderr.strip()}")
    option = re.search(r"--connections\b(.*?)(?:\n\s*-|\Z)", proc.stdout, re.DOTALL)
    # Typer's "[default: 8]", or the help's own "(default 8)" (an option whose default is None).
    default = re.search(r"\[default: (\d+)|\(default (\d+)\)", option[1]) if option else None
    return Tree(suffix, env, bool(option), int(default[1] or default[2]) if default else None)


@dataclass
class Contender:
    name: str
    cmd: list[str]
    env: dict[str, str]
    warm: list[str] | None = None  # the warm-up, when not cmd: capped contenders warm up uncapped
    then: Contender | None = None  # timed right after this one, on what it left (no clean-up)
    tree: Tree | None = None  # set for caffezoo contenders
    connections: int | None = None  # as asked with -c; None: the default
    times: list[float] = field(default_factory=list)
    rss: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.times)


@dataclass(frozen=True)
class Goal:
    group: str
    what: str
    measured: str
    met: bool

    def __str__(self) -> str:
        return f"{'PASS' if self.met else 'MISS'}  {self.group:14} {self.what:64} measured {self.measured}"


@dataclass
class Bench:
    """One run's shared state: the file and its SHA-1, the trees under test, the tools, the results."""

    tmp: Path
    size: int
    runs: int
    sha1: str
    env: dict[str, str]  # for contenders other than caffezoo
    trees: list[Tree]
    curl: str
    aria: list[str]  # aria2c and its options; empty when it is not installed
    url: str = ""  # the file from nginx, uncapped
    models: list[Path] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    ours: list[Contender] = field(default_factory=list)  # every caffezoo contender run, for the memory goal

    @property
    def limit(self) -> float:
        """Seconds any one run may take: 4x a single capped connection, and a minute to start."""
        return 60 + 4 * self.size / RATE

    @property
    def out(self) -> Path:
        return self.tmp / "out.bin"

    @property
    def fast(self) -> Path:
        """The model whose weights come from nginx uncapped: every caffezoo contender warms up on it."""
        return self.tmp / "models" / "uncapped"

    def model(self, name: str, url: str, mirrors: tuple[str, ...] = ()) -> Path:
        self.models.append(write_model(self.tmp / "models" / name, self.sha1, url, mirrors))
        return self.models[-1]

    def clean(self) -> None:
        """Before every run: no weights anywhere, an empty cache."""
        self.out.unlink(missing_ok=True)
        for m in self.models:
            (m / "w.caffemodel").unlink(missing_ok=True)
        for d in ("home", "pooch", "aria2"):
            shutil.rmtree(self.tmp / d, ignore_errors=True)

    def curl_o(self, url: str) -> list[str]:
        return [self.curl, "-sS", "-o", str(self.out), url]

    def pooch(self, url: str) -> list[str]:
        return [sys.executable, "-c", POOCH, url, str(self.tmp / "pooch"), self.sha1]

    def caffezoo(self, model: Path, label: str = "caffezoo", eight: bool = True) -> list[Contender]:
        """``caffezoo download MODEL`` of each tree, also with ``-c 8`` where it has ``-c``."""
        out = []
        for tree in self.trees:
            eights = eight and tree.connections and tree.default != CONNECTIONS  # else the default is it
            for n in (None, CONNECTIONS) if eights else (None,):
                name = label + (f" -c {n}" if n else "") + tree.suffix
                warm = tree.download(self.fast, n)
                out.append(Contender(name, tree.download(model, n), tree.env, warm, tree=tree, connections=n))
        return out

    def race(self, label: str, contenders: list[Contender]) -> None:
        """Warm every contender up once, then run each ``runs`` times, interleaved."""
        rss = self.tmp / "rss"
        for rnd in range(self.runs + 1):  # round 0 warms up (page cache, bytecode) and is not counted
            shift = rnd % len(contenders)
            for first in contenders[shift:] + contenders[:shift]:  # a rotating order: noise hits all alike
                self.clean()
                c: Contender | None = first
                while c:
                    t, peak = timed(c.warm if rnd == 0 and c.warm else c.cmd, c.env, rss, self.limit)
                    if rnd:
                        c.times.append(t)
                        c.rss = max(c.rss, peak)
                    c = c.then
            print(f"{label}: round {rnd}/{self.runs} done", flush=True)
        self.ours += [c for c in contenders if c.tree]

    def table(self, title: str, contenders: list[Contender]) -> None:
        print(f"\n{title}, {self.size >> 20} MiB, median of {self.runs} runs, whole processes")
        print(f"  {'':34} {'median s':>9} {'MB/s':>7} {'peak RSS MiB':>13}")
        for c in contenders:
            print(f"  {c.name:34} {c.median:9.3f} {self.size / c.median / 1e6:7.0f} {c.rss / 2**20:13.1f}")


def uncapped(b: Bench) -> None:
    """The pipelined limit: caffezoo <= 1.1x the slower of the transfer and the hashing."""
    others = [
        Contender("curl -o", b.curl_o(b.url), b.env),
        Contender("sha1sum", ["sha1sum", str(b.tmp / "www" / "w.caffemodel")], b.env),
        Contender(
            "curl -o; sha1sum",
            ["sh", "-c", f'"{b.curl}" -sS -o "{b.out}" "{b.url}" && sha1sum "{b.out}"'],
            b.env,
        ),
        Contender("Caffe script logic", [sys.executable, "-c", SEED_LOGIC, b.url, str(b.out), b.sha1], b.env),
        Contender("pooch.retrieve", b.pooch(b.url), b.env),
    ]
    ours = b.caffezoo(b.fast)
    again = Contender("caffezoo re-run", ours[0].cmd, ours[0].env)
    ours[0].then = again
    b.race("uncapped", [*others, *ours])
    b.table("uncapped: nginx on loopback", [*others, *ours, again])
    print(f"  {'':34} (re-run: the weights already there and verified)")
    med = {c.name: c.median for c in others}
    limit = max(med["curl -o"], med["sha1sum"])
    for c in ours:
        r = c.median / limit
        b.goals.append(Goal("uncapped", f"{c.name} <= 1.1x max(curl -o, sha1sum)", f"{r:.2f}x", r <= 1.1))
    cz = ours[0]
    by_hand, pooch_up = cz.median / med["curl -o; sha1sum"], med["pooch.retrieve"] / cz.median
    print("  earlier goals (downloads issue), caffezoo with its defaults:")
    for what, measured, met in [
        ("<= 0.7x (curl -o; sha1sum)", f"{by_hand:.2f}x", by_hand <= 0.7),
        (">= 3x faster than pooch", f"{pooch_up:.2f}x", pooch_up >= 3),
        ("peak RSS < 64 MiB", f"{cz.rss / 2**20:.1f} MiB", cz.rss < 64 << 20),
        ("re-run < 0.3 s", f"{again.median:.2f} s", again.median < 0.3),
    ]:
        print(f"    {'PASS' if met else 'MISS'}  {what:30} measured {measured}")


def per_connection(b: Bench, url: str) -> None:
    """Hosts that cap each connection: caffezoo vs one connection (curl, pooch) and vs aria2c -x8."""
    others = [
        Contender("curl -o", b.curl_o(url), b.env, b.curl_o(b.url)),
        Contender("pooch.retrieve", b.pooch(url), b.env, b.pooch(b.url)),
        Contender("aria2c -x8 -s8", [*b.aria, url], b.env, [*b.aria, b.url]),
    ]
    ours = b.caffezoo(b.model("capped", url))
    b.race("per-connection", others + ours)
    b.table("per-connection: each connection capped at 25 MB/s (nginx limit_rate)", others + ours)
    curl_o, pooch_r, aria2 = (c.median for c in others)
    for c in ours:
        up, up_pooch, to_aria = curl_o / c.median, pooch_r / c.median, c.median / aria2
        b.goals += [
            Goal("per-connection", f"{c.name} >= 3.5x faster than curl -o", f"{up:.2f}x", up >= 3.5),
            Goal("per-connection", f"{c.name} >= 3x faster than pooch", f"{up_pooch:.2f}x", up_pooch >= 3),
            Goal("per-connection", f"{c.name} <= 1.2x aria2c -x8 -s8", f"{to_aria:.2f}x", to_aria <= 1.2),
        ]


def two_sources(b: Bench, url_a: str, url_b: str) -> None:
    """Two hosts capped in all: caffezoo given both vs given one."""
    ours = b.caffezoo(b.model("both", url_a, (url_b,)), "caffezoo, both sources", eight=False)
    # The hosts are alike (one server, one cap), so either one stands for "the faster alone";
    # timing the other alone too would cost a capped download per round for nothing. One source
    # gives any client at most RATE, so a baseline tree is held to the same time alone.
    alone = b.caffezoo(b.model("alone", url_a), "caffezoo, one source alone", eight=False)[0]
    others = [alone]
    if b.aria:  # what a segmented, multi-source client gets from these hosts: the goal is reachable
        others.append(
            Contender("aria2c -x8 -s8, both sources", [*b.aria, url_a, url_b], b.env, [*b.aria, b.url])
        )
    b.race("two-sources", ours + others)
    b.table("two-sources: two hosts, each capped at 25 MB/s in all", ours + others)
    for c in ours:
        r = alone.median / c.median
        b.goals.append(Goal("two-sources", f"{c.name} >= 1.8x faster than one alone", f"{r:.2f}x", r >= 1.8))


def memory(b: Bench) -> None:
    """Peak RSS with 8 connections, from every group that ran (a tree without -c: as it runs)."""
    for tree in b.trees:
        by_default = not tree.connections or tree.default == CONNECTIONS
        eight = [c for c in b.ours if c.tree is tree and (c.connections == CONNECTIONS or by_default)]
        if eight:
            peak = max(c.rss for c in eight) / 2**20
            how = "-c 8" if tree.connections else "no -c: its default"
            what = f"caffezoo{tree.suffix} ({how}) peak RSS < 96 MiB"
            b.goals.append(Goal("memory", what, f"{peak:.1f} MiB", peak < 96))


def parse_groups(text: str) -> list[str]:
    names = [g.strip() for g in text.split(",") if g.strip()]
    unknown = [g for g in names if g not in GROUPS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated list of {', '.join(GROUPS)}")
    return [g for g in GROUPS if g in names]


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of at least 1")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=positive, default=256, help="size of the file [256]")
    parser.add_argument("--runs", type=positive, default=3, help="timed runs of each contender [3]")
    parser.add_argument(
        "--only",
        type=parse_groups,
        default=list(GROUPS),
        metavar="GROUPS",
        help=f"comma-separated groups to run, of {', '.join(GROUPS)} [all]",
    )
    parser.add_argument(
        "--src",
        type=Path,
        default=ROOT / "src",
        help="The caffezoo source tree under test (its src/ directory) [this checkout's]",
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="Another caffezoo source tree (its src/ directory), run as more contenders in the "
        "same rounds: a before/after comparison, e.g. of a worktree of main",
    )
    args = parser.parse_args()
    groups: list[str] = args.only
    curl = find("curl")
    find("sha1sum")
    find("nginx")
    find("time", "/usr/bin/time")
    aria2c = None  # needed by the per-connection group, a reference in the two-sources one
    if "per-connection" in groups or shutil.which("aria2c"):
        others = ",".join(g for g in GROUPS if g != "per-connection")
        aria2c = find("aria2c", why=f"the per-connection group compares with it (or: --only {others})")
    try:
        import pooch  # noqa: F401
    except ImportError:
        fail("pooch is not installed (pip install pooch; it is in caffezoo's test extra)")
    for flag, src in (("--src", args.src), ("--baseline-src", args.baseline_src)):
        if src and not (src / "caffezoo" / "__init__.py").is_file():
            fail(f"{flag} {src}: expected a src/ directory holding caffezoo/__init__.py")

    # The contenders see this process's environment, less what would send loopback elsewhere
    # (a proxy) or change caffezoo (CAFFEZOO_MIRRORS, CAFFEZOO_OFFLINE...); bytecode is written
    # as users' runs write it.
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "PYTHONDONTWRITEBYTECODE"
        and not k.startswith("CAFFEZOO_")
        and not k.lower().endswith("_proxy")
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    tmp = Path(tempfile.mkdtemp(prefix="caffezoo-bench-"))
    env["CAFFEZOO_HOME"] = str(tmp / "home")
    servers: list[subprocess.Popen] = []
    try:
        trees = [probe_tree("", dict(env, PYTHONPATH=str(args.src.resolve())))]
        if args.baseline_src:
            trees.append(probe_tree(" (baseline)", dict(env, PYTHONPATH=str(args.baseline_src.resolve()))))
        for tree in trees:
            if not tree.connections:
                print(f"caffezoo{tree.suffix} has no -c/--connections: it runs as it is")
            elif tree.default == CONNECTIONS:
                print(
                    f"caffezoo{tree.suffix}'s default is -c {CONNECTIONS}: its default contender is also -c 8"
                )
        aria = []
        if aria2c:  # as the issue says: 8 connections, no hashing; 1 MiB pieces so a small file splits too
            aria = [aria2c, "--no-conf", "-x8", "-s8", "--min-split-size=1M", "--check-certificate=false"]
            aria += ["--file-allocation=none", "--allow-overwrite=true", "--auto-file-renaming=false"]
            aria += ["--quiet=true", "-d", str(tmp / "aria2"), "-o", "out.bin"]

        tmp.chmod(0o755)  # nginx's workers run as an unprivileged user
        www = tmp / "www"
        www.mkdir(mode=0o755)
        weights = www / "w.caffemodel"
        print(f"making a {args.size_mib} MiB file in {tmp} ...", flush=True)
        sha1 = make_file(weights, args.size_mib << 20)
        weights.chmod(0o644)
        b = Bench(tmp, args.size_mib << 20, args.runs, sha1, env, trees, curl, aria)

        nginx, port = start_nginx(tmp, www)
        servers.append(nginx)
        b.url = f"http://127.0.0.1:{port}/w.caffemodel"
        b.model("uncapped", b.url)
        capped_url = f"http://127.0.0.1:{port}/capped/w.caffemodel"
        check_ranges(b.url)
        check_ranges(capped_url)
        t, _ = timed([curl, "-sS", "-o", "/dev/null", b.url], env, tmp / "rss", b.limit)
        print(f"nginx check: curl -o /dev/null moves {b.size / t / 1e6:.0f} MB/s (whole process)")
        if "uncapped" in groups:
            uncapped(b)
        if "per-connection" in groups:
            per_connection(b, capped_url)
        if "two-sources" in groups:
            hosts, ports = start_capped_hosts(weights, 2)
            servers.append(hosts)
            url_a, url_b = (f"http://127.0.0.1:{p}/w.caffemodel" for p in ports)
            check_ranges(url_a)
            two_sources(b, url_a, url_b)
    finally:
        for server in servers:
            server.terminate()
            server.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    memory(b)
    print("\ngoals (issue 14, link speed):")
    for goal in b.goals:
        print(f"  {goal}")


if __name__ == "__main__":
    main()
