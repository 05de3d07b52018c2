"""Shared fixtures: an isolated CAFFEZOO_HOME for every test, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def caffezoo_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own CAFFEZOO_HOME and HOME: nothing touches the real ones."""
    home = tmp_path_factory.mktemp("caffezoo_home")
    monkeypatch.setenv("CAFFEZOO_HOME", str(home))
    monkeypatch.setenv("HOME", str(home / "user"))
    (home / "user").mkdir()
    for var in ("CAFFEZOO_OFFLINE", "CAFFEZOO_GIST_API", "CAFFEZOO_TOKEN", "GITHUB_TOKEN",
                "CAFFEZOO_MIRRORS", "CAFFEZOO_DATABASE_URL", "CAFFEZOO_TIMEOUT", "CAFFEZOO_RETRIES"):
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
            capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout,
        )
        return Result(p.returncode, p.stdout, p.stderr)

    return run


def write_model(path: Path, front_matter: str, body: str = "\nProse.\n", files: dict[str, str] | None = None,
                newline: str = "\n") -> Path:
    """Make a model directory with ``readme.md`` = ``---`` front matter ``---`` body."""
    path.mkdir(parents=True, exist_ok=True)
    text = "---\n" + front_matter.strip("\n") + "\n---\n" + body
    (path / "readme.md").write_bytes(text.replace("\n", newline).encode())
    for name, content in (files or {}).items():
        (path / name).write_text(content)
    return path


GOOD_FRONT_MATTER = """\
name: Test Net
caffemodel: test_net.caffemodel
caffemodel_url: http://127.0.0.1:1/test_net.caffemodel
license: BSD-2-Clause
sha1: 9116a64c0fbe4459d18f4bb6b56d647b63920377
caffe_commit: 709dc15af4a06bebda027c1eb2b3f3e3375d5077
"""

DEPLOY = """\
name: "TestNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
"""
