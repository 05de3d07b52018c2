"""Memory while clients never read large answers: the server's RSS before and after N
clients each ask for a big gist's JSON and read only its status line.

    PYTHONPATH=src python benchmarks/slow_readers.py [--clients 30] [--gist-mb 12]

Runs a real `caffezoo serve` (one worker, SQLite, default limits) and prints the RSS
growth, how many of the N were answered 200 (held in memory, within
``--inflight-bytes``) or 503, and that a small request still answers meanwhile.
Without a bound, growth is about N times the answer (30 x 12 MB: 85 -> 451 MB).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from gist_helpers import free_port  # noqa: E402
from gist_server import process  # noqa: E402
from hardening import rss_mb  # noqa: E402


def never_reading(port: int, path: str) -> tuple[socket.socket, bytes]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: zoo\r\nAccept: application/json\r\n\r\n".encode())
    sock.settimeout(60)
    return sock, sock.recv(12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--gist-mb", type=int, default=12, help="size of the gist's JSON (1 MiB files)")
    args = parser.parse_args()

    from caffezoo.server import Storage

    tmp = Path(tempfile.mkdtemp(prefix="caffezoo-slow-readers-"))
    database_url = f"sqlite:///{tmp / 'zoo.db'}"
    store = Storage(database_url)
    store.ensure_user("bench")
    files = {f"part{i:03}.txt": b"n" * (1024 * 1024) for i in range(args.gist_mb)}
    big = store.create_gist("bench", "Big", True, files).id
    small = store.create_gist("bench", "Small", True, {"a.txt": b"small"}).id
    store.close()

    def measure(extra: list[str]) -> tuple[float, float, int, int, int, int]:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "caffezoo", "serve", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--database-url", database_url, "--blobs-dir", str(tmp / "blobs"), "--log-level", "error"]
        cmd += ["--no-check-links", *extra]
        env = dict(os.environ, CAFFEZOO_HOME=str(tmp / "home"), PYTHONPATH=str(ROOT / "src"))
        with (
            process(cmd, base + "/api/models", env=env) as server,
            httpx.Client(base_url=base, timeout=60) as http,
        ):
            size = len(http.get(f"/gists/{big}").content)
            before = rss_mb(server.pid)
            socks = [never_reading(port, f"/gists/{big}") for _ in range(args.clients)]
            time.sleep(1.0)  # let the held answers settle in memory
            after = rss_mb(server.pid)
            small_status = http.get(f"/gists/{small}").status_code
            for sock, _ in socks:
                sock.close()
        held = sum(s == b"HTTP/1.1 200" for _, s in socks)
        busy = sum(s == b"HTTP/1.1 503" for _, s in socks)
        return before, after, size, held, busy, small_status

    print(f"{args.clients} clients never reading a big gist's JSON, same machine, same run:")
    growth = {}
    for label, extra in [
        ("unbounded (--inflight-bytes 1e12)", ["--inflight-bytes", str(10**12)]),
        ("default", []),
    ]:
        before, after, size, held, busy, small_status = measure(extra)
        growth[label] = after - before
        print(
            f"  {label}: {size / 1e6:.1f} MB answers, {held} held (200), {busy} answered 503, small gist {small_status}"
        )
        print(f"    RSS {before:.0f} MB -> {after:.0f} MB, growth {after - before:.0f} MB")
    unbounded, bounded = growth.values()
    print(f"  growth ratio default/unbounded: {bounded / max(unbounded, 1):.2f}")


if __name__ == "__main__":
    main()
