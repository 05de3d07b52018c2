"""Fuzzing both readers: whatever the bytes, only caffezoo's own errors, never a crash or a hang.

pytest-timeout bounds each test, so a hang fails it; hypothesis' per-example
deadline is off because this machine's speed is not what is being tested.
"""

from __future__ import annotations

import pytest
from caffe_helpers import SMALL_NET, small_net, small_weights
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caffezoo.caffe.caffemodel import read_caffemodel, write_caffemodel
from caffezoo.caffe.net import load_net
from caffezoo.caffe.prototxt import parse_prototxt
from caffezoo.caffe.upgrade import upgrade_net
from caffezoo.errors import CaffemodelError, NetError, PrototxtError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Pieces of real prototxts, so the fuzzer reaches past the first token.
TOKENS = st.sampled_from(
    [
        "layer",
        "layers",
        "{",
        "}",
        "<",
        ">",
        ":",
        ";",
        ",",
        "[",
        "]",
        '"',
        "'",
        "#",
        "\n",
        " ",
        "name",
        "type",
        "bottom",
        "top",
        '"data"',
        '"conv"',
        '"Convolution"',
        '"Pooling"',
        '"Input"',
        '"Reshape"',
        '"Crop"',
        '"Slice"',
        '"Concat"',
        '"Interp"',
        '"ArgMax"',
        "CONVOLUTION",
        "input",
        "input_dim",
        "input_shape",
        "dim",
        "shape",
        "convolution_param",
        "pooling_param",
        "reshape_param",
        "slice_param",
        "interp_param",
        "num_output",
        "kernel_size",
        "stride",
        "pad",
        "group",
        "axis",
        "slice_point",
        "zoom_factor",
        "shrink_factor",
        "pool",
        "MAX",
        "AVE",
        "include",
        "phase",
        "TEST",
        "TRAIN",
        "0",
        "1",
        "3",
        "-1",
        "-7",
        "99999999999999999999",
        "1e40",
        "nan",
        "inf",
        "true",
        "False",
        "\\",
        "\\x",
        "unknown_param",
        "a",
    ]
)
PROTOTXT_TEXT = st.one_of(
    st.text(max_size=400),
    st.lists(TOKENS, max_size=120).map(" ".join),
    st.tuples(st.integers(0, len(SMALL_NET)), st.integers(0, 40), st.text(max_size=20)).map(
        lambda t: SMALL_NET[: t[0]] + t[2] + SMALL_NET[t[0] + t[1] :]
    ),
)


@FUZZ
@given(text=PROTOTXT_TEXT, skip=st.booleans())
@pytest.mark.timeout(300)
def test_prototxt_reader_and_net_loader(text, skip):
    try:
        parsed = parse_prototxt(text, path="fuzz.prototxt", skip_unknown=skip)
    except PrototxtError:
        return
    try:
        upgrade_net(parsed.message)
        net = load_net(parsed.message, strict=False)
    except NetError:
        return
    for layer in net.layers:  # shapes computed or a problem recorded, nothing else
        assert len(layer.top_shapes) <= len(layer.tops)


@FUZZ
@given(data=st.binary(max_size=2000))
@pytest.mark.timeout(300)
def test_prototxt_reader_on_bytes(data):
    try:
        parse_prototxt(data, path="fuzz.prototxt", skip_unknown=True)
    except PrototxtError:
        pass


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    out = {}
    for options in ({}, {"version": "V1", "legacy_shape": True}, {"encoding": "float16"}, {"packed": False}):
        path = tmp_path_factory.mktemp("m") / "m.caffemodel"
        out[str(options)] = write_caffemodel(path, small_net(), small_weights(), **options).read_bytes()
    return list(out.values())


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    for position, delete, insert in edits:
        position %= len(data) + 1
        data = data[:position] + insert + data[position + delete :]
    return data


EDITS = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 8), st.binary(max_size=8)), max_size=6)


@FUZZ
@given(which=st.integers(0, 3), edits=EDITS, cut=st.integers(0, 10_000))
@pytest.mark.timeout(300)
def test_caffemodel_reader_on_mutated_files(tmp_path, model_bytes, which, edits, cut):
    data = mutate(model_bytes[which], edits)
    data = data[: max(1, len(data) - cut % 50)] if cut % 3 == 0 else data
    check_caffemodel(tmp_path, data)


@FUZZ
@given(data=st.binary(max_size=3000))
@pytest.mark.timeout(300)
def test_caffemodel_reader_on_random_bytes(tmp_path, data):
    check_caffemodel(tmp_path, data)


def check_caffemodel(tmp_path, data: bytes) -> None:
    path = tmp_path / "fuzz.caffemodel"
    path.write_bytes(data)
    try:
        model = read_caffemodel(path)
    except CaffemodelError:
        return
    with model:
        for layer in model.layers:
            for blob in layer.blobs:
                assert blob.data is None or blob.data.size == blob.count
        model.net_header()
        try:
            load_net(small_net(), model, strict=False)
        except NetError:
            pass
