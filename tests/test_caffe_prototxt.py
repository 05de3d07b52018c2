"""Text prototxt and solver files: what Caffe accepts, errors with line and column."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caffezoo.caffe import caffe_pb2
from caffezoo.caffe.prototxt import (
    load_prototxt,
    parse_prototxt,
    read_prototxt,
    read_solver,
    to_text,
    write_prototxt,
)
from caffezoo.errors import PrototxtError

QUIRKY = """\
# comments, single quotes, ';' and ',' separators, Python booleans, 'shape: {'
name: 'quirky'
layer {
  name: "data" type: "Input" top: "data"
  input_param { shape: { dim: 1 dim: 3 dim: 8 dim: 8 } }
}
layer {
  name: 'conv'; type: "Convolution", bottom: "data" top: "conv"
  convolution_param { num_output: 2 kernel_size: 3 bias_term: False }
}
layer { name: "norm" type: "LRN" bottom: "conv" top: "norm"
        lrn_param { norm_region: WITHIN_CHANNEL; local_size: 3 } }
"""


def test_reads_what_caffe_accepts(tmp_path):
    path = tmp_path / "quirky.prototxt"
    path.write_text(QUIRKY)
    net = read_prototxt(path)
    assert net.name == "quirky"
    assert [layer.name for layer in net.layer] == ["data", "conv", "norm"]
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 3, 8, 8]
    assert net.layer[1].convolution_param.bias_term is False
    assert net.layer[2].lrn_param.norm_region == caffe_pb2.LRNParameter.WITHIN_CHANNEL


def test_layer_lines_are_kept(tmp_path):
    path = tmp_path / "quirky.prototxt"
    path.write_text(QUIRKY)
    parsed = load_prototxt(path)
    assert parsed.lines["layer"] == [3, 7, 11]
    assert parsed.lines["name"] == [2]


@pytest.mark.parametrize(
    "text,line,col,words",
    [
        ('layer {\n  name: "conv\n}\n', 2, 9, "String missing ending quote"),
        ('layer {\n  name: "a"\n', 2, 9, 'Expected "}"'),  # at the end of the last token
        ('layer { name: "a" }\n}\n', 2, 1, "Expected identifier"),
        ("layer {\n  pooling_param { pool: MAXIMUM }\n}", 2, 25, "has no value named MAXIMUM"),
        (
            'layer {\n  name: "x"\n  norm_param { across_spatial: false }\n  foo_param { a: 1 }\n}',
            4,
            3,
            "unknown field 'foo_param' in caffe.LayerParameter",
        ),
        ("name: 5\n", 1, 7, "Expected string"),
    ],
)
def test_errors_say_file_line_column(tmp_path, text, line, col, words):
    path = tmp_path / "bad.prototxt"
    path.write_text(text)
    with pytest.raises(PrototxtError) as e:
        read_prototxt(path)
    assert str(e.value).startswith(f"{path}:{line}:{col}: ")
    assert words in str(e.value)
    assert (e.value.line, e.value.column) == (line, col)


def test_unknown_field_error_points_at_the_skip_option(tmp_path):
    path = tmp_path / "fork.prototxt"
    path.write_text('layer { name: "x" type: "Foo" foo_param { a: 1 } }\n')
    with pytest.raises(PrototxtError, match="skip_unknown=True"):
        read_prototxt(path)


def test_skip_unknown_names_every_skipped_block(tmp_path):
    path = tmp_path / "fork.prototxt"
    path.write_text(
        'layer { name: "a" type: "Foo"\n  foo_param { a: 1 nested { b: "}" } }\n}\n'
        'layer { name: "b" type: "ReLU"\n  convolution_param { bogus: [1, 2] num_output: 3 }\n}\n'
    )
    parsed = load_prototxt(path, skip_unknown=True)
    assert [(s.path, s.line, s.column) for s in parsed.skipped] == [
        ("layer[0].foo_param", 2, 3),
        ("layer[1].convolution_param.bogus", 5, 23),
    ]
    net = parsed.message
    assert [layer.name for layer in net.layer] == ["a", "b"]
    assert net.layer[1].convolution_param.num_output == 3


def test_fork_parameters_parse_by_name():
    text = """layer { name: "p" type: "PriorBox" bottom: "f" bottom: "data" top: "p"
      prior_box_param { min_size: 30.0 max_size: 60.0 aspect_ratio: 2 flip: true clip: false
                        variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 step: 8 } }
    layer { name: "i" type: "Interp" bottom: "x" top: "i" interp_param { zoom_factor: 8 } }
    layer { name: "bn" type: "BN" bottom: "x" top: "x" bn_param { bn_mode: INFERENCE } }"""
    net = parse_prototxt(text).message
    assert list(net.layer[0].prior_box_param.variance) == pytest.approx([0.1, 0.1, 0.2, 0.2])
    assert net.layer[1].interp_param.zoom_factor == 8
    assert net.layer[2].bn_param.bn_mode == caffe_pb2.BNParameter.INFERENCE


@pytest.mark.parametrize("skip", [False, True])
def test_nesting_bomb_is_an_error_not_a_crash(skip):
    bomb = "layer { " + "a { " * 50_000 + "}" * 50_000 + " }"
    with pytest.raises(PrototxtError):
        parse_prototxt(bomb, path="bomb.prototxt", skip_unknown=skip)


def test_binary_file_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "weights.prototxt"
    path.write_bytes(b"\x12\x07\n\x05conv1\x00\x00\x01" * 10)
    with pytest.raises(PrototxtError, match="binary file.*caffemodel"):
        read_prototxt(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(PrototxtError, match="no such file"):
        read_prototxt(tmp_path / "nope.prototxt")
    with pytest.raises(PrototxtError, match="is a directory"):
        read_prototxt(tmp_path)


def test_latin1_comment_is_accepted(tmp_path):
    path = tmp_path / "latin1.prototxt"
    path.write_bytes('# r\xe9seau\nname: "n"\n'.encode("latin-1"))
    assert read_prototxt(path).name == "n"


def test_solver_type_is_upgraded(tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text('net: "train_val.prototxt"\nbase_lr: 0.01\nsolver_type: ADAM\n')
    solver = read_solver(path)
    assert solver.type == "Adam" and not solver.HasField("solver_type")
    path.write_text('net: "x"\nsolver_type: ADAM\ntype: "Adam"\n')
    with pytest.raises(PrototxtError, match="both `solver_type`"):
        read_solver(path)


def test_writer_round_trips_in_caffe_layout(tmp_path):
    net = parse_prototxt(QUIRKY).message
    out = write_prototxt(tmp_path / "out.prototxt", net, header="written by a test\nsecond line")
    text = out.read_text()
    assert text.startswith('# written by a test\n# second line\nname: "quirky"\nlayer {\n  name: "data"\n')
    assert "    bias_term: false\n" in text
    assert read_prototxt(out) == net
    assert to_text(net) == text.split("\n", 2)[2]
    assert [p.name for p in tmp_path.iterdir()] == ["out.prototxt"]  # no temporary left behind


@given(st.binary(max_size=600))
@settings(max_examples=300, deadline=None)
def test_looks_binary_counts_control_bytes_as_the_rule_says(head):
    from caffezoo.caffe._files import looks_binary

    controls = sum(b < 9 or 13 < b < 32 for b in head)
    assert looks_binary(head) == (b"\0" in head or controls > max(2, len(head) // 100))
