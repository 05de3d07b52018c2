"""Gists: the rules both sides share (:mod:`.rules`), the REST client (:mod:`.client`),
and upload/download of model info (:mod:`.sync`).

>>> from caffezoo.gist import download, upload, parse_ref            # doctest: +SKIP

Names are imported lazily, so ``caffezoo.gist.rules`` costs the server and the
schema no HTTP client, and ``import caffezoo.gist`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_MODULES = {  # submodule -> the names it gives the package
    "rules": ("GistRef", "parse_ref", "looks_like_gist"),
    "client": ("Gist", "GistClient", "GistFile"),
    "sync": ("upload", "UploadResult", "Skipped", "collect_files", "download", "DownloadResult", "contents")
    + ("list_gists", "resolve_model"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
