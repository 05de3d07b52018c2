"""The Caffe Model Zoo as a Python package.

>>> import caffezoo
>>> model = caffezoo.resolve("bvlc_alexnet")           # a directory path, bundled name or gist id
>>> fetched = caffezoo.download("bvlc_alexnet")        # doctest: +SKIP
>>> problems = caffezoo.validate("models/my_net")      # doctest: +SKIP
>>> net = caffezoo.load_net("bvlc_alexnet")            # doctest: +SKIP
>>> caffezoo.to_onnx("bvlc_alexnet", "alexnet.onnx")   # doctest: +SKIP
>>> caffezoo.jsonable(fetched)                         # doctest: +SKIP

Each name is imported on first use, so ``import caffezoo`` loads none of
pydantic, ruamel.yaml, httpx, numpy or onnx. :func:`load_net`, :func:`to_onnx`
and :func:`classify` need the ``run`` extra: they are left out of ``__all__``,
so ``from caffezoo import *`` stays cheap and works on an install without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> (module, attribute): the one public function per user action. download and
# validate are modules that are callable as their main function (see _api.py).
_EXPORTS = {
    "download": ("caffezoo", "download"),
    "validate": ("caffezoo", "validate"),
    "resolve": ("caffezoo.zoo", "resolve"),
    "locate": ("caffezoo.zoo", "locate"),
    "list_models": ("caffezoo.zoo", "list_models"),
    "load_net": ("caffezoo.runtime.session", "load"),
    "to_onnx": ("caffezoo.runtime.convert", "to_onnx"),
    "classify": ("caffezoo.runtime.classifier", "classify"),
    "jsonable": ("caffezoo._json", "jsonable"),
    "CaffezooError": ("caffezoo.errors", "CaffezooError"),
}

# What `from caffezoo import *` imports: every name but those of the run extra.
__all__ = [
    "CaffezooError",
    "download",
    "jsonable",
    "list_models",
    "locate",
    "resolve",
    "validate",
]
_RUN_EXTRA = ("classify", "load_net", "to_onnx")  # onnx, onnxruntime, pillow

if TYPE_CHECKING:
    from . import download, validate
    from ._json import jsonable
    from .errors import CaffezooError

    # The run extra's names: public, outside __all__ (see the module's docstring).
    from .runtime.classifier import classify  # noqa: F401
    from .runtime.convert import to_onnx  # noqa: F401
    from .runtime.session import load as load_net  # noqa: F401
    from .zoo import list_models, locate, resolve


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    if module == __name__:
        return importlib.import_module(f"{__name__}.{name}")
    try:
        return getattr(importlib.import_module(module), attribute)
    except ModuleNotFoundError as e:
        if name not in _RUN_EXTRA:
            raise
        raise ImportError(
            f"caffezoo.{name} needs the run extra: pip install 'caffezoo[run]' ({e})", name=e.name
        ) from e


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_RUN_EXTRA})
