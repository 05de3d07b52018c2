"""Replicas of ``caffezoo serve`` as real processes on 127.0.0.1, for the scale-out tests
and ``benchmarks/cluster.py``.

    with replica(db, "--role", "worker", "--check-every", "0.2") as r:
        httpx.get(f"{r.url}/readyz")
        r.kill()                                      # kill -9
    r.log_lines()                                     # its JSON log, parsed
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from gist_helpers import free_port

from caffezoo.server.devcluster import serve_command

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Replica:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"replica exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"replica on port {self.port} did not start:\n{self.log.read_text()}")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, and wait for a graceful exit; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        self.proc.kill()
        self.proc.wait(30)

    def log_lines(self) -> list[dict]:
        """The JSON lines the replica logged (other lines are skipped)."""
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out


def start_replica(
    database_url: str, *args: str, home: Path | None = None, log_level: str = "info"
) -> Replica:
    """Start ``caffezoo serve`` on a free port over ``database_url``; return once it answers."""
    port = free_port()
    home = home or Path(tempfile.mkdtemp(prefix="caffezoo-replica-"))
    log = home / f"replica-{port}.log"
    env = dict(os.environ, CAFFEZOO_HOME=str(home), PYTHONPATH=str(ROOT / "src"))
    cmd = serve_command(port, *args, database_url=database_url, log_level=log_level)
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    r = Replica(proc, port, log)
    try:
        r.wait_up()
    except BaseException:
        r.kill()
        raise
    return r


@contextmanager
def replica(database_url: str, *args: str, **kwargs):
    """:func:`start_replica`, stopped (SIGTERM, else kill) at the end."""
    r = start_replica(database_url, *args, **kwargs)
    try:
        yield r
    finally:
        if r.proc.poll() is None:
            try:
                r.stop(30)
            except subprocess.TimeoutExpired:
                r.kill()
