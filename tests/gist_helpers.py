"""Fixtures for the gist client and server suites: a real caffezoo server on
127.0.0.1 over SQLite and over a throwaway PostgreSQL cluster, and a small
scripted HTTP server for what the real one never answers (GitHub's own JSON,
rate limits, 5xx, unsafe file names).

Registered as a pytest plugin by conftest; import plain helpers by name.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from caffezoo.server.devcluster import free_port

__all__ = [
    "postgres_url",
    "temporary_postgres",
    "zoo_server",
    "zoo",
    "scripted",
    "free_port",
    "ScriptedServer",
    "ZooUser",
    "start_uvicorn",
]


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name.split(".")[0]),
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed (Debian package `postgresql`, see .ci/run): "
            "the gist server suite runs on it as well as on SQLite"
        )
    return Path(found[-1]).parent


@contextmanager
def temporary_postgres():
    """Start a throwaway PostgreSQL cluster (initdb + pg_ctl) on a free port; yield its URL.

    Runs as the ``postgres`` user when we are root (initdb refuses root). Also
    used by ``benchmarks/gist_server.py``.
    """
    bindir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="caffezoo-pg-"))
    user = None
    if os.geteuid() == 0:
        user = "postgres"
        pw = pwd.getpwnam(user)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    root.chmod(0o700)
    port = free_port()
    run = dict(check=True, capture_output=True, text=True, user=user, cwd=root)
    try:
        subprocess.run(
            [bindir / "initdb", "-D", root / "data", "-U", "zoo", "-A", "trust", "-E", "UTF8", "--no-sync"],
            **run,
        )
        subprocess.run(
            [
                bindir / "pg_ctl",
                "-D",
                root / "data",
                "-l",
                root / "log",
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                "start",
            ],
            **run,
        )
    except subprocess.CalledProcessError as e:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"could not start PostgreSQL: {e.stderr}\n{e.stdout}\n{log}") from None
    try:
        yield f"postgresql://zoo@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [bindir / "pg_ctl", "-D", root / "data", "-m", "immediate", "stop"],
            capture_output=True,
            user=user,
            cwd=root,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL cluster for the session. Fails (never skips) when PostgreSQL is missing."""
    try:
        cluster = temporary_postgres()
        url = cluster.__enter__()
    except RuntimeError as e:
        pytest.fail(str(e))
    try:
        yield url
    finally:
        cluster.__exit__(None, None, None)


# --------------------------------------------------------------------------- the real server


def start_uvicorn(app, port: int | None = None, **config):
    """Run ``app`` with uvicorn in a thread; return (server, thread, base URL).

    ``config`` adds to (or overrides) the uvicorn.Config arguments."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, **{"host": "127.0.0.1", "port": port, "log_level": "warning", "lifespan": "off", **config}
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the caffezoo server did not start")
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


@dataclass
class ZooServer:
    kind: str
    url: str
    database_url: str
    storage: object


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def zoo_server(request, tmp_path_factory):
    """A caffezoo server on 127.0.0.1, once per database kind for the whole session."""
    from caffezoo.server import create_app

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('zoo_db') / 'zoo.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    app = create_app(url)
    server, thread, base = start_uvicorn(app)
    yield ZooServer(request.param, base, url, app.state.storage)
    server.should_exit = True
    thread.join(10)
    app.state.storage.close()


@dataclass
class ZooUser:
    """A fresh user with a token on the server; ``http`` sends that token."""

    server: ZooServer
    login: str
    token: str
    http: httpx.Client
    _others: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def other(self) -> ZooUser:
        """Another fresh user on the same server."""
        return _new_user(self.server)

    def create(self, files: dict[str, str], description: str = "d", public: bool = False) -> dict:
        r = self.http.post(
            "/gists",
            json={
                "description": description,
                "public": public,
                "files": {n: {"content": c} for n, c in files.items()},
            },
        )
        assert r.status_code == 201, r.text
        return r.json()


def _new_user(server: ZooServer) -> ZooUser:
    login = "u" + uuid.uuid4().hex[:12]
    token = server.storage.create_token(login)
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"token {token}"}, timeout=60)
    return ZooUser(server, login, token, http)


@pytest.fixture
def zoo(zoo_server, monkeypatch) -> ZooUser:
    """A new user on the server, with CAFFEZOO_GIST_API and CAFFEZOO_TOKEN pointing the client at it."""
    user = _new_user(zoo_server)
    monkeypatch.setenv("CAFFEZOO_GIST_API", zoo_server.url)
    monkeypatch.setenv("CAFFEZOO_TOKEN", user.token)
    yield user
    user.http.close()


# --------------------------------------------------------------------------- a scripted server


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class ScriptedServer:
    """Answers ``(method, path)`` with scripted responses, in order (the last one repeats).

    >>> srv.script("GET", "/gists/x", (200, {"id": "x"}), (503, {}))   # doctest: +SKIP
    """

    def __init__(self):
        self.routes: dict[tuple[str, str], list[tuple[int, object, dict[str, str]]]] = {}
        self.seen: list[Seen] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                outer.seen.append(
                    Seen(self.command, path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                queue = outer.routes.get((self.command, path))
                if not queue:
                    status, payload, headers = 404, {"message": "Not Found"}, {}
                else:
                    status, payload, headers = queue.pop(0) if len(queue) > 1 else queue[0]
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                ctype = "text/plain" if isinstance(payload, bytes) else "application/json; charset=utf-8"
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def script(self, method: str, path: str, *responses) -> None:
        """Each response is ``(status, json-or-bytes)`` or ``(status, body, headers)``."""
        self.routes[(method, path)] = [r if len(r) == 3 else (r[0], r[1], {}) for r in responses]

    def requests(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        return [
            s
            for s in self.seen
            if (method is None or s.method == method) and (path is None or s.path == path)
        ]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    """A factory of scripted servers, each on its own port (so its own origin)."""
    servers: list[ScriptedServer] = []

    def make() -> ScriptedServer:
        servers.append(ScriptedServer())
        return servers[-1]

    yield make
    for s in servers:
        s.close()
