"""The bundled BAIR nets at full size, with random weights: caffezoo against OpenCV, batch of one.

AlexNet exercises LRN and grouped convolutions, GoogLeNet the ceil-rounded
pooling and Concat of its inception modules, R-CNN a net whose output is a
bare InnerProduct. Each writes a caffemodel of the real size (233 MB for
AlexNet and R-CNN) with caffezoo's writer, converts it to an ONNX file, and
compares intermediate blobs as well as the outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from runtime_helpers import assert_close, natural_image, random_weights, run_opencv

from caffezoo.caffe.caffemodel import write_caffemodel
from caffezoo.caffe.prototxt import read_prototxt
from caffezoo.runtime import to_onnx
from caffezoo.zoo import bundled

BLOBS = {
    "bvlc_alexnet": ["norm1", "norm2", "pool5", "fc8", "prob"],
    "bvlc_googlenet": [
        "pool1/norm1",
        "inception_3a/output",
        "inception_4e/output",
        "pool5/7x7_s1",
        "loss3/classifier",
        "prob",
    ],
    "bvlc_reference_rcnn_ilsvrc13": ["norm2", "pool5", "fc-rcnn"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BLOBS))
def test_bundled_net_matches_opencv(name, tmp_path):
    deploy = bundled(name).prototxt("deploy")
    net = read_prototxt(deploy)
    caffemodel = write_caffemodel(tmp_path / f"{name}.caffemodel", net, random_weights(net, seed=11))
    size = net.layer[0].input_param.shape[0].dim[2]
    image = natural_image(np.random.default_rng(5), size, size).astype(np.float32)
    x = (image[:, :, ::-1] - np.array([104, 117, 123], np.float32)).transpose(2, 0, 1)[None].copy()

    path = to_onnx(deploy, tmp_path / f"{name}.onnx", weights=caffemodel, outputs=BLOBS[name])
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = dict(zip(BLOBS[name], session.run(BLOBS[name], {"data": x})))
    reference = run_opencv(deploy, caffemodel, {"data": x}, BLOBS[name])
    for blob in BLOBS[name]:
        assert np.abs(reference[blob]).max() > 0, f"{blob}: all zeros, the comparison would prove nothing"
        assert_close(ours[blob], reference[blob], f"{name}: {blob}")
