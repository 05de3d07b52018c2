"""Net semantics: phases, wiring, in-place layers, splits, weights by name."""

from __future__ import annotations

import numpy as np
import pytest
from caffe_helpers import SMALL_NET, small_net, small_weights

from caffezoo.caffe import caffe_pb2
from caffezoo.caffe.caffemodel import write_caffemodel
from caffezoo.caffe.net import insert_splits, load_net
from caffezoo.caffe.prototxt import load_prototxt, parse_prototxt
from caffezoo.errors import NetError

PHASED = """\
name: "phased"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        data_param { source: "train_lmdb" batch_size: 32 } }
layer { name: "data" type: "Input" top: "data" top: "label" include { phase: TEST }
        input_param { shape { dim: 4 dim: 3 dim: 8 dim: 8 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "deep" type: "ReLU" bottom: "conv" top: "conv" include { min_level: 1 } }
layer { name: "staged" type: "Dropout" bottom: "conv" top: "conv" include { stage: "noisy" } }
layer { name: "quiet" type: "Sigmoid" bottom: "conv" top: "conv" exclude { stage: "noisy" } }
layer { name: "acc" type: "Accuracy" bottom: "conv" bottom: "label" top: "acc" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv" bottom: "label" top: "loss" exclude { phase: TEST } }
"""


def names(net):
    return [layer.name for layer in net.layers]


def test_phase_level_and_stage_rules():
    proto = parse_prototxt(PHASED).message
    assert names(load_net(proto)) == ["data", "conv", "quiet", "acc"]  # TEST is the default
    train = load_net(proto, phase="TRAIN", strict=False)
    assert names(train) == ["data", "conv", "quiet", "loss"] and train["data"].type == "Data"
    assert names(load_net(proto, level=1, stages=["noisy"])) == ["data", "conv", "deep", "staged", "acc"]
    assert load_net(proto).outputs == ["acc"]


def test_include_and_exclude_together_is_an_error(tmp_path):
    path = tmp_path / "both.prototxt"
    path.write_text(
        'layer { name: "x" type: "Input" top: "x" include { phase: TEST } exclude { phase: TRAIN } }'
    )
    with pytest.raises(NetError, match=r"both.prototxt:1: layer 'x': give include rules or exclude rules"):
        load_net(path)


@pytest.mark.parametrize("read_first", [False, True])
def test_bottom_never_produced_names_file_line_and_layer(tmp_path, read_first):
    path = tmp_path / "net.prototxt"
    path.write_text(SMALL_NET.replace('bottom: "conv" top: "ip"', 'bottom: "conv9" top: "ip"'))
    with pytest.raises(
        NetError,
        match=r"net.prototxt:7: layer 'ip' \(InnerProduct\): bottom 'conv9' \(index 0\) "
        r"is not produced",
    ):
        load_net(load_prototxt(path) if read_first else path)  # a file already read keeps its lines


def test_duplicate_tops_only_in_place():
    base = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }\n'
    load_net(parse_prototxt(base + 'layer { name: "r" type: "ReLU" bottom: "data" top: "data" }').message)
    with pytest.raises(NetError, match="top 'data' is already produced"):
        load_net(
            parse_prototxt(
                base + 'layer { name: "again" type: "Input" top: "data" input_param { shape { dim: 1 } } }'
            ).message
        )
    with pytest.raises(NetError, match=r"top\[1\] == bottom\[1\]"):  # in place only at the same index
        load_net(
            parse_prototxt(
                base + 'layer { name: "s" type: "Split" bottom: "data" top: "x" top: "data" }'
            ).message
        )


def test_in_place_flags_and_type_param():
    net = load_net(small_net())
    assert net["relu"].in_place == [True] and net["conv"].in_place == [False]
    assert net["conv"].type_param.num_output == 4
    assert net["relu"].type_param == caffe_pb2.ReLUParameter()
    assert net["prob"].type_param.axis == 1


def test_splits_are_named_as_caffe_names_them():
    text = """layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 } } }
    layer { name: "a" type: "ReLU" bottom: "data" top: "a" }
    layer { name: "b" type: "Sigmoid" bottom: "data" top: "b" }
    layer { name: "c" type: "Eltwise" bottom: "a" bottom: "b" bottom: "data" top: "c" }
    layer { name: "loss" type: "EuclideanLoss" bottom: "c" bottom: "c" top: "loss" loss_weight: 2 }"""
    net = load_net(parse_prototxt(text).message, splits=True)
    assert [(x.name, x.bottoms, x.tops) for x in net.layers] == [
        ("input", [], ["data"]),
        ("data_input_0_split", ["data"], [f"data_input_0_split_{k}" for k in range(3)]),
        ("a", ["data_input_0_split_0"], ["a"]),
        ("b", ["data_input_0_split_1"], ["b"]),
        ("c", ["a", "b", "data_input_0_split_2"], ["c"]),
        ("c_c_0_split", ["c"], ["c_c_0_split_0", "c_c_0_split_1"]),
        ("loss", ["c_c_0_split_0", "c_c_0_split_1"], ["loss"]),
    ]
    # A top used as a loss counts as a reader: with one more reader the loss moves onto the split.
    text2 = text + '\n layer { name: "d" type: "ReLU" bottom: "loss" top: "d" }'
    layers = insert_splits(load_net(parse_prototxt(text2).message).layers)
    split = next(x for x in layers if x.name == "loss_loss_0_split")
    assert list(split.param.loss_weight) == [2, 0]
    assert next(x for x in layers if x.name == "d").bottoms == ["loss_loss_0_split_1"]
    assert not next(x for x in layers if x.name == "loss").param.loss_weight


@pytest.fixture
def weights_file(tmp_path):
    return write_caffemodel(
        tmp_path / "w.caffemodel", small_net(), small_weights(), version="V1", legacy_shape=True
    )


def test_weights_attach_by_name_and_reshape_legacy_dims(weights_file):
    net = load_net(small_net(), weights_file)
    expected = small_weights()
    for name in ("conv", "ip"):
        assert [b.shape for b in net[name].blobs] == [a.shape for a in expected[name]]
        for blob, array in zip(net[name].blobs, expected[name]):
            np.testing.assert_array_equal(blob, array)
    assert net.weight_problems == [] and net.weights_path == str(weights_file)


def test_weight_mismatches_are_named(tmp_path, weights_file):
    text = (
        SMALL_NET.replace("num_output: 5", "num_output: 6")
        .replace('name: "conv" type', 'name: "conv_new" type')
        .replace('name: "relu"', 'name: "relu" param { lr_mult: 1 }')
    )
    net = load_net(parse_prototxt(text).message, weights_file, strict=False)
    messages = sorted(str(p) for p in net.weight_problems)
    assert messages == [
        "layer 'conv': in the caffemodel (2 blobs, Convolution) but not in the net: ignored",
        "layer 'conv_new': no weights in the caffemodel for this Convolution layer (2 blobs expected); Caffe "
        "would use the layer's fillers",
        "layer 'ip': blob 0 is 1x1x5x144 in the caffemodel but the net expects 6x144",
        "layer 'ip': blob 1 is 1x1x1x5 in the caffemodel but the net expects 6",
    ]
    assert [p.fatal for p in sorted(net.weight_problems, key=str)] == [False, False, True, True]
    with pytest.raises(NetError, match="(?s)does not fit.*blob 0 is 1x1x5x144"):
        load_net(parse_prototxt(text).message, weights_file)


def test_blob_count_mismatch_is_fatal(tmp_path, weights_file):
    text = SMALL_NET.replace("num_output: 5 }", "num_output: 5 bias_term: false }")
    with pytest.raises(NetError, match="the caffemodel has 2 blobs, the net expects 1"):
        load_net(parse_prototxt(text).message, weights_file)
