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
input), :mod:`.classifier` (images to top-k labels), :mod:`.tasks` (what
``caffezoo run`` does per task: classify, detect, segment, embed, caption,
the last in :mod:`.caption`) and
:mod:`.draw` (boxes and class maps as pictures). Layer rules beyond
:mod:`.ops`: :mod:`.ops_regions` (SPP, Embed, ROI pooling, proposals) and
:mod:`.ops_recurrent` (LSTM, RNN).

Needs the ``run`` extra (numpy, onnx, onnxruntime, pillow); the command line
imports this package only inside the commands that run models.
"""

from __future__ import annotations

from .classifier import Prediction, classify
from .convert import Converted, convert_net, to_onnx
from .preprocess import Preprocessor
from .session import InferenceNet, load

__all__ = [
    "Converted",
    "InferenceNet",
    "Prediction",
    "Preprocessor",
    "classify",
    "convert_net",
    "load",
    "to_onnx",
]
