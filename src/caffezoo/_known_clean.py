"""Prototxt files known to pass the checks, so that validating them again needs no protobuf.

>>> clean = KnownClean.here()                                   # doctest: +SKIP
>>> clean.has("deploy", data, model_dir)                        # doctest: +SKIP
False
>>> clean.add("deploy", data); clean.has("deploy", data, model_dir)   # doctest: +SKIP
True

Checking a net costs its parse and shape inference, and the first check in a
process costs importing protobuf and the Caffe schema: most of what
``caffezoo validate`` spends on a model it checked before. A file that passed
is recorded under ``CAFFEZOO_HOME`` by the SHA-1 of how it was checked (deploy
net, other net, solver) and of its bytes, in a folder named for the code that
checked it (the sizes and dates of the Caffe-format modules, validate.py and
protobuf), so a changed checker checks everything again; the first record of
new code removes the folders of older code. A solver's record keeps the
nets it names: it holds while they are found beside it. Only clean results are
recorded: a file with problems is checked, and its problems said, every time.
The records are an optimisation: one that cannot be read or written costs a
check, never a wrong answer.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

from .atomic import atomic_write_bytes
from .caffe._files import net_file_found
from .errors import CaffezooError, WriteError

__all__ = ["KnownClean"]

_KEY_RE = re.compile(r"[0-9a-f]{16}")  # a folder of records: the key of the code that wrote them


def _code_key(package: Path = Path(__file__).parent) -> str | None:
    """What the checks' outcome depends on besides the file: the checking code (the Caffe
    layer, and validate.py, which picks how each file is checked), by the sizes and dates of
    its sources as Python's own bytecode cache does; None without them (a sourceless install)."""
    checks = sorted((package / "caffe").glob("*.py"))
    if not checks:
        return None
    sources = [*checks, package / "validate.py", package / "_known_clean.py"]
    spec = importlib.util.find_spec("google.protobuf")  # found, not imported
    if spec is not None and spec.origin:
        sources.append(Path(spec.origin))
    h = hashlib.sha1(usedforsecurity=False)
    try:
        for p in sources:
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    except OSError:
        return None
    return h.hexdigest()[:16]


class KnownClean:
    """The records of one ``CAFFEZOO_HOME``'s cache folder, for the code running now."""

    def __init__(self, cache_dir: Path | None):
        """``cache_dir`` None: no records (every file is checked, none is recorded)."""
        key = _code_key() if cache_dir is not None else None
        self.dir = cache_dir / "clean-prototxts" / key if cache_dir is not None and key else None

    @classmethod
    def here(cls) -> KnownClean:
        """The records of the cache folder the settings name; none when the settings cannot be
        read (a bad CAFFEZOO_* value is not validate's business: it costs the records only)."""
        from .config import settings

        try:
            return cls(settings().cache_dir)
        except CaffezooError:
            return cls(None)

    def _path(self, kind: str, data: bytes) -> Path:
        assert self.dir is not None
        return self.dir / hashlib.sha1(kind.encode() + b"\0" + data, usedforsecurity=False).hexdigest()

    def has(self, kind: str, data: bytes, model_dir: Path) -> bool:
        """Whether ``data``, checked as ``kind``, passed before (a solver: and its nets are found)."""
        if self.dir is None:
            return False
        try:
            nets = json.loads(self._path(kind, data).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(nets, list) and all(net_file_found(model_dir, str(n)) for n in nets)

    def add(self, kind: str, data: bytes, nets: list[str] | tuple[str, ...] = ()) -> None:
        """Record that ``data``, checked as ``kind``, has no problem (``nets``: those a solver names)."""
        if self.dir is None:
            return
        try:
            if not self.dir.is_dir():
                self._remove_others()
            self.dir.mkdir(parents=True, exist_ok=True)
            # Not durable: a record a crash leaves empty is no JSON, read as "not checked".
            atomic_write_bytes(self._path(kind, data), json.dumps(list(nets)).encode(), durable=False)
        except (OSError, WriteError):
            pass

    def _remove_others(self) -> None:
        """Remove the records of other code (an older caffezoo, an earlier edit): they are
        never read again, and one folder per upgrade would grow without end."""
        import shutil  # here: only the first record of new code needs it

        assert self.dir is not None
        try:
            others = [p for p in self.dir.parent.iterdir() if p != self.dir and _KEY_RE.fullmatch(p.name)]
        except OSError:
            return
        for p in others:
            shutil.rmtree(p, ignore_errors=True)
