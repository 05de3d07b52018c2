"""ONNX for BVLC Caffe's layers, with Caffe's forward semantics to the last rounding rule.

Each converter below follows the Caffe layer's ``Forward_cpu``; the comments
say where ONNX's defaults differ and how the difference is closed:

- Pooling sizes are Caffe's (ceil, then one window less when it would start
  in the padding) and reach ONNX as explicit, asymmetric pads, never
  ``ceil_mode``; AVE divides by the window clipped to the padded input, as
  Caffe does, through an explicit zero ``Pad`` plus ``count_include_pad=0``.
- LRN keeps ``k``; both regions are built from pooling (ONNX has no
  WITHIN_CHANNEL, and onnxruntime's LRN kernel is slow).
- BatchNorm divides its statistics by the stored moving-average factor.
- Scale/Bias/PReLU parameters are reshaped so that ONNX's right-aligned
  broadcasting lands on Caffe's ``axis``.
- Softmax, Concat, Slice, Flatten, Reshape, Crop and InnerProduct use Caffe's
  axes; reshape targets are computed statically (``0`` and ``-1`` resolved).
- ArgMax breaks ties toward the higher index, as Caffe's ``partial_sort`` does.
"""

from __future__ import annotations

import math

import numpy as np

from ..caffe import caffe_pb2
from ..caffe.shapes import conv_geometry, crop_offsets, legacy_axis, pool_geometry
from ._emit import FLT_MAX, Ctx, axis_index, emits

__all__ = ["channel_shaped", "pooling", "reduce"]

_Pool = caffe_pb2.PoolingParameter
_LRN = caffe_pb2.LRNParameter
_Elt = caffe_pb2.EltwiseParameter
_Red = caffe_pb2.ReductionParameter


def reduce(ctx: Ctx, op: str, x: str, axes: list[int], *, keepdims: bool, step: str) -> str:
    """A Reduce* node; its axes are an input from opset 18 (13 for ReduceSum)."""
    as_input = ctx.g.opset >= (13 if op == "ReduceSum" else 18)
    if as_input:
        return ctx.op(op, x, ctx.const(f"{step}_axes", axes), step=step, keepdims=int(keepdims))
    return ctx.op(op, x, step=step, axes=axes, keepdims=int(keepdims))


def channel_shaped(array: np.ndarray, ndim: int, axis: int = 1) -> np.ndarray:
    """``array`` (the shape of axes ``axis..``) padded with trailing 1s to broadcast over ``ndim`` axes."""
    a = np.asarray(array)
    return a.reshape(a.shape + (1,) * (ndim - axis - a.ndim))


def identity(ctx: Ctx, i: int = 0, j: int = 0) -> None:
    ctx.node("Identity", [ctx.x[i]], [ctx.y[j]])


# ------------------------------------------------------------ convolution


def _conv_check(layer) -> str | None:
    if layer.type_param.axis != 1:
        return f"convolution_param.axis {layer.type_param.axis} (only the channel axis 1 is supported)"
    return None


@emits("Convolution", "Deconvolution", "ConvolutionDepthwise", "DepthwiseConvolution", check=_conv_check)
def convolution(ctx: Ctx) -> None:
    p = ctx.p
    kernel, stride, pad, dilation = conv_geometry(p, len(ctx.shapes[0]) - 2)
    params = [ctx.weight(0, "weight")] + ([ctx.weight(1, "bias")] if p.bias_term else [])
    op = "ConvTranspose" if ctx.layer.type == "Deconvolution" else "Conv"
    # Several bottoms: the same weights applied to each (Caffe shares them too).
    for x, y in zip(ctx.x, ctx.y):
        ctx.node(
            op,
            [x, *params],
            [y],
            kernel_shape=kernel,
            strides=stride,
            pads=pad + pad,
            dilations=dilation,
            group=p.group,
        )


# ------------------------------------------------------------ pooling


def pool_check(layer) -> str | None:
    """What stops a Pooling (or SPP: same enum) layer from running, else None."""
    if layer.type_param.pool == _Pool.STOCHASTIC:
        return "pool: STOCHASTIC (random at training time; CPU Caffe cannot run it either)"
    return None


@emits("Pooling", check=pool_check)
def pooling(ctx: Ctx) -> None:
    p = ctx.p
    _, _, h, w = ctx.shapes[0]
    _, _, oh, ow = ctx.out_shapes[0]
    (kh, kw), (sh, sw), (ph, pw) = pool_geometry(p, h, w)
    # The windows Caffe's ceil rounding adds past the padded input: end padding to reach them.
    eh, ew = max(0, (oh - 1) * sh + kh - h - 2 * ph), max(0, (ow - 1) * sw + kw - w - 2 * pw)
    x = ctx.x[0]
    attrs = dict(kernel_shape=[kh, kw], strides=[sh, sw])
    mask = len(ctx.y) > 1
    if p.pool == _Pool.MAX:
        if p.global_pooling and not mask:
            ctx.node("GlobalMaxPool", [x], [ctx.y[0]])
            return
        if ph + eh < kh and pw + ew < kw:
            outputs = [ctx.y[0], ctx.g.unique(f"{ctx.name}/indices")] if mask else [ctx.y[0]]
            ctx.node("MaxPool", [x], outputs, pads=[ph, pw, ph + eh, pw + ew], **attrs)
            if mask:  # Caffe's mask is the index within the channel plane, as float
                plane = ctx.const("plane", h * w)
                flat = ctx.op("Mod", outputs[1], plane, step="mask")
                ctx.node("Cast", [flat], [ctx.y[1]], step="mask_float", to=1)
            return
        if mask:
            raise ctx.fail("a pooling mask with windows that start in the padding is not supported")
        # A window lies wholly in the padding: Caffe yields -FLT_MAX there, and so does this pad.
        pads = [0, 0, ph, pw, 0, 0, ph + eh, pw + ew]
        x = ctx.op("Pad", x, ctx.const("pads", pads), ctx.scalar("pad_value", -FLT_MAX), step="pad")
        ctx.node("MaxPool", [x], [ctx.y[0]], **attrs)
        return
    # AVE: Caffe divides by the window clipped to the padded input (H + 2*pad), so padding
    # cells count but the overhang that ceil rounding adds does not.
    if p.global_pooling:
        ctx.node("GlobalAveragePool", [x], [ctx.y[0]])
    elif not (ph or pw):
        if eh >= kh or ew >= kw:
            raise ctx.fail(f"a window starts past the input ({h}x{w}): Caffe divides by zero there")
        ctx.node("AveragePool", [x], [ctx.y[0]], pads=[0, 0, eh, ew], count_include_pad=0, **attrs)
    elif not (eh or ew):
        ctx.node("AveragePool", [x], [ctx.y[0]], pads=[ph, pw, ph, pw], count_include_pad=1, **attrs)
    else:
        x = ctx.op("Pad", x, ctx.const("pads", [0, 0, ph, pw, 0, 0, ph, pw]), step="pad")
        ctx.node("AveragePool", [x], [ctx.y[0]], pads=[0, 0, eh, ew], count_include_pad=0, **attrs)


# ------------------------------------------------------------ dense and normalisation


@emits("InnerProduct")
def inner_product(ctx: Ctx) -> None:
    p = ctx.p
    shape = ctx.shapes[0]
    axis = axis_index(p.axis, len(shape))
    if axis == 0:
        ctx.batch_dependent("axis 0 flattens the whole batch into one vector")
    params = [ctx.weight(0, "weight")] + ([ctx.weight(1, "bias")] if p.bias_term else [])
    direct = axis == 1 and len(shape) == 2
    x = ctx.x[0] if direct else ctx.op("Flatten", ctx.x[0], step="flatten", axis=axis)
    if axis == 1:
        ctx.node("Gemm", [x, *params], [ctx.y[0]], transB=0 if p.transpose else 1)
    else:
        y = ctx.op("Gemm", x, *params, step="gemm", transB=0 if p.transpose else 1)
        ctx.reshape(y, ctx.out_shapes[0], ctx.y[0], batch="infer")  # Flatten folded the batch into M


@emits("LRN")
def lrn(ctx: Ctx) -> None:
    """x * (k + alpha/size * sum of x^2 over the window)^-beta; WITHIN_CHANNEL: 1 instead of k, size^2 window.

    ACROSS_CHANNELS is ONNX's LRN exactly, but onnxruntime's LRN kernel runs
    three times slower than this equivalent: the window sum as an average
    pooling over the channel axis of a 5-D view.
    """
    p = ctx.p
    x, pad, size = ctx.x[0], (p.local_size - 1) // 2, p.local_size
    sq = ctx.op("Mul", x, x, step="square")
    if p.norm_region == _LRN.ACROSS_CHANNELS:
        channel_axis = ctx.const("channel_axis", [1])
        planes = ctx.op("Unsqueeze", sq, channel_axis, step="as_volume")  # N x 1 x C x H x W
        window = ctx.op(
            "AveragePool",
            planes,
            step="window",
            kernel_shape=[size, 1, 1],
            pads=[pad, 0, 0] * 2,
            count_include_pad=1,
        )
        avg, shift = ctx.op("Squeeze", window, channel_axis, step="window_mean"), p.k
    else:  # Caffe pools x^2 over size x size with pad (size-1)/2, then shifts by 1 (k is unused)
        avg = ctx.op(
            "AveragePool", sq, step="window", kernel_shape=[size] * 2, pads=[pad] * 4, count_include_pad=1
        )
        shift = 1.0
    scaled = ctx.op("Mul", avg, ctx.scalar("alpha", p.alpha), step="scale")
    base = ctx.op("Add", scaled, ctx.scalar("k", shift), step="shift")
    _divide_by_power(ctx, x, base, p.beta)


def _divide_by_power(ctx: Ctx, x: str, base: str, beta: float) -> None:
    """``x * base^-beta`` into the top, with square roots for the usual beta (0.75, 0.5, 1) instead of Pow."""
    if beta == 1:
        ctx.node("Div", [x, base], [ctx.y[0]])
        return
    if beta in (0.5, 0.75):
        root = ctx.op("Sqrt", base, step="sqrt")
        if beta == 0.75:
            root = ctx.op("Mul", root, ctx.op("Sqrt", root, step="fourth_root"), step="power")
        ctx.node("Div", [x, root], [ctx.y[0]])
        return
    factor = ctx.op("Pow", base, ctx.scalar("beta", -beta), step="power")
    ctx.node("Mul", [x, factor], [ctx.y[0]])


def _variance(ctx: Ctx, centred: str, axes: list[int]) -> str:
    """The mean of ``centred``'s squares over ``axes``, kept as axes of size 1."""
    square = ctx.op("Mul", centred, centred, step="square")
    return reduce(ctx, "ReduceMean", square, axes, keepdims=True, step="variance")


def batch_statistics(ctx: Ctx, x: str, eps: float, ndim: int) -> str:
    """(x - mean) / sqrt(var + eps) over every axis but 1: a batch's own statistics."""
    axes = [0] + list(range(2, ndim))
    mean = reduce(ctx, "ReduceMean", x, axes, keepdims=True, step="mean")
    centred = ctx.op("Sub", x, mean, step="centre")
    var = _variance(ctx, centred, axes)
    std = ctx.op("Sqrt", ctx.op("Add", var, ctx.scalar("eps", eps), step="eps"), step="std")
    return ctx.op("Div", centred, std, step="normalize")


@emits("BatchNorm")
def batch_norm(ctx: Ctx) -> None:
    p = ctx.p
    ndim = len(ctx.shapes[0])
    if ndim < 2:
        raise ctx.fail("needs an input of 2 or more axes (N, C, ...)")
    # Unset means "the stored statistics" in the TEST phase, which is what inference is.
    global_stats = p.use_global_stats if p.HasField("use_global_stats") else True
    if not global_stats:
        ctx.batch_dependent("use_global_stats: false normalizes with the batch's own statistics")
        y = batch_statistics(ctx, ctx.x[0], p.eps, ndim)
        ctx.node("Identity", [y], [ctx.y[0]])
        return
    # Caffe stores running sums and their weight: divide by it (0 means "no statistics yet").
    s = np.float32(np.asarray(ctx.blobs[2], np.float32).reshape(-1)[0])
    factor = np.float32(0) if s == 0 else np.float32(1) / s
    mean = np.asarray(ctx.blobs[0], np.float32).reshape(-1) * factor
    var = np.asarray(ctx.blobs[1], np.float32).reshape(-1) * factor
    c = mean.size
    ctx.node(
        "BatchNormalization",
        [
            ctx.x[0],
            ctx.weight(0, "gamma", np.ones(c, np.float32)),
            ctx.weight(0, "beta", np.zeros(c, np.float32)),
            ctx.weight(0, "mean", mean),
            ctx.weight(1, "var", var),
        ],
        [ctx.y[0]],
        epsilon=p.eps,
    )


def _affine(ctx: Ctx, param_index: int | None, role: str) -> str:
    """Scale's or Bias's second operand, shaped to broadcast from Caffe's ``axis``."""
    p = ctx.p
    ndim = len(ctx.shapes[0])
    if len(ctx.x) > 1 and param_index is None:  # the operand is the second bottom
        given = len(ctx.shapes[1])
        axis = axis_index(p.axis, ndim)
        if axis == 0:
            ctx.batch_dependent("the second bottom spans the batch axis")
        trailing = ndim - axis - given
        if not trailing:
            return ctx.x[1]
        axes = ctx.const(f"{role}_axes", list(range(given, given + trailing)))
        return ctx.op("Unsqueeze", ctx.x[1], axes, step=f"{role}_unsqueeze")
    array = np.asarray(ctx.blobs[param_index], np.float32)
    if p.num_axes == 0 or array.ndim == 0:
        return ctx.weight(param_index, role, array.reshape(()))
    axis = axis_index(p.axis, ndim)
    if axis == 0:
        ctx.batch_dependent(f"its {role} covers the batch axis")
    return ctx.weight(param_index, role, channel_shaped(array, ndim, axis))


@emits("Scale")
def scale(ctx: Ctx) -> None:
    p = ctx.p
    two = len(ctx.x) > 1
    gamma = _affine(ctx, None if two else 0, "scale")
    if not p.bias_term:
        ctx.node("Mul", [ctx.x[0], gamma], [ctx.y[0]])
        return
    y = ctx.op("Mul", ctx.x[0], gamma, step="mul")
    beta = _affine(ctx, 0 if two else 1, "bias")
    ctx.node("Add", [y, beta], [ctx.y[0]])


@emits("Bias")
def bias(ctx: Ctx) -> None:
    beta = _affine(ctx, None if len(ctx.x) > 1 else 0, "bias")
    ctx.node("Add", [ctx.x[0], beta], [ctx.y[0]])


@emits("MVN")
def mvn(ctx: Ctx) -> None:
    p = ctx.p
    ndim = len(ctx.shapes[0])
    axes = list(range(1 if p.across_channels else 2, ndim))
    x = ctx.x[0]
    mean = reduce(ctx, "ReduceMean", x, axes, keepdims=True, step="mean")
    if not p.normalize_variance:
        ctx.node("Sub", [x, mean], [ctx.y[0]])
        return
    centred = ctx.op("Sub", x, mean, step="centre")
    var = _variance(ctx, centred, axes)
    # Caffe adds eps to the standard deviation, not to the variance.
    std = ctx.op("Add", ctx.op("Sqrt", var, step="std"), ctx.scalar("eps", p.eps), step="std_eps")
    ctx.node("Div", [centred, std], [ctx.y[0]])


# ------------------------------------------------------------ activations


@emits("ReLU")
def relu(ctx: Ctx) -> None:
    slope = ctx.p.negative_slope
    if slope:
        ctx.node("LeakyRelu", [ctx.x[0]], [ctx.y[0]], alpha=slope)
    else:
        ctx.node("Relu", [ctx.x[0]], [ctx.y[0]])


@emits("PReLU")
def prelu(ctx: Ctx) -> None:
    slope = np.asarray(ctx.blobs[0], np.float32)
    ndim = len(ctx.shapes[0])
    # ONNX broadcasts from the right: a per-channel slope must be (C, 1, 1) for N x C x H x W.
    shaped = slope.reshape(1) if ctx.p.channel_shared else channel_shaped(slope.reshape(-1), ndim)
    ctx.node("PRelu", [ctx.x[0], ctx.weight(0, "slope", shaped)], [ctx.y[0]])


_UNARY = {"Sigmoid": "Sigmoid", "TanH": "Tanh", "AbsVal": "Abs", "BNLL": "Softplus"}


@emits(*_UNARY)
def unary(ctx: Ctx) -> None:
    # BNLL is log(1 + e^x), computed by ONNX's Softplus in the same overflow-safe way.
    ctx.node(_UNARY[ctx.layer.type], [ctx.x[0]], [ctx.y[0]])


@emits("ELU")
def elu(ctx: Ctx) -> None:
    ctx.node("Elu", [ctx.x[0]], [ctx.y[0]], alpha=ctx.p.alpha)


@emits("Swish")
def swish(ctx: Ctx) -> None:
    x, beta = ctx.x[0], ctx.p.beta
    arg = x if beta == 1 else ctx.op("Mul", x, ctx.scalar("beta", beta), step="beta")
    ctx.node("Mul", [x, ctx.op("Sigmoid", arg, step="sigmoid")], [ctx.y[0]])


@emits("Clip", "ReLU6")
def clip(ctx: Ctx) -> None:
    low, high = (0.0, ctx.p.n) if ctx.layer.type == "ReLU6" else (ctx.p.min, ctx.p.max)
    ctx.node("Clip", [ctx.x[0], ctx.scalar("min", low), ctx.scalar("max", high)], [ctx.y[0]])


@emits("Threshold")
def threshold(ctx: Ctx) -> None:
    above = ctx.op("Greater", ctx.x[0], ctx.scalar("threshold", ctx.p.threshold), step="greater")
    ctx.node("Cast", [above], [ctx.y[0]], to=1)


@emits("Power")
def power(ctx: Ctx) -> None:
    p = ctx.p
    if p.power * p.scale == 0:  # Caffe fills a constant: 1, or shift^power
        value = 1.0 if p.power == 0 else float(np.float32(p.shift) ** np.float32(p.power))
        shape = ctx.op("Shape", ctx.x[0], step="shape")
        ctx.node("ConstantOfShape", [shape], [ctx.y[0]], value=_tensor(np.array([value], np.float32)))
        return
    steps: list[tuple[str, str, float | None]] = []
    if p.scale != 1:
        steps.append(("Mul", "scale", p.scale))
    if p.shift != 0:
        steps.append(("Add", "shift", p.shift))
    if p.power != 1:
        steps.append(("Pow", "power", p.power))
    _chain(ctx, ctx.x[0], steps)


def _chain(ctx: Ctx, x: str, ops: list[tuple[str, str, float | None]]) -> None:
    """Apply ``(op, name, scalar or None)`` steps in order, the last one writing the top."""
    if not ops:
        ctx.node("Identity", [x], [ctx.y[0]])
        return
    for i, (op, name, value) in enumerate(ops):
        inputs = [x] if value is None else [x, ctx.scalar(name, value)]
        if i == len(ops) - 1:
            ctx.node(op, inputs, [ctx.y[0]])
        else:
            x = ctx.node(op, inputs, 1, step=name)[0]


@emits("Exp")
def exp(ctx: Ctx) -> None:
    p = ctx.p
    # Caffe: y = base^shift * exp(ln(base) * scale * x)
    log_base = 1.0 if p.base == -1 else math.log(p.base)
    inner = np.float32(log_base * p.scale)
    outer = 1.0 if p.shift == 0 else (math.exp(p.shift) if p.base == -1 else p.base**p.shift)
    x = ctx.x[0]
    if inner != 1:
        x = ctx.op("Mul", x, ctx.scalar("inner_scale", inner), step="inner_scale")
    if outer == 1:
        ctx.node("Exp", [x], [ctx.y[0]])
        return
    e = ctx.op("Exp", x, step="exp")
    ctx.node("Mul", [e, ctx.scalar("outer_scale", outer)], [ctx.y[0]])


@emits("Log")
def log(ctx: Ctx) -> None:
    p = ctx.p
    # Caffe: y = log(scale * x + shift) / ln(base)
    steps: list[tuple[str, str, float | None]] = []
    if p.scale != 1:
        steps.append(("Mul", "scale", p.scale))
    if p.shift != 0:
        steps.append(("Add", "shift", p.shift))
    steps.append(("Log", "log", None))
    if p.base != -1:
        steps.append(("Mul", "base_scale", 1.0 / math.log(p.base)))
    _chain(ctx, ctx.x[0], steps)


@emits("Dropout", "Split")
def copy(ctx: Ctx) -> None:
    # Dropout is the identity at test time (Caffe scales during training only).
    for j in range(len(ctx.y)):
        identity(ctx, 0, j)


@emits("Softmax")
def softmax(ctx: Ctx) -> None:
    # Opset 13 Softmax normalizes over exactly one axis, as Caffe does.
    axis = axis_index(ctx.p.axis, len(ctx.shapes[0]))
    ctx.node("Softmax", [ctx.x[0]], [ctx.y[0]], axis=axis)


# ------------------------------------------------------------ several blobs


@emits("Eltwise")
def eltwise(ctx: Ctx) -> None:
    p = ctx.p
    if p.operation == _Elt.PROD:
        x = ctx.x[0]
        for i, other in enumerate(ctx.x[1:], 1):
            if i == len(ctx.x) - 1:
                ctx.node("Mul", [x, other], [ctx.y[0]])
            else:
                x = ctx.op("Mul", x, other, step=f"mul{i}")
        return
    if p.operation == _Elt.MAX:
        ctx.node("Max", ctx.x, [ctx.y[0]])
        return
    coeffs = list(p.coeff) or [1.0] * len(ctx.x)
    terms = [
        x if c == 1 else ctx.op("Mul", x, ctx.scalar(f"coeff{i}", c), step=f"coeff{i}")
        for i, (x, c) in enumerate(zip(ctx.x, coeffs))
    ]
    ctx.node("Sum", terms, [ctx.y[0]])


@emits("Concat")
def concat(ctx: Ctx) -> None:
    if len(ctx.x) == 1:
        identity(ctx)
        return
    axis = legacy_axis(ctx.p, "concat_dim", ctx.shapes[0])
    if axis == 0:
        ctx.batch_dependent("concatenates along the batch axis")
    ctx.node("Concat", ctx.x, [ctx.y[0]], axis=axis)


@emits("Slice")
def slice_(ctx: Ctx) -> None:
    p = ctx.p
    if len(ctx.y) == 1:
        identity(ctx)
        return
    shape = ctx.shapes[0]
    axis = legacy_axis(p, "slice_dim", shape)
    if axis == 0:
        ctx.batch_dependent("slices along the batch axis")
    sizes = [s[axis] for s in ctx.out_shapes]
    ctx.node("Split", [ctx.x[0], ctx.const("split", sizes)], ctx.y, axis=axis)


@emits("Flatten", "Reshape")
def reshape(ctx: Ctx) -> None:
    shape = ctx.shapes[0]
    if ctx.layer.type == "Flatten":
        keep = axis_index(ctx.p.axis, len(shape)) > 0
    else:
        p = ctx.p
        # Caffe: a negative axis counts from one past the end (-1 appends).
        start = p.axis if p.axis >= 0 else len(shape) + 1 + p.axis
        keep = start > 0 or (p.num_axes != 0 and len(p.shape.dim) > 0 and p.shape.dim[0] == 0)
        # R-FCN's (-1, classes) after ROI pooling: the rows stay the proposals', however many there are.
        keep = keep or (ctx.variable_rows and bool(shape) and ctx.out_shapes[0][0] == shape[0])
    ctx.reshape(ctx.x[0], ctx.out_shapes[0], ctx.y[0], batch="copy" if keep else "fixed")


@emits("Crop")
def crop(ctx: Ctx) -> None:
    ref = ctx.shapes[1]
    by_axis = crop_offsets(ctx.p, len(ctx.shapes[0]))
    if 0 in by_axis:
        ctx.batch_dependent("crops the batch axis")
    axes, starts = list(by_axis), list(by_axis.values())
    ends = [s + ref[i] for s, i in zip(starts, axes)]
    ctx.node(
        "Slice",
        [ctx.x[0], ctx.const("starts", starts), ctx.const("ends", ends), ctx.const("axes", axes)],
        [ctx.y[0]],
    )


@emits("Tile")
def tile(ctx: Ctx) -> None:
    shape = ctx.shapes[0]
    axis = axis_index(ctx.p.axis, len(shape))
    if axis == 0:
        ctx.batch_dependent("tiles the batch axis")
    repeats = [1] * len(shape)
    repeats[axis] = ctx.p.tiles
    ctx.node("Tile", [ctx.x[0], ctx.const("repeats", repeats)], [ctx.y[0]])


@emits("Reduction")
def reduction(ctx: Ctx) -> None:
    p = ctx.p
    shape = ctx.shapes[0]
    axis = axis_index(p.axis, len(shape))
    flat = ctx.reshape(
        ctx.x[0],
        list(shape[:axis]) + [math.prod(shape[axis:])],
        step="flatten",
        batch="copy" if axis > 0 else "fixed",
    )
    op = {
        _Red.SUM: "ReduceSum",
        _Red.ASUM: "ReduceL1",
        _Red.SUMSQ: "ReduceSumSquare",
        _Red.MEAN: "ReduceMean",
    }[p.operation]
    y = reduce(ctx, op, flat, [axis], keepdims=False, step="reduce")
    if p.coeff == 1:
        ctx.node("Identity", [y], [ctx.y[0]])
    else:
        ctx.node("Mul", [y, ctx.scalar("coeff", p.coeff)], [ctx.y[0]])


@emits("ArgMax")
def argmax(ctx: Ctx) -> None:
    p = ctx.p
    shape = ctx.shapes[0]
    x = ctx.x[0]
    if p.HasField("axis"):
        axis = axis_index(p.axis, len(shape))
        values, indices = _top_k(ctx, x, axis, shape[axis], p.top_k)
        if p.out_max_val:
            ctx.node("Identity", [values], [ctx.y[0]])
        else:
            ctx.node("Cast", [indices], [ctx.y[0]], to=1)
        return
    # No axis: per image over everything else; output N x (1 or 2) x top_k, indices then values.
    count = math.prod(shape[1:])
    flat = ctx.reshape(x, [shape[0], count], step="flatten")
    values, indices = _top_k(ctx, flat, 1, count, p.top_k)
    idx = ctx.op("Cast", indices, step="indices_float", to=1)
    parts = [idx, values] if p.out_max_val else [idx]
    expanded = [
        ctx.op("Unsqueeze", t, ctx.const("unsqueeze_axes", [1]), step=f"unsqueeze{i}")
        for i, t in enumerate(parts)
    ]
    if len(expanded) == 1:
        ctx.node("Identity", expanded, [ctx.y[0]])
    else:
        ctx.node("Concat", expanded, [ctx.y[0]], axis=1)


def _top_k(ctx: Ctx, x: str, axis: int, length: int, k: int) -> tuple[str, str]:
    """Largest ``k`` along ``axis``; among equal values the higher index first, as in Caffe."""
    if k == 1:
        values = reduce(ctx, "ReduceMax", x, [axis], keepdims=True, step="max")
        indices = ctx.op("ArgMax", x, step="argmax", axis=axis, keepdims=1, select_last_index=1)
        return values, indices
    # ONNX TopK puts the lower index first on ties: run it on the reversed axis instead.
    rev = ctx.op(
        "Slice",
        x,
        ctx.const("rev_starts", [-1]),
        ctx.const("rev_ends", [-(2**62)]),
        ctx.const("rev_axes", [axis]),
        ctx.const("rev_steps", [-1]),
        step="reverse",
    )
    values, rindices = ctx.node(
        "TopK", [rev, ctx.const("k", [k])], 2, step="topk", axis=axis, largest=1, sorted=1
    )
    indices = ctx.op("Sub", ctx.const("last", length - 1), rindices, step="unreverse")
    return values, indices


# ------------------------------------------------------------ constants


@emits("Parameter")
def parameter(ctx: Ctx) -> None:
    ctx.node("Identity", [ctx.weight(0, "value")], [ctx.y[0]])


def _tensor(array: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(array)
