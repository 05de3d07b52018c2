"""Fixtures for the web wiki suites: a zoo server with pages on 127.0.0.1 (SQLite, or a
fresh PostgreSQL database), a storage of either kind, a real Chromium, and helpers
to publish models into a store.

Registered as a pytest plugin by conftest; import plain helpers by name.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from gist_helpers import start_uvicorn

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output" / "web"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]

DEPLOY = """\
name: "TinyNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 32 dim: 32 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def readme(name: str, body: str = "A small test network.\n", **keys) -> str:
    """A readme.md with front matter ``name`` and ``keys`` (lists written in flow style)."""
    lines = [f"name: {name}"]
    for key, value in keys.items():
        if isinstance(value, list):
            value = "[" + ", ".join(value) + "]"
        lines.append(f"{key}: {value}")
    return "---\n" + "\n".join(lines) + "\n---\n" + body


def publish(
    store,
    owner: str,
    name: str,
    *,
    body: str = "A small test network.\n",
    public: bool = True,
    files: dict[str, str] | None = None,
    **keys,
) -> str:
    """Create a gist holding a model (readme + deploy.prototxt); return its id."""
    store.ensure_user(owner)
    contents = {"readme.md": readme(name, body, **keys), "deploy.prototxt": DEPLOY}
    contents.update(files or {})
    view = store.create_gist(owner, name, public, {n: c.encode() for n, c in contents.items()})
    return view.id


def fresh_postgres(server_url: str) -> str:
    """A new, empty database in the test cluster; its URL."""
    import psycopg

    name = "zoo_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A fresh database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'zoo.db'}"
    return fresh_postgres(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(database_url):
    """A fresh :class:`Storage` on SQLite and on PostgreSQL (the full-text search differs)."""
    from caffezoo.server import Storage

    s = Storage(database_url)
    yield s
    s.close()


@dataclass
class Web:
    url: str
    app: object
    http: httpx.Client

    @property
    def storage(self):
        return self.app.state.storage

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.http.get(path, **kwargs)


def web_for(database_url: str, tmp_path: Path, seed: bool = True, server: dict | None = None, **options):
    """Start a server (pages, API, blobs) on ``database_url``; a context manager yielding :class:`Web`.

    ``options`` go to ``create_app`` (``limits=Limits(...)``, ``base_url=...``), ``server`` to
    uvicorn's ``Config`` (``connection_options()``: the protocols ``serve`` uses)."""
    from contextlib import contextmanager

    @contextmanager
    def run():
        from caffezoo.server import create_app
        from caffezoo.server.seed import seed_bundled

        app = create_app(
            database_url, blobs_dir=tmp_path / "server-blobs", cache_dir=tmp_path / "svg", **options
        )
        if seed:
            seed_bundled(app.state.storage)
        uv, thread, base = start_uvicorn(app, **(server or {}))
        http = httpx.Client(base_url=base, timeout=60, headers={"Accept": "text/html"})
        try:
            yield Web(base, app, http)
        finally:
            http.close()
            uv.should_exit = True
            thread.join(10)
            app.state.storage.close()

    return run()


@pytest.fixture
def web(tmp_path):
    """A zoo server on SQLite, seeded with the bundled models."""
    with web_for(f"sqlite:///{tmp_path / 'zoo.db'}", tmp_path) as w:
        yield w


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright. Fails (never skips) when Chromium is missing."""
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.fail(f"{CHROMIUM} is missing: install the Debian package `chromium` (see .ci/run)")
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def self_signed_cert(folder: Path, name: str) -> tuple[Path, Path]:
    """A key and a one-day self-signed certificate for ``name`` (``IP:127.0.0.1``,
    ``DNS:localhost``), made with openssl in ``folder``: (key.pem, cert.pem)."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
        + ["-addext", f"subjectAltName={name}", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return key, cert
