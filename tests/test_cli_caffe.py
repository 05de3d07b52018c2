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
