"""Caffe's file formats without Caffe: read, write, upgrade, inspect and draw nets.

>>> from caffezoo import caffe
>>> net = caffe.load_net("deploy.prototxt", weights="model.caffemodel")   # doctest: +SKIP
>>> for layer in net.layers:                                              # doctest: +SKIP
...     print(layer.name, layer.type, layer.bottoms, layer.tops, layer.top_shapes)

Modules, lowest first:

- :mod:`.caffe_pb2` -- generated from the project's ``caffe.proto`` (``make proto``);
- :mod:`.prototxt` -- text nets and solvers: :func:`read_prototxt`, :func:`read_solver`,
  :func:`write_prototxt`;
- :mod:`.caffemodel` -- binary weights of any size as numpy views:
  :func:`read_caffemodel`, :func:`write_caffemodel`;
- :mod:`.upgrade` -- V0/V1 to V2 by Caffe's rules: :func:`upgrade_net`, :func:`upgrade_file`;
- :mod:`.net` -- a net as Caffe builds it (phase filter, in-place layers, splits) with its
  weights: :func:`load_net`;
- :mod:`.shapes` -- output shapes, parameter counts and multiply-accumulates per layer;
- :mod:`.summary`, :mod:`.draw` -- what ``caffezoo inspect`` and ``caffezoo draw`` print;
- :mod:`.checks` -- the prototxt checks of ``caffezoo validate``;
- :mod:`.builder`, :mod:`.bair` -- nets defined in Python; the bundled BAIR models.

Names are imported on first use, so ``import caffezoo.caffe`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {  # submodule -> the names it gives the package
    "prototxt": (
        "read_prototxt",
        "read_solver",
        "write_prototxt",
        "load_prototxt",
        "parse_prototxt",
        "to_text",
    ),
    "caffemodel": ("read_caffemodel", "write_caffemodel", "Caffemodel"),
    "upgrade": ("upgrade_net", "upgrade_file"),
    "net": ("load_net", "Net", "Layer"),
    "shapes": ("infer_shapes",),
    "builder": ("NetBuilder",),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
