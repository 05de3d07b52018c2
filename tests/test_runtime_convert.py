"""caffezoo.runtime.convert: the ONNX it writes, and every way a conversion must refuse clearly."""

from __future__ import annotations

import math
import re

import numpy as np
import onnx
import pytest
from runtime_helpers import assert_close, random_weights, run_caffezoo, run_opencv, write_net

from caffezoo.caffe.builder import NetBuilder
from caffezoo.caffe.caffemodel import write_caffemodel
from caffezoo.errors import CaffemodelError, ConversionError, NetError
from caffezoo.runtime import to_onnx
from caffezoo.runtime.convert import export


def resnet_block() -> NetBuilder:
    """In-place layers, BatchNorm + Scale, a residual sum, a conv applied to two bottoms, shared params."""
    n = NetBuilder("block")
    data = n.Input("data", shape=dict(dim=[2, 3, 12, 12]))
    x = n.Convolution("conv1", data, num_output=8, kernel_size=3, pad=1, bias_term=False)
    n.BatchNorm("bn1", x, in_place=True)
    n.Scale("scale1", x, bias_term=True, in_place=True)
    n.ReLU("relu1", x, in_place=True)
    y = n.Convolution(
        "conv2", x, num_output=8, kernel_size=3, pad=1, param=[dict(name="shared_w"), dict(name="shared_b")]
    )
    z = n.Convolution(
        "conv3", y, num_output=8, kernel_size=3, pad=1, param=[dict(name="shared_w"), dict(name="shared_b")]
    )
    s = n.Eltwise("sum", x, z)
    n.ReLU("relu2", s, in_place=True)
    p = n.Pooling("pool", s, pool="MAX", kernel_size=3, stride=2)
    n.InnerProduct("fc", p, num_output=5)
    n.Softmax("prob", "fc")
    return n


def _block_weights(n: NetBuilder) -> dict:
    weights = random_weights(n.to_proto(), seed=2)
    weights["conv3"] = weights["conv2"]  # shared by name: Caffe saves the same values in both layers
    return weights


def test_names_checker_and_shapes(tmp_path):
    n = resnet_block()
    prototxt, caffemodel = write_net(tmp_path, n, _block_weights(n))
    path = to_onnx(prototxt, tmp_path / "block.onnx", weights=caffemodel)
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.shape_inference.infer_shapes(onnx.load(path), strict_mode=True)
    nodes = {node.name for node in model.graph.node}
    assert {
        "conv1",
        "bn1",
        "scale1",
        "relu1",
        "conv2",
        "conv3",
        "sum",
        "relu2",
        "pool",
        "fc",
        "prob",
    } <= nodes
    # A blob rewritten in place is blob@layer until its last writer, which gets the plain name.
    outputs = {o for node in model.graph.node for o in node.output}
    assert {
        "conv1@conv1",
        "conv1@bn1",
        "conv1@scale1",
        "conv1",
        "sum@sum",
        "sum",
        "pool",
        "fc",
        "prob",
    } <= outputs
    assert [i.name for i in model.graph.input] == ["data"] and [o.name for o in model.graph.output] == [
        "prob"
    ]
    # Every Caffe blob's shape, as ONNX infers it, is the one Caffe computes (batch symbolic).
    from caffezoo.caffe.net import load_net

    net = load_net(prototxt)
    inferred = {v.name: v.type.tensor_type.shape for v in [*model.graph.value_info, *model.graph.output]}
    for layer in net.layers[1:]:
        for top, shape in zip(layer.tops, layer.top_shapes):
            dims = inferred[top].dim
            assert dims[0].dim_param == "batch", top
            assert [d.dim_value for d in dims[1:]] == list(shape[1:]), top


def test_initializers_stored_once(tmp_path):
    n = resnet_block()
    prototxt, caffemodel = write_net(tmp_path, n, _block_weights(n))
    model = to_onnx(prototxt, weights=caffemodel)
    names = [i.name for i in model.graph.initializer]
    weights = [i for i in model.graph.initializer if i.name.endswith((".weight", ".bias"))]
    # conv3 shares conv2's named params: one weight and one bias for the two layers.
    assert "conv2.weight" in names and "conv3.weight" not in names
    assert len(weights) == len({i.raw_data for i in weights})
    uses = [i for node in model.graph.node if node.name == "conv3" for i in node.input]
    assert uses[1:] == ["conv2.weight", "conv2.bias"]


def test_conv_on_two_bottoms_shares_its_weights(tmp_path):
    n = NetBuilder("twin")
    a = n.Input("a", shape=dict(dim=[1, 3, 6, 6]))
    b = n.Input("b", shape=dict(dim=[1, 3, 6, 6]))
    n.Convolution("conv", a, b, tops=["ya", "yb"], num_output=4, kernel_size=3)
    prototxt, caffemodel = write_net(tmp_path, n)
    model = to_onnx(prototxt, weights=caffemodel)
    assert sorted(i.name for i in model.graph.initializer) == ["conv.bias", "conv.weight"]
    rng = np.random.default_rng(0)
    inputs = {
        "a": rng.standard_normal((1, 3, 6, 6), np.float32),
        "b": rng.standard_normal((1, 3, 6, 6), np.float32),
    }
    ours = run_caffezoo(prototxt, caffemodel, inputs, ["ya", "yb"])
    swapped = run_caffezoo(prototxt, caffemodel, {"a": inputs["b"], "b": inputs["a"]}, ["ya", "yb"])
    assert_close(ours["ya"], swapped["yb"])
    single = NetBuilder("single")
    single.Convolution("conv", single.Input("a", shape=dict(dim=[1, 3, 6, 6])), num_output=4, kernel_size=3)
    one, weights = write_net(tmp_path, single, random_weights(n.to_proto()), name="single")
    assert_close(ours["ya"], run_opencv(one, weights, {"a": inputs["a"]}, ["conv"])["conv"])


def test_streamed_file_is_the_in_memory_model(tmp_path):
    n = resnet_block()
    prototxt, caffemodel = write_net(tmp_path, n, _block_weights(n))
    path = to_onnx(prototxt, tmp_path / "streamed.onnx", weights=caffemodel)
    in_memory = to_onnx(prototxt, weights=caffemodel)
    assert onnx.load(path).SerializeToString() == in_memory.SerializeToString()


@pytest.mark.parametrize("opset", [13, 18, onnx.defs.onnx_opset_version()])
def test_other_opsets_give_the_same_numbers(opset, tmp_path):
    n = NetBuilder("ops")
    x = n.Input("data", shape=dict(dim=[2, 4, 6, 6]))
    x = n.MVN("mvn", x)
    x = n.Normalize("norm", x, across_spatial=False, channel_shared=False)
    x = n.Reduction("sumsq", x, operation="SUMSQ", axis=2)
    n.ArgMax("arg", x, axis=1, out_max_val=True)
    prototxt, caffemodel = write_net(tmp_path, n)
    inputs = {"data": np.random.default_rng(0).standard_normal((2, 4, 6, 6), np.float32)}
    reference = run_caffezoo(prototxt, caffemodel, inputs, ["arg"], opset=17)["arg"]
    model = to_onnx(prototxt, weights=caffemodel, opset=opset)
    onnx.checker.check_model(model, full_check=True)
    assert_close(run_caffezoo(prototxt, caffemodel, inputs, ["arg"], opset=opset)["arg"], reference)


def test_opset_out_of_range(tmp_path):
    prototxt, caffemodel = write_net(tmp_path, resnet_block())
    with pytest.raises(ConversionError, match="opset 11: caffezoo writes opsets 13 to"):
        to_onnx(prototxt, weights=caffemodel, opset=11)


def test_caffe_era_encodings_convert_alike(tmp_path):
    """V1 files with legacy 4-D blob shapes, double and half precision weights: the same net."""
    n = NetBuilder("old")
    x = n.Input("data", shape=dict(dim=[1, 3, 8, 8]))
    x = n.Convolution("conv", x, num_output=4, kernel_size=3)
    x = n.ReLU("relu", x, in_place=True)
    n.InnerProduct("fc", x, num_output=3)
    weights = random_weights(n.to_proto())
    prototxt, caffemodel = write_net(tmp_path, n, weights)
    inputs = {"data": np.random.default_rng(0).standard_normal((1, 3, 8, 8), np.float32)}
    reference = run_caffezoo(prototxt, caffemodel, inputs, ["fc"])["fc"]
    half = {k: [b.astype(np.float16).astype(np.float32) for b in v] for k, v in weights.items()}
    _, rounded = write_net(tmp_path, n, half, name="rounded")
    half_reference = run_caffezoo(prototxt, rounded, inputs, ["fc"])["fc"]
    for i, options in enumerate(
        [
            dict(version="V1", legacy_shape=True),
            dict(encoding="float64"),
            dict(encoding="float16"),
            dict(packed=False),
        ]
    ):
        _, other = write_net(tmp_path, n, weights, name=f"v{i}", **options)
        expected = half_reference if options.get("encoding") == "float16" else reference
        assert_close(run_caffezoo(prototxt, other, inputs, ["fc"])["fc"], expected, str(options))


# ------------------------------------------------------------ refusing, clearly


def test_unsupported_layers_are_all_listed_before_any_work(tmp_path):
    n = NetBuilder("odd")
    data = n.Input("data", shape=dict(dim=[1, 3, 8, 8]))
    a = n.Python("proposal", data, python_param=dict(module="rpn", layer="ProposalLayer"))
    b = n.Python("other_python", data, python_param=dict(module="x", layer="Y"))
    c = n.Pooling("stochastic", data, pool="STOCHASTIC", kernel_size=2, stride=2)
    n.MultiStageMeanfield("crf", data, data)
    n.Filter("filter", data, data)
    del a, b, c
    prototxt = tmp_path / "odd.prototxt"
    prototxt.write_text(n.to_text())
    with pytest.raises(ConversionError) as e:  # the weights do not even exist: the check comes first
        to_onnx(prototxt, weights=tmp_path / "missing.caffemodel")
    message = str(e.value)
    assert "5 problems" in message
    # Python layers run code of their own: only Faster R-CNN's proposal layer (rpn.proposal_layer) converts
    assert "layer 'proposal' (Python): a Python layer (rpn.ProposalLayer) runs code of its own" in message
    assert "layer 'other_python' (Python): a Python layer (x.Y) runs code of its own" in message
    assert "layer type 'MultiStageMeanfield' (CRF-RNN: mean-field iterations" in message
    assert (
        "layer type 'Filter' (data-dependent output sizes, used while training), used by layer 'filter'"
        in message
    )
    assert "layer 'stochastic' (Pooling): pool: STOCHASTIC" in message


def test_missing_weights_are_named(tmp_path):
    n = NetBuilder("partial")
    x = n.Input("data", shape=dict(dim=[1, 3, 8, 8]))
    x = n.Convolution("conv", x, num_output=4, kernel_size=3, weight_filler=dict(type="gaussian", std=0.01))
    x = n.Scale("scale", x)
    n.InnerProduct("fc", x, num_output=3)
    weights = random_weights(n.to_proto())
    prototxt, caffemodel = write_net(tmp_path, n, {"fc": weights["fc"]})
    _only(caffemodel, n, {"fc": weights["fc"]})
    with pytest.raises(ConversionError) as e:
        to_onnx(prototxt, weights=caffemodel)
    assert "layer 'conv' (Convolution): no weights (2 blobs: 4x3x3x3, 4)" in str(e.value)
    assert "layer 'scale' (Scale): no weights (1 blobs: 4)" in str(e.value)
    assert "--fill-missing" in str(e.value)
    # Caffe's fillers stand in on request, but only deterministic ones.
    with pytest.raises(ConversionError, match="layer 'conv' .*the random filler 'gaussian'"):
        to_onnx(prototxt, weights=caffemodel, fill_missing=True)


def _only(caffemodel, n: NetBuilder, weights: dict) -> None:
    """Rewrite ``caffemodel`` with just the layers that have weights (as when a net gained layers)."""
    from caffezoo.caffe import caffe_pb2

    partial = caffe_pb2.NetParameter(name="partial")
    partial.layer.extend(
        layer for layer in n.to_proto().layer if layer.name in weights or layer.type == "Input"
    )
    write_caffemodel(caffemodel, partial, weights)


def test_fill_missing_uses_constant_and_bilinear_fillers(tmp_path):
    n = NetBuilder("fcn")
    x = n.Input("data", shape=dict(dim=[1, 2, 4, 4]))
    x = n.Scale("scale", x, filler=dict(type="constant", value=2.5))
    up = n.Deconvolution(
        "up",
        x,
        convolution_param=dict(
            num_output=2,
            group=2,
            kernel_size=4,
            stride=2,
            pad=1,
            bias_term=False,
            weight_filler=dict(type="bilinear"),
        ),
    )
    n.PReLU("prelu", up)
    prototxt, caffemodel = write_net(tmp_path, n, {})
    _only(caffemodel, n, {})
    inputs = {"data": np.random.default_rng(0).standard_normal((1, 2, 4, 4), np.float32)}
    ours = run_caffezoo(prototxt, caffemodel, inputs, ["prelu"], fill_missing=True)["prelu"]
    # Caffe's BilinearFiller, as its test spells it out, and PReLU's default slope 0.25.
    f = math.ceil(4 / 2)
    c = (2 * f - 1 - f % 2) / (2 * f)
    kernel = np.array([[(1 - abs(x / f - c)) * (1 - abs(y / f - c)) for x in range(4)] for y in range(4)])
    weights = {
        "scale": [np.full(2, 2.5, np.float32)],
        "up": [np.tile(kernel, (2, 1, 1, 1)).astype(np.float32)],
        "prelu": [np.full(2, 0.25, np.float32)],
    }
    _, filled = write_net(tmp_path, n, weights, name="filled")
    assert_close(ours, run_opencv(prototxt, filled, inputs, ["prelu"])["prelu"])


def test_fill_missing_refuses_a_bilinear_filler_on_a_non_square_kernel(tmp_path):
    n = NetBuilder("fcn")
    x = n.Input("data", shape=dict(dim=[1, 2, 4, 4]))
    n.Deconvolution(
        "up",
        x,
        convolution_param=dict(
            num_output=2,
            group=2,
            kernel_h=4,
            kernel_w=2,
            stride=2,
            bias_term=False,
            weight_filler=dict(type="bilinear"),
        ),
    )
    prototxt, caffemodel = write_net(tmp_path, n, {})
    _only(caffemodel, n, {})
    with pytest.raises(
        ConversionError,
        match=r"layer 'up' \(Deconvolution\): no weights for blob 0, and the "
        r"bilinear filler needs a square kernel, not 2x1x4x2",
    ):
        to_onnx(prototxt, weights=caffemodel, fill_missing=True)


def test_weights_that_do_not_fit_are_named_per_layer(tmp_path):
    n = NetBuilder("net")
    x = n.Input("data", shape=dict(dim=[1, 3, 8, 8]))
    x = n.Convolution("conv", x, num_output=4, kernel_size=3)
    n.InnerProduct("fc", x, num_output=3)
    prototxt, _ = write_net(tmp_path, n)
    other = NetBuilder("net")
    y = other.Input("data", shape=dict(dim=[1, 3, 8, 8]))
    y = other.Convolution("conv", y, num_output=5, kernel_size=3)
    other.InnerProduct("fc", y, num_output=3)
    _, caffemodel = write_net(tmp_path, other, name="other")
    with pytest.raises(NetError) as e:
        to_onnx(prototxt, weights=caffemodel)
    assert "layer 'conv': blob 0 is 5x3x3x3 in the caffemodel but the net expects 4x3x3x3" in str(e.value)
    assert "layer 'fc': blob 0 is 3x180 in the caffemodel but the net expects 3x144" in str(e.value)


def test_truncated_caffemodel(tmp_path):
    prototxt, caffemodel = write_net(tmp_path, resnet_block())
    data = caffemodel.read_bytes()
    caffemodel.write_bytes(data[: len(data) // 2])
    with pytest.raises(CaffemodelError, match="damaged|truncated"):
        to_onnx(prototxt, weights=caffemodel)


def test_data_layer_needs_a_shape(tmp_path):
    n = NetBuilder("train")
    data, label = n.Data("data", tops=["data", "label"], source="lmdb", batch_size=4)
    x = n.InnerProduct("fc", data, num_output=3)
    n.SoftmaxWithLoss("loss", x, label)
    prototxt, caffemodel = write_net(
        tmp_path, n, {"fc": [np.zeros((3, 12), np.float32), np.zeros(3, np.float32)]}
    )
    with pytest.raises(ConversionError, match="the shape of 'data' is unknown.*input_shapes="):
        to_onnx(prototxt, weights=caffemodel)
    model = to_onnx(prototxt, weights=caffemodel, input_shapes={"data": [4, 3, 2, 2]})
    assert [o.name for o in model.graph.output] == ["fc"]  # the loss (and the label) are training-only


@pytest.mark.parametrize(
    "shapes, message",
    [
        (
            {"image": [1, 3, 12, 12]},
            r"input_shapes: no input blob named 'image' \(the net's inputs: 'data'\)",
        ),
        ({"data": [0, 3, 12, 12]}, r"input_shapes: 'data' needs positive sizes, not 0x3x12x12"),
        ({"data": [-1, 3, 12, 12]}, r"input_shapes: 'data' needs positive sizes, not -1x3x12x12"),
        ({"data": []}, r"input_shapes: 'data' needs positive sizes, not scalar"),
    ],
)
def test_input_shapes_that_fit_no_input(tmp_path, shapes, message):
    prototxt, caffemodel = write_net(tmp_path, resnet_block())
    with pytest.raises(NetError, match=message):
        to_onnx(prototxt, weights=caffemodel, input_shapes=shapes)


def test_a_layer_refused_while_converting_is_named_with_its_line(tmp_path):
    n = NetBuilder("net")
    x = n.Input("data", shape=dict(dim=[1, 2, 6, 6]))
    n.Pooling("pool", x, pool="AVE", kernel_size=2, stride=3)  # its last window starts past the input
    prototxt, caffemodel = write_net(tmp_path, n)
    with pytest.raises(
        ConversionError, match=rf"^{re.escape(str(prototxt))}:\d+: layer 'pool' \(Pooling\): a window "
    ):
        to_onnx(prototxt, weights=caffemodel)


def test_unknown_output_blob(tmp_path):
    prototxt, caffemodel = write_net(tmp_path, resnet_block())
    with pytest.raises(ConversionError, match="no blob named 'nope'"):
        to_onnx(prototxt, weights=caffemodel, outputs=["nope"])


def test_export_writes_next_to_the_working_directory(tmp_path, monkeypatch):
    prototxt, caffemodel = write_net(tmp_path, resnet_block())
    monkeypatch.chdir(tmp_path)
    converted = export(prototxt, weights=caffemodel)
    info = converted.summary()
    assert info["path"] == "net.onnx" and (tmp_path / "net.onnx").stat().st_size == info["bytes"]
    assert info["inputs"] == {"data": ["batch", 3, 12, 12]} and info["dynamic_batch"]
    assert info["parameters"] == sum(
        np.prod(i.dims) for i in onnx.load(tmp_path / "net.onnx").graph.initializer
    )


def test_v1_prototxt_with_legacy_input_fields(tmp_path):
    """VGG's gist style: V1 ``layers`` with enum types and ``input`` + ``input_dim``."""
    text = """name: "VGG_style"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 12 input_dim: 12
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 } }
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "fc" type: INNER_PRODUCT bottom: "pool1" top: "fc" inner_product_param { num_output: 3 } }
layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }
"""
    prototxt = tmp_path / "vgg_deploy.prototxt"
    prototxt.write_text(text)
    from caffezoo.caffe.net import load_net

    net = load_net(prototxt).to_proto()
    caffemodel = write_caffemodel(
        tmp_path / "vgg.caffemodel", net, random_weights(net), version="V1", legacy_shape=True
    )
    inputs = {"data": np.random.default_rng(0).standard_normal((1, 3, 12, 12), np.float32)}
    ours = run_caffezoo(prototxt, caffemodel, inputs, ["prob"])["prob"]
    assert_close(ours, run_opencv(prototxt, caffemodel, inputs, ["prob"])["prob"])
