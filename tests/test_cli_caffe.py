"""`caffezoo inspect` and `caffezoo upgrade` from the command line."""

from __future__ import annotations

import json

from caffe_helpers import SMALL_NET, small_net, small_weights

from caffezoo.caffe.caffemodel import read_caffemodel, write_caffemodel
from caffezoo.caffe.prototxt import parse_prototxt, read_prototxt


def write(tmp_path, text=SMALL_NET, name="deploy.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_inspect_table_and_totals(cli, tmp_path):
    r = cli("inspect", write(tmp_path))
    assert r.code == 0, r.stderr
    assert "2x4x6x6" in r.stdout and "2x5" in r.stdout
    # conv: 4*3*3*3 + 4 = 112; ip: 5*144 + 5 = 725
    assert "5 layers, 837 parameters" in r.stdout


def test_inspect_json(cli, tmp_path):
    r = cli("inspect", write(tmp_path), "--json", "--input", "data=1,3,10,10")
    data = json.loads(r.stdout)
    assert [x["name"] for x in data["layers"]] == ["data", "conv", "relu", "ip", "prob"]
    assert data["inputs"] == {"data": [1, 3, 10, 10]}
    assert data["layers"][1]["top_shapes"] == [[1, 4, 8, 8]]
    assert data["totals"]["params"] == 4 * 27 + 4 + 5 * 256 + 5
    assert data["outputs"] == ["prob"] and data["problems"] == []
    assert data["layers"][2]["in_place"] == [True]


def test_inspect_with_fitting_weights(cli, tmp_path):
    weights = write_caffemodel(tmp_path / "w.caffemodel", small_net(), small_weights(), version="V1")
    r = cli("inspect", write(tmp_path), "--weights", weights)
    assert r.code == 0 and "the weights fit the net" in r.stdout


def test_inspect_names_every_mismatch(cli, tmp_path):
    weights = write_caffemodel(tmp_path / "w.caffemodel", small_net(), small_weights())
    text = SMALL_NET.replace("num_output: 5", "num_output: 20").replace('"conv"', '"conv2"')
    r = cli("inspect", write(tmp_path, text), "--weights", weights, "--json")
    assert r.code == 1
    problems = {(p["layer"], p["message"], p["fatal"]) for p in json.loads(r.stdout)["problems"]}
    assert ("ip", "blob 0 is 5x144 in the caffemodel but the net expects 20x144", True) in problems
    assert ("conv", "in the caffemodel (2 blobs, Convolution) but not in the net: ignored", False) in problems
    assert any(layer == "conv2" and "no weights in the caffemodel" in m for layer, m, _ in problems)


def test_inspect_bad_prototxt_is_one_line(cli_process, tmp_path):
    path = write(
        tmp_path,
        'layer {\n  name: "x" type: "Input" top: "x"\n  bogus_param { a: 1 }\n'
        "  input_param { shape { dim: 1 } }\n}\n",
    )
    r = cli_process("inspect", path)
    assert r.code == 1 and "Traceback" not in r.stderr
    assert f"{path}:3:3: unknown field 'bogus_param'" in r.stderr
    r = cli_process("inspect", path, "--skip-unknown")
    assert r.code == 0 and "skipped unknown field" in r.stdout


def test_inspect_prototxt_passed_as_weights(cli, tmp_path):
    path = write(tmp_path)
    r = cli("inspect", path, "--weights", path)
    assert r.code == 1 and "is a text file (a prototxt?)" in r.stderr


def test_upgrade_prototxt_and_caffemodel(cli, tmp_path):
    v1 = (
        'name: "old" input: "data" input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 4\n'
        'layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" blobs_lr: 1 blobs_lr: 2 '
        "convolution_param { num_output: 2 kernel_size: 3 } }"
    )
    r = cli("upgrade", write(tmp_path, v1, "old.prototxt"), tmp_path / "new.prototxt")
    assert r.code == 0 and "V1 layers -> V2 layers (1 layers)" in r.stdout
    net = read_prototxt(tmp_path / "new.prototxt")
    assert [x.type for x in net.layer] == ["Input", "Convolution"]

    old = write_caffemodel(tmp_path / "old.caffemodel", small_net(), small_weights(), version="V1")
    r = cli("upgrade", old, tmp_path / "new.caffemodel", "--quiet")
    assert r.code == 0 and r.stdout == ""
    with read_caffemodel(tmp_path / "new.caffemodel") as model:
        assert model.version == "V2" and model.layers[0].type == "Input"

    r = cli("upgrade", tmp_path / "new.prototxt", tmp_path / "same.prototxt")
    assert "already up to date" in r.stdout
    assert (
        read_prototxt(tmp_path / "same.prototxt")
        == parse_prototxt((tmp_path / "new.prototxt").read_text()).message
    )


def test_upgrade_into_a_folder_that_cannot_take_it_is_one_line(cli_process, tmp_path):
    caffemodel = write_caffemodel(tmp_path / "old.caffemodel", small_net(), small_weights(), version="V1")
    for source in (write(tmp_path), caffemodel):
        r = cli_process("upgrade", source, tmp_path / "nowhere" / "new")
        assert r.code == 1
        assert r.stderr == f"error: {tmp_path / 'nowhere' / 'new'}: cannot write: No such file or directory\n"
        (tmp_path / "taken").mkdir(exist_ok=True)
        r = cli_process("upgrade", source, tmp_path / "taken")
        assert r.code == 1 and r.stderr == f"error: {tmp_path / 'taken'}: cannot write: Is a directory\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy.prototxt", "old.caffemodel", "taken"]


def test_inspect_piped_prints_whole_rows(cli, tmp_path):
    """Not a terminal (the cli fixture captures stdout): no 80-column squeeze, no ellipsis."""
    long_name = "feature_pyramid_level_three_expansion_convolution_with_a_long_name"
    text = SMALL_NET.replace('name: "conv"', f'name: "{long_name}"').replace(
        'top: "conv"', f'top: "{long_name}"'
    )
    text = text.replace('bottom: "conv"', f'bottom: "{long_name}"')
    r = cli("inspect", write(tmp_path, text))
    assert r.code == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith(f"│ {long_name} "))
    assert f"data -> {long_name}" in row and "2x4x6x6" in row and "…" not in r.stdout
    assert len(row) > 120


def test_inspect_of_a_detection_net_counts_layers_without_weights_as_zero(cli, tmp_path):
    from test_runtime_ssd import _ssd

    from caffezoo.caffe.prototxt import to_text

    r = cli("inspect", write(tmp_path, to_text(_ssd().to_proto())), "--json")
    data = json.loads(r.stdout)
    rows = {x["name"]: x for x in data["layers"]}
    assert rows["detection_out"]["top_shapes"] == [None]  # its size depends on the detections
    assert (rows["detection_out"]["params"], rows["detection_out"]["macs"]) == (0, 0)
    assert rows["a_priors"]["params"] == 0 and rows["mbox_priorbox"]["top_shapes"] == [[1, 2, 5120]]
    convolutions = [x for x in data["layers"] if x["type"] == "Convolution"]
    assert data["totals"]["params"] == sum(x["params"] for x in convolutions) > 0
    assert data["totals"]["macs"] == sum(x["macs"] for x in convolutions) > 0
    r = cli("inspect", write(tmp_path, to_text(_ssd().to_proto())))
    assert "24 layers, 5,480 parameters, 829.4K MACs" in r.stdout and "?" not in r.stdout.splitlines()[-1]


def test_layers_after_an_unknown_shape_still_count_no_parameters(tmp_path):
    """A Python layer's output is unknowable; the parameter-free layers after it count 0, a
    convolution after it stays unknown (its weights depend on the channels it gets)."""
    from caffezoo.caffe.builder import NetBuilder
    from caffezoo.caffe.net import load_net

    n = NetBuilder("after_python")
    data = n.Input("data", shape=dict(dim=[1, 3, 8, 8]))
    py = n.Python("py", data, python_param=dict(module="m", layer="L"))
    relu = n.ReLU("relu", py)
    n.Convolution("conv", relu, num_output=2, kernel_size=1)
    net = load_net(n.to_proto(), strict=False)
    by_name = {x.name: x for x in net.layers}
    assert by_name["py"].params is None and by_name["relu"].params == 0 and by_name["relu"].macs == 0
    assert by_name["conv"].params is None and net.params is None


def test_no_parameters_lists_only_known_layer_types():
    from caffezoo.caffe.layertypes import KNOWN_TYPES
    from caffezoo.caffe.shapes import ELEMENTWISE_MACS, NO_PARAMETERS, RULES

    assert NO_PARAMETERS <= set(RULES) and NO_PARAMETERS <= KNOWN_TYPES and ELEMENTWISE_MACS <= NO_PARAMETERS
    assert not {"Convolution", "InnerProduct", "Scale", "BatchNorm", "PReLU", "Python"} & NO_PARAMETERS
