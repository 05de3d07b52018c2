"""ONNX for the layers of region-based detectors (Faster R-CNN, R-FCN), pyramid pooling and word embeddings.

- ``SPP`` (BVLC): one Caffe pooling per pyramid level (kernel ``ceil(H / 2^l)``,
  stride = kernel, pad ``(kernel * 2^l - H + 1) / 2``), flattened and concatenated;
- ``ROIPooling`` (py-faster-rcnn's fork): ONNX ``MaxRoiPool``, which is the same
  computation (bins from rounded, scaled ROI corners; empty bins give 0);
- the region-proposal ``Python`` layer (py-faster-rcnn's
  ``rpn.proposal_layer.ProposalLayer``, as OpenCV's ``Proposal`` layer does it):
  anchors shifted over the feature map, box deltas applied, boxes clipped to
  the image, boxes under ``16 * im_info[2]`` pixels dropped, the best 6000,
  NMS at IoU 0.7 with Caffe's "+1" pixel sizes, the best 300, one image at a time;
- ``Embed`` (BVLC): rows of the weight matrix gathered by index, plus the bias;
- ``PSROIPooling`` (R-FCN): position-sensitive average pooling, window sums
  from a float64 integral image.
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np

from ..caffe import caffe_pb2
from ._emit import FLT_MAX, Ctx, emits
from .ops import pool_check, pooling, reduce

__all__ = ["generate_anchors"]

# py-faster-rcnn's cfg.TEST values, which ProposalLayer reads at test time.
RPN_PRE_NMS_TOP_N = 6000
RPN_POST_NMS_TOP_N = 300
RPN_NMS_THRESH = 0.7
RPN_MIN_SIZE = 16


# ------------------------------------------------------------ SPP


def spp_levels(height: int, h: int, w: int) -> list[tuple[int, int, int, int, int, int]]:
    """(kernel_h, kernel_w, pad_h, pad_w, out_h, out_w) of each pyramid level, as ``SPPLayer`` sets them up."""
    levels = []
    for level in range(height):
        bins = 2**level
        kh, kw = math.ceil(h / bins), math.ceil(w / bins)
        ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        oh, ow = _pooled(h, kh, ph), _pooled(w, kw, pw)
        levels.append((kh, kw, ph, pw, oh, ow))
    return levels


def _pooled(size: int, k: int, pad: int) -> int:
    """Caffe's pooled size with stride = kernel: ceil, then one less if the last window starts in the padding."""
    out = math.ceil((size + 2 * pad - k) / k) + 1
    if pad and (out - 1) * k >= size + pad:
        out -= 1
    return out


def _spp_check(layer) -> str | None:
    if stopped := pool_check(layer):
        return stopped
    return "pyramid_height must be 1 or more" if layer.type_param.pyramid_height < 1 else None


@emits("SPP", check=_spp_check)
def spp(ctx: Ctx) -> None:
    p = ctx.p
    n, c, h, w = ctx.shapes[0]
    levels = spp_levels(p.pyramid_height, h, w)
    flat = []
    for level, (kh, kw, ph, pw, oh, ow) in enumerate(levels):
        if ph >= kh or pw >= kw:
            raise ctx.fail(
                f"pyramid level {level} pads by {max(ph, pw)} with a {kh}x{kw} window on a {h}x{w} input: "
                f"Caffe's pooling refuses padding as large as the window"
            )
        pool = caffe_pb2.PoolingParameter(
            pool=int(p.pool), kernel_h=kh, kernel_w=kw, stride_h=kh, stride_w=kw, pad_h=ph, pad_w=pw
        )
        one = p.pyramid_height == 1
        target = ctx.y[0] if one else ctx.g.unique(f"{ctx.name}/level{level}")
        shim = SimpleNamespace(
            name=f"{ctx.name}/level{level}" if not one else ctx.name,
            type="Pooling",
            type_param=pool,
            param=ctx.layer.param,
            where=ctx.layer.where,
        )
        pooling(dataclasses.replace(ctx, layer=shim, y=[target], out_shapes=[(n, c, oh, ow)]))
        if one:
            return
        flat.append(ctx.op("Flatten", target, step=f"flatten{level}", axis=1))
    ctx.node("Concat", flat, [ctx.y[0]], axis=1)


# ------------------------------------------------------------ Embed


@emits("Embed")
def embed(ctx: Ctx) -> None:
    """``top[..., :] = weight[int(bottom[...]), :] + bias``; indices are truncated, as Caffe's static_cast."""
    index = ctx.op("Cast", ctx.x[0], step="index", to=7)  # float -> int64 truncates toward zero
    if not ctx.p.bias_term:
        ctx.node("Gather", [ctx.weight(0, "weight"), index], [ctx.y[0]], axis=0)
        return
    rows = ctx.op("Gather", ctx.weight(0, "weight"), index, step="rows", axis=0)
    ctx.node("Add", [rows, ctx.weight(1, "bias")], [ctx.y[0]])


# ------------------------------------------------------------ ROIPooling


@emits("ROIPooling")
def roi_pooling(ctx: Ctx) -> None:
    p = ctx.p
    ctx.node(
        "MaxRoiPool",
        [ctx.x[0], ctx.x[1]],
        [ctx.y[0]],
        pooled_shape=[int(p.pooled_h), int(p.pooled_w)],
        spatial_scale=float(p.spatial_scale),
    )


# ------------------------------------------------------------ region proposals (py-faster-rcnn)


def is_proposal_layer(layer) -> bool:
    """A ``Python`` layer that is py-faster-rcnn's ``rpn.proposal_layer.ProposalLayer``."""
    p = layer.param.python_param
    return p.layer == "ProposalLayer" and p.module.split(".")[-1] == "proposal_layer"


def proposal_options(param_str: str) -> dict:
    """``param_str`` as ProposalLayer reads it (YAML: ``'feat_stride': 16``), with its defaults."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    options = None
    if param_str.strip():
        try:
            options = YAML(typ="safe", pure=True).load(param_str)  # ProposalLayer: yaml.load(param_str)
        except YAMLError as e:
            raise ValueError(f"param_str {param_str!r} is not YAML ({str(e).splitlines()[0]})") from None
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ValueError(f"param_str {param_str!r} is not a YAML mapping such as 'feat_stride': 16")
    try:
        parsed = {
            "feat_stride": options.get("feat_stride", 16),
            "scales": tuple(float(s) for s in options.get("scales", (8, 16, 32))),
            "ratios": tuple(float(r) for r in options.get("ratios", (0.5, 1, 2))),
        }
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"param_str {param_str!r}: feat_stride, scales, ratios must be numbers ({e})"
        ) from None
    stride = parsed["feat_stride"]
    # the anchors' step in image pixels: 0 or less stacks or flips them, and 1e30 overflows the grid
    if (
        isinstance(stride, bool)
        or not isinstance(stride, (int, float))
        or stride != int(stride)
        or not (1 <= stride <= 2**16)
    ):
        raise ValueError(f"param_str {param_str!r}: feat_stride must be a whole number of pixels, 1 or more")
    parsed["feat_stride"] = int(stride)
    return parsed


def generate_anchors(base_size: int = 16, ratios=(0.5, 1, 2), scales=(8, 16, 32)) -> np.ndarray:
    """py-faster-rcnn's ``generate_anchors``: (len(ratios) * len(scales)) x 4, ratios outer, scales inner."""

    def whctrs(a):
        w, h = a[2] - a[0] + 1, a[3] - a[1] + 1
        return w, h, a[0] + 0.5 * (w - 1), a[1] + 0.5 * (h - 1)

    def mkanchors(ws, hs, x, y):
        ws, hs = ws[:, None], hs[:, None]
        return np.hstack((x - 0.5 * (ws - 1), y - 0.5 * (hs - 1), x + 0.5 * (ws - 1), y + 0.5 * (hs - 1)))

    base = np.array([1, 1, base_size, base_size], np.float64) - 1
    w, h, x, y = whctrs(base)
    size_ratios = w * h / np.asarray(ratios, np.float64)
    ws = np.round(np.sqrt(size_ratios))
    hs = np.round(ws * np.asarray(ratios, np.float64))
    ratio_anchors = mkanchors(ws, hs, x, y)
    out = []
    for anchor in ratio_anchors:
        w, h, x, y = whctrs(anchor)
        out.append(mkanchors(w * np.asarray(scales), h * np.asarray(scales), x, y))
    return np.vstack(out)


def _proposal_check(layer) -> str | None:
    if not is_proposal_layer(layer):
        p = layer.param.python_param
        return (
            f"a Python layer ({p.module}.{p.layer}) runs code of its own: only py-faster-rcnn's "
            f"rpn.proposal_layer.ProposalLayer (Faster R-CNN) is converted"
        )
    if len(layer.bottoms) != 3:
        return f"ProposalLayer takes (scores, box deltas, im_info), not {len(layer.bottoms)} bottoms"
    try:
        proposal_options(layer.param.python_param.param_str)
    except ValueError as e:
        return str(e)
    return None


@emits("Python", check=_proposal_check)
def proposal(ctx: Ctx) -> None:
    options = proposal_options(ctx.layer.param.python_param.param_str)
    n, two_a, h, w = ctx.shapes[0]
    ctx.batch_dependent("region proposals are made for one image at a time")
    if n != 1:
        raise ctx.fail(f"ProposalLayer takes one image at a time (batch {n}), as py-faster-rcnn's does")
    stride = options["feat_stride"]
    anchors = generate_anchors(ratios=options["ratios"], scales=options["scales"])
    a = len(anchors)
    if two_a != 2 * a:
        raise ctx.fail(f"{two_a} score channels for {a} anchors (expected {2 * a})")
    # Every anchor at every cell, in ProposalLayer's order: cell (y, x) outer, anchor inner.
    sy, sx = np.meshgrid(np.arange(h) * stride, np.arange(w) * stride, indexing="ij")
    shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], axis=1)
    boxes = (anchors[None, :, :] + shifts[:, None, :]).reshape(-1, 4)
    widths = boxes[:, 2] - boxes[:, 0] + 1.0
    heights = boxes[:, 3] - boxes[:, 1] + 1.0
    size = np.stack([widths, heights], 1).astype(np.float32)  # (K*A, 2)
    centre = np.stack([boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights], 1).astype(np.float32)
    count = len(boxes)

    # Foreground scores (the second A channels) and deltas, both as (cell, anchor) rows.
    fg = ctx.op(
        "Slice",
        ctx.x[0],
        ctx.const("fg_start", [a]),
        ctx.const("fg_end", [2 * a]),
        ctx.const("fg_axis", [1]),
        step="foreground",
    )
    scores = ctx.op(
        "Reshape",
        ctx.op("Transpose", fg, step="scores_nhwc", perm=[0, 2, 3, 1]),
        ctx.const("scores_shape", [count]),
        step="scores",
    )
    deltas = ctx.op(
        "Reshape",
        ctx.op("Transpose", ctx.x[1], step="deltas_nhwc", perm=[0, 2, 3, 1]),
        ctx.const("deltas_shape", [count, 4]),
        step="deltas",
    )
    d_xy, d_wh = ctx.node("Split", [deltas, ctx.const("split_xy_wh", [2, 2])], 2, step="split", axis=1)
    wh = ctx.g.initializer(f"{ctx.name}.anchor_size", size)
    pred_ctr = ctx.op(
        "Add",
        ctx.op("Mul", d_xy, wh, step="shift"),
        ctx.g.initializer(f"{ctx.name}.anchor_centre", centre),
        step="centre",
    )
    half = ctx.op(
        "Mul",
        ctx.op("Mul", ctx.op("Exp", d_wh, step="exp"), wh, step="size"),
        ctx.scalar("half", 0.5),
        step="half",
    )
    corners = ctx.op(
        "Concat",
        ctx.op("Sub", pred_ctr, half, step="top_left"),
        ctx.op("Add", pred_ctr, half, step="bottom_right"),
        step="boxes",
        axis=1,
    )
    # Clipped to the image: x to [0, im_w - 1], y to [0, im_h - 1]; im_info is (height, width, scale).
    info = ctx.op("Reshape", ctx.x[2], ctx.const("info_shape", [3]), step="info")
    hw = ctx.op("Gather", info, ctx.const("hw_index", [1, 0, 1, 0]), step="limits_xyxy", axis=0)
    upper = ctx.op("Sub", hw, ctx.scalar("one", 1.0), step="upper")
    clipped = ctx.op(
        "Max", ctx.op("Min", corners, upper, step="clip_high"), ctx.scalar("zero", 0.0), step="clipped"
    )
    # Boxes smaller than RPN_MIN_SIZE pixels (at the input's scale) cannot win.
    tl, br = ctx.node("Split", [clipped, ctx.const("split_corners", [2, 2])], 2, step="corners", axis=1)
    sides = ctx.op(
        "Add", ctx.op("Sub", br, tl, step="sides_minus_one"), ctx.scalar("plus_one", 1.0), step="sides"
    )
    scale = ctx.op("Gather", info, ctx.const("scale_index", 2), step="im_scale", axis=0)
    min_size = ctx.op("Mul", scale, ctx.scalar("min_size", float(RPN_MIN_SIZE)), step="min_size")
    enough = ctx.op(
        "Cast", ctx.op("GreaterOrEqual", sides, min_size, step="big_enough"), step="big_float", to=1
    )
    big = reduce(ctx, "ReduceMin", enough, [1], keepdims=False, step="both_sides")
    keep = ctx.op("Cast", big, step="keep", to=9)
    ranked = ctx.op("Where", keep, scores, ctx.scalar("dropped", -np.inf), step="ranked")
    k = min(RPN_PRE_NMS_TOP_N, count)
    top, order = ctx.node("TopK", [ranked, ctx.const("pre_nms", [k])], 2, step="pre_nms_top", axis=0)
    cand = ctx.op("Gather", clipped, order, step="candidates", axis=0)
    # ONNX's IoU uses x2 - x1 as the width; Caffe's nms uses x2 - x1 + 1: the same IoU once x2, y2 move by 1.
    widened = ctx.op("Add", cand, ctx.const("plus_one_br", [0, 0, 1, 1], np.float32), step="nms_boxes_xyxy")
    selected = ctx.op(
        "NonMaxSuppression",
        ctx.op("Unsqueeze", widened, ctx.const("nms_batch", [0]), step="nms_boxes"),
        ctx.op("Unsqueeze", top, ctx.const("nms_class", [0, 1]), step="nms_scores"),
        ctx.const("post_nms", RPN_POST_NMS_TOP_N),
        ctx.scalar("nms_thresh", RPN_NMS_THRESH),
        ctx.scalar("score_floor", -FLT_MAX),
        step="nms",
    )
    index = ctx.op("Gather", selected, ctx.const("box_column", 2), step="kept", axis=1)
    zeros = ctx.op(
        "Cast",
        ctx.op("Gather", selected, ctx.const("image_column", [0]), step="image", axis=1),
        step="image_float",
        to=1,
    )
    rois = ctx.op("Gather", cand, index, step="kept_boxes", axis=0)
    ctx.node("Concat", [zeros, rois], [ctx.y[0]], axis=1)
    if len(ctx.y) > 1:
        kept_scores = ctx.op("Gather", top, index, step="kept_scores", axis=0)
        ctx.node("Unsqueeze", [kept_scores, ctx.const("score_axis", [1])], [ctx.y[1]])


# ------------------------------------------------------------ PSROIPooling (R-FCN)


def _round_half_away(ctx: Ctx, v: str, step: str) -> str:
    """C's ``round``: halves away from zero (ONNX's Round goes to even)."""
    magnitude = ctx.op(
        "Floor",
        ctx.op("Add", ctx.op("Abs", v, step=f"{step}_abs"), ctx.scalar("half", 0.5), step=f"{step}_half"),
        step=f"{step}_floor",
    )
    return ctx.op("Mul", ctx.op("Sign", v, step=f"{step}_sign"), magnitude, step=step)


@emits("PSROIPooling")
def psroi_pooling(ctx: Ctx) -> None:
    """R-FCN's position-sensitive ROI pooling: bin (i, j) of output channel d averages input channel
    ``(d * G + i) * G + j`` over its window. Window sums come from an integral image (in float64, so
    they are as exact as Caffe's direct sums); bins are Caffe's: ROI corners rounded, then scaled,
    the end one pixel further, sides at least 0.1, windows floor/ceil of the bin edges, clipped."""
    p = ctx.p
    g, d = int(p.group_size), int(p.output_dim)
    _, c, h, w = ctx.shapes[0]
    x = ctx.op("Cast", ctx.x[0], step="double", to=11)
    for axis in (2, 3):
        x = ctx.op("CumSum", x, ctx.const(f"cum_axis{axis}", axis), step=f"cumsum{axis}")
    # A zero row and column in front: integral[y, x] = sum of rows < y and columns < x.
    integral = ctx.op("Pad", x, ctx.const("pads", [0, 0, 1, 1, 0, 0, 0, 0]), step="integral")
    table = ctx.op("Transpose", integral, step="integral_nhwc", perm=[0, 2, 3, 1])  # N x H+1 x W+1 x C

    rois = ctx.x[1]
    cols = ctx.node(
        "Split", [rois, ctx.const("split5", [1] * 5)], 5, step="roi_columns", axis=1
    )  # each R x 1
    scale = ctx.scalar("spatial_scale", float(p.spatial_scale))
    start_w = ctx.op("Mul", _round_half_away(ctx, cols[1], "x1_round"), scale, step="start_w")
    start_h = ctx.op("Mul", _round_half_away(ctx, cols[2], "y1_round"), scale, step="start_h")
    one = ctx.scalar("one", 1.0)
    end_w = ctx.op(
        "Mul",
        ctx.op("Add", _round_half_away(ctx, cols[3], "x2_round"), one, step="x2_next"),
        scale,
        step="end_w",
    )
    end_h = ctx.op(
        "Mul",
        ctx.op("Add", _round_half_away(ctx, cols[4], "y2_round"), one, step="y2_next"),
        scale,
        step="end_h",
    )
    tenth = ctx.scalar("min_side", 0.1)
    bin_w = ctx.op(
        "Div",
        ctx.op("Max", ctx.op("Sub", end_w, start_w, step="roi_w"), tenth, step="roi_w_min"),
        ctx.scalar("groups", float(g)),
        step="bin_w",
    )
    bin_h = ctx.op(
        "Div",
        ctx.op("Max", ctx.op("Sub", end_h, start_h, step="roi_h"), tenth, step="roi_h_min"),
        ctx.scalar("groups", float(g)),
        step="bin_h",
    )
    steps = ctx.const("bin_index", np.arange(g, dtype=np.float32)[None, :], np.float32)  # 1 x G
    steps_next = ctx.const("bin_index_next", np.arange(1, g + 1, dtype=np.float32)[None, :], np.float32)

    def edge(bin_size: str, start: str, index: str, rounding: str, limit: int, step: str) -> str:
        v = ctx.op(
            rounding,
            ctx.op("Add", ctx.op("Mul", index, bin_size, step=f"{step}_offset"), start, step=f"{step}_at"),
            step=f"{step}_{rounding.lower()}",
        )
        v = ctx.op("Cast", v, step=f"{step}_int", to=7)
        return ctx.op(
            "Min",
            ctx.op("Max", v, ctx.const("zero_i", 0), step=f"{step}_low"),
            ctx.const(f"limit_{limit}", limit),
            step=step,
        )

    hs = edge(bin_h, start_h, steps, "Floor", h, "hstart")  # R x G
    he = edge(bin_h, start_h, steps_next, "Ceil", h, "hend")
    ws = edge(bin_w, start_w, steps, "Floor", w, "wstart")
    we = edge(bin_w, start_w, steps_next, "Ceil", w, "wend")

    # Index tuples (image, y, x, channel) of shape R x G x G x D, one set per window corner.
    count = ctx.op(
        "Slice",
        ctx.op("Shape", rois, step="rois_shape"),
        ctx.const("r0", [0]),
        ctx.const("r1", [1]),
        step="count",
    )
    full = ctx.op("Concat", count, ctx.const("grid", [g, g, d]), step="grid_shape", axis=0)
    image = ctx.op("Cast", cols[0], step="image", to=7)  # R x 1
    channel = (
        (np.arange(d)[None, None, :] * g + np.arange(g)[:, None, None]) * g + np.arange(g)[None, :, None]
    ).astype(np.int64)
    channels = ctx.const("channels", channel[None])  # 1 x G x G x D

    def spread(v: str, axes: list[int], step: str) -> str:
        return ctx.op(
            "Expand",
            ctx.op("Unsqueeze", v, ctx.const(f"{step}_axes", axes), step=f"{step}_u"),
            full,
            step=step,
        )

    b = spread(image, [2, 3], "b")  # R x 1 -> R x 1 x 1 x 1
    cc = ctx.op("Expand", channels, full, step="c")
    last = ctx.const("last_axis", [-1])

    def corner(y: str, x_: str, step: str) -> str:
        parts = [b, spread(y, [2, 3], f"{step}_y"), spread(x_, [1, 3], f"{step}_x"), cc]
        index = ctx.op(
            "Concat",
            *[ctx.op("Unsqueeze", t, last, step=f"{step}_{k}") for k, t in enumerate(parts)],
            step=f"{step}_index",
            axis=-1,
        )
        return ctx.op("GatherND", table, index, step=step)

    total = ctx.op(
        "Add",
        ctx.op(
            "Sub",
            ctx.op("Sub", corner(he, we, "br"), corner(hs, we, "tr"), step="minus_top"),
            corner(he, ws, "bl"),
            step="minus_left",
        ),
        corner(hs, ws, "tl"),
        step="window_sum",
    )
    rows = ctx.op("Sub", he, hs, step="rows")  # R x G
    columns = ctx.op("Sub", we, ws, step="columns")
    area = ctx.op(
        "Mul",
        ctx.op("Unsqueeze", rows, ctx.const("area_rows_axes", [2, 3]), step="rows_u"),
        ctx.op("Unsqueeze", columns, ctx.const("area_cols_axes", [1, 3]), step="cols_u"),
        step="area",
    )  # R x G x G x 1
    area_d = ctx.op("Cast", area, step="area_double", to=11)
    mean = ctx.op(
        "Div",
        total,
        ctx.op("Max", area_d, ctx.const("one_d", np.float64(1.0), np.float64), step="area_safe"),
        step="mean",
    )
    empty = ctx.op("LessOrEqual", area, ctx.const("zero_area", 0), step="empty")
    pooled = ctx.op("Where", empty, ctx.const("zero_d", np.float64(0.0), np.float64), mean, step="pooled")
    nchw = ctx.op("Transpose", pooled, step="rdgg", perm=[0, 3, 1, 2])
    ctx.node("Cast", [nchw], [ctx.y[0]], to=1)
