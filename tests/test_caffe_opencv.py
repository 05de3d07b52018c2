"""OpenCV's Caffe importer, an independent implementation, reads what caffezoo writes and
agrees with caffezoo's shape inference layer by layer."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from caffezoo.caffe.caffemodel import write_caffemodel
from caffezoo.caffe.net import load_net
from caffezoo.caffe.prototxt import parse_prototxt, write_prototxt
from caffezoo.zoo import BUNDLED_DIR

# Odd sizes, so ceil pooling, its padded-window clip, dilation, rectangular
# kernels, groups, deconvolution and crop offsets all matter.
TRICKY = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 35 dim: 33 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "pool2" type: "Pooling" bottom: "conv1" top: "pool2"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "pool3" type: "Pooling" bottom: "conv1" top: "pool3"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 pad: 1 } }
layer { name: "conv2" type: "Convolution" bottom: "data" top: "conv2" convolution_param {
        num_output: 4 kernel_h: 3 kernel_w: 5 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 2 group: 2 } }
layer { name: "conv3" type: "Convolution" bottom: "conv1" top: "conv3"
        convolution_param { num_output: 6 kernel_size: 3 dilation: 2 pad: 2 } }
layer { name: "up" type: "Deconvolution" bottom: "pool1" top: "up"
        convolution_param { num_output: 8 kernel_size: 4 stride: 2 pad: 1 } }
layer { name: "crop" type: "Crop" bottom: "conv1" bottom: "up" top: "crop" crop_param { axis: 2 offset: 0 offset: 1 } }
layer { name: "cat" type: "Concat" bottom: "crop" bottom: "up" top: "cat" }
layer { name: "slice" type: "Slice" bottom: "cat" top: "s1" top: "s2" slice_param { slice_point: 5 } }
layer { name: "sum" type: "Eltwise" bottom: "conv1" bottom: "conv1" top: "sum" }
layer { name: "gpool" type: "Pooling" bottom: "sum" top: "gpool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "flat" type: "Flatten" bottom: "pool2" top: "flat" }
layer { name: "ip" type: "InnerProduct" bottom: "pool3" top: "ip" inner_product_param { num_output: 7 } }
layer { name: "resh" type: "Reshape" bottom: "pool1" top: "resh" reshape_param { shape { dim: 0 dim: -1 dim: 4 } } }
layer { name: "perm" type: "Permute" bottom: "conv1" top: "perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "lrn" type: "LRN" bottom: "pool1" top: "lrn" lrn_param { local_size: 3 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def opencv_shapes(tmp_path, net, options=None):
    """Write ``net`` with random weights our way, let OpenCV read and run it; its output shapes."""
    rng = np.random.default_rng(0)
    prototxt = write_prototxt(tmp_path / "net.prototxt", net.to_proto())
    weights = write_caffemodel(
        tmp_path / "net.caffemodel",
        net.to_proto(),
        lambda layer: [rng.standard_normal(s).astype(np.float32) for s in net[layer.name].param_shapes or []],
        **(options or {}),
    )
    cv = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    cv.enableFusion(False)
    shape = next(iter(net.inputs.values()))
    cv.setInput(rng.standard_normal(shape).astype(np.float32))
    names = [x.name for x in net.layers if x.bottoms]
    return cv, dict(zip(names, (tuple(o.shape) for o in cv.forward(names))))


@pytest.mark.parametrize("options", [{}, {"legacy_shape": True}, {"encoding": "float16"}, {"packed": False}])
def test_opencv_agrees_on_every_shape(tmp_path, options):
    net = load_net(parse_prototxt(TRICKY).message)
    _, theirs = opencv_shapes(tmp_path, net, options)
    ours = {x.name: x.top_shapes[0] for x in net.layers if x.bottoms}
    assert ours == theirs


def test_opencv_reads_our_weights(tmp_path):
    net = load_net(parse_prototxt(TRICKY).message)
    cv, _ = opencv_shapes(tmp_path, net, {"legacy_shape": True})  # V2 nets with 4-D dims, as loadcaffe met
    ours = load_net(parse_prototxt(TRICKY).message, tmp_path / "net.caffemodel")
    for name in ("conv2", "up", "ip"):
        for i, blob in enumerate(ours[name].blobs):
            theirs = cv.getParam(cv.getLayerId(name), i)
            np.testing.assert_array_equal(theirs.reshape(blob.shape), blob)


def test_opencv_agrees_on_googlenet(tmp_path):
    net = load_net(
        BUNDLED_DIR / "bvlc_googlenet" / "deploy.prototxt", input_shapes={"data": (1, 3, 224, 224)}
    )
    _, theirs = opencv_shapes(tmp_path, net)
    assert {n: s for n, s in theirs.items() if "pool" in n or n == "prob"} == {
        x.name: x.top_shapes[0] for x in net.layers if "pool" in x.name or x.name == "prob"
    }
