"""Records of verified files, so that "already there" costs a ``stat``, not a re-hash.

A file counts as verified when its identity — device, inode, size and
``mtime_ns`` — equals one recorded right after its bytes were hashed. Writing
to the file changes its mtime; replacing it changes its inode: either way the
record no longer matches and the file is hashed again. Hard links share an
inode, so the cache blob and every model file linked to it share one record.

Records live in ``<blobs>/.verified/<sha1>.json``: one small file per blob,
read in O(1) given the SHA-1 the caller expects. They are an optimisation
only: a lost or stale record costs one re-hash, never a wrong answer.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp()); f = d / "w"; _ = f.write_bytes(b"x")
>>> r = Records(d / ".verified")
>>> r.add("11f6ad8ec52a2984abaafd7c3b516503785c2072", [f], size=1)
>>> r.is_verified(f, "11f6ad8ec52a2984abaafd7c3b516503785c2072")
True
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["Records", "identity", "write_json_atomic"]


def identity(st: os.stat_result) -> list[int]:
    """What must stay equal for a recorded file to still hold the recorded bytes."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a unique temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Records:
    """The verified-records directory of one blob cache."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)

    def _path(self, sha1: str) -> Path:
        return self.dir / f"{sha1}.json"

    def load(self, sha1: str) -> dict[str, Any]:
        """The record of ``sha1``: ``{"sha1", "sha256", "size", "files": {path: identity}}``."""
        try:
            data = json.loads(self._path(sha1).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"sha1": sha1, "files": {}}
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            return {"sha1": sha1, "files": {}}
        return data

    def is_verified(self, path: str | os.PathLike[str], sha1: str, sha256: str | None = None) -> bool:
        """Does ``path`` (symlinks followed) still hold the bytes recorded for ``sha1``?"""
        try:
            st = os.stat(path)
        except OSError:
            return False
        record = self.load(sha1)
        if sha256 is not None and record.get("sha256") != sha256:
            return False
        return identity(st) in record["files"].values()

    def add(
        self,
        sha1: str,
        paths: Iterable[str | os.PathLike[str]],
        size: int,
        sha256: str | None = None,
    ) -> None:
        """Record that ``paths`` were just verified to hold ``sha1``; forget vanished paths."""
        record = self.load(sha1)
        files: dict[str, list[int]] = record["files"]
        for p in paths:
            try:
                files[os.path.abspath(p)] = identity(os.stat(p))
            except OSError:
                continue
        for p in [p for p in files if not os.path.lexists(p)]:
            del files[p]
        record.update(sha1=sha1, size=size)
        if sha256 is not None:
            record["sha256"] = sha256
        write_json_atomic(self._path(sha1), record)

    def forget(self, sha1: str) -> None:
        self._path(sha1).unlink(missing_ok=True)

    def users(self, sha1: str) -> list[str]:
        """Recorded paths that still hold the recorded bytes (the blob itself included)."""
        out = []
        for p, ident in self.load(sha1)["files"].items():
            try:
                if identity(os.stat(p)) == ident:
                    out.append(p)
            except OSError:
                continue
        return out
