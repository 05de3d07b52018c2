"""Nets and weights the Caffe-format tests share."""

from __future__ import annotations

import numpy as np

from caffezoo.caffe.prototxt import parse_prototxt

SMALL_NET = """\
name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def small_net():
    return parse_prototxt(SMALL_NET).message


def small_weights(seed: int = 0) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        "conv": [rng.standard_normal((4, 3, 3, 3), np.float32), rng.standard_normal(4, np.float32)],
        "ip": [rng.standard_normal((5, 144), np.float32), rng.standard_normal(5, np.float32)],
    }
