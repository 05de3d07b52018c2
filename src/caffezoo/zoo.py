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
>>> locate("bvlc_alexnet").prototxt.name
'deploy.prototxt'

:func:`locate` is the one place a MODEL (or a bare prototxt file) becomes the
deploy prototxt and weights that ``inspect``, ``draw``, ``convert`` and ``run`` read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from .config import settings
from .errors import ConversionError, ModelDirError, ModelNotFoundError
from .modeldir import README, ModelDir, is_there, load

__all__ = [
    "BUNDLED_DIR",
    "RESOLVERS",
    "Found",
    "Located",
    "bundled",
    "bundled_names",
    "find",
    "list_models",
    "locate",
    "resolve",
]

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


class Found(NamedTuple):
    """Where a MODEL's directory is, before anything in it is read."""

    path: Path
    bundled: bool = False
    weights_dir: Path | None = None  # None: the weights live in the directory itself


def find(model: str | os.PathLike[str]) -> Found | None:
    """A MODEL that is a path or a bundled name, without reading it; None for anything else.

    A path's own errors (missing, not a directory...) are left to whoever reads it.
    """
    text = os.fspath(model)
    path = Path(text).expanduser()
    if is_there(path) or ("://" not in text and (os.sep in text or text.startswith("."))):
        return Found(path)
    if text in bundled_names():
        return Found(BUNDLED_DIR / text, True, settings().models_dir / text)
    return None


def resolve(model: str | os.PathLike[str]) -> ModelDir:
    """Turn a MODEL argument into a loaded :class:`ModelDir`."""
    text = os.fspath(model)
    found = find(text)
    if found is not None:
        return load(found.path, bundled=found.bundled, weights_dir=found.weights_dir)
    for resolver in RESOLVERS:
        found = _resolver(resolver)(text)
        if found is not None:
            return found
    raise ModelNotFoundError(
        f"{text!r}: no such directory, and not a bundled model "
        f"(bundled: {', '.join(bundled_names())}) or a gist id or URL"
    )


class Located(NamedTuple):
    """A net to read: its deploy prototxt, its weights (None when there are none yet), the weights'
    SHA-1 if the front matter says, and the model directory (None for a bare prototxt)."""

    prototxt: Path
    weights: Path | None
    sha1: str | None = None
    model: ModelDir | None = None


def locate(
    model: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    *,
    need_weights: bool = False,
) -> Located:
    """The deploy prototxt and weights of MODEL: a prototxt file, a model directory or bundled name...

    ``weights`` overrides the model's own. Without ``need_weights``, weights not
    downloaded yet are None; with it, they are an error saying how to get them
    (and a bare prototxt without ``weights`` is a :class:`ConversionError`).

    >>> locate("bvlc_alexnet").weights                     # doctest: +SKIP
    PosixPath('~/.local/share/caffezoo/models/bvlc_alexnet/bvlc_alexnet.caffemodel')
    """
    text = os.fspath(model)
    given = Path(weights) if weights is not None else None
    is_file = is_there(Path(text), Path.is_file)
    if is_file or (text.endswith(".prototxt") and not is_there(Path(text), Path.is_dir)):
        if not is_file:
            missing = ConversionError if need_weights else ModelNotFoundError
            raise missing(f"{text}: no such prototxt file")
        if need_weights and given is None:
            raise ConversionError(
                f"{text}: a prototxt alone has no weights; give the .caffemodel too (--weights FILE)"
            )
        return Located(Path(text), given)
    m = resolve(model)
    deploy = m.prototxt("deploy")
    if deploy is None:
        raise ModelDirError(
            f"{m.path}: no deploy prototxt (a file named *deploy*.prototxt, or one with an "
            f"Input layer); name a prototxt file instead"
        )
    if given is not None:
        return Located(deploy, given, model=m)
    if need_weights and m.weights_path is None:
        raise ModelDirError(
            f"{m.readme_path}: no `caffemodel` key in the front matter: which file holds the weights?"
        )
    if need_weights and not m.has_weights:
        raise ModelDirError(
            f"{m.weights_path}: the weights are not downloaded; `caffezoo download {model}` fetches them"
        )
    return Located(deploy, m.weights_path if m.has_weights else None, m.front_matter.sha1, m)


def list_models() -> list[ModelDir]:
    """Every bundled model, loaded."""
    return [bundled(n) for n in bundled_names()]
