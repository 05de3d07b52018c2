"""`caffezoo convert` and `caffezoo run` as a user meets them: output, JSON, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
from PIL import Image
from runtime_helpers import natural_image
from test_runtime_session import model_dir

from caffezoo.caffe.builder import NetBuilder


def _images(tmp_path, count=3):
    rng = np.random.default_rng(9)
    paths = []
    for i in range(count):
        paths.append(tmp_path / f"pic{i}.jpg")
        Image.fromarray(natural_image(rng, 32, 40)).save(paths[-1])
    return paths


def test_convert_to_a_file_with_json(tmp_path, cli):
    d = model_dir(tmp_path)
    out = tmp_path / "small.onnx"
    result = cli("convert", d, "-o", out, "--opset", "13", "--json")
    assert result.code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["path"] == str(out) and info["opset"] == 13 and info["outputs"] == {"prob": [None, 4]}
    assert info["inputs"] == {"data": ["batch", 3, 16, 16]}
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 13


def test_convert_prints_a_summary_and_defaults_to_the_model_name(tmp_path, cli_process):
    d = model_dir(tmp_path)
    result = cli_process("convert", d, "--fixed-batch", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert (tmp_path / "small_model.onnx").is_file()
    assert "wrote small_model.onnx" in result.stdout and "inputs: data 10x3x16x16" in result.stdout
    assert "fixed batch size: a fixed batch size was asked for" in result.stdout


def test_convert_to_a_place_it_cannot_write(tmp_path, cli_process):
    d = model_dir(tmp_path)
    (tmp_path / "taken").mkdir()
    for target, why in [
        (tmp_path / "no" / "such" / "dir.onnx", "No such file or directory"),
        (tmp_path / "taken", "Is a directory"),
    ]:
        result = cli_process("convert", d, "-o", target)
        assert result.code == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip() == f"error: {target}: cannot write: {why}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small_model", "taken"]  # no temporary file left
    assert not list((tmp_path / "taken").iterdir())


def test_convert_refuses_input_shapes_that_fit_no_input(tmp_path, cli_process):
    d = model_dir(tmp_path)
    for value, message in [
        ("image=1,3,16,16", "no input blob named 'image' (the net's inputs: 'data')"),
        ("data=0,3,16,16", "'data' needs positive sizes, not 0x3x16x16"),
    ]:
        result = cli_process("convert", d, "-o", tmp_path / "out.onnx", "--input", value)
        assert result.code == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip() == f"error: input_shapes: {message}"
    assert not (tmp_path / "out.onnx").exists()


def test_convert_without_weights_says_how_to_get_them(cli_process):
    result = cli_process("convert", "bvlc_googlenet")
    assert result.code == 1 and "Traceback" not in result.stderr
    assert "the weights are not downloaded; `caffezoo download bvlc_googlenet` fetches them" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_convert_unsupported_layers_is_one_clear_error(tmp_path, cli_process):
    n = NetBuilder("odd")
    data = n.Input("data", shape=dict(dim=[1, 3, 8, 8]))
    n.Python("rpn", data, python_param=dict(module="rpn", layer="Proposal"))
    n.MultiStageMeanfield("crf", data, data)
    (tmp_path / "odd.prototxt").write_text(n.to_text())
    result = cli_process("convert", tmp_path / "odd.prototxt", "--weights", tmp_path / "none.caffemodel")
    assert result.code == 1 and "Traceback" not in result.stderr
    assert "cannot convert to ONNX (2 problems)" in result.stderr
    assert (
        "layer type 'MultiStageMeanfield' (CRF-RNN: " in result.stderr
        and "used by layer 'crf'" in result.stderr
    )
    assert "layer 'rpn' (Python): a Python layer (rpn.Proposal) runs code of its own" in result.stderr


def test_run_prints_top_classes(tmp_path, cli):
    d = model_dir(tmp_path, mean="[104, 117, 123]", labels="classes.txt")
    (d / "classes.txt").write_text("cat\ndog\nbird\nfish\n")
    images = _images(tmp_path)
    result = cli("run", d, *images, "--top", "2")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(images[0]) and len(lines) == 3 * 3
    score, index, label = lines[1].split()
    assert 0 < float(score) <= 1 and label == ["cat", "dog", "bird", "fish"][int(index)]
    as_json = json.loads(cli("run", d, *images, "--top", "2", "--json").stdout)
    assert [round(c["score"], 4) for c in as_json[0]["top"]][0] == float(score)


def test_run_options_reach_the_preprocessing(tmp_path, cli):
    d = model_dir(tmp_path)
    images = _images(tmp_path, 2)
    plain = json.loads(cli("run", d, *images, "--json", "--top", "4").stdout)
    other = json.loads(
        cli(
            "run",
            d,
            *images,
            "--json",
            "--top",
            "4",
            "--mean",
            "104,117,123",
            "--resize",
            "20",
            "--oversample",
            "--batch-size",
            "1",
        ).stdout
    )
    assert [c["score"] for c in plain[0]["top"]] != [c["score"] for c in other[0]["top"]]
    # One mean value stands for every channel.
    one, three = (
        json.loads(cli("run", d, *images, "--json", "--top", "4", "--mean", value).stdout)
        for value in ("100", "100,100,100")
    )
    assert one == three and one != plain


def test_run_errors_are_one_line(tmp_path, cli_process):
    d = model_dir(tmp_path)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    for args, message in [
        ((d, bad), "bad.png: "),
        ((d, tmp_path / "missing.jpg"), "missing.jpg: no such image file"),
        ((d, *_images(tmp_path, 1), "--top", "0"), "--top must be 1 or more"),
        ((d, *_images(tmp_path, 1), "--mean", "1,2"), "mean of shape 2 does not fit a 3-channel input"),
        ((d, *_images(tmp_path, 1), "--mean", "1,2,x"), "--mean '1,2,x': expected per-channel values"),
        ((d, *_images(tmp_path, 1), "--batch-size", "-1"), "--batch-size must be 1 or more, not -1"),
        ((d, *_images(tmp_path, 1), "--resize", "20,20,3"), "--resize '20,20,3': expected H or H,W"),
        ((d, *_images(tmp_path, 1), "--resize", "8"), "resize 8x8 is smaller than the net's input 16x16"),
        (("bvlc_alexnet", *_images(tmp_path, 1)), "`caffezoo download bvlc_alexnet` fetches them"),
        # A mistyped image is named before the model is loaded (here: before its weights are missed).
        (("bvlc_alexnet", tmp_path / "typo.jpg"), "typo.jpg: no such image file"),
        (("bvlc_alexnet", "a" * 5000 + ".jpg"), ".jpg: File name too long"),
    ]:
        result = cli_process("run", *args)
        assert result.code != 0 and "Traceback" not in result.stderr, result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_convert_leaves_undeclared_only_the_axes_that_follow_the_batch(tmp_path, cli):
    """PriorBox's priors are the same for every image: 1x2xP, not Nx2xP; the heads follow the batch."""
    import onnxruntime
    from runtime_helpers import write_net
    from test_runtime_ssd import _ssd

    prototxt, caffemodel = write_net(tmp_path, _ssd(), seed=3)
    out = tmp_path / "ssd.onnx"
    args = (
        "convert",
        prototxt,
        "--weights",
        caffemodel,
        "-o",
        out,
        "--blob",
        "mbox_priorbox",
        "--blob",
        "mbox_loc",
    )
    r = cli(*args)
    assert r.code == 0, r.stderr
    assert "mbox_priorbox 1x2x5120" in r.stdout and "mbox_loc Nx5120" in r.stdout
    info = json.loads(cli(*args, "--json").stdout)
    assert info["outputs"]["mbox_priorbox"] == [1, 2, 5120] and info["outputs"]["mbox_loc"] == [None, 5120]
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((3, 3, 64, 64), dtype=np.float32)
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"data": x})))
    assert got["mbox_priorbox"].shape == (1, 2, 5120) and got["mbox_loc"].shape == (3, 5120)
