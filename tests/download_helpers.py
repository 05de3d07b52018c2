"""Helpers shared by the download tests: random blobs and model directories that point at them."""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

from model_helpers import write_model


def blob(size: int, seed: int = 0) -> bytes:
    """``size`` pseudo-random bytes, the same for the same seed."""
    return random.Random(seed).randbytes(size)


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def weights_model(path: Path, url: str, data: bytes, caffemodel: str = "net.caffemodel", **extra) -> Path:
    """A model directory whose front matter names ``url`` and the SHA-1 of ``data``."""
    lines = [
        "name: Test Net",
        f"caffemodel: {caffemodel}",
        f"caffemodel_url: {url}",
        f"sha1: {sha1(data)}",
        "license: BSD-2-Clause",
    ]
    for key, value in extra.items():
        lines.append(f"{key}: {value}")
    return write_model(path, "\n".join(lines))


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    """Poll ``predicate`` until it gives something true, and return that; fail the test after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


def answer_while_trickling(s, byte: bytes = b" ", timeout: float = 60.0) -> bytes:
    """What a server answers on socket ``s`` to a body sent one ``byte`` at a time (a slow
    loris), until it answers or closes; ``s`` is closed after."""
    s.settimeout(0.2)
    got, give_up = b"", time.monotonic() + timeout
    while not got:
        assert time.monotonic() < give_up, "the slow body was never cut"
        try:
            s.sendall(byte)
            got = s.recv(65536)
        except TimeoutError:
            continue
        except OSError:  # closed under us: what it sent first is what we read
            break
    s.close()
    return got


def partial_files(home: Path) -> list[Path]:
    d = home / "cache" / "blobs" / ".partial"
    return sorted(d.glob("*.part")) if d.is_dir() else []


def partial_size(home: Path) -> int:
    return sum(p.stat().st_size for p in partial_files(home) if p.exists())


def cache_blob(home: Path, digest: str) -> Path:
    return home / "cache" / "blobs" / "sha1" / digest


def no_temp_files(directory: Path) -> bool:
    """No half-written files (``.*.tmp``, ``*.part``) left in a model directory."""
    return not any(n.endswith((".tmp", ".part")) for n in os.listdir(directory))
