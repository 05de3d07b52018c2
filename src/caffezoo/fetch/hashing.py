"""Digests: what a blob is expected to be, and hashing a file.

>>> exp = Expected("9116A64C0FBE4459D18F4BB6B56D647B63920377", size=10)
>>> exp.sha1
'9116a64c0fbe4459d18f4bb6b56d647b63920377'
>>> exp.mismatch(Digests(sha1=exp.sha1, sha256=None, size=9))
'size: expected 10 bytes, got 9'

A download is hashed while it arrives, by :mod:`caffezoo.fetch.ordered_hash`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UsageError
from ..hashes import digest

__all__ = ["BUFFER_SIZE", "Digests", "Expected", "hash_file", "new_hashes"]


# 1 MiB reads: large enough that per-call overhead vanishes.
BUFFER_SIZE = 1 << 20


@dataclass(frozen=True)
class Digests:
    """What was measured: SHA-1, SHA-256 (when asked for) and byte count."""

    sha1: str
    sha256: str | None
    size: int


@dataclass(frozen=True)
class Expected:
    """What a blob must be. ``sha1`` names it; ``sha256`` and ``size`` are checked when given.

    ``max_size`` caps what a source may send when ``size`` is not known (a server's mirror
    must not fill its disk for a made-up SHA-1).
    """

    sha1: str
    sha256: str | None = None
    size: int | None = None
    max_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha1", _digest(self.sha1, "sha1"))
        if self.sha256 is not None:
            object.__setattr__(self, "sha256", _digest(self.sha256, "sha256"))
        if self.size is not None and self.size < 0:
            raise UsageError(f"size: expected a number of bytes >= 0, got {self.size}")

    def mismatch(self, got: Digests) -> str | None:
        """``None`` when ``got`` is this blob, else what differs, in words."""
        problems = []
        if self.size is not None and got.size != self.size:
            problems.append(f"size: expected {self.size} bytes, got {got.size}")
        if got.sha1 != self.sha1:
            problems.append(f"sha1: expected {self.sha1}, got {got.sha1}")
        if self.sha256 is not None and got.sha256 != self.sha256:
            problems.append(f"sha256: expected {self.sha256}, got {got.sha256}")
        return "; ".join(problems) or None


def _digest(value: str, name: str) -> str:
    try:
        return digest(value, name)
    except ValueError as e:
        raise UsageError(f"{name}: {e}") from None


def new_hashes(sha256: bool) -> list:
    """Fresh SHA-1 (and SHA-256) objects."""
    # usedforsecurity=False: integrity checks must work on FIPS-mode systems too.
    hashes = [hashlib.sha1(usedforsecurity=False)]
    if sha256:
        hashes.append(hashlib.sha256(usedforsecurity=False))
    return hashes


def _digests(hashes: list, size: int) -> Digests:
    return Digests(hashes[0].hexdigest(), hashes[1].hexdigest() if len(hashes) > 1 else None, size)


def hash_file(
    path: str | os.PathLike[str],
    sha256: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Digests:
    """Hash a whole file in 1 MiB reads into one reused buffer.

    ``progress(n)`` is called with the bytes read so far, once per buffer.
    """
    hashes = new_hashes(sha256)
    buf = bytearray(BUFFER_SIZE)
    view = memoryview(buf)
    size = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            for h in hashes:
                h.update(view[:n])
            size += n
            if progress:
                progress(size)
    return _digests(hashes, size)
