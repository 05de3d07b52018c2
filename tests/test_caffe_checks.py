"""`caffezoo validate` checks prototxt files: syntax, types, wiring, inputs, solvers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from model_helpers import DEPLOY, GOOD_FRONT_MATTER, write_model

from caffezoo.validate import validate, validate_model
from caffezoo.zoo import bundled_names

INPUT = (
    'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
)


def errors(path):
    return [(p.path.rsplit("/", 1)[-1], p.line, p.message) for p in validate(path) if p.severity == "error"]


@pytest.mark.parametrize("name", bundled_names())
def test_bundled_models_have_no_errors(name):
    assert [str(p) for p in validate_model(name) if p.severity == "error"] == []


def test_good_model_has_no_prototxt_errors(tmp_path):
    assert errors(write_model(tmp_path / "m", GOOD_FRONT_MATTER, files={"deploy.prototxt": DEPLOY})) == []


def test_syntax_error_with_line_and_column(tmp_path):
    m = write_model(
        tmp_path / "m", GOOD_FRONT_MATTER, files={"deploy.prototxt": INPUT + 'layer {\n  name: "x\n}\n'}
    )
    assert errors(m) == [("deploy.prototxt", 3, "column 9: String missing ending quote: '\"x'")]


def test_every_unknown_field_is_named(tmp_path):
    text = INPUT + (
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n'
        "  convolution_param { num_output: 2 kernel_size: 3 kernal: 4 }\n  fancy_param { a: 1 }\n}\n"
    )
    assert errors(write_model(tmp_path / "m", GOOD_FRONT_MATTER, files={"deploy.prototxt": text})) == [
        (
            "deploy.prototxt",
            3,
            "column 52: unknown field 'layer[1].convolution_param.kernal'; BVLC Caffe "
            "rejects it (a Caffe fork's parameter?)",
        ),
        (
            "deploy.prototxt",
            4,
            "column 3: unknown field 'layer[1].fancy_param'; BVLC Caffe rejects it "
            "(a Caffe fork's parameter?)",
        ),
    ]


def test_types_and_wiring(tmp_path):
    text = (
        INPUT
        + """\
layer { name: "c" type: "Convolutoin" bottom: "data" top: "c" }
layer { name: "r" type: "ReLU" bottom: "dta" top: "r" }
layer { name: "s" type: "Sigmoid" bottom: "data" top: "c" }
"""
    )
    assert errors(write_model(tmp_path / "m", GOOD_FRONT_MATTER, files={"deploy.prototxt": text})) == [
        ("deploy.prototxt", 2, "layer 'c': unknown layer type 'Convolutoin' (did you mean 'Convolution'?)"),
        ("deploy.prototxt", 3, "layer 'r': bottom 'dta' (index 0) is not produced by any earlier layer"),
        (
            "deploy.prototxt",
            4,
            "layer 's': top 'c' is already produced by an earlier layer (only in-place "
            "reuse, top[0] == bottom[0], is allowed)",
        ),
    ]


def test_shapes_caffe_cannot_compute(tmp_path):
    text = (
        INPUT
        + 'layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { kernel_size: 9 } }\n'
    )
    [(name, line, message)] = errors(
        write_model(tmp_path / "m", GOOD_FRONT_MATTER, files={"deploy.prototxt": text})
    )
    assert (name, line) == ("deploy.prototxt", 2) and "larger than the padded input" in message


def test_deploy_inputs_need_shapes(tmp_path):
    files = {"deploy.prototxt": 'input: "data"\nlayer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n'}
    problems = errors(write_model(tmp_path / "a", GOOD_FRONT_MATTER, files=files))
    assert (
        "deploy.prototxt",
        1,
        "input 'data' has no shape: add input_shape { dim: ... } (or four input_dim) per input",
    ) in problems
    files = {"deploy.prototxt": 'layer { name: "data" type: "Input" top: "data" }\n'}
    assert errors(write_model(tmp_path / "b", GOOD_FRONT_MATTER, files=files)) == [
        ("deploy.prototxt", 1, "Input layer 'data' has no input_param { shape { ... } }")
    ]


def test_old_formats_validate_after_upgrade(tmp_path):
    v1 = (
        'input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'
        'layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" '
        "convolution_param { num_output: 2 kernel_size: 3 } }\n"
    )
    assert errors(write_model(tmp_path / "m", GOOD_FRONT_MATTER, files={"deploy.prototxt": v1})) == []


def test_train_phase_problems_are_found_too(tmp_path):
    text = """\
layer { name: "data" type: "Data" top: "data" top: "label" data_param { source: "x" batch_size: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "labels" top: "loss" include { phase: TRAIN } }
"""
    assert errors(write_model(tmp_path / "m", GOOD_FRONT_MATTER, files={"train_val.prototxt": text})) == [
        (
            "train_val.prototxt",
            4,
            "layer 'loss': bottom 'labels' (index 1) is not produced by any earlier layer (TRAIN phase)",
        )
    ]


def test_solver_net_path(tmp_path):
    files = {
        "deploy.prototxt": DEPLOY,
        "train_val.prototxt": DEPLOY,
        "solver.prototxt": 'net: "models/m/train_val.prototxt"\nbase_lr: 0.01\n',
    }
    assert errors(write_model(tmp_path / "m", GOOD_FRONT_MATTER, files=files)) == []
    files["solver.prototxt"] = 'base_lr: 0.01\nnet: "models/m/trainval.prototxt"\n'
    m = write_model(tmp_path / "n", GOOD_FRONT_MATTER, files=files)
    assert errors(m) == []  # the deploy net still works: a warning, not an error
    assert [(Path(p.path).name, p.line, p.message) for p in validate(m) if p.path.endswith(".prototxt")] == [
        (
            "solver.prototxt",
            2,
            "net: 'models/m/trainval.prototxt' is not in the model directory "
            "(no trainval.prototxt beside the solver)",
        )
    ]
    files["solver.prototxt"] = "base_lr: 0.01\nmax_iter: 10\n"
    assert errors(write_model(tmp_path / "o", GOOD_FRONT_MATTER, files=files)) == [
        ("solver.prototxt", None, 'the solver names no net: add `net: "train_val.prototxt"`')
    ]


def test_cli_reports_prototxt_problems(cli, tmp_path):
    m = write_model(
        tmp_path / "m",
        GOOD_FRONT_MATTER,
        files={"deploy.prototxt": INPUT + 'layer { name: "r" type: "ReLU" bottom: "x" top: "r" }\n'},
    )
    r = cli("validate", m, "--json")
    assert r.code == 1
    [entry] = json.loads(r.stdout)
    assert {
        "path": str(m / "deploy.prototxt"),
        "line": 2,
        "severity": "error",
        "message": "layer 'r': bottom 'x' (index 0) is not produced by any earlier layer",
    } in entry["problems"]
