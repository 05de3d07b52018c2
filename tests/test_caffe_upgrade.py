"""V0 -> V1 -> V2, input fields, data transformation and BatchNorm, by Caffe's rules."""

from __future__ import annotations

import numpy as np
import pytest
from caffe_helpers import small_net, small_weights

from caffezoo.caffe import caffe_pb2
from caffezoo.caffe.caffemodel import read_caffemodel, write_caffemodel
from caffezoo.caffe.prototxt import parse_prototxt, read_prototxt, read_solver
from caffezoo.caffe.upgrade import needs_upgrade, upgrade_file, upgrade_net
from caffezoo.errors import NetError

VGG_STYLE_V1 = """\
name: "VGG_ILSVRC_16_layers"
input: "data"
input_dim: 10
input_dim: 3
input_dim: 224
input_dim: 224
layers {
  bottom: "data" top: "conv1_1" name: "conv1_1" type: CONVOLUTION
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  convolution_param { num_output: 64 pad: 1 kernel_size: 3 }
}
layers { bottom: "conv1_1" top: "conv1_1" name: "relu1_1" type: RELU }
layers { bottom: "conv1_1" top: "pool1" name: "pool1" type: POOLING
         pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { bottom: "pool1" top: "fc8" name: "fc8" type: INNER_PRODUCT param: "shared_w"
         inner_product_param { num_output: 1000 } }
layers { bottom: "fc8" top: "prob" name: "prob" type: SOFTMAX loss_weight: 0.5 }
"""


def test_v1_net_with_input_dims():
    result = upgrade_net(parse_prototxt(VGG_STYLE_V1).message)
    net = result.net
    assert not net.layers and not net.input and not net.input_dim
    assert [(x.name, x.type) for x in net.layer] == [
        ("input", "Input"),
        ("conv1_1", "Convolution"),
        ("relu1_1", "ReLU"),
        ("pool1", "Pooling"),
        ("fc8", "InnerProduct"),
        ("prob", "Softmax"),
    ]
    assert list(net.layer[0].top) == ["data"]
    assert list(net.layer[0].input_param.shape[0].dim) == [10, 3, 224, 224]
    conv = net.layer[1]
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    assert conv.convolution_param.num_output == 64 and list(conv.convolution_param.pad) == [1]
    assert net.layer[4].param[0].name == "shared_w"
    assert list(net.layer[5].loss_weight) == [0.5]
    assert result.origin == [None, 0, 1, 2, 3, 4]
    assert result.steps == ["V1 layers -> V2 layers (5 layers)", "input fields -> Input layer 'input' (data)"]
    assert not needs_upgrade(net)


def test_input_shape_and_missing_shapes():
    net = parse_prototxt('input: "a" input: "b" input_shape { dim: 1 dim: 2 } input_shape { dim: 3 }').message
    upgraded = upgrade_net(net).net
    assert [list(s.dim) for s in upgraded.layer[0].input_param.shape] == [[1, 2], [3]]
    assert list(upgraded.layer[0].top) == ["a", "b"]
    # Inputs without shapes (old caffemodels) are just dropped.
    result = upgrade_net(parse_prototxt('input: "data" layer { name: "x" type: "ReLU" }').message)
    assert [x.name for x in result.net.layer] == ["x"] and not result.net.input
    with pytest.raises(NetError, match="four input_dim"):
        upgrade_net(parse_prototxt('input: "a" input_dim: 1 input_dim: 2').message)


def test_data_transformation_fields_move():
    net = parse_prototxt("""layers { name: "data" type: DATA top: "data"
        data_param { source: "lmdb" batch_size: 5 scale: 0.5 mean_file: "m.binaryproto" crop_size: 7
                     mirror: true } }""").message
    result = upgrade_net(net)
    layer = result.net.layer[0]
    assert layer.type == "Data" and layer.data_param.source == "lmdb"
    t = layer.transform_param
    assert (t.scale, t.mean_file, t.crop_size, t.mirror) == (0.5, "m.binaryproto", 7, True)
    assert not layer.data_param.HasField("scale") and not layer.data_param.HasField("crop_size")
    assert result.steps[0] == "data-layer transformation fields -> transform_param"


def v0_net() -> caffe_pb2.NetParameter:
    net = caffe_pb2.NetParameter(name="v0", input=["data"], input_dim=[1, 3, 32, 32])

    def add(name, kind, bottom, top, **fields):
        layer = net.layers.add(bottom=bottom, top=top)
        layer.layer.name, layer.layer.type = name, kind
        for key, value in fields.items():
            if key == "blobs":
                for blob in value:
                    layer.layer.blobs.add().CopyFrom(blob)
            elif key == "weight_filler":
                layer.layer.weight_filler.CopyFrom(value)
            else:
                setattr(layer.layer, key, value)
        return layer

    add("pad1", "padding", ["data"], ["pad1"], pad=2)
    add(
        "conv1",
        "conv",
        ["pad1"],
        ["conv1"],
        num_output=8,
        kernelsize=5,
        stride=1,
        group=1,
        biasterm=False,
        weight_filler=caffe_pb2.FillerParameter(type="gaussian", std=0.01),
        blobs=[caffe_pb2.BlobProto(num=8, channels=3, height=5, width=5, data=[0.25] * 600)],
    )
    add("relu1", "relu", ["conv1"], ["conv1"])
    add(
        "pool1",
        "pool",
        ["conv1"],
        ["pool1"],
        pool=caffe_pb2.V0LayerParameter.AVE,
        kernelsize=3,
        stride=2,
        num_output=3,
    )  # num_output means nothing to a pool layer: Caffe warns and drops it
    add("norm1", "lrn", ["pool1"], ["norm1"], local_size=3, alpha=0.1, beta=0.5, k=2)
    add("drop1", "dropout", ["norm1"], ["norm1"], dropout_ratio=0.3)
    add("fc", "innerproduct", ["norm1"], ["fc"], num_output=10)
    add("cat", "concat", ["fc", "fc"], ["cat"], concat_dim=1)
    return net


def test_v0_net():
    result = upgrade_net(v0_net())
    net = result.net
    assert [(x.name, x.type) for x in net.layer] == [
        ("input", "Input"),
        ("conv1", "Convolution"),
        ("relu1", "ReLU"),
        ("pool1", "Pooling"),
        ("norm1", "LRN"),
        ("drop1", "Dropout"),
        ("fc", "InnerProduct"),
        ("cat", "Concat"),
    ]
    conv = net.layer[1]
    assert list(conv.bottom) == ["data"]  # rewired past the padding layer...
    p = conv.convolution_param
    assert list(p.pad) == [2] and list(p.kernel_size) == [5] and list(p.stride) == [1]  # ...whose pad it took
    assert (p.num_output, p.bias_term, p.group, p.weight_filler.std) == (8, False, 1, pytest.approx(0.01))
    assert len(conv.blobs) == 1 and conv.blobs[0].data[0] == 0.25  # weights come from V0's own field 50
    pool = net.layer[3].pooling_param
    assert (pool.pool, pool.kernel_size, pool.stride) == (caffe_pb2.PoolingParameter.AVE, 3, 2)
    lrn = net.layer[4].lrn_param
    assert (lrn.local_size, lrn.alpha, lrn.beta, lrn.k) == (3, pytest.approx(0.1), 0.5, 2)
    assert net.layer[5].dropout_param.dropout_ratio == pytest.approx(0.3)
    assert net.layer[7].concat_param.concat_dim == 1
    assert result.origin == [None, 1, 2, 3, 4, 5, 6, 7]
    assert any("num_output" in x and "pool" in x for x in result.warnings)
    assert result.steps[0] == "V0 layers -> V1 layers (7 layers, padding layers folded)"


def test_v0_errors():
    net = v0_net()
    net.layers[2].layer.type = "sparkle"
    with pytest.raises(NetError, match="unknown V0 layer type 'sparkle'"):
        upgrade_net(net)
    net = v0_net()
    net.layers[1].layer.type = "relu"  # padding feeding a relu
    with pytest.raises(NetError, match="only conv and pool"):
        upgrade_net(net)
    net = v0_net()
    net.layers[1].bottom[0] = "nowhere"
    with pytest.raises(NetError, match="unknown bottom blob 'nowhere'"):
        upgrade_net(net)


def test_mixed_layer_and_layers_is_refused():
    net = parse_prototxt('layer { name: "a" type: "ReLU" } layers { name: "b" type: RELU }').message
    with pytest.raises(NetError, match="both `layer`"):
        upgrade_net(net)


def test_batch_norm_params():
    net = parse_prototxt("""layer { name: "bn" type: "BatchNorm"
        param { lr_mult: 1 } param { lr_mult: 1 } param { lr_mult: 1 decay_mult: 3 } }
        layer { name: "bn2" type: "BatchNorm" param { lr_mult: 1 } }""").message
    result = upgrade_net(net)
    assert [(p.lr_mult, p.decay_mult) for p in result.net.layer[0].param] == [(0, 0)] * 3
    assert result.net.layer[1].param[0].lr_mult == 1
    assert result.steps == ["BatchNorm param lr_mult/decay_mult -> 0 (1 layers)"]
    assert net.layer[0].param[0].lr_mult == 1  # the input is left alone


def test_upgrade_prototxt_file(tmp_path):
    src, dst = tmp_path / "old.prototxt", tmp_path / "new.prototxt"
    src.write_text(VGG_STYLE_V1)
    result = upgrade_file(src, dst)
    assert result.changed
    net = read_prototxt(dst)
    assert net.layer[0].type == "Input" and not net.layers
    again = upgrade_file(dst, tmp_path / "again.prototxt")
    assert not again.changed and read_prototxt(tmp_path / "again.prototxt") == net
    with pytest.raises(NetError, match="another file"):
        upgrade_file(src, src)


def test_upgrade_solver_file(tmp_path):
    src, dst = tmp_path / "solver.prototxt", tmp_path / "new_solver.prototxt"
    src.write_text('net: "train_val.prototxt"\nbase_lr: 0.1\nsolver_type: NESTEROV\n')
    assert upgrade_file(src, dst).steps == ["solver_type -> type"]
    assert read_solver(dst).type == "Nesterov"


def test_upgrade_binary_file(tmp_path):
    weights = small_weights()
    src = write_caffemodel(tmp_path / "old.caffemodel", small_net(), weights, version="V1", legacy_shape=True)
    dst = tmp_path / "new.caffemodel"
    result = upgrade_file(src, dst)
    assert "V1 layers -> V2 layers (4 layers)" in result.steps
    with read_caffemodel(src) as old, read_caffemodel(dst) as new:
        assert new.version == "V2"
        assert [(x.name, x.type) for x in new.layers] == [
            ("input", "Input"),
            ("conv", "Convolution"),
            ("relu", "ReLU"),
            ("ip", "InnerProduct"),
            ("prob", "Softmax"),
        ]
        for name in weights:  # weights copied byte for byte, legacy dims and all
            for a, b in zip(old[name].blobs, new[name].blobs):
                assert a.shape == b.shape and a.legacy and b.legacy
                assert np.array_equal(a.data, b.data)
        header = new.net_header()
    assert [(p.lr_mult, p.decay_mult) for p in header.layer[1].param] == [(1, 1), (2, 0)]
    assert list(header.layer[0].input_param.shape[0].dim) == [2, 3, 8, 8]


def test_fork_fields_survive_a_binary_upgrade(tmp_path):
    from caffezoo.caffe import wire as w

    layer = caffe_pb2.LayerParameter(name="det", type="DetectionOutput", bottom=["a"], top=["b"])
    odd = w.length_delimited(147, b"\x08\x15\x10\x01") + w.tag(8266711, w.VARINT) + w.encode_varint(7)
    blob = w.length_delimited(
        7, caffe_pb2.BlobProto(data=[1.5], shape=caffe_pb2.BlobShape(dim=[1])).SerializeToString()
    )
    src = tmp_path / "ssd.caffemodel"
    src.write_bytes(w.length_delimited(100, layer.SerializeToString() + odd + blob))
    upgrade_file(src, tmp_path / "copy.caffemodel")
    out = (tmp_path / "copy.caffemodel").read_bytes()
    assert w.tag(8266711, w.VARINT) + w.encode_varint(7) in out
    with read_caffemodel(tmp_path / "copy.caffemodel") as model:
        assert model["det"].blobs[0].data.tolist() == [1.5]


def test_fp16_weights_load_into_a_net(tmp_path):
    from caffezoo.caffe.net import load_net

    path = write_caffemodel(tmp_path / "fp16.caffemodel", small_net(), small_weights(), encoding="float16")
    net = load_net(small_net(), path)
    assert net["ip"].blobs[0].dtype == np.float16 and net["ip"].blobs[0].shape == (5, 144)
    np.testing.assert_allclose(net["ip"].blobs[0], small_weights()["ip"][0], atol=2e-3)
