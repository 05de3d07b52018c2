"""ONNX for the layers of Caffe forks that popular zoo models need.

- SSD (weiliu89/caffe): Permute, Normalize, PriorBox (precomputed: it only
  depends on shapes), DetectionOutput (:mod:`.detection`);
- DeepLab/PSPNet: Interp (bilinear, corners aligned, after Caffe's crop);
- PSPNet's and SegNet's BN, SegNet's Upsample (max-unpooling by mask);
- ReLU6, Axpy, ShuffleChannel and ConvolutionDepthwise (in :mod:`.ops`).
"""

from __future__ import annotations

import math

import numpy as np

from ..caffe import caffe_pb2
from ..caffe.shapes import permute_order, prior_aspect_ratios
from ._emit import Ctx, emits
from .ops import channel_shaped, reduce

__all__ = []  # the layer rules register themselves with @emits; nothing here is called by name

_BN = caffe_pb2.BNParameter


@emits("Permute")
def permute(ctx: Ctx) -> None:
    perm = permute_order(ctx.p, len(ctx.shapes[0]))
    if perm[0] != 0:
        ctx.batch_dependent("moves the batch axis")
    if perm == sorted(perm):
        ctx.node("Identity", [ctx.x[0]], [ctx.y[0]])
    else:
        ctx.node("Transpose", [ctx.x[0]], [ctx.y[0]], perm=perm)


@emits("Normalize")
def normalize(ctx: Ctx) -> None:
    p = ctx.p
    ndim = len(ctx.shapes[0])
    axes = list(range(1, ndim)) if p.across_spatial else [1]
    squares = reduce(ctx, "ReduceSumSquare", ctx.x[0], axes, keepdims=True, step="sum_squares")
    norm = ctx.op("Sqrt", ctx.op("Add", squares, ctx.scalar("eps", p.eps), step="eps"), step="norm")
    y = ctx.op("Div", ctx.x[0], norm, step="normalize")
    scale = np.asarray(ctx.blobs[0], np.float32).reshape(-1)
    shaped = scale.reshape(()) if p.channel_shared else channel_shaped(scale, ndim)
    ctx.node("Mul", [y, ctx.weight(0, "scale", shaped)], [ctx.y[0]])


def prior_boxes(p, layer_hw: tuple[int, int], image_hw: tuple[int, int]) -> np.ndarray:
    """SSD's PriorBox output, 1 x 2 x (H*W*priors*4): boxes, then their variances.

    As in weiliu89/caffe, sizes are truncated to integers (``int min_size_``).
    """
    lh, lw = layer_hw
    img_h = p.img_h if p.img_h else p.img_size if p.img_size else image_hw[0]
    img_w = p.img_w if p.img_w else p.img_size if p.img_size else image_hw[1]
    if p.step_h or p.step_w:
        step_h, step_w = float(p.step_h), float(p.step_w)
    elif p.step:
        step_h = step_w = float(p.step)
    else:
        step_h, step_w = float(np.float32(img_h) / lh), float(np.float32(img_w) / lw)
    ratios = prior_aspect_ratios(p)
    sizes: list[tuple[float, float]] = []  # (width, height) of each prior of a cell
    for s, min_size in enumerate(p.min_size):
        m = int(min_size)
        sizes.append((m, m))
        if p.max_size:
            side = math.sqrt(m * int(p.max_size[s]))
            sizes.append((side, side))
        for ar in ratios:
            if abs(ar - 1.0) < 1e-6:
                continue
            sizes.append((m * math.sqrt(ar), m / math.sqrt(ar)))
    bw = np.array([w for w, _ in sizes])
    bh = np.array([h for _, h in sizes])
    cy = (np.arange(lh, dtype=np.float32) + np.float32(p.offset)) * np.float32(step_h)
    cx = (np.arange(lw, dtype=np.float32) + np.float32(p.offset)) * np.float32(step_w)
    cy, cx = (a.astype(np.float64)[:, :, None] for a in np.meshgrid(cy, cx, indexing="ij"))
    boxes = (
        np.stack(
            [(cx - bw / 2) / img_w, (cy - bh / 2) / img_h, (cx + bw / 2) / img_w, (cy + bh / 2) / img_h],
            axis=-1,
        )
        .astype(np.float32)
        .reshape(-1)
    )
    if p.clip:
        boxes = np.clip(boxes, 0, 1)
    variance = list(p.variance) or [0.1]
    variances = np.tile(np.asarray(variance * (4 if len(variance) == 1 else 1), np.float32), boxes.size // 4)
    return np.stack([boxes, variances])[None]


@emits("PriorBox")
def prior_box(ctx: Ctx) -> None:
    layer_hw = ctx.shapes[0][2:4]
    image_hw = ctx.shapes[1][2:4]
    boxes = prior_boxes(ctx.p, layer_hw, image_hw)
    ctx.node("Identity", [ctx.g.initializer(f"{ctx.name}.priors", boxes)], [ctx.y[0]])


@emits("Interp")
def interp(ctx: Ctx) -> None:
    p = ctx.p
    _, _, h, w = ctx.shapes[0]
    _, _, oh, ow = ctx.out_shapes[0]
    x = ctx.x[0]
    if p.pad_beg or p.pad_end:  # both <= 0: Caffe crops, and reads from offset -pad_beg
        starts = [-p.pad_beg, -p.pad_beg]
        ends = [h + p.pad_end, w + p.pad_end]
        x = ctx.op(
            "Slice",
            x,
            ctx.const("crop_starts", starts),
            ctx.const("crop_ends", ends),
            ctx.const("crop_axes", [2, 3]),
            step="crop",
        )
        h, w = ends[0] - starts[0], ends[1] - starts[1]
    if (h, w) == (oh, ow):
        ctx.node("Identity", [x], [ctx.y[0]])
        return
    # Sizes of the batch and channel axes come from the input, so the batch can vary.
    head = ctx.op(
        "Slice",
        ctx.op("Shape", x, step="shape"),
        ctx.const("nc_start", [0]),
        ctx.const("nc_end", [2]),
        step="batch_channels",
    )
    sizes = ctx.op("Concat", head, ctx.const("size", [oh, ow]), step="sizes", axis=0)
    ctx.node(
        "Resize",
        [x, "", "", sizes],
        [ctx.y[0]],
        mode="linear",
        coordinate_transformation_mode="align_corners",
    )


@emits("BN")
def bn(ctx: Ctx) -> None:
    p = ctx.p
    ndim = len(ctx.shapes[0])
    arrays = [np.asarray(b, np.float32).reshape(-1) for b in ctx.blobs]
    if len(arrays) == 4:  # PSPNet: slope, bias, mean, variance
        slope, shift, mean, var = arrays
        ctx.node(
            "BatchNormalization",
            [
                ctx.x[0],
                ctx.weight(0, "slope", slope),
                ctx.weight(1, "bias", shift),
                ctx.weight(2, "mean", mean),
                ctx.weight(3, "var", var),
            ],
            [ctx.y[0]],
            epsilon=p.eps,
        )
        return
    if len(arrays) == 2 and p.bn_mode == _BN.INFERENCE:  # SegNet, statistics folded in
        y = ctx.op("Mul", ctx.x[0], ctx.weight(0, "scale", channel_shaped(arrays[0], ndim)), step="scale")
        ctx.node("Add", [y, ctx.weight(1, "shift", channel_shaped(arrays[1], ndim))], [ctx.y[0]])
        return
    raise ctx.fail(
        f"{len(arrays)} blobs with bn_mode {_BN.BNMode.Name(p.bn_mode)}: expected PSPNet's 4 "
        f"(slope, bias, mean, variance) or SegNet's 2 with bn_mode: INFERENCE"
    )


@emits("Upsample")
def upsample(ctx: Ctx) -> None:
    n, c, h, w = ctx.shapes[0]
    _, _, oh, ow = ctx.out_shapes[0]
    if len(ctx.x) == 1:  # the nearest-neighbour Upsample of YOLO-style forks
        scales = ctx.const("scales", [1.0, 1.0, oh / h, ow / w], np.float32)
        ctx.node(
            "Resize",
            [ctx.x[0], "", scales],
            [ctx.y[0]],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )
        return
    # SegNet: every value goes to the plane index its pooling mask recorded; zeros elsewhere.
    values = ctx.reshape(ctx.x[0], [n, c, h * w], step="values")
    mask = ctx.reshape(ctx.x[1], [n, c, h * w], step="mask")
    index = ctx.op("Cast", mask, step="index", to=7)
    head = ctx.op(
        "Slice",
        ctx.op("Shape", ctx.x[0], step="shape"),
        ctx.const("nc_start", [0]),
        ctx.const("nc_end", [2]),
        step="batch_channels",
    )
    zeros = ctx.op(
        "ConstantOfShape",
        ctx.op("Concat", head, ctx.const("plane", [oh * ow]), step="out_shape", axis=0),
        step="zeros",
    )
    flat = ctx.op("ScatterElements", zeros, index, values, step="scatter", axis=2)
    ctx.reshape(flat, [n, c, oh, ow], ctx.y[0])


@emits("Axpy")
def axpy(ctx: Ctx) -> None:
    # y = a * x + b, with a of shape N x C (x 1 x 1).
    a, x, b = ctx.x
    ndim = len(ctx.shapes[1])
    missing = ndim - len(ctx.shapes[0])
    if missing:
        a = ctx.op("Unsqueeze", a, ctx.const("a_axes", list(range(len(ctx.shapes[0]), ndim))), step="a")
    ctx.node("Add", [ctx.op("Mul", a, x, step="ax"), b], [ctx.y[0]])


@emits("ShuffleChannel")
def shuffle_channel(ctx: Ctx) -> None:
    n, c, *rest = ctx.shapes[0]
    g = ctx.p.group
    grouped = ctx.reshape(ctx.x[0], [n, g, c // g, *rest], step="group")
    swapped = ctx.op("Transpose", grouped, step="swap", perm=[0, 2, 1] + list(range(3, 3 + len(rest))))
    ctx.reshape(swapped, [n, c, *rest], ctx.y[0])
