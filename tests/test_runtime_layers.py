"""SPP, Embed, ROIPooling, PSROIPooling, LSTM, RNN and Faster R-CNN's region proposals, against references.

OpenCV 4.x implements ROIPooling and PSROIPooling (checked against it too);
it has no SPP, Embed, Caffe-style LSTM/RNN (with ``cont`` markers) or Python
layer, so all are checked against numpy written from Caffe's
``spp_layer.cpp``, ``embed_layer.cpp``, ``lstm_layer.cpp``/``rnn_layer.cpp``,
R-FCN's ``psroi_pooling_layer.cu`` and py-faster-rcnn's ``proposal_layer.py``
(with its ``generate_anchors``, ``bbox_transform_inv``, ``clip_boxes`` and
``py_cpu_nms``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from runtime_helpers import assert_close, random_weights, run_caffezoo, run_opencv, write_net
from test_runtime_parity import pool_ref

from caffezoo.caffe.builder import NetBuilder
from caffezoo.errors import ConversionError, NetError
from caffezoo.runtime import to_onnx
from caffezoo.runtime.ops_regions import generate_anchors

# ------------------------------------------------------------ SPP


def spp_ref(x, height, mode):
    """SPPLayer: per level, a PoolingLayer with kernel ceil(H / 2^l), stride = kernel, pad (remainder + 1) / 2."""
    n, c, h, w = x.shape
    outs = []
    for level in range(height):
        bins = 2**level
        kh, kw = math.ceil(h / bins), math.ceil(w / bins)
        ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        y, _ = pool_ref(x, (kh, kw), (kh, kw), (ph, pw), mode)
        if height == 1:
            return y
        outs.append(y.reshape(n, -1))
    return np.concatenate(outs, axis=1)


@pytest.mark.parametrize(
    "height, pool, shape",
    [
        (1, "MAX", (2, 3, 7, 5)),
        (2, "MAX", (2, 3, 8, 8)),
        (3, "MAX", (2, 4, 13, 10)),  # uneven: padded windows, and ceil rounding trimmed
        (3, "AVE", (2, 4, 13, 10)),
        (4, "AVE", (1, 2, 16, 15)),  # level 3: 8 windows of 2 over 15, pad 1
    ],
)
def test_spp_matches_caffe(tmp_path, height, pool, shape):
    n = NetBuilder("spp")
    x = n.Input("data", shape=dict(dim=list(shape)))
    n.SPP("out", x, pyramid_height=height, pool=pool)
    prototxt, caffemodel = write_net(tmp_path, n, {})
    data = np.random.default_rng(height).standard_normal(shape).astype(np.float32)
    ours = run_caffezoo(prototxt, caffemodel, {"data": data}, ["out"])["out"]
    assert_close(ours, spp_ref(data, height, pool.lower()), f"SPP {height} {pool}")


def test_spp_refuses_padding_caffe_refuses(tmp_path):
    n = NetBuilder("spp")
    x = n.Input("data", shape=dict(dim=[1, 1, 5, 5]))
    n.SPP("out", x, pyramid_height=4)  # level 2: 4 bins of a 2-pixel window over 5 pixels, pad 2
    prototxt, caffemodel = write_net(tmp_path, n, {})
    with pytest.raises(ConversionError, match="pyramid level 2 pads by 2 with a 2x2 window"):
        to_onnx(prototxt, weights=caffemodel)


@pytest.mark.parametrize("height", [65, 4_000_000_000])
def test_a_hostile_pyramid_height_is_refused_at_once(tmp_path, height):
    # Level 64 has 2^64 bins a side: Caffe refuses its padding on any input, so no more levels are counted
    # (counting 4 billion of them, or their 4^level bins, never ended).
    n = NetBuilder("spp")
    x = n.Input("data", shape=dict(dim=[1, 1, 8, 8]))
    n.SPP("out", x, pyramid_height=height)
    prototxt, caffemodel = write_net(tmp_path, n, {})
    with pytest.raises(ConversionError, match=f"pyramid_height {height}: at most 64"):
        to_onnx(prototxt, weights=caffemodel)


# ------------------------------------------------------------ Embed


@pytest.mark.parametrize("bias", [True, False])
def test_embed_gathers_rows(tmp_path, bias):
    n = NetBuilder("embed")
    x = n.Input("data", shape=dict(dim=[4, 3]))
    n.Embed("out", x, num_output=5, input_dim=10, bias_term=bias)
    net = n.to_proto()
    weights = random_weights(net, seed=2)
    prototxt, caffemodel = write_net(tmp_path, net, weights)
    index = np.array([[0, 9, 3], [2.7, 2, 1], [9.99, 0.2, 5], [4, 4, 8]], np.float32)  # truncated, as Caffe
    ours = run_caffezoo(prototxt, caffemodel, {"data": index}, ["out"])["out"]
    w = weights["out"]
    expected = w[0][index.astype(int)] + (w[1] if bias else 0)
    assert ours.shape == (4, 3, 5)
    assert_close(ours, expected)


# ------------------------------------------------------------ ROIPooling


def roi_pool_ref(x, rois, ph, pw, scale):
    """ROIPoolingLayer::Forward_cpu of py-faster-rcnn's Caffe."""
    _, c, h, w = x.shape
    out = np.zeros((len(rois), c, ph, pw), np.float32)

    def round(v):  # C's round: halves away from zero (Python's round() goes to even)
        return int(math.copysign(math.floor(abs(v) + 0.5), v))

    for r, (b, x1, y1, x2, y2) in enumerate(rois):
        sw, sh = round(x1 * scale), round(y1 * scale)
        ew, eh = round(x2 * scale), round(y2 * scale)
        rh, rw = max(eh - sh + 1, 1), max(ew - sw + 1, 1)
        bh, bw = rh / ph, rw / pw
        for i in range(ph):
            for j in range(pw):
                hs = min(max(math.floor(i * bh) + sh, 0), h)
                he = min(max(math.ceil((i + 1) * bh) + sh, 0), h)
                ws = min(max(math.floor(j * bw) + sw, 0), w)
                we = min(max(math.ceil((j + 1) * bw) + sw, 0), w)
                if he > hs and we > ws:
                    out[r, :, i, j] = x[int(b), :, hs:he, ws:we].max(axis=(1, 2))
    return out


@pytest.mark.parametrize("pooled", [(0, 2), (3, 0)])
def test_roi_pooling_needs_a_pooled_size(tmp_path, pooled):
    # Caffe checks pooled_h, pooled_w > 0; onnxruntime's refusal was an uncaught traceback at load.
    n = NetBuilder("roi")
    x = n.Input("data", shape=dict(dim=[1, 3, 12, 16]))
    rois = n.Input("rois", shape=dict(dim=[2, 5]))
    n.ROIPooling("out", x, rois, pooled_h=pooled[0], pooled_w=pooled[1], spatial_scale=0.5)
    prototxt, caffemodel = write_net(tmp_path, n, {})
    with pytest.raises(ConversionError, match="pooled_h and pooled_w must be 1 or more"):
        run_caffezoo(prototxt, caffemodel, {}, ["out"])


def test_roi_pooling_matches_opencv_and_caffe(tmp_path):
    n = NetBuilder("roi")
    x = n.Input("data", shape=dict(dim=[2, 3, 12, 16]))
    rois = n.Input("rois", shape=dict(dim=[5, 5]))
    n.ROIPooling("out", x, rois, pooled_h=3, pooled_w=2, spatial_scale=0.5)
    prototxt, caffemodel = write_net(tmp_path, n, {})
    data = np.random.default_rng(0).standard_normal((2, 3, 12, 16)).astype(np.float32)
    boxes = np.array(
        [
            [0, 0, 0, 31, 23],  # the whole map
            [1, 4.2, 3.1, 17.9, 12.4],  # fractional corners: rounded
            [0, 20, 10, 21, 11],  # smaller than a bin
            [1, 28, 18, 40, 30],  # partly outside
            [0, 10, 10, 5, 5],  # corners the wrong way round: one cell
        ],
        np.float32,
    )
    inputs = {"data": data, "rois": boxes}
    ours = run_caffezoo(prototxt, caffemodel, inputs, ["out"])["out"]
    assert_close(ours, roi_pool_ref(data, boxes, 3, 2, 0.5), "numpy")
    assert_close(ours, run_opencv(prototxt, caffemodel, inputs, ["out"])["out"], "OpenCV")


# ------------------------------------------------------------ region proposals


def proposal_ref(scores, deltas, im_info, feat_stride=16, scales=(8, 16, 32), ratios=(0.5, 1, 2)):
    """py-faster-rcnn's ProposalLayer.forward with cfg.TEST (6000 / 300 / 0.7 / min size 16)."""
    anchors = generate_anchors(ratios=ratios, scales=scales)
    a = len(anchors)
    scores = scores[:, a:, :, :]
    h, w = scores.shape[-2:]
    shift_x, shift_y = np.meshgrid(np.arange(w) * feat_stride, np.arange(h) * feat_stride)
    shifts = np.vstack((shift_x.ravel(), shift_y.ravel(), shift_x.ravel(), shift_y.ravel())).T
    all_anchors = (anchors.reshape(1, a, 4) + shifts.reshape(1, -1, 4).transpose(1, 0, 2)).reshape(-1, 4)
    d = deltas.transpose(0, 2, 3, 1).reshape(-1, 4).astype(np.float64)
    s = scores.transpose(0, 2, 3, 1).reshape(-1)
    widths = all_anchors[:, 2] - all_anchors[:, 0] + 1.0
    heights = all_anchors[:, 3] - all_anchors[:, 1] + 1.0
    cx, cy = all_anchors[:, 0] + 0.5 * widths, all_anchors[:, 1] + 0.5 * heights
    pcx, pcy = d[:, 0] * widths + cx, d[:, 1] * heights + cy
    pw, ph = np.exp(d[:, 2]) * widths, np.exp(d[:, 3]) * heights
    boxes = np.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], 1)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, im_info[0, 1] - 1)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, im_info[0, 0] - 1)
    min_size = 16 * im_info[0, 2]
    keep = np.where(
        (boxes[:, 2] - boxes[:, 0] + 1 >= min_size) & (boxes[:, 3] - boxes[:, 1] + 1 >= min_size)
    )[0]
    boxes, s = boxes[keep], s[keep]
    order = np.argsort(-s, kind="stable")[:6000]
    boxes, s = boxes[order], s[order]
    chosen = nms_ref(boxes, s, 0.7)[:300]
    return np.hstack([np.zeros((len(chosen), 1)), boxes[chosen]]), s[chosen]


def nms_ref(boxes, scores, thresh):
    """py_cpu_nms: greedy, areas and overlaps with +1 pixel sizes."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        xx1, yy1 = np.maximum(x1[i], x1[order[1:]]), np.maximum(y1[i], y1[order[1:]])
        xx2, yy2 = np.minimum(x2[i], x2[order[1:]]), np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[1:][ovr <= thresh]
    return np.array(keep, int)


def _proposal_net(h=14, w=18, param_str="'feat_stride': 16", anchors=9, tops=("rois",)) -> NetBuilder:
    n = NetBuilder("rpn")
    scores = n.Input("rpn_cls_prob_reshape", shape=dict(dim=[1, 2 * anchors, h, w]))
    deltas = n.Input("rpn_bbox_pred", shape=dict(dim=[1, 4 * anchors, h, w]))
    info = n.Input("im_info", shape=dict(dim=[1, 3]))
    n.Python(
        "proposal",
        scores,
        deltas,
        info,
        tops=list(tops),
        python_param=dict(module="rpn.proposal_layer", layer="ProposalLayer", param_str=param_str),
    )
    return n


def _rpn_inputs(rng, h, w, anchors=9, scale=1.0, image=(224, 288)):
    fg = rng.uniform(0, 1, (1, anchors, h, w)).astype(np.float32)
    return {
        "rpn_cls_prob_reshape": np.concatenate([1 - fg, fg], axis=1),
        "rpn_bbox_pred": (rng.standard_normal((1, 4 * anchors, h, w)) * 0.3).astype(np.float32),
        "im_info": np.array([[image[0], image[1], scale]], np.float32),
    }


@pytest.mark.parametrize(
    "case",
    [
        dict(),
        dict(scale=2.5),  # min size 40 pixels: many boxes dropped
        dict(param_str="'feat_stride': 8\nscales: [4, 8]", anchors=6, image=(112, 144)),
        dict(h=40, w=50, image=(640, 800)),  # 18000 anchors: the 6000 best go to NMS, 300 come out
    ],
    ids=["default", "min-size", "param-str", "large"],
)
def test_proposals_match_py_faster_rcnn(tmp_path, case):
    case = dict(case)
    h, w = case.pop("h", 14), case.pop("w", 18)
    param_str = case.pop("param_str", "'feat_stride': 16")
    anchors = case.get("anchors", 9)
    prototxt, caffemodel = write_net(
        tmp_path, _proposal_net(h, w, param_str, anchors, ("rois", "scores")), {}
    )
    inputs = _rpn_inputs(np.random.default_rng(h * w), h, w, **case)
    ours = run_caffezoo(prototxt, caffemodel, inputs, ["rois", "scores"])
    options = {"feat_stride": 8, "scales": (4, 8)} if "feat_stride': 8" in param_str else {}
    rois, scores = proposal_ref(
        inputs["rpn_cls_prob_reshape"], inputs["rpn_bbox_pred"], inputs["im_info"], **options
    )
    assert 0 < len(rois) <= 300 and ours["rois"].shape == rois.shape
    if case.get("h") == 40:
        assert len(rois) == 300
    assert_close(ours["rois"], rois, "rois")
    assert_close(ours["scores"][:, 0], scores, "scores")


def test_only_the_proposal_python_layer_converts(tmp_path):
    n = NetBuilder("odd")
    data = n.Input("data", shape=dict(dim=[1, 3, 8, 8]))
    n.Python("mine", data, python_param=dict(module="my.layers", layer="Magic"))
    n.MultiStageMeanfield("crf", data, data)
    prototxt = tmp_path / "odd.prototxt"
    prototxt.write_text(n.to_text())
    with pytest.raises(ConversionError) as e:
        to_onnx(prototxt, weights=tmp_path / "none.caffemodel")
    message = str(e.value)
    assert "layer 'mine' (Python): a Python layer (my.layers.Magic) runs code of its own" in message
    crf = "layer type 'MultiStageMeanfield' (CRF-RNN: mean-field iterations with permutohedral-lattice filtering)"
    assert f"{crf}, used by layer 'crf'" in message


def test_proposals_need_one_image_and_a_readable_param_str(tmp_path):
    prototxt, caffemodel = write_net(tmp_path, _proposal_net(param_str="feat_stride: [16"), {})
    with pytest.raises(ConversionError, match="param_str .* is not YAML"):
        to_onnx(prototxt, weights=caffemodel)


@pytest.mark.parametrize("stride", ["0", "-16", "1e30", "2.5"])
def test_proposals_need_a_whole_positive_feat_stride(tmp_path, stride):
    # 1e30 was an OverflowError traceback; 0 and -16 put every anchor at the image's corner or outside it.
    prototxt, caffemodel = write_net(tmp_path, _proposal_net(param_str=f"'feat_stride': {stride}"), {})
    with pytest.raises(ConversionError, match="feat_stride must be a whole number of pixels, 1 or more"):
        to_onnx(prototxt, weights=caffemodel)


# ------------------------------------------------------------ a small Faster R-CNN, end to end


def add_rpn(n: NetBuilder, x, info):
    """A region proposal network on ``x`` (stride 16, 9 anchors): scores, boxes, then the
    py-faster-rcnn proposal layer; returns its ``rois``."""
    score = n.Convolution("rpn_cls_score", x, num_output=18, kernel_size=1)
    bbox = n.Convolution("rpn_bbox_pred", x, num_output=36, kernel_size=1)
    shaped = n.Reshape("rpn_cls_score_reshape", score, shape=dict(dim=[0, 2, -1, 0]))
    prob = n.Softmax("rpn_cls_prob", shaped)
    prob = n.Reshape("rpn_cls_prob_reshape", prob, shape=dict(dim=[0, 18, -1, 0]))
    return n.Python(
        "proposal",
        prob,
        bbox,
        info,
        tops=["rois"],
        python_param=dict(module="rpn.proposal_layer", layer="ProposalLayer", param_str="'feat_stride': 16"),
    )


def faster_rcnn(classes=4, size=(96, 128)) -> NetBuilder:
    """ZF-like in miniature: conv features at stride 16, an RPN, proposals, ROI pooling, two heads."""
    n = NetBuilder("mini_frcnn")
    data = n.Input("data", shape=dict(dim=[1, 3, *size]))
    info = n.Input("im_info", shape=dict(dim=[1, 3]))
    x = n.Convolution("conv1", data, num_output=8, kernel_size=4, stride=4)
    x = n.ReLU("relu1", x, in_place=True)
    x = n.Convolution("conv2", x, num_output=16, kernel_size=3, stride=4, pad=1)
    feat = n.ReLU("relu2", x, in_place=True)
    rois = add_rpn(n, n.Convolution("rpn_conv", feat, num_output=16, kernel_size=3, pad=1), info)
    pooled = n.ROIPooling("roi_pool", feat, rois, pooled_h=3, pooled_w=3, spatial_scale=0.0625)
    x = n.InnerProduct("fc6", pooled, num_output=32)
    x = n.ReLU("relu6", x, in_place=True)
    n.Softmax("cls_prob", n.InnerProduct("cls_score", x, num_output=classes))
    n.InnerProduct("bbox_pred", x, num_output=4 * classes)
    return n


def run_two_stage(tmp_path, net, seed: int, data_seed: int) -> tuple[dict, np.ndarray, dict]:
    """A two-stage detector (RPN, then a head per ROI) on one 96x128 image: caffezoo's blobs,
    the reference proposals and the net's weights."""
    prototxt, caffemodel = write_net(tmp_path, net, seed=seed)
    rng = np.random.default_rng(data_seed)
    inputs = {
        "data": rng.standard_normal((1, 3, 96, 128)).astype(np.float32),
        "im_info": np.array([[96, 128, 0.25]], np.float32),
    }
    blobs = ["rpn_cls_prob_reshape", "rpn_bbox_pred", "conv2", "rois", "cls_prob", "bbox_pred"]
    ours = run_caffezoo(prototxt, caffemodel, inputs, blobs)
    rois, _ = proposal_ref(ours["rpn_cls_prob_reshape"], ours["rpn_bbox_pred"], inputs["im_info"])
    return ours, rois, random_weights(net.to_proto(), seed)


def test_faster_rcnn_end_to_end(tmp_path):
    ours, rois, weights = run_two_stage(tmp_path, faster_rcnn(), seed=5, data_seed=3)
    assert len(rois) > 5
    assert_close(ours["rois"], rois, "rois")
    pooled = roi_pool_ref(ours["conv2"], rois, 3, 3, 0.0625).reshape(len(rois), -1)
    fc6 = np.maximum(pooled @ weights["fc6"][0].T + weights["fc6"][1], 0)
    logits = fc6 @ weights["cls_score"][0].T + weights["cls_score"][1]
    e = np.exp(logits - logits.max(1, keepdims=True))
    assert_close(ours["cls_prob"], e / e.sum(1, keepdims=True), "cls_prob")
    assert_close(ours["bbox_pred"], fc6 @ weights["bbox_pred"][0].T + weights["bbox_pred"][1], "bbox_pred")


# ------------------------------------------------------------ LSTM and RNN


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def lstm_ref(x, cont, blobs, static=None, h0=None, c0=None):
    """Caffe's unrolled LSTM (lstm_layer.cpp + LSTMUnitLayer), step by step: (h of every step, h_T, c_T)."""
    t, n = x.shape[:2]
    w_xc, b_c = blobs[0], blobs[1]
    w_hc = blobs[-1]
    hid = w_hc.shape[1]
    xs = x.reshape(t, n, -1) @ w_xc.T + b_c
    if static is not None:
        xs = xs + static.reshape(n, -1) @ blobs[2].T
    h = np.zeros((n, hid)) if h0 is None else h0[0].astype(np.float64)
    c = np.zeros((n, hid)) if c0 is None else c0[0].astype(np.float64)
    out = []
    for i in range(t):
        k = cont[i][:, None]
        g = xs[i] + (k * h) @ w_hc.T
        ig, fg, og, gg = (
            sigmoid(g[:, :hid]),
            sigmoid(g[:, hid : 2 * hid]),
            sigmoid(g[:, 2 * hid : 3 * hid]),
            np.tanh(g[:, 3 * hid :]),
        )
        c = k * fg * c + ig * gg
        h = og * np.tanh(c)
        out.append(h)
    return np.stack(out), h[None], c[None]


def rnn_ref(x, cont, blobs, static=None, h0=None):
    """Caffe's unrolled RNN (rnn_layer.cpp); returns (o for all steps, h_T)."""
    t, n = x.shape[:2]
    w_xh, b_h = blobs[0], blobs[1]
    w_hh, w_ho, b_o = blobs[-3], blobs[-2], blobs[-1]
    xs = x.reshape(t, n, -1) @ w_xh.T + b_h
    if static is not None:
        xs = xs + static.reshape(n, -1) @ blobs[2].T
    h = np.zeros((n, w_hh.shape[0])) if h0 is None else h0[0].astype(np.float64)
    out = []
    for i in range(t):
        h = np.tanh(xs[i] + (cont[i][:, None] * h) @ w_hh.T)
        out.append(np.tanh(h @ w_ho.T + b_o))
    return np.stack(out), h[None]


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("expose", [False, True])
def test_recurrent_layers_match_caffe(tmp_path, kind, static, expose):
    t, n, d, hid, ds = 5, 3, 4, 6, 2
    net = NetBuilder("rec")
    x = net.Input("x", shape=dict(dim=[t, n, d, 1]))  # flattened from axis 2, as Caffe does
    cont = net.Input("cont", shape=dict(dim=[t, n]))
    bottoms = [x, cont]
    if static:
        bottoms.append(net.Input("x_static", shape=dict(dim=[n, ds])))
    states = (2 if kind == "LSTM" else 1) if expose else 0
    for name in ("h0", "c0")[:states]:
        bottoms.append(net.Input(name, shape=dict(dim=[1, n, hid])))
    tops = ["out", "h_T", "c_T"][: 1 + states]
    getattr(net, kind)("rec", *bottoms, tops=tops, num_output=hid, expose_hidden=expose)
    rng = np.random.default_rng(len(tops) + 2 * static)
    g = 4 * hid if kind == "LSTM" else hid
    shapes = (
        [(g, d), (g,)]
        + ([(g, ds)] if static else [])
        + ([(g, hid)] if kind == "LSTM" else [(hid, hid), (hid, hid), (hid,)])
    )
    blobs = [(rng.standard_normal(s) * 0.5).astype(np.float32) for s in shapes]
    prototxt, caffemodel = write_net(tmp_path, net, {"rec": blobs})
    inputs = {
        "x": rng.standard_normal((t, n, d, 1)).astype(np.float32),
        # each stream starts at step 0 and again somewhere later, as LRCN's batches of clips do
        "cont": np.array([[0, 0, 0], [1, 1, 0], [1, 0, 1], [1, 1, 1], [0, 1, 1]], np.float32),
    }
    if static:
        inputs["x_static"] = rng.standard_normal((n, ds)).astype(np.float32)
    for name in ("h0", "c0")[:states]:
        inputs[name] = rng.standard_normal((1, n, hid)).astype(np.float32)
    ours = run_caffezoo(prototxt, caffemodel, inputs, tops)
    b64 = [b.astype(np.float64) for b in blobs]
    if kind == "LSTM":
        expected = lstm_ref(
            inputs["x"], inputs["cont"], b64, inputs.get("x_static"), inputs.get("h0"), inputs.get("c0")
        )
    else:
        expected = rnn_ref(inputs["x"], inputs["cont"], b64, inputs.get("x_static"), inputs.get("h0"))
    for top, value in zip(tops, expected):
        assert_close(ours[top], value, f"{kind} {top}")


def test_recurrent_weights_of_the_wrong_shape_are_named(tmp_path):
    net = NetBuilder("rec")
    x = net.Input("x", shape=dict(dim=[2, 1, 3]))
    cont = net.Input("cont", shape=dict(dim=[2, 1]))
    net.LSTM("rec", x, cont, num_output=4)
    blobs = [np.zeros(s, np.float32) for s in [(16, 3), (16,), (4, 4)]]  # W_hc should be 16 x 4
    prototxt, caffemodel = write_net(tmp_path, net, {"rec": blobs})
    with pytest.raises(
        NetError, match="layer 'rec': blob 2 is 4x4 in the caffemodel but the net expects 16x4"
    ):
        to_onnx(prototxt, weights=caffemodel)


# ------------------------------------------------------------ PSROIPooling (R-FCN)


def psroi_ref(x, rois, output_dim, group, scale):
    """R-FCN's PSROIPoolingForward, loop by loop (float32 bin edges, C's round)."""
    _, _, h, w = x.shape
    f = np.float32
    out = np.zeros((len(rois), output_dim, group, group), np.float32)

    def cround(v):
        return math.copysign(math.floor(abs(v) + 0.5), v)

    for r, (b, x1, y1, x2, y2) in enumerate(rois):
        sw, sh = f(cround(x1)) * f(scale), f(cround(y1)) * f(scale)
        ew, eh = f(cround(x2) + 1.0) * f(scale), f(cround(y2) + 1.0) * f(scale)
        bw, bh = max(ew - sw, f(0.1)) / f(group), max(eh - sh, f(0.1)) / f(group)
        for d in range(output_dim):
            for i in range(group):
                for j in range(group):
                    hs = min(max(math.floor(f(i) * bh + sh), 0), h)
                    he = min(max(math.ceil(f(i + 1) * bh + sh), 0), h)
                    ws = min(max(math.floor(f(j) * bw + sw), 0), w)
                    we = min(max(math.ceil(f(j + 1) * bw + sw), 0), w)
                    if he > hs and we > ws:
                        c = (d * group + i) * group + j
                        out[r, d, i, j] = x[int(b), c, hs:he, ws:we].astype(np.float64).mean()
    return out


def test_psroi_pooling_matches_r_fcn(tmp_path):
    group, dim = 3, 4
    n = NetBuilder("psroi")
    x = n.Input("data", shape=dict(dim=[2, dim * group * group, 14, 18]))
    rois = n.Input("rois", shape=dict(dim=[6, 5]))
    n.PSROIPooling("out", x, rois, output_dim=dim, group_size=group, spatial_scale=0.0625)
    prototxt, caffemodel = write_net(tmp_path, n, {})
    data = np.random.default_rng(1).standard_normal((2, dim * group * group, 14, 18)).astype(np.float32)
    boxes = np.array(
        [
            [0, 0, 0, 287, 223],  # the whole map
            [1, 40.5, 30.2, 180.7, 150.4],  # a half rounds away from zero
            [0, 100, 100, 104, 103],  # smaller than a bin: some bins empty
            [1, 200, 150, 400, 300],  # partly outside
            [0, 64, 64, 32, 32],  # the wrong way round: sides of 0.1
            [1, -20, -10, 50, 40],  # negative corners
        ],
        np.float32,
    )
    inputs = {"data": data, "rois": boxes}
    ours = run_caffezoo(prototxt, caffemodel, inputs, ["out"])["out"]
    assert ours.shape == (6, dim, group, group)
    assert_close(ours, psroi_ref(data, boxes, dim, group, 0.0625), "numpy")
    assert_close(ours, run_opencv(prototxt, caffemodel, inputs, ["out"])["out"], "OpenCV")


def test_lrcn_language_model_end_to_end(tmp_path):
    """LRCN's word model in miniature: Embed -> LSTM (image features as its static input) -> scores -> Softmax."""
    t, n, vocab, hid, feat = 4, 2, 11, 6, 5
    net = NetBuilder("mini_lrcn")
    words = net.Input("input_sentence", shape=dict(dim=[t, n]))
    cont = net.Input("cont_sentence", shape=dict(dim=[t, n]))
    image = net.Input("image_features", shape=dict(dim=[n, feat]))
    embedded = net.Embed("embed", words, num_output=8, input_dim=vocab, bias_term=False)
    h = net.LSTM("lstm", embedded, cont, image, num_output=hid)
    scores = net.InnerProduct("predict", h, num_output=vocab, axis=2)
    net.Softmax("probs", scores, axis=2)
    rng = np.random.default_rng(8)
    blobs = {
        "embed": [rng.standard_normal((vocab, 8)).astype(np.float32)],
        "lstm": [
            (rng.standard_normal(s) * 0.5).astype(np.float32)
            for s in [(4 * hid, 8), (4 * hid,), (4 * hid, feat), (4 * hid, hid)]
        ],
        "predict": [
            rng.standard_normal((vocab, hid)).astype(np.float32),
            rng.standard_normal(vocab).astype(np.float32),
        ],
    }
    prototxt, caffemodel = write_net(tmp_path, net, blobs)
    inputs = {
        "input_sentence": np.array([[0, 0], [4, 7], [9, 1], [3, 10]], np.float32),
        "cont_sentence": np.array([[0, 0], [1, 1], [1, 1], [1, 1]], np.float32),
        "image_features": rng.standard_normal((n, feat)).astype(np.float32),
    }
    ours = run_caffezoo(prototxt, caffemodel, inputs, ["probs"])["probs"]
    e = blobs["embed"][0][inputs["input_sentence"].astype(int)].astype(np.float64)
    hs, _, _ = lstm_ref(
        e, inputs["cont_sentence"], [b.astype(np.float64) for b in blobs["lstm"]], inputs["image_features"]
    )
    logits = hs @ blobs["predict"][0].T + blobs["predict"][1]
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    assert_close(ours, expected / expected.sum(-1, keepdims=True))


def test_faster_rcnn_outputs_leave_their_row_count_open(tmp_path):
    """However many proposals survive (here: none, every box under the minimum size) is a valid answer."""
    prototxt, caffemodel = write_net(tmp_path, faster_rcnn(), seed=5)
    model = to_onnx(prototxt, weights=caffemodel, outputs=["rois"])
    dims = {o.name: o.type.tensor_type.shape.dim for o in model.graph.output}
    assert not dims["cls_prob"][0].HasField("dim_value") and dims["cls_prob"][1].dim_value == 4
    assert not dims["rois"][0].HasField("dim_value") and dims["bbox_pred"][1].dim_value == 16
    inputs = {
        "data": np.zeros((1, 3, 96, 128), np.float32),
        "im_info": np.array([[96, 128, 100.0]], np.float32),
    }
    out = run_caffezoo(prototxt, caffemodel, inputs, ["rois", "cls_prob"])
    assert out["rois"].shape == (0, 5) and out["cls_prob"].shape == (0, 4)


# ------------------------------------------------------------ a small R-FCN, end to end


def r_fcn(classes=3, group=3, size=(96, 128)) -> NetBuilder:
    """R-FCN in miniature: position-sensitive score maps pooled per proposal, averaged, reshaped to rows."""
    n = NetBuilder("mini_rfcn")
    data = n.Input("data", shape=dict(dim=[1, 3, *size]))
    info = n.Input("im_info", shape=dict(dim=[1, 3]))
    x = n.ReLU("relu1", n.Convolution("conv1", data, num_output=8, kernel_size=4, stride=4), in_place=True)
    feat = n.ReLU(
        "relu2", n.Convolution("conv2", x, num_output=16, kernel_size=3, stride=4, pad=1), in_place=True
    )
    rois = add_rpn(n, feat, info)
    cls_maps = n.Convolution("rfcn_cls", feat, num_output=classes * group * group, kernel_size=1)
    box_maps = n.Convolution("rfcn_bbox", feat, num_output=8 * group * group, kernel_size=1)
    ps_cls = n.PSROIPooling(
        "psroipooled_cls_rois", cls_maps, rois, output_dim=classes, group_size=group, spatial_scale=0.0625
    )
    ps_box = n.PSROIPooling(
        "psroipooled_loc_rois", box_maps, rois, output_dim=8, group_size=group, spatial_scale=0.0625
    )
    cls = n.Pooling("ave_cls_score_rois", ps_cls, pool="AVE", kernel_size=group, stride=group)
    box = n.Pooling("ave_bbox_pred_rois", ps_box, pool="AVE", kernel_size=group, stride=group)
    n.Reshape("cls_prob", n.Softmax("cls_prob_pre", cls), shape=dict(dim=[-1, classes]))
    n.Reshape("bbox_pred", box, shape=dict(dim=[-1, 8]))
    return n


def test_r_fcn_end_to_end(tmp_path):
    ours, rois, weights = run_two_stage(tmp_path, r_fcn(), seed=6, data_seed=4)
    assert 5 < len(rois) < 300  # fewer rows than the 300 the graph was shaped with
    assert_close(ours["rois"], rois, "rois")

    def conv1x1(name):
        w, b = weights[name]
        return np.einsum("oc,nchw->nohw", w[:, :, 0, 0], ours["conv2"]) + b[None, :, None, None]

    cls = psroi_ref(conv1x1("rfcn_cls"), rois, 3, 3, 0.0625).mean(axis=(2, 3))
    e = np.exp(cls - cls.max(1, keepdims=True))
    assert_close(ours["cls_prob"], e / e.sum(1, keepdims=True), "cls_prob")
    assert_close(
        ours["bbox_pred"], psroi_ref(conv1x1("rfcn_bbox"), rois, 8, 3, 0.0625).mean(axis=(2, 3)), "bbox_pred"
    )


def test_proposals_match_opencvs_proposal_layer(tmp_path):
    """OpenCV's `Proposal` (the same layer under its own type) keeps boxes under the minimum size, which
    py-faster-rcnn drops: with im_info's scale so small that no box is dropped, they agree row for row."""
    import cv2

    h, w = 14, 18
    prototxt, caffemodel = write_net(tmp_path, _proposal_net(h, w), {})
    inputs = _rpn_inputs(np.random.default_rng(5), h, w, scale=0.01)
    ours = run_caffezoo(prototxt, caffemodel, inputs, ["rois"])["rois"]
    theirs = tmp_path / "opencv.prototxt"
    theirs.write_text(
        f'input: "rpn_cls_prob_reshape" input_shape {{ dim: 1 dim: 18 dim: {h} dim: {w} }}\n'
        f'input: "rpn_bbox_pred" input_shape {{ dim: 1 dim: 36 dim: {h} dim: {w} }}\n'
        'input: "im_info" input_shape { dim: 1 dim: 3 }\n'
        'layer { name: "proposal" type: "Proposal" bottom: "rpn_cls_prob_reshape" bottom: "rpn_bbox_pred"\n'
        '  bottom: "im_info" top: "rois" proposal_param { ratio: 0.5 ratio: 1 ratio: 2 scale: 8 scale: 16\n'
        "  scale: 32 feat_stride: 16 base_size: 16 min_size: 16 pre_nms_topn: 6000 post_nms_topn: 300\n"
        "  nms_thresh: 0.7 } }\n"
    )
    net = cv2.dnn.readNetFromCaffe(str(theirs))
    for name, value in inputs.items():
        net.setInput(value, name)
    reference = net.forward("proposal")
    assert ours.shape == reference.shape == (300, 5)
    assert_close(ours, reference, "rois vs OpenCV")
