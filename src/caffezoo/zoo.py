"""What the zoo holds, and how a MODEL argument becomes a model directory.

MODEL is, in this order: an existing directory path, the name of a model
bundled with caffezoo (``bvlc_alexnet``...), or what a resolver in
:data:`RESOLVERS` recognises (a gist id or URL). Bundled models live in the
package; their weights go under ``CAFFEZOO_HOME`` since the package folder
may be read-only.

>>> names = bundled_names()
>>> "bvlc_alexnet" in names
True
>>> resolve("bvlc_alexnet").front_matter.caffemodel
'bvlc_alexnet.caffemodel'
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .config import settings
from .errors import ModelNotFoundError
from .modeldir import README, ModelDir, load

BUNDLED_DIR = Path(__file__).parent / "models"

# Other ways to find a model (e.g. a gist id), tried after paths and bundled
# names. Each takes the MODEL string and returns a ModelDir, or None to pass.
# A "module:function" string is imported on first use, so that modules with
# heavy imports (httpx...) cost nothing until a MODEL needs them.
RESOLVERS: list[Callable[[str], ModelDir | None] | str] = ["caffezoo.gist:resolve_model"]


def _resolver(entry: Callable[[str], ModelDir | None] | str) -> Callable[[str], ModelDir | None]:
    if isinstance(entry, str):
        import importlib

        module, _, name = entry.partition(":")
        return getattr(importlib.import_module(module), name)
    return entry


def bundled_names() -> list[str]:
    """Names of the model directories shipped inside the package."""
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / README).is_file())


def bundled(name: str) -> ModelDir:
    """Load a bundled model; its weights directory is under the data directory."""
    if name not in bundled_names():
        raise ModelNotFoundError(f"{name!r} is not a bundled model (bundled: {', '.join(bundled_names())})")
    return load(BUNDLED_DIR / name, bundled=True, weights_dir=settings().models_dir / name)


def resolve(model: str | os.PathLike[str]) -> ModelDir:
    """Turn a MODEL argument into a loaded :class:`ModelDir`."""
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.exists() or ("://" not in text and (os.sep in text or text.startswith("."))):
        return load(path)  # a path: its own errors (missing, not a dir...) are the right ones
    if text in bundled_names():
        return bundled(text)
    for resolver in RESOLVERS:
        found = _resolver(resolver)(text)
        if found is not None:
            return found
    raise ModelNotFoundError(
        f"{text!r}: no such directory, and not a bundled model "
        f"(bundled: {', '.join(bundled_names())}) or a gist id or URL"
    )


def list_models() -> list[ModelDir]:
    """Every bundled model, loaded."""
    return [bundled(n) for n in bundled_names()]
