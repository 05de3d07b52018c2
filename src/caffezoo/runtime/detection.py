"""SSD's DetectionOutput in plain ONNX: decode boxes, per-class NMS, keep the best, Caffe's row order.

weiliu89/caffe's ``DetectionOutputLayer::Forward_cpu``, step by step:

1. decode each prior's offsets (CORNER, CENTER_SIZE or CORNER_SIZE, with the
   prior's variances unless they are encoded in the target); boxes are not clipped;
2. for each image and class but the background: keep scores above
   ``confidence_threshold``, the ``top_k`` best, then greedy NMS (a box stays
   if its IoU with every kept box is at most ``nms_threshold``);
3. ``keep_top_k`` best detections per image across classes;
4. rows ``[image, label, score, xmin, ymin, xmax, ymax]`` ordered by image,
   label, then score; shape 1 x 1 x rows x 7. No detection at all gives one
   row per image of -1s with the image index in front.

The candidate selection of step 2 is done before ONNX's NonMaxSuppression
(TopK per class, then masking), because ONNX's ``max_output_boxes_per_class``
caps the *result*, whereas Caffe caps the *candidates*.
"""

from __future__ import annotations

import numpy as np

from ..caffe import caffe_pb2
from ._emit import FLT_MAX, Ctx, emits

__all__ = []  # the layer rules register themselves with @emits; nothing here is called by name

_Code = caffe_pb2.PriorBoxParameter


def _check(layer) -> str | None:
    p = layer.type_param
    if not p.share_location:
        return "share_location: false (one box per class) is not supported"
    if p.HasField("nms_param") and p.nms_param.eta < 1:
        return "nms_param.eta < 1 (adaptive NMS) is not supported"
    if len(layer.bottoms) != 3:
        return f"{len(layer.bottoms)} bottoms: only (loc, conf, prior) is supported"
    return None


@emits("DetectionOutput", check=_check)
def detection_output(ctx: Ctx) -> None:
    p = ctx.p
    n, loc_count = ctx.shapes[0][0], int(np.prod(ctx.shapes[0][1:]))
    priors = ctx.shapes[2][2] // 4
    classes = p.num_classes
    if loc_count != priors * 4:
        raise ctx.fail(f"{loc_count} location values for {priors} priors")
    loc = ctx.reshape(ctx.x[0], [n, priors, 4], step="loc")
    conf = ctx.reshape(ctx.x[1], [n, priors, classes], step="conf")
    boxes = _decode(ctx, loc, priors)

    labels = [c for c in range(classes) if c != p.background_label_id]
    used = len(labels)
    scores = ctx.op("Transpose", conf, step="conf_by_class", perm=[0, 2, 1])  # N x C x P
    if used != classes:
        scores = ctx.op("Gather", scores, ctx.const("labels", labels), step="foreground", axis=1)
    k = min(p.nms_param.top_k, priors) if p.nms_param.HasField("top_k") and p.nms_param.top_k > 0 else priors
    top, order = ctx.node("TopK", [scores, ctx.const("top_k", [k])], 2, step="candidates", axis=2)
    # Boxes of each class's candidates: N x (C'*K) x 4, then one NMS "batch" per (image, class).
    flat_order = ctx.reshape(order, [n, used * k, 1], step="candidate_index")
    cand = ctx.op("GatherND", boxes, flat_order, step="candidate_boxes", batch_dims=1)
    cand = ctx.reshape(cand, [n * used, k, 4], step="nms_boxes", batch="infer")
    threshold = p.confidence_threshold if p.HasField("confidence_threshold") else -FLT_MAX
    above = ctx.op("Greater", top, ctx.scalar("confidence_threshold", threshold), step="above")
    masked = ctx.op("Where", above, top, ctx.scalar("rejected", -np.inf), step="masked")
    nms_scores = ctx.reshape(masked, [n * used, 1, k], step="nms_scores", batch="infer")
    # IoU is symmetric in x and y, so xmin, ymin, xmax, ymax serve as ONNX's y1, x1, y2, x2.
    selected = ctx.op(
        "NonMaxSuppression",
        cand,
        nms_scores,
        ctx.const("max_boxes", k),
        ctx.scalar("nms_threshold", p.nms_param.nms_threshold if p.HasField("nms_param") else 0.3),
        ctx.scalar("score_floor", -FLT_MAX),
        step="nms",
    )
    pair = ctx.op("Gather", selected, ctx.const("pair_columns", [0, 2]), step="pairs", axis=1)  # (n*C'+c, k)
    flat_scores = ctx.reshape(masked, [n * used, k], step="flat_scores", batch="infer")
    score = ctx.op("GatherND", flat_scores, pair, step="score")
    box = ctx.op("GatherND", cand, pair, step="box")
    group = ctx.op("Gather", pair, ctx.const("group_column", 0), step="group", axis=1)
    image = ctx.op("Div", group, ctx.const("classes_used", used), step="image")
    label = ctx.op(
        "Gather",
        ctx.const("label_of", labels, np.float32),
        ctx.op("Mod", group, ctx.const("classes_mod", used), step="class"),
        step="label",
    )
    if p.keep_top_k > -1:
        image, label, score, box = _keep_top_k(ctx, image, label, score, box, p.keep_top_k)
    image_f = ctx.op("Cast", image, step="image_float", to=1)
    column = ctx.const("column_axes", [1])
    rows = ctx.op(
        "Concat",
        ctx.op("Unsqueeze", image_f, column, step="image_col"),
        ctx.op("Unsqueeze", label, column, step="label_col"),
        ctx.op("Unsqueeze", score, column, step="score_col"),
        box,
        step="rows",
        axis=1,
    )
    rows = _or_empty_rows(ctx, rows)
    ctx.node("Unsqueeze", [rows, ctx.const("out_axes", [0, 1])], [ctx.y[0]])


def _columns(ctx: Ctx, x: str, step: str) -> list[str]:
    """The four coordinates of ``x`` (..., 4) as (..., 1) tensors."""
    return ctx.node("Split", [x, ctx.const("split4", [1, 1, 1, 1])], 4, step=step, axis=-1)


def _decode(ctx: Ctx, loc: str, priors: int) -> str:
    """Decoded boxes, N x P x 4 (xmin, ymin, xmax, ymax)."""
    p = ctx.p
    # The priors (1 x 2 x P*4) are the same for every image: not batched.
    prior = ctx.op("Reshape", ctx.x[2], ctx.const("priors_shape", [2, priors, 4]), step="priors")
    pbox = ctx.op("Gather", prior, ctx.const("box_row", 0), step="prior_boxes", axis=0)
    pvar = ctx.op("Gather", prior, ctx.const("variance_row", 1), step="prior_variances", axis=0)
    x0, y0, x1, y1 = _columns(ctx, pbox, "prior_corners")
    l0, l1, l2, l3 = _columns(ctx, loc, "offsets")
    if not p.variance_encoded_in_target:
        v0, v1, v2, v3 = _columns(ctx, pvar, "variances")
        l0, l1, l2, l3 = (
            ctx.op("Mul", v, offset, step=f"scaled{i}")
            for i, (v, offset) in enumerate(((v0, l0), (v1, l1), (v2, l2), (v3, l3)))
        )
    add = lambda a, b, s: ctx.op("Add", a, b, step=s)  # noqa: E731
    mul = lambda a, b, s: ctx.op("Mul", a, b, step=s)  # noqa: E731
    if p.code_type == _Code.CORNER:
        corners = [add(x0, l0, "xmin"), add(y0, l1, "ymin"), add(x1, l2, "xmax"), add(y1, l3, "ymax")]
    else:
        pw = ctx.op("Sub", x1, x0, step="prior_width")
        ph = ctx.op("Sub", y1, y0, step="prior_height")
        if p.code_type == _Code.CORNER_SIZE:
            corners = [
                add(x0, mul(l0, pw, "dx0"), "xmin"),
                add(y0, mul(l1, ph, "dy0"), "ymin"),
                add(x1, mul(l2, pw, "dx1"), "xmax"),
                add(y1, mul(l3, ph, "dy1"), "ymax"),
            ]
        else:  # CENTER_SIZE
            half = ctx.scalar("half", 0.5)
            pcx = mul(add(x0, x1, "prior_cx2"), half, "prior_cx")
            pcy = mul(add(y0, y1, "prior_cy2"), half, "prior_cy")
            cx = add(mul(l0, pw, "dcx"), pcx, "cx")
            cy = add(mul(l1, ph, "dcy"), pcy, "cy")
            # Halved priors, times the exponent: the same numbers as halving the product (a halving is
            # exact), and the halving of the (constant) priors happens once, when onnxruntime folds it.
            hw = mul(ctx.op("Exp", l2, step="exp_w"), mul(pw, half, "prior_half_w"), "half_w")
            hh = mul(ctx.op("Exp", l3, step="exp_h"), mul(ph, half, "prior_half_h"), "half_h")
            corners = [
                ctx.op("Sub", cx, hw, step="xmin"),
                ctx.op("Sub", cy, hh, step="ymin"),
                add(cx, hw, "xmax"),
                add(cy, hh, "ymax"),
            ]
    return ctx.op("Concat", *corners, step="decoded", axis=-1)


def _keep_top_k(ctx: Ctx, image: str, label: str, score: str, box: str, keep: int) -> tuple[str, ...]:
    """Keep each image's ``keep`` best rows, in their current order.

    Two stable sorts (TopK breaks ties by the lower index): by score, best
    first, then by image; a row's rank is its position minus where its image
    starts. O(rows log rows), where comparing every pair of rows was
    O(rows^2) and took 30 ms at SSD's 20 classes x 100 candidates.
    """
    count = ctx.op("Shape", score, step="count")
    by_score = ctx.node("TopK", [score, count], 2, step="by_score", axis=0)[1]
    image_by_score = ctx.op("Gather", image, by_score, step="image_by_score", axis=0)
    negated = ctx.op("Neg", image_by_score, step="image_neg")
    sorted_image, by_image = ctx.node("TopK", [negated, count], 2, step="by_image", axis=0)
    order = ctx.op("Gather", by_score, by_image, step="order", axis=0)  # (image, -score, index) order
    image_sorted = ctx.op("Neg", sorted_image, step="image_sorted")
    # Where each image's rows start: the rows of the images before it.
    images = ctx.op(
        "Range",
        ctx.const("zero", 0),
        ctx.op(
            "Squeeze",
            ctx.op(
                "Slice",
                ctx.op("Shape", ctx.x[0], step="in_shape_k"),
                ctx.const("k0", [0]),
                ctx.const("k1", [1]),
                step="batch_k",
            ),
            step="batch_scalar_k",
        ),
        ctx.const("one", 1),
        step="image_ids_k",
    )
    onehot = ctx.op(
        "Cast",
        ctx.op(
            "Equal",
            ctx.op("Unsqueeze", image_sorted, ctx.const("col_axis", [1]), step="image_col_k"),
            ctx.op("Unsqueeze", images, ctx.const("row_axis", [0]), step="image_row_k"),
            step="of_image",
        ),
        step="of_image_int",
        to=7,
    )
    per_image = ctx.op("ReduceSum", onehot, ctx.const("rows_axis", [0]), step="per_image", keepdims=0)
    starts = ctx.op("CumSum", per_image, ctx.const("cum_axis", 0), step="starts", exclusive=1)
    position = ctx.op(
        "Range",
        ctx.const("p0", 0),
        ctx.op("Squeeze", count, step="count_scalar"),
        ctx.const("p1", 1),
        step="position",
    )
    rank = ctx.op("Sub", position, ctx.op("Gather", starts, image_sorted, step="start", axis=0), step="rank")
    kept = ctx.op(
        "NonZero", ctx.op("Less", rank, ctx.const("keep_top_k", keep), step="kept_mask"), step="kept"
    )
    kept = ctx.op(
        "Gather",
        order,
        ctx.op("Squeeze", kept, ctx.const("kept_axes", [0]), step="kept_pos"),
        step="kept_rows",
        axis=0,
    )
    # Back in the rows' own order (image, label, score): the kept row numbers, ascending.
    kept = ctx.node(
        "TopK", [kept, ctx.op("Shape", kept, step="kept_count")], 2, step="in_order", axis=0, largest=0
    )[0]
    return tuple(
        ctx.op("Gather", t, kept, step=f"keep_{name}", axis=0)
        for t, name in ((image, "image"), (label, "label"), (score, "score"), (box, "box"))
    )


def _or_empty_rows(ctx: Ctx, rows: str) -> str:
    """Caffe's answer when nothing is detected: one row of -1 per image, the image index first."""
    batch = ctx.op(
        "Slice",
        ctx.op("Shape", ctx.x[0], step="in_shape"),
        ctx.const("b0", [0]),
        ctx.const("b1", [1]),
        step="batch",
    )
    images = ctx.op(
        "Cast",
        ctx.op(
            "Range",
            ctx.const("r0", 0),
            ctx.op("Squeeze", batch, step="batch_scalar"),
            ctx.const("r1", 1),
            step="images",
        ),
        step="images_float",
        to=1,
    )
    minus = ctx.op(
        "Expand",
        ctx.const("minus_one", -np.ones((1, 6), np.float32), np.float32),
        ctx.op("Concat", batch, ctx.const("six", [6]), step="filler_shape", axis=0),
        step="minus",
    )
    filler = ctx.op(
        "Concat",
        ctx.op("Unsqueeze", images, ctx.const("img_axis", [1]), step="image_ids"),
        minus,
        step="filler",
        axis=1,
    )
    found = ctx.op(
        "Slice",
        ctx.op("Shape", rows, step="rows_shape"),
        ctx.const("f0", [0]),
        ctx.const("f1", [1]),
        step="found",
    )
    take = ctx.op(
        "Where",
        ctx.op("Equal", found, ctx.const("none", [0]), step="empty"),
        batch,
        ctx.const("zero_rows", [0]),
        step="take",
    )
    fallback = ctx.op("Slice", filler, ctx.const("s0", [0]), take, ctx.const("s_axes", [0]), step="fallback")
    return ctx.op("Concat", rows, fallback, step="all_rows", axis=0)
