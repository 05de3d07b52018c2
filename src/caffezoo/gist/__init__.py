"""Gists: the rules both sides share (:mod:`.rules`), the REST client (:mod:`.client`),
and upload/download of model info (:mod:`.sync`).

>>> from caffezoo.gist import download, upload, parse_ref            # doctest: +SKIP

Names are imported lazily, so ``caffezoo.gist.rules`` costs the server and the
schema no HTTP client, and ``import caffezoo.gist`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "GistRef": "rules",
    "parse_ref": "rules",
    "looks_like_gist": "rules",
    "Gist": "client",
    "GistClient": "client",
    "GistFile": "client",
    "DownloadResult": "sync",
    "Skipped": "sync",
    "UploadResult": "sync",
    "collect_files": "sync",
    "contents": "sync",
    "download": "sync",
    "list_gists": "sync",
    "resolve_model": "sync",
    "upload": "sync",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
