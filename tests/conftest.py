"""Shared fixtures: an isolated CAFFEZOO_HOME for every test, and a CLI runner.

The helper modules' fixtures are registered here as plugins; their plain helpers
are imported by name where a test uses them (``from model_helpers import write_model``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["gist_helpers", "web_helpers", "ceph_helpers"]


def pytest_collection_modifyitems(items) -> None:
    """Mark what needs PostgreSQL or Chromium, so ``make test-fast`` can leave it out."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        if "postgres_url" in names or (callspec and "postgresql" in callspec.id.split("-")):
            item.add_marker(pytest.mark.postgresql)
        if "browser" in names:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(autouse=True)
def caffezoo_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own CAFFEZOO_HOME and HOME: nothing touches the real ones."""
    home = tmp_path_factory.mktemp("caffezoo_home")
    monkeypatch.setenv("CAFFEZOO_HOME", str(home))
    monkeypatch.setenv("HOME", str(home / "user"))
    (home / "user").mkdir()
    for var in (
        "CAFFEZOO_OFFLINE",
        "CAFFEZOO_GIST_API",
        "CAFFEZOO_TOKEN",
        "GITHUB_TOKEN",
        "CAFFEZOO_MIRRORS",
        "CAFFEZOO_DATABASE_URL",
        "CAFFEZOO_TIMEOUT",
        "CAFFEZOO_RETRIES",
    ):
        monkeypatch.delenv(var, raising=False)
    return home


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys):
    """Run the caffezoo CLI in-process: ``cli("validate", "dir")`` -> Result."""
    from caffezoo.cli import main

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return run


@pytest.fixture
def cli_process():
    """Run ``python -m caffezoo`` as a real process (exit codes, tracebacks, signals)."""

    def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120):
        full_env = dict(os.environ)
        full_env.update(env or {})
        p = subprocess.run(
            [sys.executable, "-m", "caffezoo", *map(str, args)],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=cwd,
            timeout=timeout,
        )
        return Result(p.returncode, p.stdout, p.stderr)

    return run
