"""Sessions of tiny nets run on one thread (waking a worker costs more than their forward pass)."""

from __future__ import annotations

import numpy as np
import pytest
from runtime_helpers import write_net

from caffezoo.caffe.builder import NetBuilder
from caffezoo.errors import RuntimeInputError
from caffezoo.runtime import load
from caffezoo.runtime.session import TINY_MACS


def conv_net(size: int, channels: int) -> NetBuilder:
    n = NetBuilder("conv")
    x = n.Input("data", shape=dict(dim=[2, 3, size, size]))
    n.Convolution("out", x, num_output=channels, kernel_size=3)
    return n


@pytest.mark.parametrize(
    "size, channels, tiny",
    [(12, 10, True), (224, 64, False)],  # 2.7 thousand and 86 million multiply-adds per image
)
def test_tiny_nets_get_one_thread(tmp_path, size, channels, tiny):
    prototxt, caffemodel = write_net(tmp_path, conv_net(size, channels))
    net = load(prototxt, weights=caffemodel)
    macs = int(net.session.get_modelmeta().custom_metadata_map["caffezoo.macs_per_image"])
    assert macs == (size - 2) ** 2 * channels * 27 and (macs < TINY_MACS) == tiny
    threads = net.session.get_session_options().intra_op_num_threads
    assert threads == 1 if tiny else threads == 0  # 0: onnxruntime's own choice
    assert (
        load(prototxt, weights=caffemodel, threads=2).session.get_session_options().intra_op_num_threads == 2
    )


def test_the_fast_path_still_checks_every_input(tmp_path):
    prototxt, caffemodel = write_net(tmp_path, conv_net(12, 4))
    net = load(prototxt, weights=caffemodel)
    x = np.zeros((1, 3, 12, 12), np.float32)
    assert net.forward(data=x)["out"].shape == (1, 4, 10, 10)
    assert net.forward(data=x.astype(np.float64))["out"].shape == (1, 4, 10, 10)  # converted
    assert net.forward(data=np.asfortranarray(x))["out"].shape == (1, 4, 10, 10)
    for bad, message in [
        (dict(data=x, extra=x), "unknown input 'extra'"),
        (dict(), "input 'data' is missing"),
        (dict(data=x[:, :, :11]), "expected shape Nx3x12x12, got 1x3x11x12"),
        (dict(data=x[:0]), "expected shape Nx3x12x12, got 0x3x12x12"),
        (dict(data=x.astype(str)), "expected numbers"),
    ]:
        with pytest.raises(RuntimeInputError, match=message):
            net.forward(**bad)
