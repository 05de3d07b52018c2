"""Caffe's deterministic fillers: weights for layers a ``.caffemodel`` does not hold.

When a caffemodel lacks a layer, Caffe runs it with the values its fillers
produce. caffezoo does so only on request (``fill_missing=True``), and only
for fillers that give the same values every time (``constant``, ``bilinear``);
a random filler would make a different net on every run.

>>> from caffezoo.caffe import caffe_pb2
>>> layer_fillers("Scale", caffe_pb2.LayerParameter(type="Scale"))[0].value
1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..caffe import caffe_pb2

__all__ = ["fill", "layer_fillers"]

_F = caffe_pb2.FillerParameter


def _constant(value: float) -> caffe_pb2.FillerParameter:
    return _F(type="constant", value=value)


def layer_fillers(layer_type: str, param: caffe_pb2.LayerParameter) -> list[caffe_pb2.FillerParameter | None]:
    """The filler of each blob of a layer, with Caffe's per-layer defaults (None: unknown)."""
    if layer_type in ("Convolution", "Deconvolution", "ConvolutionDepthwise", "DepthwiseConvolution"):
        p = param.convolution_param
        return [p.weight_filler, p.bias_filler]
    if layer_type == "InnerProduct":
        p = param.inner_product_param
        return [p.weight_filler, p.bias_filler]
    if layer_type == "Scale":
        p = param.scale_param
        return [p.filler if p.HasField("filler") else _constant(1.0), p.bias_filler]
    if layer_type == "Bias":
        return [param.bias_param.filler]
    if layer_type == "PReLU":
        p = param.prelu_param
        return [p.filler if p.HasField("filler") else _constant(0.25)]
    if layer_type == "BatchNorm":
        return [_constant(0.0)] * 3
    if layer_type == "Normalize":
        p = param.norm_param
        return [p.scale_filler if p.HasField("scale_filler") else _constant(1.0)]
    return []


def fill(filler: caffe_pb2.FillerParameter, shape: Sequence[int]) -> np.ndarray | None:
    """The values ``filler`` gives a blob of ``shape``; None for a random filler."""
    if filler.type == "constant":
        return np.full(tuple(shape), filler.value, np.float32)
    if filler.type == "bilinear":
        return bilinear(shape)
    return None


def bilinear(shape: Sequence[int]) -> np.ndarray:
    """Caffe's BilinearFiller: an upsampling kernel for Deconvolution, the same for every channel."""
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ValueError(f"the bilinear filler needs a square kernel, not {'x'.join(map(str, shape))}")
    k = shape[3]
    f = math.ceil(k / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    ramp = 1 - np.abs(np.arange(k) / f - c)
    kernel = np.outer(ramp, ramp).astype(np.float32)
    return np.broadcast_to(kernel, tuple(shape)).copy()
