"""One small net per segmentation family of the Caffe wiki, whole, against OpenCV or numpy, then `run` on it.

FCN (deconvolution, crop, skip sums) and HED (side outputs, crops, a fused
1x1 convolution, sigmoids) are read by OpenCV 4.x; SegNet's mask-driven
Upsample is not, so it is checked against numpy on caffezoo's own
convolution outputs (the convolutions are covered by the parity tests).
"""

from __future__ import annotations

import numpy as np
from runtime_helpers import assert_close, run_caffezoo, run_opencv, write_net
from test_runtime_parity import pool_ref
from test_runtime_session import model_dir
from test_runtime_tasks import picture

from caffezoo.caffe.builder import NetBuilder
from caffezoo.runtime.tasks import run


def fcn(classes=5) -> NetBuilder:
    """FCN-16s in miniature: stride-16 scores upsampled, summed with stride-8 scores, upsampled to the input."""
    n = NetBuilder("mini_fcn")
    data = n.Input("data", shape=dict(dim=[1, 3, 48, 64]))
    x = n.ReLU("relu1", n.Convolution("conv1", data, num_output=8, kernel_size=3, pad=20), in_place=True)
    pool1 = n.Pooling("pool1", x, pool="MAX", kernel_size=2, stride=2)
    x = n.ReLU("relu2", n.Convolution("conv2", pool1, num_output=8, kernel_size=3, pad=1), in_place=True)
    pool2 = n.Pooling("pool2", x, pool="MAX", kernel_size=2, stride=2)
    pool3 = n.Pooling("pool3", pool2, pool="MAX", kernel_size=2, stride=2)
    score_fr = n.Convolution("score_fr", pool3, num_output=classes, kernel_size=1)
    up2 = n.Deconvolution("upscore2", score_fr, num_output=classes, kernel_size=4, stride=2, bias_term=False)
    score_pool2 = n.Convolution("score_pool2", pool2, num_output=classes, kernel_size=1)
    crop2 = n.Crop("upscore2c", up2, score_pool2, axis=2, offset=1)
    fused = n.Eltwise("fuse_pool2", crop2, score_pool2, operation="SUM")
    up = n.Deconvolution("upscore4", fused, num_output=classes, kernel_size=8, stride=4, bias_term=False)
    n.Crop("score", up, data, axis=2, offset=8)
    return n


def hed() -> NetBuilder:
    """HED in miniature: two side outputs upsampled and cropped to the input, fused by a 1x1 convolution."""
    n = NetBuilder("mini_hed")
    data = n.Input("data", shape=dict(dim=[1, 3, 32, 40]))
    x = n.ReLU("relu1", n.Convolution("conv1", data, num_output=6, kernel_size=3, pad=1), in_place=True)
    side1 = n.Convolution("score-dsn1", x, num_output=1, kernel_size=1)
    x = n.Pooling("pool1", x, pool="MAX", kernel_size=2, stride=2)
    x = n.ReLU("relu2", n.Convolution("conv2", x, num_output=6, kernel_size=3, pad=1), in_place=True)
    side2 = n.Convolution("score-dsn2", x, num_output=1, kernel_size=1)
    up2 = n.Deconvolution("upsample_2", side2, num_output=1, kernel_size=4, stride=2, bias_term=False)
    crop2 = n.Crop("crop2", up2, data, axis=2, offset=1)
    n.Sigmoid("sigmoid-dsn1", side1)
    n.Sigmoid("sigmoid-dsn2", crop2)
    fuse = n.Convolution(
        "new-score-weighting", n.Concat("concat", side1, crop2, axis=1), num_output=1, kernel_size=1
    )
    n.Sigmoid("sigmoid-fuse", fuse)
    return n


def segnet(classes=4) -> NetBuilder:
    """SegNet in miniature: SegNet's BN, pooling with a mask, Upsample by that mask, per-pixel softmax."""
    n = NetBuilder("mini_segnet")
    data = n.Input("data", shape=dict(dim=[1, 3, 16, 20]))
    x = n.Convolution("conv1", data, num_output=6, kernel_size=3, pad=1)
    x = n.ReLU("relu1", n.BN("conv1_bn", x, bn_mode="INFERENCE"), in_place=True)
    pooled, mask = n.Pooling("pool1", x, tops=["pool1", "pool1_mask"], pool="MAX", kernel_size=2, stride=2)
    x = n.Convolution("conv2", pooled, num_output=6, kernel_size=3, pad=1)
    up = n.Upsample("upsample1", x, mask, scale=2)
    x = n.Convolution("conv_classifier", up, num_output=classes, kernel_size=3, pad=1)
    n.Softmax("prob", x)
    return n


def test_fcn_against_opencv_and_run(tmp_path):
    prototxt, caffemodel = write_net(tmp_path, fcn(), seed=1)
    x = np.random.default_rng(0).standard_normal((1, 3, 48, 64)).astype(np.float32)
    ours = run_caffezoo(prototxt, caffemodel, {"data": x}, ["score"])["score"]
    assert ours.shape == (1, 5, 48, 64)
    assert_close(ours, run_opencv(prototxt, caffemodel, {"data": x}, ["score"])["score"], "FCN vs OpenCV")
    d = model_dir(tmp_path, fcn(), seed=1)
    (item,) = run(d, [picture(tmp_path / "a.png", 64, 48)], output=tmp_path / "fcn.png").items
    assert item.map.shape == (48, 64) and sum(a.pixels for a in item.areas) == 48 * 64


def test_hed_against_opencv_and_run(tmp_path):
    prototxt, caffemodel = write_net(tmp_path, hed(), seed=2)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 40)).astype(np.float32)
    blobs = ["sigmoid-dsn1", "sigmoid-dsn2", "sigmoid-fuse"]
    ours = run_caffezoo(prototxt, caffemodel, {"data": x}, blobs)
    reference = run_opencv(prototxt, caffemodel, {"data": x}, blobs)
    for blob in blobs:
        assert ours[blob].shape == (1, 1, 32, 40)
        assert_close(ours[blob], reference[blob], blob)
    d = model_dir(tmp_path, hed(), seed=2, task="edge detection")
    result = run(d, [picture(tmp_path / "a.png", 40, 32)])  # the card's "edge detection": a map
    (item,) = result.items  # three maps: the fused one is taken
    assert result.task == "segment" and item.edges and item.map.shape == (32, 40)


def test_segnet_against_numpy(tmp_path):
    net = segnet()
    weights = {}
    rng = np.random.default_rng(3)
    for layer in net.to_proto().layer:
        if layer.type == "Convolution":
            c_in = 3 if layer.name == "conv1" else 6
            out = layer.convolution_param.num_output
            weights[layer.name] = [
                (rng.standard_normal((out, c_in, 3, 3)) / np.sqrt(9 * c_in)).astype(np.float32),
                rng.standard_normal(out).astype(np.float32),
            ]
    weights["conv1_bn"] = [
        rng.uniform(0.5, 1.5, (1, 6, 1, 1)).astype(np.float32),
        rng.standard_normal((1, 6, 1, 1)).astype(np.float32),
    ]
    prototxt, caffemodel = write_net(tmp_path, net, weights)
    x = rng.standard_normal((1, 3, 16, 20)).astype(np.float32)
    blobs = ["conv1", "conv1_bn", "pool1", "pool1_mask", "conv2", "upsample1", "prob"]
    ours = run_caffezoo(prototxt, caffemodel, {"data": x}, blobs)
    scale, shift = weights["conv1_bn"]
    assert_close(ours["conv1_bn"], np.maximum(ours["conv1"] * scale + shift, 0), "BN, then ReLU in place")
    pooled, mask = pool_ref(ours["conv1_bn"], (2, 2), (2, 2), (0, 0))
    assert_close(ours["pool1"], pooled, "pool")
    assert np.array_equal(ours["pool1_mask"], mask)
    up = np.zeros((1, 6, 16 * 20), np.float32)
    for c in range(6):
        up[0, c, mask[0, c].astype(int).ravel()] = ours["conv2"][0, c].ravel()
    assert_close(ours["upsample1"], up.reshape(1, 6, 16, 20), "Upsample")
    assert ours["prob"].shape == (1, 4, 16, 20) and np.allclose(ours["prob"].sum(axis=1), 1, atol=1e-5)
