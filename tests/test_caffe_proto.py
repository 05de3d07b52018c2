"""The project's caffe.proto: the committed caffe_pb2.py is what it generates, and the
numbers that make files readable by Caffe are Caffe's."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from caffezoo.caffe import caffe_pb2

PROTO_DIR = Path(caffe_pb2.__file__).parent


def embedded_descriptor(source: str) -> bytes:
    """The FileDescriptorProto bytes a generated _pb2 module registers."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            return ast.literal_eval(node.args[0])
    raise AssertionError("no AddSerializedFile(...) call in the generated module")


def test_committed_module_matches_proto(tmp_path):
    # protoc's version changes the module's boilerplate, not the descriptor it
    # embeds: compare that, so any grpcio-tools can check the committed file.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={tmp_path}",
            "caffe.proto",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    fresh = embedded_descriptor((tmp_path / "caffe_pb2.py").read_text())
    committed = embedded_descriptor((PROTO_DIR / "caffe_pb2.py").read_text())
    if fresh != committed:
        a, b = descriptor_pb2.FileDescriptorProto(), descriptor_pb2.FileDescriptorProto()
        a.ParseFromString(committed)
        b.ParseFromString(fresh)
        pytest.fail(
            "caffe_pb2.py is stale; run `make proto`.\n"
            f"committed has {len(a.message_type)} messages, caffe.proto {len(b.message_type)}"
        )


def number(message, field):
    return message.DESCRIPTOR.fields_by_name[field].number


@pytest.mark.parametrize(
    "message,field,expected",
    [
        (caffe_pb2.NetParameter, "name", 1),
        (caffe_pb2.NetParameter, "layers", 2),
        (caffe_pb2.NetParameter, "input", 3),
        (caffe_pb2.NetParameter, "input_dim", 4),
        (caffe_pb2.NetParameter, "input_shape", 8),
        (caffe_pb2.NetParameter, "layer", 100),
        (caffe_pb2.LayerParameter, "blobs", 7),
        (caffe_pb2.LayerParameter, "include", 8),
        (caffe_pb2.LayerParameter, "transform_param", 100),
        (caffe_pb2.LayerParameter, "convolution_param", 106),
        (caffe_pb2.LayerParameter, "input_param", 143),
        (caffe_pb2.LayerParameter, "clip_param", 148),
        (caffe_pb2.V1LayerParameter, "name", 4),
        (caffe_pb2.V1LayerParameter, "type", 5),
        (caffe_pb2.V1LayerParameter, "blobs", 6),
        (caffe_pb2.V1LayerParameter, "param", 1001),
        (caffe_pb2.V1LayerParameter, "transform_param", 36),
        (caffe_pb2.V1LayerParameter, "layer", 1),
        (caffe_pb2.V0LayerParameter, "blobs", 50),
        (caffe_pb2.V0LayerParameter, "concat_dim", 65),
        (caffe_pb2.BlobProto, "data", 5),
        (caffe_pb2.BlobProto, "shape", 7),
        (caffe_pb2.BlobProto, "double_data", 8),
        (caffe_pb2.BlobProto, "raw_data_type", 10),
        (caffe_pb2.BlobProto, "raw_data", 12),
        (caffe_pb2.ConvolutionParameter, "dilation", 18),
        (caffe_pb2.PoolingParameter, "round_mode", 13),
        (caffe_pb2.SolverParameter, "net", 24),
        (caffe_pb2.SolverParameter, "weights", 42),
    ],
)
def test_field_numbers_are_caffes(message, field, expected):
    assert number(message, field) == expected


def test_packing_follows_caffe():
    # Only the blob arrays and shape dims are packed; every other repeated number is not.
    packed = {f.name for f in caffe_pb2.BlobProto.DESCRIPTOR.fields if f.GetOptions().packed}
    assert packed == {"data", "diff", "double_data", "double_diff"}
    assert caffe_pb2.BlobShape.DESCRIPTOR.fields_by_name["dim"].GetOptions().packed
    for message, field in [
        (caffe_pb2.NetParameter, "input_dim"),
        (caffe_pb2.ConvolutionParameter, "pad"),
        (caffe_pb2.TransformationParameter, "mean_value"),
    ]:
        assert not message.DESCRIPTOR.fields_by_name[field].GetOptions().packed


def test_v1_enum_values_are_caffes():
    types = caffe_pb2.V1LayerParameter.LayerType
    assert (types.Value("CONVOLUTION"), types.Value("DECONVOLUTION"), types.Value("THRESHOLD")) == (4, 39, 31)
