"""SSD's layers (weiliu89/caffe): PriorBox, DetectionOutput, and a small SSD head end to end.

OpenCV 4.x implements all of them; PriorBox variants OpenCV reads differently
(several or fractional sizes: weiliu89 truncates them to integers) are checked
against a loop-by-loop numpy transcription of ``PriorBoxLayer::Forward_cpu``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from runtime_helpers import assert_close, run_caffezoo, run_opencv, write_net

from caffezoo.caffe.builder import NetBuilder


def prior_box_ref(
    layer_hw,
    image_hw,
    min_sizes,
    max_sizes=(),
    ratios=(),
    flip=True,
    clip=False,
    variance=(0.1,),
    step=0.0,
    offset=0.5,
):
    """weiliu89's PriorBoxLayer::Forward_cpu, transcribed loop by loop."""
    lh, lw = layer_hw
    ih, iw = image_hw
    step_h, step_w = (step, step) if step else (ih / lh, iw / lw)
    ars = [1.0]
    for ar in ratios:
        if all(abs(ar - a) >= 1e-6 for a in ars):
            ars.append(ar)
            if flip:
                ars.append(1.0 / ar)
    out = []
    for h in range(lh):
        for w in range(lw):
            cx, cy = (w + offset) * step_w, (h + offset) * step_h
            for s, min_size in enumerate(min_sizes):
                m = int(min_size)
                boxes = [(m, m)]
                if max_sizes:
                    side = math.sqrt(m * int(max_sizes[s]))
                    boxes.append((side, side))
                boxes += [(m * math.sqrt(ar), m / math.sqrt(ar)) for ar in ars if abs(ar - 1) >= 1e-6]
                for bw, bh in boxes:
                    out += [(cx - bw / 2) / iw, (cy - bh / 2) / ih, (cx + bw / 2) / iw, (cy + bh / 2) / ih]
    boxes = np.array(out, np.float32)
    if clip:
        boxes = np.clip(boxes, 0, 1)
    var = np.tile(np.array(list(variance) * (4 if len(variance) == 1 else 1), np.float32), len(boxes) // 4)
    return np.stack([boxes, var])[None]


def _prior_net(image=(1, 3, 60, 80), feature=(1, 4, 5, 7), **params) -> NetBuilder:
    n = NetBuilder("priors")
    data = n.Input("data", shape=dict(dim=list(image)))
    fmap = n.Input("fmap", shape=dict(dim=list(feature)))
    n.PriorBox("out", fmap, data, **params)
    return n


PRIOR_CASES = {
    "basic": dict(
        min_size=[20.0],
        max_size=[40.0],
        aspect_ratio=[2.0],
        flip=True,
        clip=False,
        variance=[0.1, 0.1, 0.2, 0.2],
    ),
    "clip-step": dict(
        min_size=[30.0], aspect_ratio=[2.0, 3.0], flip=True, clip=True, variance=[0.1], step=16.0
    ),
    "no-flip-offset": dict(
        min_size=[25.0],
        max_size=[50.0],
        aspect_ratio=[3.0],
        flip=False,
        clip=False,
        variance=[0.1, 0.1, 0.2, 0.2],
        offset=0.25,
    ),
}


@pytest.mark.parametrize("case", sorted(PRIOR_CASES))
def test_prior_box_matches_opencv(case, tmp_path):
    prototxt, caffemodel = write_net(tmp_path, _prior_net(**PRIOR_CASES[case]), {})
    rng = np.random.default_rng(0)
    inputs = {
        "data": rng.standard_normal((1, 3, 60, 80), np.float32),
        "fmap": rng.standard_normal((1, 4, 5, 7), np.float32),
    }
    ours = run_caffezoo(prototxt, caffemodel, inputs, ["out"])["out"]
    assert_close(ours, run_opencv(prototxt, caffemodel, inputs, ["out"])["out"], case)


def test_prior_box_truncates_sizes_like_weiliu89(tmp_path):
    params = dict(
        min_size=[20.7, 41.2],
        max_size=[41.9, 60.5],
        aspect_ratio=[2.0, 0.5, 2.0000001],
        flip=True,
        clip=False,
        variance=[0.1, 0.1, 0.2, 0.2],
    )
    prototxt, caffemodel = write_net(tmp_path, _prior_net(**params), {})
    inputs = {"data": np.zeros((1, 3, 60, 80), np.float32), "fmap": np.zeros((1, 4, 5, 7), np.float32)}
    ours = run_caffezoo(prototxt, caffemodel, inputs, ["out"])["out"]
    expected = prior_box_ref(
        (5, 7),
        (60, 80),
        params["min_size"],
        params["max_size"],
        params["aspect_ratio"],
        variance=params["variance"],
    )
    assert ours.shape == expected.shape == (1, 2, 5 * 7 * 2 * 4 * 4)  # ratios 1, 2, 1/2: duplicates dropped
    assert_close(ours, expected)


def _ssd(
    classes: int = 4,
    keep_top_k: int = 20,
    threshold: float = 0.2,
    code: str = "CENTER_SIZE",
    top_k: int = 30,
    background: int = 0,
) -> NetBuilder:
    """Two feature maps, each with loc/conf heads and priors, merged as MobileNet-SSD does."""
    n = NetBuilder("mini_ssd")
    data = n.Input("data", shape=dict(dim=[1, 3, 64, 64]))
    f1 = n.Convolution("f1", data, num_output=8, kernel_size=3, stride=4, pad=1)  # 16 x 16
    f2 = n.Convolution("f2", f1, num_output=8, kernel_size=3, stride=2, pad=1)  # 8 x 8
    locs, confs, priors = [], [], []
    for name, f, size in (("a", f1, 12.0), ("b", f2, 30.0)):
        priors_per_cell = 4  # min, max, 2 and 1/2
        loc = n.Convolution(f"{name}_loc", f, num_output=priors_per_cell * 4, kernel_size=3, pad=1)
        conf = n.Convolution(f"{name}_conf", f, num_output=priors_per_cell * classes, kernel_size=3, pad=1)
        locs.append(n.Flatten(f"{name}_loc_flat", n.Permute(f"{name}_loc_perm", loc, order=[0, 2, 3, 1])))
        confs.append(n.Flatten(f"{name}_conf_flat", n.Permute(f"{name}_conf_perm", conf, order=[0, 2, 3, 1])))
        priors.append(
            n.PriorBox(
                f"{name}_priors",
                f,
                data,
                min_size=[size],
                max_size=[size * 2],
                aspect_ratio=[2.0],
                flip=True,
                clip=False,
                variance=[0.1, 0.1, 0.2, 0.2],
            )
        )
    loc = n.Concat("mbox_loc", *locs, axis=1)
    conf = n.Concat("mbox_conf", *confs, axis=1)
    prior = n.Concat("mbox_priorbox", *priors, axis=2)
    conf = n.Reshape("mbox_conf_reshape", conf, shape=dict(dim=[0, -1, classes]))
    conf = n.Softmax("mbox_conf_softmax", conf, axis=2)
    conf = n.Flatten("mbox_conf_flatten", conf)
    n.DetectionOutput(
        "detection_out",
        loc,
        conf,
        prior,
        num_classes=classes,
        share_location=True,
        background_label_id=background,
        nms_param=dict(nms_threshold=0.45, top_k=top_k),
        code_type=code,
        keep_top_k=keep_top_k,
        confidence_threshold=threshold,
    )
    return n


def detection_output_ref(loc, conf, prior, classes, background, code, threshold, nms, top_k, keep_top_k):
    """weiliu89's DetectionOutputLayer::Forward_cpu for one image, shared locations."""
    boxes, var = prior[0, 0].reshape(-1, 4), prior[0, 1].reshape(-1, 4)
    d = loc.reshape(-1, 4) * var
    pw, ph = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    if code == "CORNER":
        dec = boxes + d
    elif code == "CORNER_SIZE":
        dec = boxes + d * np.stack([pw, ph, pw, ph], 1)
    else:
        cx = d[:, 0] * pw + (boxes[:, 0] + boxes[:, 2]) / 2
        cy = d[:, 1] * ph + (boxes[:, 1] + boxes[:, 3]) / 2
        w, h = np.exp(d[:, 2]) * pw, np.exp(d[:, 3]) * ph
        dec = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    scores = conf.reshape(-1, classes)

    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    kept = {}
    for c in range(classes):
        if c == background:
            continue
        candidates = sorted(
            (i for i in range(len(dec)) if scores[i, c] > threshold), key=lambda i: -scores[i, c]
        )[:top_k]
        chosen = []
        for i in candidates:
            if all(iou(dec[i], dec[j]) <= nms for j in chosen):
                chosen.append(i)
        kept[c] = chosen
    pairs = sorted(((scores[i, c], c, i) for c, idx in kept.items() for i in idx), key=lambda t: -t[0])
    if keep_top_k > -1:
        pairs = pairs[:keep_top_k]
    rows = [
        [0, c, scores[i, c], *dec[i]] for c in sorted(kept) for i in kept[c] if (scores[i, c], c, i) in pairs
    ]
    return np.array(rows or [[0, -1, -1, -1, -1, -1, -1]], np.float32)[None, None]


VARIANTS = {
    "center-size": dict(),
    "keep-top-k": dict(keep_top_k=5),
    "corner": dict(code="CORNER", threshold=0.3),
    "corner-size-background": dict(
        code="CORNER_SIZE", top_k=5, background=2
    ),  # OpenCV cannot read CORNER_SIZE
    "nothing-found": dict(threshold=0.9999),  # Caffe: one row of -1s per image
}


def _rows(a: np.ndarray) -> np.ndarray:
    """Detections as a set: OpenCV orders by score and pads with zero rows; Caffe orders by label."""
    rows = a[0, 0][np.any(a[0, 0] != 0, axis=1)]
    return rows[np.lexsort((-rows[:, 2], rows[:, 1], rows[:, 0]))]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_ssd_detection_output(name, tmp_path):
    params = dict(classes=4, keep_top_k=20, threshold=0.2, code="CENTER_SIZE", top_k=30, background=0)
    params.update(VARIANTS[name])
    prototxt, caffemodel = write_net(tmp_path, _ssd(**params), seed=3)
    rng = np.random.default_rng(7)
    inputs = {"data": rng.standard_normal((1, 3, 64, 64), np.float32)}
    outs = ["detection_out", "mbox_loc", "mbox_conf_flatten", "mbox_priorbox"]
    ours = run_caffezoo(prototxt, caffemodel, inputs, outs)
    got = ours["detection_out"]
    expected = detection_output_ref(
        ours["mbox_loc"],
        ours["mbox_conf_flatten"],
        ours["mbox_priorbox"],
        params["classes"],
        params["background"],
        params["code"],
        params["threshold"],
        0.45,
        params["top_k"],
        params["keep_top_k"],
    )
    assert got.shape == expected.shape, f"{got.shape[2]} detections, numpy {expected.shape[2]}"
    assert_close(got, expected, "detections vs numpy")
    if name == "nothing-found":
        assert np.array_equal(got[0, 0], [[0, -1, -1, -1, -1, -1, -1]])
        return
    assert got.shape[2] > 1
    if name != "corner-size-background":
        reference = run_opencv(prototxt, caffemodel, inputs, outs)
        for blob in ("mbox_loc", "mbox_conf_flatten", "mbox_priorbox"):
            assert_close(ours[blob], reference[blob], blob)
        assert_close(_rows(got), _rows(reference["detection_out"]), "detections vs OpenCV")


def test_detection_output_for_a_batch_of_images(tmp_path):
    """Rows of image 0, then of image 1 (numbered), each as it is alone; keep_top_k per image."""
    import onnxruntime as ort

    from caffezoo.runtime import to_onnx

    prototxt, caffemodel = write_net(tmp_path, _ssd(keep_top_k=7), seed=3)
    model = to_onnx(prototxt, weights=caffemodel)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(11)
    a, b = (rng.standard_normal((1, 3, 64, 64), np.float32) for _ in range(2))
    alone = [session.run(["detection_out"], {"data": x})[0][0, 0] for x in (a, b)]
    both = session.run(["detection_out"], {"data": np.concatenate([a, b])})[0][0, 0]
    assert len(alone[0]) == len(alone[1]) == 7
    assert_close(both[both[:, 0] == 0], alone[0])
    second = alone[1].copy()
    second[:, 0] = 1
    assert_close(both[both[:, 0] == 1], second)
