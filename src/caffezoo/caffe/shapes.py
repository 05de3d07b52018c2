"""Blob shapes, parameter shapes, parameter counts and MACs, by Caffe's own rules.

>>> net = load_net("deploy.prototxt")        # doctest: +SKIP  (calls infer_shapes)
>>> net["pool1"].top_shapes, net["conv2"].param_shapes, net["conv2"].macs   # doctest: +SKIP
([(10, 96, 27, 27)], [(256, 48, 5, 5), (256,)], 2239488000)

Each rule mirrors the ``Reshape``/``LayerSetUp`` of the Caffe layer it names,
including the corners converters get wrong:

- Convolution: ``(in + 2p - (d(k-1)+1)) / s + 1`` with C++ integer division;
  kernel/stride/pad once or per spatial axis, or ``_h``/``_w``; ``group``; ``axis``.
- Deconvolution: ``s(in-1) + d(k-1)+1 - 2p``.
- Pooling: ``ceil`` (or ``round_mode: FLOOR``), then, when padded, one window
  less if the last one would start beyond ``in + pad``; ``global_pooling``.
- InnerProduct over ``axis`` (``transpose``), Reshape with ``0`` and ``-1``,
  Flatten/Concat/Slice/Softmax axes (``concat_dim``/``slice_dim`` legacy),
  Crop with its ``axis`` and offsets, ArgMax with and without ``axis``.
- The fork layers of common models: Permute, PriorBox, Normalize, Interp,
  Upsample, BN, Axpy, ShuffleChannel, ROIPooling...

``macs`` counts multiply-accumulates of Convolution, Deconvolution,
InnerProduct, Embed and the affine layers (Scale, BatchNorm, BN, Bias count one
per element); element-wise and pooling layers count 0. Counts cover the whole
batch as declared; divide by the batch size for per-image figures.

Shapes are tuples; ``None`` means unknown (a data layer reading a database,
a layer after it, a detection layer whose output size depends on the data).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..errors import NetError
from . import caffe_pb2

if TYPE_CHECKING:
    from .net import Layer, Net

__all__ = [
    "ELEMENTWISE_MACS",
    "MIN_BOTTOMS",
    "NO_PARAMETERS",
    "RULES",
    "Rule",
    "SOURCES",
    "Shape",
    "ShapeError",
    "conv_geometry",
    "crop_offsets",
    "infer_shapes",
    "legacy_axis",
    "permute_order",
    "pool_geometry",
    "prior_aspect_ratios",
]


Shape = tuple[int, ...]

# Layer types that learn no parameters: they count 0 parameters even where the
# shapes around them are unknown (after a database input, or a detection layer).
NO_PARAMETERS = frozenset(
    """AbsVal Accuracy ArgMax Axpy BNLL BatchReindex Clip Concat ContrastiveLoss Crop Data
    DetectionOutput Dropout DummyData ELU Eltwise EuclideanLoss Exp Filter Flatten HDF5Data
    HDF5Output HingeLoss Im2col ImageData InfogainLoss Input Interp LRN LSTMUnit Log MVN
    MemoryData MultinomialLogisticLoss Permute Pooling Power PriorBox Proposal ROIPooling ReLU
    ReLU6 Reduction Reshape SPP ShuffleChannel Sigmoid SigmoidCrossEntropyLoss Silence Slice
    Softmax SoftmaxWithLoss Split Swish TanH Threshold Tile Upsample WindowData""".split()
)
# ... of which these do multiply-accumulate, one per element: unknown shapes, unknown MACs.
ELEMENTWISE_MACS = frozenset({"Axpy"})
Rule = Callable[["Layer", list[Shape]], tuple[list, list | None, int]]
_P = caffe_pb2


class ShapeError(NetError):
    """The layer's parameters do not fit its inputs."""


def infer_shapes(net: Net, input_shapes: dict[str, Sequence[int]] | None = None) -> None:
    """Fill ``top_shapes``, ``param_shapes``, ``params`` and ``macs`` of every layer of ``net``.

    A layer whose shapes cannot be computed gets ``problem`` set and unknown
    (None) shapes, and so do the layers after it that depend on it.
    """
    overrides = _overrides(net, input_shapes or {})
    shapes: dict[str, Shape | None] = {}
    for layer in net.layers:
        bottoms = [shapes.get(b) for b in layer.bottoms]
        layer.problem = None
        if layer.type not in RULES:
            tops, expected, macs = [None] * len(layer.tops), None, None
            layer.problem = (
                f"unknown layer type {layer.type!r}: shapes after it are unknown"
                if layer.type
                else "the layer has no type"
            )
        elif len(bottoms) < MIN_BOTTOMS.get(layer.type, 0 if layer.type in SOURCES else 1):
            tops, expected, macs = [None] * len(layer.tops), None, None
            need = MIN_BOTTOMS.get(layer.type, 1)
            layer.problem = f"needs at least {need} bottom{'s' * (need > 1)}, has {len(bottoms)}"
        elif any(b is None for b in bottoms):
            tops, expected, macs = [None] * len(layer.tops), None, None
        else:
            try:
                tops, expected, macs = RULES[layer.type](layer, bottoms)  # type: ignore[arg-type]
            except ShapeError as e:
                tops, expected, macs = [None] * len(layer.tops), None, None
                layer.problem = str(e)
            except (ArithmeticError, IndexError, ValueError) as e:  # parameters no rule foresaw
                tops, expected, macs = [None] * len(layer.tops), None, None
                layer.problem = f"cannot compute the output shape from these parameters ({e})"
        if not layer.bottoms:
            tops = [overrides.get(t, s) for t, s in zip(layer.tops, tops)]
        layer.top_shapes = list(tops)
        layer.param_shapes = expected
        layer.params = (
            None
            if expected is None or any(s is None for s in expected)
            else sum(math.prod(s) for s in expected)
        )
        layer.macs = macs
        if layer.type in NO_PARAMETERS:  # even where the shapes are unknown, there is nothing to count
            layer.params = 0
            if layer.macs is None and layer.type not in ELEMENTWISE_MACS:
                layer.macs = 0
        for top, shape in zip(layer.tops, tops):
            shapes[top] = shape


def _overrides(net: Net, input_shapes: dict[str, Sequence[int]]) -> dict[str, Shape]:
    """``input_shapes`` checked: each names an input blob and gives it positive sizes."""
    inputs = [top for layer in net.layers if not layer.bottoms for top in layer.tops]
    unknown = [name for name in input_shapes if name not in inputs]
    _check(
        not unknown,
        f"input_shapes: no input blob named {', '.join(map(repr, unknown))} "
        f"(the net's inputs: {', '.join(map(repr, inputs)) or 'none'})",
    )
    shapes = {name: tuple(int(d) for d in dims) for name, dims in input_shapes.items()}
    for name, shape in shapes.items():
        _check(
            bool(shape) and all(d > 0 for d in shape),
            f"input_shapes: {name!r} needs positive sizes, not {_fmt(shape)}",
        )
    return shapes


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ShapeError(message)


def _axis(axis: int, ndim: int, what: str = "axis") -> int:
    """Caffe's CanonicalAxisIndex."""
    _check(-ndim <= axis < ndim, f"{what} {axis} is out of range for a {ndim}-D blob")
    return axis % ndim


def _cdiv(a: int, b: int) -> int:
    """C++ integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape)) or "scalar"


# ------------------------------------------------------------------- rules


def _same(layer: Layer, bottoms: list[Shape]) -> tuple:
    """Element-wise layers: each top has its bottom's shape."""
    _check(len(bottoms) >= 1, "needs a bottom")
    return [bottoms[min(i, len(bottoms) - 1)] for i in range(len(layer.tops))], [], 0


def _input(layer: Layer, bottoms: list[Shape]) -> tuple:
    shapes = [tuple(s.dim) for s in layer.param.input_param.shape]
    n = len(layer.tops)
    # Caffe allows no shape at all (the caller reshapes the inputs before running).
    _check(
        len(shapes) in (0, 1, n),
        f"give `shape` once, once per top ({n} tops), or not at all; {len(shapes)} given",
    )
    if not shapes:
        return [None] * n, [], 0
    return [shapes[0] if len(shapes) == 1 else shapes[i] for i in range(n)], [], 0


def _data(layer: Layer, bottoms: list[Shape]) -> tuple:
    """Data layers: batch size is known, the image shape usually only with the data."""
    t = layer.param
    image: Shape | None = None
    batch = None
    if layer.type == "Data":
        batch = t.data_param.batch_size
    elif layer.type == "ImageData":
        p = t.image_data_param
        batch = p.batch_size
        channels = 3 if p.is_color else 1
        crop = t.transform_param.crop_size
        if crop:
            image = (batch, channels, crop, crop)
        elif p.new_height and p.new_width:
            image = (batch, channels, p.new_height, p.new_width)
    elif layer.type == "WindowData":
        p = t.window_data_param
        batch = p.batch_size
        crop = t.transform_param.crop_size or p.crop_size
        image = (batch, 3, crop, crop) if crop else None
    elif layer.type == "MemoryData":
        p = t.memory_data_param
        batch = p.batch_size
        image = (p.batch_size, p.channels, p.height, p.width)
    elif layer.type == "DummyData":
        p = t.dummy_data_param
        if p.shape:
            shapes = [tuple(s.dim) for s in p.shape]
        else:
            shapes = [(p.num[i], p.channels[i], p.height[i], p.width[i]) for i in range(len(p.num))]
        if shapes:
            return [shapes[0] if len(shapes) == 1 else shapes[i] for i in range(len(layer.tops))], [], 0
    tops = [image] + [(batch,) if batch else None] * (len(layer.tops) - 1)
    return tops[: len(layer.tops)], [], 0


def conv_geometry(p: caffe_pb2.ConvolutionParameter, spatial: int) -> tuple[list[int], ...]:
    """Kernel, stride, pad and dilation per spatial axis, by Caffe's BaseConvolutionLayer rules."""

    def per_axis(values: Sequence[int], h_field: str, w_field: str, default: int, what: str) -> list[int]:
        if p.HasField(h_field) or p.HasField(w_field):
            _check(spatial == 2, f"{h_field}/{w_field} only work for 2-D {what}; use {what} instead")
            _check(not values, f"give {what} or {h_field} and {w_field}, not both")
            _check(p.HasField(h_field) and p.HasField(w_field), f"give both {h_field} and {w_field}")
            return [getattr(p, h_field), getattr(p, w_field)]
        values = list(values)
        _check(
            len(values) in (0, 1, spatial),
            f"{what} must be given once or once per spatial axis ({spatial}), not {len(values)} times",
        )
        if not values:
            return [default] * spatial
        return values * spatial if len(values) == 1 else values

    kernel = per_axis(p.kernel_size, "kernel_h", "kernel_w", 0, "kernel_size")
    _check(all(k > 0 for k in kernel), "kernel size must be given and positive")
    stride = per_axis(p.stride, "stride_h", "stride_w", 1, "stride")
    _check(all(s > 0 for s in stride), "stride must be positive")
    pad = per_axis(p.pad, "pad_h", "pad_w", 0, "pad")
    dilation = list(p.dilation)
    _check(len(dilation) in (0, 1, spatial), "dilation must be given once or once per spatial axis")
    dilation = [1] * spatial if not dilation else dilation * spatial if len(dilation) == 1 else dilation
    _check(all(d > 0 for d in dilation), "dilation must be positive")
    return kernel, stride, pad, dilation


def _convolution(layer: Layer, bottoms: list[Shape], deconv: bool = False) -> tuple:
    p = layer.param.convolution_param
    shape = bottoms[0]
    for i, other in enumerate(bottoms[1:], 1):
        _check(
            other == shape,
            f"all bottoms must have the same shape: {_fmt(shape)} vs {_fmt(other)} (bottom {i})",
        )
    _check(len(layer.tops) == len(bottoms), "needs as many tops as bottoms")
    axis = _axis(p.axis, len(shape))
    spatial = len(shape) - axis - 1
    _check(spatial >= 1, f"a {_fmt(shape)} input has no spatial axis after axis {axis}")
    kernel, stride, pad, dilation = conv_geometry(p, spatial)
    channels, group, out = shape[axis], p.group, p.num_output
    _check(out > 0, "num_output must be positive")
    _check(
        group > 0 and channels % group == 0,
        f"input channels ({channels}) must be a multiple of group ({group})",
    )
    _check(out % group == 0, f"num_output ({out}) must be a multiple of group ({group})")
    size = []
    for i in range(spatial):
        extent = dilation[i] * (kernel[i] - 1) + 1
        n = shape[axis + 1 + i]
        o = (
            stride[i] * (n - 1) + extent - 2 * pad[i]
            if deconv
            else _cdiv(n + 2 * pad[i] - extent, stride[i]) + 1
        )
        _check(
            o > 0,
            f"output size {o} on spatial axis {i} (input {n}, kernel {kernel[i]}, stride {stride[i]}, "
            f"pad {pad[i]}, dilation {dilation[i]})",
        )
        size.append(o)
    top = tuple(shape[:axis]) + (out,) + tuple(size)
    weight = (channels, out // group, *kernel) if deconv else (out, channels // group, *kernel)
    expected = [weight] + ([(out,)] if p.bias_term else [])
    per_output = (out // group if deconv else channels // group) * math.prod(kernel)
    macs = (math.prod(shape) if deconv else math.prod(top)) * per_output * len(bottoms)
    return [top] * len(bottoms), expected, macs


def _deconvolution(layer: Layer, bottoms: list[Shape]) -> tuple:
    return _convolution(layer, bottoms, deconv=True)


def _im2col(layer: Layer, bottoms: list[Shape]) -> tuple:
    p = layer.param.convolution_param
    shape = bottoms[0]
    axis = _axis(p.axis, len(shape))
    spatial = len(shape) - axis - 1
    kernel, stride, pad, dilation = conv_geometry(p, spatial)
    size = [
        _cdiv(shape[axis + 1 + i] + 2 * pad[i] - (dilation[i] * (kernel[i] - 1) + 1), stride[i]) + 1
        for i in range(spatial)
    ]
    return [tuple(shape[:axis]) + (shape[axis] * math.prod(kernel),) + tuple(size)], [], 0


def pool_geometry(p: caffe_pb2.PoolingParameter, h: int, w: int) -> tuple[tuple[int, int], ...]:
    """Kernel, stride and pad as (h, w) pairs over an H x W input, by Caffe's PoolingLayer rules."""
    if p.global_pooling:
        _check(
            not (p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w")),
            "with global_pooling the kernel size is the input's; give no kernel_size",
        )
        kh, kw = h, w
    else:
        has_hw = p.HasField("kernel_h") and p.HasField("kernel_w")
        _check(
            p.HasField("kernel_size") != has_hw, "give kernel_size, or kernel_h and kernel_w (both), not both"
        )
        kh, kw = (p.kernel_h, p.kernel_w) if has_hw else (p.kernel_size, p.kernel_size)
    _check(kh > 0 and kw > 0, "kernel size must be positive")
    if p.HasField("pad_h") or p.HasField("pad_w"):
        _check(
            not p.HasField("pad") and p.HasField("pad_h") and p.HasField("pad_w"),
            "give pad, or pad_h and pad_w (both)",
        )
        ph, pw = p.pad_h, p.pad_w
    else:
        ph = pw = p.pad
    if p.HasField("stride_h") or p.HasField("stride_w"):
        _check(
            p.HasField("stride_h") and p.HasField("stride_w"), "give stride, or stride_h and stride_w (both)"
        )
        sh, sw = p.stride_h, p.stride_w
    else:
        sh = sw = p.stride
    _check(sh > 0 and sw > 0, "stride must be positive")
    if p.global_pooling:
        _check(ph == pw == 0 and sh == sw == 1, "with global_pooling only pad 0 and stride 1 are allowed")
    if ph or pw:
        _check(
            p.pool in (_P.PoolingParameter.AVE, _P.PoolingParameter.MAX),
            "padding works with MAX and AVE only",
        )
        _check(ph < kh and pw < kw, f"pad ({ph}, {pw}) must be smaller than the kernel ({kh}, {kw})")
    return (kh, kw), (sh, sw), (ph, pw)


def _pooling(layer: Layer, bottoms: list[Shape]) -> tuple:
    p = layer.param.pooling_param
    shape = bottoms[0]
    _check(len(shape) == 4, f"needs a 4-D input (N, C, H, W), got {_fmt(shape)}")
    n, c, h, w = shape
    (kh, kw), (sh, sw), (ph, pw) = pool_geometry(p, h, w)

    def size(n_in: int, k: int, s: int, pad: int) -> int:
        span = n_in + 2 * pad - k
        out = (-(-span // s) if p.round_mode == _P.PoolingParameter.CEIL else span // s) + 1
        return out

    oh, ow = size(h, kh, sh, ph), size(w, kw, sw, pw)
    if ph or pw:  # the last window must start inside the image (plus its front padding)
        if (oh - 1) * sh >= h + ph:
            oh -= 1
        if (ow - 1) * sw >= w + pw:
            ow -= 1
    _check(oh > 0 and ow > 0, f"output {oh}x{ow}: the kernel ({kh}x{kw}) is larger than the padded input")
    _check(
        len(layer.tops) == 1 or (len(layer.tops) == 2 and p.pool == _P.PoolingParameter.MAX),
        "only MAX pooling has a second top (the argmax mask)",
    )
    return [(n, c, oh, ow)] * len(layer.tops), [], 0


def _inner_product(layer: Layer, bottoms: list[Shape]) -> tuple:
    p = layer.param.inner_product_param
    shape = bottoms[0]
    axis = _axis(p.axis, len(shape))
    k, m, n = math.prod(shape[axis:]), math.prod(shape[:axis]), p.num_output
    _check(n > 0, "num_output must be positive")
    weight = (k, n) if p.transpose else (n, k)
    return [tuple(shape[:axis]) + (n,)], [weight] + ([(n,)] if p.bias_term else []), m * k * n


def _lrn(layer: Layer, bottoms: list[Shape]) -> tuple:
    p = layer.param.lrn_param
    _check(p.local_size % 2 == 1, f"local_size must be odd, not {p.local_size}")
    _check(len(bottoms[0]) == 4, f"needs a 4-D input (N, C, H, W), got {_fmt(bottoms[0])}")
    return _same(layer, bottoms)


def _batch_norm(layer: Layer, bottoms: list[Shape]) -> tuple:
    shape = bottoms[0]
    c = 1 if len(shape) == 1 else shape[1]
    return [shape], [(c,), (c,), (1,)], math.prod(shape)


def _scale_shape(p, shape: Shape) -> Shape:
    axis = 0 if p.num_axes == 0 else _axis(p.axis, len(shape))
    _check(p.num_axes >= -1, "num_axes must be -1 or more")
    if p.num_axes == -1:
        return tuple(shape[axis:])
    _check(
        axis + p.num_axes <= len(shape),
        f"axis {axis} + num_axes {p.num_axes} exceed the input's {len(shape)} axes",
    )
    return tuple(shape[axis : axis + p.num_axes])


def _scale(layer: Layer, bottoms: list[Shape]) -> tuple:
    p = layer.param.scale_param
    shape = bottoms[0]
    if len(bottoms) == 1:
        factor = _scale_shape(p, shape)
        expected = [factor] + ([factor] if p.bias_term else [])
    else:
        expected = [tuple(bottoms[1])] if p.bias_term else []
    return [shape], expected, math.prod(shape)


def _bias(layer: Layer, bottoms: list[Shape]) -> tuple:
    shape = bottoms[0]
    expected = [_scale_shape(layer.param.bias_param, shape)] if len(bottoms) == 1 else []
    return [shape], expected, 0


def _prelu(layer: Layer, bottoms: list[Shape]) -> tuple:
    shape = bottoms[0]
    _check(len(shape) >= 2, f"needs at least 2 axes, got {_fmt(shape)}")
    return [shape], [() if layer.param.prelu_param.channel_shared else (shape[1],)], 0


def _eltwise(layer: Layer, bottoms: list[Shape]) -> tuple:
    p = layer.param.eltwise_param
    _check(len(bottoms) >= 2, "needs at least two bottoms")
    for i, other in enumerate(bottoms[1:], 1):
        _check(
            other == bottoms[0],
            f"bottoms must have the same shape: {_fmt(bottoms[0])} vs {_fmt(other)} "
            f"(bottom {i}); Eltwise does not broadcast",
        )
    _check(not (p.operation == _P.EltwiseParameter.PROD and p.coeff), "coeff works with SUM only")
    _check(
        len(p.coeff) in (0, len(bottoms)), f"give one coeff per bottom ({len(bottoms)}), not {len(p.coeff)}"
    )
    return [bottoms[0]], [], 0


def legacy_axis(p, legacy: str, shape: Shape) -> int:
    """``axis``, or the deprecated ``concat_dim``/``slice_dim`` (not negative, not both)."""
    _check(not (p.HasField("axis") and p.HasField(legacy)), f"give axis or {legacy}, not both")
    axis = getattr(p, legacy) if p.HasField(legacy) else _axis(p.axis, len(shape))
    _check(axis < len(shape), f"{legacy} {axis} is out of range for a {len(shape)}-D blob")
    return axis


def _concat(layer: Layer, bottoms: list[Shape]) -> tuple:
    shape = bottoms[0]
    axis = legacy_axis(layer.param.concat_param, "concat_dim", shape)
    total = 0
    for i, other in enumerate(bottoms):
        _check(
            len(other) == len(shape)
            and all(a == b for j, (a, b) in enumerate(zip(shape, other)) if j != axis),
            f"bottom {i} is {_fmt(other)}; all must match {_fmt(shape)} except on axis {axis}",
        )
        total += other[axis]
    return [tuple(shape[:axis]) + (total,) + tuple(shape[axis + 1 :])], [], 0


def _slice(layer: Layer, bottoms: list[Shape]) -> tuple:
    p = layer.param.slice_param
    shape = bottoms[0]
    axis = legacy_axis(p, "slice_dim", shape)
    dim, n = shape[axis], len(layer.tops)
    if p.slice_point:
        points = list(p.slice_point)
        _check(len(points) == n - 1, f"{n} tops need {n - 1} slice points, not {len(points)}")
        _check(
            all(a < b for a, b in zip([0] + points, points + [dim + 1])) and points[-1] < dim,
            f"slice points {points} must increase strictly and stay below {dim}",
        )
        sizes = [b - a for a, b in zip([0] + points, points + [dim])]
    else:
        _check(n > 0 and dim % n == 0, f"{n} tops do not divide axis {axis} of size {dim} evenly")
        sizes = [dim // n] * n
    return [tuple(shape[:axis]) + (s,) + tuple(shape[axis + 1 :]) for s in sizes], [], 0


def _split(layer: Layer, bottoms: list[Shape]) -> tuple:
    return [bottoms[0]] * len(layer.tops), [], 0


def _silence(layer: Layer, bottoms: list[Shape]) -> tuple:
    return [], [], 0


def _softmax(layer: Layer, bottoms: list[Shape]) -> tuple:
    _axis(layer.param.softmax_param.axis, len(bottoms[0]))
    return _same(layer, bottoms)


def _flatten(layer: Layer, bottoms: list[Shape]) -> tuple:
    p = layer.param.flatten_param
    shape = bottoms[0]
    start, end = _axis(p.axis, len(shape)), _axis(p.end_axis, len(shape), "end_axis")
    _check(start <= end, f"end_axis {p.end_axis} comes before axis {p.axis}")
    return [tuple(shape[:start]) + (math.prod(shape[start : end + 1]),) + tuple(shape[end + 1 :])], [], 0


def _reshape(layer: Layer, bottoms: list[Shape]) -> tuple:
    p = layer.param.reshape_param
    shape = bottoms[0]
    ndim = len(shape)
    start = p.axis if p.axis >= 0 else ndim + p.axis + 1
    _check(0 <= start <= ndim, f"axis {p.axis} is out of range for a {ndim}-D input")
    _check(p.num_axes >= -1, "num_axes must be -1 or more")
    end = ndim if p.num_axes == -1 else start + p.num_axes
    _check(end <= ndim, f"axis {p.axis} + num_axes {p.num_axes} exceed the input's {ndim} axes")
    dims = list(p.shape.dim)
    _check(sum(d == -1 for d in dims) <= 1, "at most one dimension may be -1")
    middle = []
    for i, d in enumerate(dims):
        if d == 0:
            _check(start + i < ndim, f"dim {i} is 0 (copy) but the input has no axis {start + i}")
            middle.append(shape[start + i])
        else:
            _check(d >= -1, f"dim {i} is {d}; dims are positive, 0 (copy) or -1 (infer)")
            middle.append(d)
    top = list(shape[:start]) + middle + list(shape[end:])
    if -1 in top[start : start + len(middle)]:
        i = start + middle.index(-1)
        known = math.prod(d for j, d in enumerate(top) if j != i)
        _check(
            known > 0 and math.prod(shape) % known == 0,
            f"cannot infer the -1 dim: {math.prod(shape)} values do not split into {known}-sized parts",
        )
        top[i] = math.prod(shape) // known
    _check(
        math.prod(top) == math.prod(shape),
        f"{_fmt(top)} holds {math.prod(top)} values, the input {_fmt(shape)} has {math.prod(shape)}",
    )
    return [tuple(top)], [], 0


def crop_offsets(p: caffe_pb2.CropParameter, ndim: int) -> dict[int, int]:
    """Where Crop starts on each axis it crops (``axis`` and those after it)."""
    start = _axis(p.axis, ndim)
    offsets = list(p.offset)
    _check(
        len(offsets) <= 1 or start + len(offsets) == ndim,
        f"give one offset, or one per axis from {start} ({ndim - start}), not {len(offsets)}",
    )
    return {
        i: 0 if not offsets else offsets[0] if len(offsets) == 1 else offsets[i - start]
        for i in range(start, ndim)
    }


def _crop(layer: Layer, bottoms: list[Shape]) -> tuple:
    _check(len(bottoms) == 2, "needs two bottoms: the blob to crop and one of the target size")
    a, b = bottoms
    _check(len(a) == len(b), f"bottoms must have as many axes: {_fmt(a)} vs {_fmt(b)}")
    top = list(a)
    for i, offset in crop_offsets(layer.param.crop_param, len(a)).items():
        _check(a[i] - offset >= b[i], f"axis {i}: cannot crop {b[i]} from {a[i]} at offset {offset}")
        top[i] = b[i]
    return [tuple(top)], [], 0


def _argmax(layer: Layer, bottoms: list[Shape]) -> tuple:
    p = layer.param.argmax_param
    shape = bottoms[0]
    if p.HasField("axis"):
        axis = _axis(p.axis, len(shape))
        _check(p.top_k <= shape[axis], f"top_k {p.top_k} exceeds axis {axis} of size {shape[axis]}")
        top = list(shape)
        top[axis] = p.top_k
        return [tuple(top)], [], 0
    _check(
        p.top_k <= math.prod(shape[1:]), f"top_k {p.top_k} exceeds the {math.prod(shape[1:])} values per item"
    )
    top = [1] * max(3, len(shape))
    top[0], top[2] = shape[0], p.top_k
    if p.out_max_val:
        top[1] = 2
    return [tuple(top)], [], 0


def _reduction(layer: Layer, bottoms: list[Shape]) -> tuple:
    shape = bottoms[0]
    axis = _axis(layer.param.reduction_param.axis, len(shape))
    return [tuple(shape[:axis])], [], 0


def _tile(layer: Layer, bottoms: list[Shape]) -> tuple:
    p = layer.param.tile_param
    shape = list(bottoms[0])
    axis = _axis(p.axis, len(shape))
    _check(p.tiles > 0, "tiles must be positive")
    shape[axis] *= p.tiles
    return [tuple(shape)], [], 0


def _embed(layer: Layer, bottoms: list[Shape]) -> tuple:
    p = layer.param.embed_param
    top = tuple(bottoms[0]) + (p.num_output,)
    expected = [(p.input_dim, p.num_output)] + ([(p.num_output,)] if p.bias_term else [])
    return [top], expected, math.prod(top)


def _parameter(layer: Layer, bottoms: list[Shape]) -> tuple:
    shape = tuple(layer.param.parameter_param.shape.dim)
    return [shape], [shape], 0


def _loss(layer: Layer, bottoms: list[Shape]) -> tuple:
    tops: list = [()]
    if len(layer.tops) > 1:  # SoftmaxWithLoss's optional second top: the probabilities
        tops.append(bottoms[0])
    return tops, [], 0


def _accuracy(layer: Layer, bottoms: list[Shape]) -> tuple:
    shape = bottoms[0]
    axis = _axis(layer.param.accuracy_param.axis, len(shape))
    return [(), (shape[axis],)][: len(layer.tops)], [], 0


def _spp(layer: Layer, bottoms: list[Shape]) -> tuple:
    n, c = bottoms[0][0], bottoms[0][1]
    height = layer.param.spp_param.pyramid_height
    # Level 64 has 2^64 bins a side: on any input its padding is as large as its window, which Caffe's
    # pooling refuses, so a taller pyramid is refused here rather than its levels counted (4 billion).
    _check(height <= 64, f"pyramid_height {height}: at most 64 (level 64 has more bins than any input)")
    if height == 1:
        return [(n, c, 1, 1)], [], 0
    return [(n, c * sum(4**level for level in range(height)))], [], 0


def _recurrent(layer: Layer, bottoms: list[Shape]) -> tuple:
    """LSTM and RNN (``recurrent_layer.cpp``): bottoms x (T x N x ...), cont (T x N), an optional static
    input (N x ...), and with ``expose_hidden`` the initial state (h0; LSTM also c0, each 1 x N x H);
    tops the outputs (T x N x H) and, with ``expose_hidden``, the final state in the same form."""
    p = layer.param.recurrent_param
    lstm = layer.type == "LSTM"
    states = (2 if lstm else 1) if p.expose_hidden else 0
    x, cont = bottoms[0], bottoms[1]
    _check(len(x) >= 2, f"the input must be T x N x ..., not {_fmt(x)}")
    t, n, h = x[0], x[1], p.num_output
    _check(h > 0, "num_output must be 1 or more")
    _check(tuple(cont) == (t, n), f"cont must be T x N = {t}x{n}, not {_fmt(cont)}")
    extra = len(bottoms) - 2 - states
    _check(extra in (0, 1), f"expected {2 + states} or {3 + states} bottoms, got {len(bottoms)}")
    for state in bottoms[2 + extra :]:
        _check(
            tuple(state) == (1, n, h), f"an initial state must be 1 x N x H = 1x{n}x{h}, not {_fmt(state)}"
        )
    d = math.prod(x[2:])
    static = [math.prod(bottoms[2][1:])] if extra else []
    if lstm:  # W_xc, b_c, [W_xc_static], W_hc
        expected = [(4 * h, d), (4 * h,)] + [(4 * h, s) for s in static] + [(4 * h, h)]
        macs = t * n * 4 * h * (d + h + sum(static))
    else:  # W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o
        expected = [(h, d), (h,)] + [(h, s) for s in static] + [(h, h), (h, h), (h,)]
        macs = t * n * h * (d + 2 * h + sum(static))
    tops = [(t, n, h)] + [(1, n, h)] * states
    return tops[: len(layer.tops)], expected, macs


def _lstm_unit(layer: Layer, bottoms: list[Shape]) -> tuple:
    return [bottoms[0], bottoms[0]][: len(layer.tops)], [], 0


def _batch_reindex(layer: Layer, bottoms: list[Shape]) -> tuple:
    return [(bottoms[1][0],) + tuple(bottoms[0][1:])], [], 0


def _unknowable(layer: Layer, bottoms: list[Shape]) -> tuple:
    """A Python layer: its outputs and parameters are whatever its code makes them."""
    return [None] * len(layer.tops), None, None


def _python(layer: Layer, bottoms: list[Shape]) -> tuple:
    """py-faster-rcnn's region proposals: at most 300 rows of (image, x1, y1, x2, y2), and their scores.

    Any other Python layer's outputs are unknowable.
    """
    p = layer.param.python_param
    if p.layer == "ProposalLayer" and p.module.split(".")[-1] == "proposal_layer":
        post_nms = 300  # cfg.TEST.RPN_POST_NMS_TOP_N; fewer rows when fewer boxes survive
        return [(post_nms, 5), (post_nms, 1)][: len(layer.tops)], [], 0
    return _unknowable(layer, bottoms)


def _data_dependent(layer: Layer, bottoms: list[Shape]) -> tuple:
    """Outputs whose size depends on the data (Filter, DetectionOutput, Proposal, HDF5Data): no weights."""
    return [None] * len(layer.tops), [], 0


def _no_tops(layer: Layer, bottoms: list[Shape]) -> tuple:
    return [None] * len(layer.tops), [], 0


# ------------------------------------------------------------- fork layers


def permute_order(p: caffe_pb2.PermuteParameter, ndim: int) -> list[int]:
    """Permute's ``order``, completed with the axes it leaves out, in increasing order."""
    order = list(p.order)
    _check(
        len(set(order)) == len(order) and all(o < ndim for o in order),
        f"order {order} must name distinct axes of a {ndim}-D input",
    )
    return order + [i for i in range(ndim) if i not in order]


def _permute(layer: Layer, bottoms: list[Shape]) -> tuple:
    shape = bottoms[0]
    return [tuple(shape[i] for i in permute_order(layer.param.permute_param, len(shape)))], [], 0


def _normalize(layer: Layer, bottoms: list[Shape]) -> tuple:
    shape = bottoms[0]
    channels = 1 if layer.param.norm_param.channel_shared else shape[1]
    return [shape], [(channels,)], math.prod(shape)


def prior_aspect_ratios(p: caffe_pb2.PriorBoxParameter) -> list[float]:
    """1, then each distinct ``aspect_ratio`` (and, with ``flip``, its inverse), as weiliu89's PriorBox."""
    ratios = [1.0]
    for ar in p.aspect_ratio:
        if all(abs(ar - r) >= 1e-6 for r in ratios):
            ratios.append(ar)
            if p.flip:
                ratios.append(1.0 / ar)
    return ratios


def _prior_box(layer: Layer, bottoms: list[Shape]) -> tuple:
    p = layer.param.prior_box_param
    _check(len(p.min_size) > 0, "give at least one min_size")
    _check(len(p.max_size) in (0, len(p.min_size)), "give one max_size per min_size, or none")
    priors = len(prior_aspect_ratios(p)) * len(p.min_size) + len(p.max_size)
    h, w = bottoms[0][2], bottoms[0][3]
    return [(1, 2, h * w * priors * 4)], [], 0


def _interp(layer: Layer, bottoms: list[Shape]) -> tuple:
    p = layer.param.interp_param
    n, c, h, w = bottoms[0]
    _check(p.pad_beg <= 0 and p.pad_end <= 0, "pad_beg and pad_end crop: they must be 0 or negative")
    h_in, w_in = h + p.pad_beg + p.pad_end, w + p.pad_beg + p.pad_end
    shrink, zoom = p.HasField("shrink_factor"), p.HasField("zoom_factor")
    _check(p.shrink_factor > 0 and p.zoom_factor > 0, "shrink_factor and zoom_factor must be positive")
    if shrink and not zoom:
        h_out, w_out = (h_in - 1) // p.shrink_factor + 1, (w_in - 1) // p.shrink_factor + 1
    elif zoom and not shrink:
        h_out, w_out = h_in + (h_in - 1) * (p.zoom_factor - 1), w_in + (w_in - 1) * (p.zoom_factor - 1)
    elif p.HasField("height") and p.HasField("width"):
        h_out, w_out = p.height, p.width
    elif shrink and zoom:
        h_out, w_out = (h_in - 1) // p.shrink_factor + 1, (w_in - 1) // p.shrink_factor + 1
        h_out, w_out = h_out + (h_out - 1) * (p.zoom_factor - 1), w_out + (w_out - 1) * (p.zoom_factor - 1)
    elif len(bottoms) == 2:  # the size of a second bottom
        h_out, w_out = bottoms[1][2], bottoms[1][3]
    else:
        raise ShapeError("give zoom_factor, shrink_factor, height and width, or a second bottom")
    _check(h_out > 0 and w_out > 0, f"output {h_out}x{w_out} is empty")
    return [(n, c, h_out, w_out)], [], 0


def _upsample(layer: Layer, bottoms: list[Shape]) -> tuple:
    p = layer.param.upsample_param
    n, c, h, w = bottoms[0]
    if p.HasField("upsample_h") and p.HasField("upsample_w"):
        return [(n, c, p.upsample_h, p.upsample_w)], [], 0
    sh = p.scale_h if p.HasField("scale_h") else p.scale
    sw = p.scale_w if p.HasField("scale_w") else p.scale
    return [(n, c, h * sh - int(p.pad_out_h), w * sw - int(p.pad_out_w))], [], 0


def _bn(layer: Layer, bottoms: list[Shape]) -> tuple:
    # PSPNet's BN holds 4 blobs (slope, bias, mean, variance), SegNet's 2: not checked.
    return [bottoms[0]], None, math.prod(bottoms[0])


def _axpy(layer: Layer, bottoms: list[Shape]) -> tuple:
    _check(len(bottoms) == 3, "needs three bottoms: scale, x, y")
    return [bottoms[1]], [], math.prod(bottoms[1])


def _shuffle_channel(layer: Layer, bottoms: list[Shape]) -> tuple:
    group = layer.param.shuffle_channel_param.group
    _check(
        group > 0 and bottoms[0][1] % group == 0, f"{bottoms[0][1]} channels do not split into {group} groups"
    )
    return [bottoms[0]], [], 0


def _roi_pooling(layer: Layer, bottoms: list[Shape]) -> tuple:
    p = layer.param.roi_pooling_param
    # Caffe's ROIPoolingLayer CHECKs both; onnxruntime's refusal of a 0 came as a traceback at load
    _check(p.pooled_h > 0 and p.pooled_w > 0, "pooled_h and pooled_w must be 1 or more")
    return [(bottoms[1][0], bottoms[0][1], p.pooled_h, p.pooled_w)], [], 0


def _psroi_pooling(layer: Layer, bottoms: list[Shape]) -> tuple:
    p = layer.param.psroi_pooling_param
    g, d = p.group_size, p.output_dim
    _check(g > 0 and d > 0, "output_dim and group_size must be 1 or more")
    _check(
        bottoms[0][1] == d * g * g,
        f"{bottoms[0][1]} input channels, but output_dim x group_size^2 = {d * g * g}",
    )
    return [(bottoms[1][0], d, g, g)], [], 0


_SAME = """AbsVal BNLL Clip Dropout ELU Exp Log MVN Power ReLU ReLU6 Sigmoid Swish TanH Threshold""".split()
_LOSSES = """SoftmaxWithLoss EuclideanLoss HingeLoss InfogainLoss MultinomialLogisticLoss SigmoidCrossEntropyLoss
ContrastiveLoss""".split()

# Layers that make blobs from nothing, and those needing more than one bottom.
SOURCES = frozenset(
    {"Input", "Data", "ImageData", "WindowData", "MemoryData", "DummyData", "HDF5Data", "Python", "Parameter"}
)
MIN_BOTTOMS = {
    "Crop": 2,
    "Axpy": 3,
    "ROIPooling": 2,
    "PSROIPooling": 2,
    "BatchReindex": 2,
    "Eltwise": 2,
    "Accuracy": 2,
    "LSTMUnit": 3,
    "LSTM": 2,
    "RNN": 2,
    "Silence": 0,
    "PriorBox": 2,
    "HDF5Output": 2,
    **{t: 2 for t in _LOSSES},
}

RULES: dict[str, Rule] = {
    **{t: _same for t in _SAME},
    **{t: _loss for t in _LOSSES},
    **{t: _data for t in ("Data", "ImageData", "WindowData", "MemoryData", "DummyData")},
    "Softmax": _softmax,
    "Input": _input,
    "HDF5Data": _data_dependent,
    "Python": _python,
    "Filter": _data_dependent,
    "HDF5Output": _no_tops,
    "Silence": _silence,
    "Split": _split,
    "Accuracy": _accuracy,
    "Convolution": _convolution,
    "Deconvolution": _deconvolution,
    "Im2col": _im2col,
    "ConvolutionDepthwise": _convolution,
    "DepthwiseConvolution": _convolution,
    "Pooling": _pooling,
    "InnerProduct": _inner_product,
    "LRN": _lrn,
    "BatchNorm": _batch_norm,
    "Scale": _scale,
    "Bias": _bias,
    "PReLU": _prelu,
    "Eltwise": _eltwise,
    "Concat": _concat,
    "Slice": _slice,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Crop": _crop,
    "ArgMax": _argmax,
    "Reduction": _reduction,
    "Tile": _tile,
    "Embed": _embed,
    "Parameter": _parameter,
    "SPP": _spp,
    "LSTM": _recurrent,
    "RNN": _recurrent,
    "LSTMUnit": _lstm_unit,
    "BatchReindex": _batch_reindex,
    "Permute": _permute,
    "Normalize": _normalize,
    "PriorBox": _prior_box,
    "DetectionOutput": _data_dependent,
    "Interp": _interp,
    "BN": _bn,
    "Upsample": _upsample,
    "Axpy": _axpy,
    "ShuffleChannel": _shuffle_channel,
    "ROIPooling": _roi_pooling,
    "PSROIPooling": _psroi_pooling,
    "Proposal": _data_dependent,
}
