"""Binary .caffemodel files: every era and encoding, any size, no copies, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from caffe_helpers import small_net, small_weights

from caffezoo.caffe import caffe_pb2
from caffezoo.caffe import wire as w
from caffezoo.caffe.caffemodel import read_caffemodel, write_caffemodel
from caffezoo.errors import CaffemodelError


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"version": "V1"},
        {"legacy_shape": True},
        {"encoding": "float64"},
        {"encoding": "float16"},
        {"packed": False},
        {"version": "V1", "legacy_shape": True, "packed": False, "encoding": "float64"},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default",
)
def test_round_trip(tmp_path, options):
    weights = small_weights()
    path = write_caffemodel(tmp_path / "m.caffemodel", small_net(), weights, **options)
    with read_caffemodel(path) as model:
        assert model.version == options.get("version", "V2")
        names = [layer.name for layer in model.layers]
        # V1 files had no Input layer: the input is a net field again.
        assert names == (
            ["conv", "relu", "ip", "prob"]
            if model.version == "V1"
            else ["data", "conv", "relu", "ip", "prob"]
        )
        assert model["conv"].type == "Convolution" and model["ip"].bottoms == ["conv"]
        for name, arrays in weights.items():
            blobs = model[name].blobs
            assert len(blobs) == len(arrays)
            for blob, expected in zip(blobs, arrays):
                assert blob.legacy == options.get("legacy_shape", False)
                tolerance = 1e-3 if options.get("encoding") == "float16" else 0
                np.testing.assert_allclose(blob.data.reshape(expected.shape), expected, atol=tolerance)
        if options.get("legacy_shape"):
            assert model["ip"].blobs[0].shape == (1, 1, 5, 144)
            assert model["ip"].blobs[1].shape == (1, 1, 1, 5)


def test_agrees_with_protobufs_own_parser(tmp_path):
    path = write_caffemodel(
        tmp_path / "m.caffemodel", small_net(), small_weights(), version="V1", legacy_shape=True
    )
    reference = caffe_pb2.NetParameter()
    reference.ParseFromString(path.read_bytes())
    with read_caffemodel(path) as model:
        assert model.inputs == list(reference.input) == ["data"]
        for ours, theirs in zip(model.layers, reference.layers):
            assert (ours.name, ours.bottoms, ours.tops) == (
                theirs.name,
                list(theirs.bottom),
                list(theirs.top),
            )
            for blob, proto in zip(ours.blobs, theirs.blobs):
                assert blob.shape == (proto.num, proto.channels, proto.height, proto.width)
                assert blob.data.ravel().tolist() == list(proto.data)


def test_blobs_view_the_mapped_file(tmp_path):
    path = write_caffemodel(tmp_path / "m.caffemodel", small_net(), small_weights())
    model = read_caffemodel(path)
    data = model["ip"].blobs[0].data
    assert not data.flags.writeable and not data.flags.owndata
    # The view reaches the file's bytes: the float32 values at their offset in the file.
    raw = path.read_bytes()
    offset = raw.find(small_weights()["ip"][0].tobytes())
    assert offset > 0
    assert np.shares_memory(data, np.frombuffer(model._buf, np.uint8))
    model.close()
    assert data.sum() == pytest.approx(small_weights()["ip"][0].sum(), rel=1e-5)  # still valid after close


def test_net_header_keeps_parameters_but_no_weights(tmp_path):
    path = write_caffemodel(tmp_path / "m.caffemodel", small_net(), small_weights(), version="V1")
    with read_caffemodel(path) as model:
        header = model.net_header()
    assert len(header.layers) == 4 and not any(layer.blobs for layer in header.layers)
    assert list(header.layers[0].blobs_lr) == [1, 2] and list(header.layers[0].weight_decay) == [1, 0]
    assert header.layers[0].convolution_param.num_output == 4


def blob_bytes(**fields) -> bytes:
    return caffe_pb2.BlobProto(**fields).SerializeToString()


def v2_model(*layers: bytes) -> bytes:
    return b"".join(w.length_delimited(100, layer) for layer in layers)


def test_diff_only_blob_is_reported_not_crashed(tmp_path):
    layer = caffe_pb2.LayerParameter(name="c3d", type="Convolution")
    layer.blobs.add(diff=[1.0, 2.0], shape=caffe_pb2.BlobShape(dim=[2]))
    path = tmp_path / "diff.caffemodel"
    path.write_bytes(v2_model(layer.SerializeToString()))
    with read_caffemodel(path) as model:
        blob = model["c3d"].blobs[0]
    assert blob.data is None and "only `diff`" in blob.note


def test_a_blob_without_dims_is_zero_axis_as_in_caffe(tmp_path):
    # Caffe writes a shared PReLU slope or a `num_axes: 0` Scale factor with no dims at all.
    layer = caffe_pb2.LayerParameter(name="prelu", type="PReLU")
    layer.blobs.add(data=[0.25])
    layer.blobs.add(data=[1.0, 2.0])  # no dims but several values: read as a vector
    path = tmp_path / "scalar.caffemodel"
    path.write_bytes(v2_model(layer.SerializeToString()))
    with read_caffemodel(path) as model:
        scalar, vector = model["prelu"].blobs
        assert scalar.shape == () and float(scalar.data) == 0.25
        assert vector.shape == (2,)


def test_packed_data_in_several_chunks_is_joined(tmp_path):
    chunk = w.length_delimited(5, np.arange(3, dtype="<f4").tobytes())
    blob = w.length_delimited(7, w.length_delimited(1, w.encode_varint(6))) + chunk + chunk
    path = tmp_path / "chunks.caffemodel"
    path.write_bytes(v2_model(w.length_delimited(1, b"x") + w.length_delimited(7, blob)))
    with read_caffemodel(path) as model:
        assert model["x"].blobs[0].data.tolist() == [0, 1, 2, 0, 1, 2]


def test_v0_nested_layers_and_their_blobs(tmp_path):
    net = caffe_pb2.NetParameter(name="v0", input=["data"], input_dim=[1, 3, 4, 4])
    pad = net.layers.add(bottom=["data"], top=["pad1"])
    pad.layer.name, pad.layer.type, pad.layer.pad = "pad1", "padding", 1
    conv = net.layers.add(bottom=["pad1"], top=["conv1"])
    conv.layer.name, conv.layer.type = "conv1", "conv"
    conv.layer.blobs.add(num=2, channels=3, height=1, width=1, data=[1, 2, 3, 4, 5, 6])
    path = tmp_path / "v0.caffemodel"
    path.write_bytes(net.SerializeToString())
    with read_caffemodel(path) as model:
        assert model.version == "V0"
        assert [(x.name, x.type) for x in model.layers] == [("pad1", "padding"), ("conv1", "Convolution")]
        assert model["conv1"].blobs[0].data.ravel().tolist() == [1, 2, 3, 4, 5, 6]


def test_fork_fields_are_skipped(tmp_path):
    # OpenCV's detection_output_param is 147 (BVLC's swish_param), PSPNet's interp_param
    # is 143 (BVLC's input_param), py-faster-rcnn uses 8266711: names and blobs still read.
    layer = caffe_pb2.LayerParameter(name="odd", type="Interp", bottom=["a"], top=["b"]).SerializeToString()
    layer += w.length_delimited(143, w.tag(3, w.VARINT) + w.encode_varint(8))
    layer += w.length_delimited(147, b"\x08\x15\x10\x01")
    layer += w.tag(8266711, w.VARINT) + w.encode_varint(7)
    layer += w.tag(11, w.START_GROUP) + w.tag(1, w.VARINT) + b"\x01" + w.tag(11, w.END_GROUP)
    layer += w.length_delimited(7, blob_bytes(data=[0.5], shape=caffe_pb2.BlobShape(dim=[1])))
    path = tmp_path / "fork.caffemodel"
    path.write_bytes(v2_model(layer))
    with read_caffemodel(path) as model:
        odd = model["odd"]
        assert (odd.type, odd.bottoms, odd.tops) == ("Interp", ["a"], ["b"])
        assert odd.blobs[0].data.tolist() == [0.5]


@pytest.fixture
def small_file(tmp_path):
    return write_caffemodel(tmp_path / "m.caffemodel", small_net(), small_weights()).read_bytes()


def test_every_truncation_is_a_clear_error(tmp_path, small_file):
    path = tmp_path / "cut.caffemodel"
    failures = 0
    for cut in range(1, len(small_file)):
        path.write_bytes(small_file[:cut])
        try:
            read_caffemodel(path).close()
        except CaffemodelError as e:
            assert str(path) in str(e)
            failures += 1
    # A cut exactly between two top-level records is a valid (shorter) file; anything else fails.
    assert failures >= len(small_file) - 10


@pytest.mark.parametrize(
    "content,words",
    [
        (b"", "empty"),
        (b'name: "AlexNet"\nlayer {\n  name: "data"\n}\n', "text file"),
        (
            caffe_pb2.BlobProto(num=1, channels=3, height=2, width=2, data=[0] * 12).SerializeToString(),
            "no layers found",
        ),
        (b"\x0b" * 100_000, "never closed"),  # 100k nested groups: no recursion to blow up
        (w.tag(100, w.BYTES) + w.encode_varint(1 << 60) + b"xx", "truncated"),
        (w.tag(100, w.BYTES) + b"\xff" * 11, "varint"),
        (b"\x0fgarbage", "invalid wire type"),
        (
            v2_model(w.length_delimited(7, blob_bytes(shape=caffe_pb2.BlobShape(dim=[3]), data=[1.0]))),
            "needs 3 values but 1 are stored",
        ),
        (v2_model(w.length_delimited(7, blob_bytes(raw_data=b"abc", raw_data_type=2))), "not a multiple"),
    ],
)
def test_bad_files(tmp_path, content, words):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(content)
    with pytest.raises(CaffemodelError, match=words):
        read_caffemodel(path)


def test_missing_file(tmp_path):
    with pytest.raises(CaffemodelError, match="no such file"):
        read_caffemodel(tmp_path / "none.caffemodel")


def test_failed_write_leaves_nothing(tmp_path):
    def weights(layer):
        if layer.name == "ip":
            raise RuntimeError("disk on fire")
        return None

    with pytest.raises(RuntimeError):
        write_caffemodel(tmp_path / "m.caffemodel", small_net(), weights)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_file_over_300_mb(tmp_path):
    """Far past protobuf's 64 MB limit; read without copying the weights."""
    rows, cols = 9216, 8500  # 313 MB of float32
    net = caffe_pb2.NetParameter(name="big")
    net.layer.add(name="data", type="Input", top=["data"]).input_param.shape.add(dim=[1, cols])
    net.layer.add(
        name="fc",
        type="InnerProduct",
        bottom=["data"],
        top=["fc"],
        inner_product_param=caffe_pb2.InnerProductParameter(num_output=rows),
    )

    def value(index):  # a cheap, position-dependent pattern
        return ((index * 2654435761) % 1000003).astype(np.float32)

    weight = np.empty(rows * cols, np.float32)
    step = 1 << 22
    for start in range(0, weight.size, step):
        weight[start : start + step] = value(np.arange(start, min(start + step, weight.size), dtype=np.int64))
    checksum = float(weight.sum(dtype=np.float64))
    path = write_caffemodel(
        tmp_path / "big.caffemodel", net, {"fc": [weight.reshape(rows, cols), np.ones(rows, np.float32)]}
    )
    del weight
    assert path.stat().st_size > 300_000_000
    with read_caffemodel(path) as model:
        data = model["fc"].blobs[0].data
        assert data.shape == (rows, cols) and not data.flags.owndata
        probe = np.array([0, 1, cols, rows * cols // 2 + 17, rows * cols - 1])
        assert data.ravel()[probe].tolist() == value(probe).tolist()
        assert float(data.sum(dtype=np.float64)) == checksum
