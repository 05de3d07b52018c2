"""Run zoo models without Caffe: convert to ONNX, execute with onnxruntime, classify images.

>>> from caffezoo import runtime
>>> runtime.to_onnx("bvlc_alexnet", "alexnet.onnx")                 # doctest: +SKIP
>>> net = runtime.load("bvlc_alexnet")                               # doctest: +SKIP
>>> net.forward(data=batch)["prob"].shape                            # doctest: +SKIP
(10, 1000)
>>> runtime.classify("bvlc_alexnet", ["cat.jpg"], top=5)             # doctest: +SKIP

Modules: :mod:`.convert` (Caffe -> ONNX; the per-layer rules live in
:mod:`.ops`, :mod:`.ops_fork` and :mod:`.detection`), :mod:`.session`
(onnxruntime and the conversion cache), :mod:`.preprocess` (Caffe-style image
input), :mod:`.classifier` (images to top-k labels).

Needs the ``run`` extra (numpy, onnx, onnxruntime, pillow). Names are
imported on first use, so ``import caffezoo.runtime`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "to_onnx": "convert", "convert_net": "convert", "Converted": "convert",
    "load": "session", "Net": "session",
    "classify": "classifier", "Prediction": "classifier",
    "Preprocessor": "preprocess",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
