"""Real engines on 127.0.0.1 for development, tests and benchmarks: a single-node Ceph
cluster with its S3 gateway, a throwaway PostgreSQL, nginx in front of zoo replicas.

    >>> ceph = Ceph(Path("/tmp/zoo-ceph")).start()       # doctest: +SKIP
    >>> ceph.endpoint, ceph.access_key                   # doctest: +SKIP
    ('http://127.0.0.1:41234', 'caffezoo-dev')
    >>> ceph.stop()                                      # doctest: +SKIP

Used by ``scripts/cluster.py`` (``make cluster``), the test fixtures
(``tests/ceph_helpers.py``) and ``benchmarks/cluster.py``: one home for the
start-up recipe. Every daemon writes a pid file under its directory, and
:func:`stop_pids` ends exactly those processes, even from another process.

Ceph is one monitor, one memstore OSD (data in RAM: delete what you write)
and one RADOS Gateway, with authentication off; it is for a laptop or a CI
machine, not for data anyone keeps.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY = "caffezoo-dev"
SECRET_KEY = "caffezoo-dev-secret-key"  # a throwaway cluster on loopback: not a secret


class EngineError(RuntimeError):
    """A development engine is missing or did not start; the message says which and why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _need(binary: str, package: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if not path:
        raise EngineError(
            f"`{binary}` is not installed: apt-get install -y --no-install-recommends {package}"
        )
    return path


def _alive(pid: int, name: str) -> bool:
    """Whether ``pid`` still runs ``name`` (a reused pid running something else does not count)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                return False  # a zombie of ours: ended, not yet reaped
    except (OSError, IndexError):
        return False
    return any(name.encode() in a for a in argv[:3])


def _spawn(argv: list[str], pid_file: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``argv`` in its own session (so a Ctrl-C of the caller does not reach it); record its pid."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    pid_file.write_text(f"{proc.pid} {Path(argv[0]).name}\n")
    return proc


def stop_pids(pid_files: list[Path], *, grace: float = 10.0) -> list[str]:
    """SIGTERM each recorded process in order, SIGKILL what outlives ``grace``; remove the files.

    Returns what was stopped. A pid whose process is gone, or now runs another
    program, is left alone.
    """
    stopped = []
    for pid_file in pid_files:
        try:
            pid_text, name = pid_file.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if _alive(pid, name):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while _alive(pid, name) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.05)
            if _alive(pid, name):
                os.kill(pid, signal.SIGKILL)
                while _alive(pid, name):
                    _reap(pid)
                    time.sleep(0.02)
            stopped.append(f"{name} ({pid})")
        _reap(pid)
        pid_file.unlink(missing_ok=True)
    return stopped


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _wait_for(what: str, check, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    raise EngineError(f"{what} did not come up within {timeout:g} s{tail}")


# --------------------------------------------------------------------------- Ceph


@dataclass
class Ceph:
    """A single-node Ceph cluster (monitor, memstore OSD, RADOS Gateway) under ``root``."""

    root: Path
    memory: int = 1 << 30  # memstore's device size (not enforced without a manager: see module doc)
    rgw_port: int = 0
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    _procs: list[subprocess.Popen] = field(default_factory=list, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.rgw_port}"

    @property
    def conf(self) -> Path:
        return self.root / "ceph.conf"

    @property
    def pid_files(self) -> list[Path]:
        """In stopping order: clients of the cluster before its servers."""
        return [self.root / f"{n}.pid" for n in ("rgw", "osd", "mon")]

    def env(self) -> dict[str, str]:
        """The AWS variables that point an S3 client (and ``caffezoo serve``) at the gateway."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def _write_conf(self, fsid: str, v2: int, v1: int) -> None:
        r = self.root
        self.conf.write_text(
            f"""[global]
fsid = {fsid}
mon host = [v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
keyring = /dev/null
run dir = {r}/run
pid file = {r}/run/$name.pid
log file = {r}/log/$name.log
admin socket = {r}/run/$name.asok
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon allow pool delete = true
mon data avail warn = 2
mon data avail crit = 1
client mount timeout = 30
ms bind ipv6 = false

[mon]
mon data = {r}/mon/$cluster-$id
paxos propose interval = 0.01

[osd]
osd data = {r}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = {self.memory}
osd max object name len = 256
osd max object namespace len = 64

[client.rgw.a]
ms mon client mode = crc
rgw data = {r}/rgw
rgw frontends = beast endpoint=127.0.0.1:{self.rgw_port}
rgw gc obj min wait = 5
rgw gc processor period = 5
rgw enable usage log = false
"""
        )

    def _ceph(self, *args: str, timeout: float = 60) -> str:
        p = subprocess.run(
            ["ceph", "-c", str(self.conf), *args], capture_output=True, text=True, timeout=timeout
        )
        if p.returncode != 0:
            raise EngineError(f"ceph {' '.join(args)}: {p.stderr.strip() or p.stdout.strip()}")
        return p.stdout.strip()

    def start(self, timeout: float = 90) -> Ceph:
        """Make the cluster from nothing and start it; return when S3 answers with a user ready."""
        for binary, package in (("ceph-mon", "ceph-mon"), ("ceph-osd", "ceph-osd"), ("radosgw", "radosgw")):
            _need(binary, package)
        if any(p.exists() for p in self.pid_files):
            raise EngineError(f"{self.root} already has a running cluster (pid files); stop it first")
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in ("run", "log", "mon", "osd/ceph-0", "rgw"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        v2, v1 = free_port(), free_port()
        self.rgw_port = self.rgw_port or free_port()
        fsid = str(uuid.uuid4())
        self._write_conf(fsid, v2, v1)
        (self.root / "endpoint").write_text(self.endpoint + "\n")
        c = ["-c", str(self.conf)]
        log = self.root / "log"
        monmap = self.root / "monmap"
        subprocess.run(
            ["monmaptool", "--create", "--clobber", "--fsid", fsid, "--addv", "a",
             f"[v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]", str(monmap)],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            ["ceph-mon", *c, "-i", "a", "--mkfs", "--monmap", str(monmap)], check=True, capture_output=True
        )
        self._procs.append(_spawn(["ceph-mon", *c, "-i", "a", "-f"], self.root / "mon.pid", log / "mon.out"))
        osd_uuid = str(uuid.uuid4())
        osd_id = self._ceph("osd", "new", osd_uuid)
        subprocess.run(
            ["ceph-osd", *c, "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid], check=True, capture_output=True
        )
        self._procs.append(
            _spawn(["ceph-osd", *c, "-i", osd_id, "-f"], self.root / "osd.pid", log / "osd.out")
        )
        self._procs.append(
            _spawn(["radosgw", *c, "-n", "client.rgw.a", "-f"], self.root / "rgw.pid", log / "rgw.out")
        )
        _wait_for("the RADOS Gateway", self._answers, timeout, log / "client.rgw.a.log")
        p = subprocess.run(
            ["radosgw-admin", *c, "user", "create", "--uid=caffezoo", "--display-name=caffezoo",
             f"--access-key={self.access_key}", f"--secret={self.secret_key}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if p.returncode != 0:
            raise EngineError(f"radosgw-admin user create: {p.stderr.strip()}")
        return self

    def _answers(self) -> bool:
        for proc in self._procs:
            if proc.poll() is not None:
                raise EngineError(f"{proc.args[0]} exited with status {proc.returncode}; see {self.root}/log")
        try:
            with socket.create_connection(("127.0.0.1", self.rgw_port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                return s.recv(12).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def stop(self, *, grace: float = 10.0) -> list[str]:
        """End the daemons this cluster started (gateway, OSD, monitor, in that order)."""
        stopped = stop_pids(self.pid_files, grace=grace)
        for proc in self._procs:
            proc.poll()
        return stopped

    def kill(self) -> None:
        """SIGKILL every daemon at once: for throwaway test clusters (memstore keeps nothing anyway)."""
        stop_pids(self.pid_files, grace=0)
