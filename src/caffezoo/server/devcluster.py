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

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Ceph",
    "EngineError",
    "Nginx",
    "Postgres",
    "Replica",
    "accel_location",
    "free_port",
    "serve_command",
    "start_cluster",
    "stop_cluster",
    "stop_pids",
]

ACCESS_KEY = "caffezoo-dev"
SECRET_KEY = "caffezoo-dev-secret-key"  # a throwaway cluster on loopback: not a secret


class EngineError(RuntimeError):
    """A development engine is missing or did not start; the message says which and why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(
    port: int, *options: str, database_url: str | None = None, log_level: str | None = None
) -> list[str]:
    """The command line of ``caffezoo serve`` on 127.0.0.1:``port``, run by this Python: what the
    dev cluster, the tests and the benchmarks start.

    >>> serve_command(8000, "--try", database_url="sqlite:///zoo.db")[3:]
    ['serve', '--host', '127.0.0.1', '--port', '8000', '--database-url', 'sqlite:///zoo.db', '--try']
    """
    argv = [sys.executable, "-m", "caffezoo", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if database_url is not None:
        argv += ["--database-url", database_url]
    if log_level is not None:
        argv += ["--log-level", log_level]
    return [*argv, *options]


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
    return _running(pid) and any(name.encode() in a for a in argv[:3])


def _running(pid: int) -> bool:
    """Whether a process ``pid`` exists and has not ended (a zombie, ended but not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _spawn(
    argv: list[str],
    pid_file: Path,
    log: Path,
    env: dict[str, str] | None = None,
    name: str | None = None,
    tied: bool = False,
) -> subprocess.Popen:
    """Start ``argv`` in its own session (so a Ctrl-C of the caller does not reach it); record its pid.

    ``tied``: the process is killed when its starter dies (a test run that is itself killed
    leaves no daemons behind); ``make cluster``'s outlive the script that started them.
    """
    _refuse_running(pid_file)  # where the pid file is written: every daemon, not two kinds
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent if tied and sys.platform == "linux" else None,
        )
    pid_file.write_text(f"{proc.pid} {name or Path(argv[0]).name}\n")
    return proc


def _read_pid_file(pid_file: Path) -> tuple[int, str, signal.Signals] | None:
    """``(pid, program name, stop signal)`` recorded by :func:`_spawn`; None if unreadable."""
    try:
        pid_text, name, *how = pid_file.read_text().split()
        return int(pid_text), name, signal.Signals[how[0]] if how else signal.SIGTERM
    except (OSError, ValueError, KeyError):
        return None


def _refuse_running(pid_file: Path) -> None:
    """Raise if ``pid_file`` names a running daemon: a second one in its folder would overwrite
    it, and the first would never be stopped."""
    recorded = _read_pid_file(pid_file)
    if recorded and _alive(recorded[0], recorded[1]):
        pid, name, _ = recorded
        raise EngineError(
            f"{pid_file} names {name} ({pid}), still running: stop it first, or use another folder"
        )


def stop_pids(pid_files: list[Path], *, grace: float = 10.0) -> list[str]:
    """SIGTERM each recorded process in order, SIGKILL what outlives ``grace``; remove the files.

    Returns what was stopped. A pid whose process is gone, or now runs another
    program, is left alone.
    """
    stopped = []
    for pid_file in pid_files:
        recorded = _read_pid_file(pid_file)
        if recorded is None:
            continue
        pid, name, sig = recorded
        ours = _alive(pid, name)
        if ours:
            os.kill(pid, sig if grace > 0 else signal.SIGKILL)
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
        # Its own children (nginx's workers) outlive a daemon that was killed, not stopped:
        # they hold its port and run on. They share its process group (its own session).
        # One we just stopped vouches for its whole group (`serve --workers`' are `python -c`).
        for child in _group_left(pid, None if ours else name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
                stopped.append(f"{name} ({child})")
        pid_file.unlink(missing_ok=True)
    return stopped


def _group_left(pgid: int, name: str | None) -> list[int]:
    """Processes other than ``pgid`` itself in the process group ``pgid`` that run ``name``
    (whatever they run with None).

    None while a process ``pgid`` still runs (and is not ours, or it would be stopped by now):
    a pid is not handed out again while its group has members, so a reused pid's group is
    the new program's, whatever its members are called.
    """
    try:  # a process exiting, killed a moment ago, has no argv left: not another program
        with open(f"/proc/{pgid}/cmdline", "rb") as f:
            if f.read() and _running(pgid):
                return []
    except OSError:
        pass
    try:
        entries = os.listdir("/proc")
    except OSError:  # not Linux
        return []
    left = []
    for entry in entries:
        if not entry.isdigit() or int(entry) == pgid:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                group = int(f.read().rsplit(b")", 1)[1].split()[2])
        except (OSError, IndexError, ValueError):
            continue
        if group == pgid and _alive(int(entry), name or ""):
            left.append(int(entry))
    return left


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
    tied: bool = False  # daemons die with the process that started them (tests, benchmarks)
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
        self._procs.append(
            _spawn(["ceph-mon", *c, "-i", "a", "-f"], self.root / "mon.pid", log / "mon.out", tied=self.tied)
        )
        osd_uuid = str(uuid.uuid4())
        osd_id = self._ceph("osd", "new", osd_uuid)
        subprocess.run(
            ["ceph-osd", *c, "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid], check=True, capture_output=True
        )
        self._procs.append(
            _spawn(
                ["ceph-osd", *c, "-i", osd_id, "-f"], self.root / "osd.pid", log / "osd.out", tied=self.tied
            )
        )
        self._procs.append(
            _spawn(
                ["radosgw", *c, "-n", "client.rgw.a", "-f"],
                self.root / "rgw.pid",
                log / "rgw.out",
                tied=self.tied,
            )
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


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin() -> Path:
    import glob

    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name.split(".")[0]),
    )
    if not found:
        raise EngineError("PostgreSQL is not installed: apt-get install -y postgresql")
    return Path(found[-1]).parent


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster under ``root`` (as user ``postgres`` when run by root)."""

    root: Path
    port: int = 0

    @property
    def url(self) -> str:
        return f"postgresql://zoo@127.0.0.1:{self.port}/zoo"

    @property
    def pid_files(self) -> list[Path]:
        return [self.root / "postgres.pid"]

    def start(self) -> Postgres:
        import pwd

        bindir = _pg_bin()
        self.root.mkdir(parents=True, exist_ok=True)
        user = None
        if os.geteuid() == 0:
            user = "postgres"
            pw = pwd.getpwnam(user)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.root.chmod(0o700)
        self.port = self.port or free_port()
        data = self.root / "data"
        run = dict(check=True, capture_output=True, text=True, user=user, cwd=self.root)
        try:
            subprocess.run(
                [bindir / "initdb", "-D", data, "-U", "zoo", "-A", "trust", "-E", "UTF8", "--no-sync"], **run
            )
            subprocess.run(
                [bindir / "pg_ctl", "-D", data, "-l", self.root / "log", "-w", "-t", "60", "-o",
                 f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200", "start"],
                **run,
            )  # fmt: skip
            subprocess.run(
                [bindir / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "zoo", "zoo"], **run
            )
        except subprocess.CalledProcessError as e:
            raise EngineError(f"PostgreSQL did not start: {e.stderr or e.stdout}") from None
        pid = int((data / "postmaster.pid").read_text().split()[0])
        # SIGINT is PostgreSQL's "fast" shutdown: clients are cut off, data is kept.
        self.pid_files[0].write_text(f"{pid} postgres SIGINT\n")
        return self


# --------------------------------------------------------------------------- zoo replicas and nginx


@dataclass
class Replica:
    """One ``caffezoo serve`` process on 127.0.0.1:``port``."""

    root: Path
    name: str
    port: int = 0
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    tied: bool = False  # dies with the process that started it (tests, benchmarks)
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.root / f"{self.name}.pid"

    def start(self, wait: float = 60) -> Replica:
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        argv = serve_command(self.port, *self.args)
        env = {**os.environ, **self.env}
        log = self.root / f"{self.name}.log"
        self.proc = _spawn(argv, self.pid_file, log, env=env, name="caffezoo", tied=self.tied)
        _wait_for(f"zoo replica {self.name} on port {self.port}", self._answers, wait, log)
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise EngineError(
                f"zoo replica {self.name} exited with status {self.proc.returncode}:\n"
                + (self.root / f"{self.name}.log").read_text(errors="replace")[-2000:]
            )
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"HEAD /blobs/sha1/0 HTTP/1.0\r\n\r\n")
                return s.recv(12).startswith(b"HTTP/1.1 ")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the replica dies mid-whatever, as a crashed machine would."""
        stop_pids([self.pid_file], grace=0)


# What a replica's blob answer says that nginx drops on an X-Accel-Redirect (it keeps only
# Content-Type, Content-Disposition, Cache-Control, Expires, Accept-Ranges and Set-Cookie):
# put back from $upstream_http_*, read in the internal location before its own upstream starts.
# add_header puts them on the store's 200 and 206 only, not on an error.
ACCEL_KEPT = (
    "ETag",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "Referrer-Policy",
    "Cross-Origin-Opener-Policy",
    "Permissions-Policy",
    "Content-Security-Policy",
    "X-Request-ID",
)
# The store's answers other than 404 that the client must not see (its body names the bucket):
# nginx's own 502 instead, as when the store cannot be reached at all.
STORE_FAILURES = "301 302 303 307 308 400 401 403 405 409 411 412 416 429 500 501 502 503 504"
# What the store says that the replica says otherwise (its MD5 ETag, its type, its dates) or
# that is nobody else's business (its ids): clients see the zoo's headers, as when streamed.
ACCEL_HIDDEN = (
    "ETag",
    "Last-Modified",
    "Content-Type",
    "Content-Disposition",
    "Cache-Control",
    "Expires",
    "Accept-Ranges",
    "Set-Cookie",
    "x-amz-request-id",
    "x-amz-id-2",
    "x-amz-version-id",
    "x-amz-storage-class",
    "x-amz-server-side-encryption",
    "x-amz-expiration",
    "x-amz-mp-parts-count",
    "x-amz-replication-status",
    "x-amz-website-redirect-location",
    "x-rgw-object-type",
)


def accel_location(prefix: str, store: str) -> str:
    """nginx's ``internal`` location for ``caffezoo serve --blobs-accel PREFIX``, proxying to the
    S3 endpoint ``store`` (``http(s)://host[:port]``) and nowhere else.

    Only a replica's ``X-Accel-Redirect`` reaches it (a client asking for PREFIX gets 404);
    the client's own headers stay here, the store gets the Host its URL was signed for and
    the byte range the replica chose. An https store must show a certificate that the CAs
    boto trusts vouch for (``AWS_CA_BUNDLE``, else the system's), as when a replica streams.
    """
    from .blobs import IMMUTABLE, STORE_RANGE, accel_prefix

    prefix = accel_prefix(prefix)
    origin = store.rstrip("/")
    if origin.count("/") != 2 or not origin.startswith(("http://", "https://")):
        raise ValueError(f"{store!r}: expected the store's endpoint as http(s)://host[:port]")

    def name(header: str) -> str:  # nginx's variable name of a header
        return header.lower().replace("-", "_")

    kept = "".join(f"            set $zoo_{name(h)} $upstream_http_{name(h)};\n" for h in ACCEL_KEPT)
    added = "".join(f"            add_header {h} $zoo_{name(h)};\n" for h in ACCEL_KEPT)
    hidden = "".join(f"            proxy_hide_header {h};\n" for h in ACCEL_HIDDEN)
    if origin.startswith("https://"):
        # nginx checks no certificate unless told (then one level deep): anyone on the way could
        # hand out other bytes under the blob's SHA-1 and immutable Cache-Control.
        ca = os.environ.get("AWS_CA_BUNDLE") or ssl.get_default_verify_paths().cafile
        if not ca:
            raise ValueError("no CA bundle to check the store's certificate with: set AWS_CA_BUNDLE")
        hidden += "            proxy_ssl_server_name on;             # SNI: the store's certificate\n"
        hidden += "            proxy_ssl_verify on;\n            proxy_ssl_verify_depth 4;\n"
        hidden += f'            proxy_ssl_trusted_certificate "{ca}";\n'
    return f"""        location {prefix} {{
            internal;                             # reached only by a replica's X-Accel-Redirect
{kept}            set $zoo_store_range $upstream_http_{name(STORE_RANGE)};
            proxy_pass_request_headers off;       # the client's Authorization, If-*, Range stay here
            proxy_pass_request_body off;
            proxy_set_header Host $proxy_host;    # the host the URL was signed for
            proxy_set_header Range $zoo_store_range;
            proxy_set_header Connection "";
{hidden}{added}            add_header Cache-Control "{IMMUTABLE}";  # blob bytes only, never an error
            proxy_buffering on;                   # read the store ahead of the client, in memory
            proxy_buffer_size 64k;                # (up to 1 MiB a download, never a temp file):
            proxy_buffers 16 64k;                 # 0.7x of reading the store directly without,
            proxy_busy_buffers_size 256k;         # 0.95x with (benchmarks/cluster.py)
            proxy_max_temp_file_size 0;
            proxy_intercept_errors on;            # the store's error bodies name its bucket:
            error_page 404 = @store_missing;      # deleted since the replica looked
            error_page {STORE_FAILURES} = @store_refused;  # a refused signature, a store in trouble
            proxy_pass {origin}/;
        }}
        location @store_missing {{ return 404; }}
        location @store_refused {{ return 502; }}
"""


@dataclass
class Nginx:
    """nginx on 127.0.0.1:``port`` balancing over ``upstreams`` (base URLs); with ``accel``
    (a path prefix) and ``store`` (the S3 endpoint), the internal location of ``--blobs-accel``."""

    root: Path
    upstreams: list[str]
    port: int = 0
    accel: str | None = None
    store: str | None = None
    tied: bool = False  # dies with the process that started it (tests, benchmarks)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_files(self) -> list[Path]:
        return [self.root / "nginx.pid"]

    def start(self) -> Nginx:
        binary = _need("nginx", "nginx-light")
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        r = self.root
        servers = "\n".join(
            f"        server {u.split('://', 1)[1]} max_fails=1 fail_timeout=2s;" for u in self.upstreams
        )
        user = "user root root;\n" if os.geteuid() == 0 else ""
        accel = accel_location(self.accel, self.store or "") if self.accel else ""
        conf = r / "nginx.conf"
        conf.write_text(
            f"""{user}worker_processes 1;
daemon off;
pid {r}/nginx.master.pid;
error_log {r}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {r}/client_body;
    proxy_temp_path {r}/proxy;
    fastcgi_temp_path {r}/fastcgi;
    uwsgi_temp_path {r}/uwsgi;
    scgi_temp_path {r}/scgi;
    upstream zoo {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{self.port};
        client_max_body_size 0;          # weights can be large; the zoo checks the size it expects
        proxy_request_buffering off;     # uploads stream to a replica, which hashes them on the way
        proxy_buffering off;             # downloads stream too, without temp files
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Request-ID $request_id;  # one id in nginx's log and the replica's
        proxy_next_upstream error timeout http_502 http_503;
        location / {{ proxy_pass http://zoo; }}
{accel}    }}
}}
"""
        )
        check = subprocess.run([binary, "-t", "-c", str(conf), "-p", str(r)], capture_output=True, text=True)
        if check.returncode != 0:
            raise EngineError(f"nginx refused its configuration: {check.stderr}")
        _spawn(
            [binary, "-c", str(conf), "-p", str(r)],
            self.pid_files[0],
            r / "nginx.out",
            name="nginx",
            tied=self.tied,
        )
        _wait_for("nginx", lambda: _port_open(self.port), 30, r / "nginx-error.log")
        return self


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- the whole cluster

BUCKET = "caffezoo"
ACCEL_PREFIX = "/_s3/"  # nginx's internal location for the replicas' X-Accel-Redirects


def start_cluster(
    root: Path,
    *,
    replicas: int = 2,
    redirect: bool = False,
    accel: bool = True,
    seed: bool = True,
    serve_args: list[str] | None = None,
) -> dict:
    """PostgreSQL, Ceph (monitor, OSD, gateway), ``replicas`` zoo servers and nginx, under ``root``.

    Blob GETs are answered by 302s to the store with ``redirect``; else with ``accel``, as in
    production, the replicas answer them and nginx streams the bodies from the store
    (``--blobs-accel``); else the replicas stream them.

    Returns what was started (also written to ``root/cluster.json``). On a failure,
    whatever had started is stopped again before the error propagates.
    """
    root = Path(root).resolve()
    if (root / "cluster.json").exists():
        raise EngineError(f"a cluster is already running from {root}: stop it first (make cluster-stop)")
    root.mkdir(parents=True, exist_ok=True)
    _remove_pg_scratch(root)
    for part in ("postgres", "ceph", "replicas", "nginx", "home"):
        shutil.rmtree(root / part, ignore_errors=True)  # a cluster starts afresh: Ceph's RAM is gone anyway
    pid_files: list[Path] = []
    try:
        # PostgreSQL runs as user postgres when we are root, and must reach its directory: a
        # scratch directory of its own under /tmp, whatever the permissions above ``root``.
        pg_root = Path(tempfile.mkdtemp(prefix="caffezoo-pg-")) if os.geteuid() == 0 else root / "postgres"
        (root / "postgres-dir").write_text(f"{pg_root}\n")
        pg = Postgres(pg_root).start()
        pid_files[:0] = pg.pid_files
        ceph = Ceph(root / "ceph")
        try:
            ceph.start()
        finally:
            pid_files[:0] = ceph.pid_files
        env = {**ceph.env(), "CAFFEZOO_HOME": str(root / "home")}
        blobs_url = f"s3://{BUCKET}/blobs"
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            from .blobstore import S3Store

            s3 = S3Store(BUCKET, "blobs")
            s3.ensure_bucket()
            s3.close()
            if seed:
                from .run import seed as seed_zoo

                seed_zoo(pg.url)  # once, before the replicas: they would race to do it
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        lb_port = free_port()  # known before the replicas start: their links name the balancer
        args = ["--database-url", pg.url, "--blobs-url", blobs_url, "--log-level", "warning"]
        args += ["--base-url", f"http://127.0.0.1:{lb_port}"]
        accel = accel and not redirect
        args += ["--blobs-redirect"] if redirect else []
        args += ["--blobs-accel", ACCEL_PREFIX] if accel else []
        args += serve_args or []
        servers = []
        for i in range(replicas):
            r = Replica(root / "replicas", f"replica-{i + 1}", args=args, env=env)
            try:
                r.start()
            finally:
                pid_files[:0] = [r.pid_file]
            servers.append(r)
        lb = Nginx(
            root / "nginx",
            [r.url for r in servers],
            port=lb_port,
            accel=ACCEL_PREFIX if accel else None,
            store=ceph.endpoint,
        )
        try:
            lb.start()
        finally:
            pid_files[:0] = lb.pid_files
    except BaseException:
        stop_pids(pid_files)
        _remove_pg_scratch(root)
        raise
    state = {
        "url": lb.url,
        "replicas": [r.url for r in servers],
        "database_url": pg.url,
        "blobs_url": blobs_url,
        "s3": env,
        "pid_files": [str(p) for p in pid_files],
    }
    (root / "cluster.json").write_text(json.dumps(state, indent=2) + "\n")
    return state


def _remove_pg_scratch(root: Path) -> None:
    marker = root / "postgres-dir"
    if marker.exists():
        shutil.rmtree(marker.read_text().strip(), ignore_errors=True)
        marker.unlink()


def stop_cluster(root: Path) -> list[str]:
    """Stop exactly what :func:`start_cluster` started from ``root`` (load balancer first)."""
    root = Path(root).resolve()
    state_file = root / "cluster.json"
    if not state_file.exists():
        return []
    state = json.loads(state_file.read_text())
    stopped = stop_pids([Path(p) for p in state["pid_files"]])
    _remove_pg_scratch(root)
    state_file.unlink()
    return stopped
