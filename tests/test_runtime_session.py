"""caffezoo.runtime.load: onnxruntime sessions, the conversion cache, and checked inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from model_helpers import write_model
from runtime_helpers import assert_close, random_weights, run_opencv, write_net

from caffezoo.caffe.builder import NetBuilder
from caffezoo.config import settings
from caffezoo.errors import ConversionError, ModelDirError, NetError, RuntimeInputError, UsageError
from caffezoo.runtime import load


def small_classifier(batch: int = 10, size: int = 16, classes: int = 4) -> NetBuilder:
    n = NetBuilder("small")
    x = n.Input("data", shape=dict(dim=[batch, 3, size, size]))
    x = n.Convolution("conv1", x, num_output=6, kernel_size=3, stride=2)
    x = n.ReLU("relu1", x, in_place=True)
    x = n.Pooling("pool1", x, pool="MAX", kernel_size=3, stride=2)
    x = n.InnerProduct("fc", x, num_output=classes)
    n.Softmax("prob", x)
    return n


def model_dir(tmp_path, net: NetBuilder | None = None, seed: int = 0, **front) -> object:
    """A model directory holding ``net`` (default: a small classifier) and its random weights."""
    d = tmp_path / "small_model"
    d.mkdir(parents=True, exist_ok=True)
    prototxt, caffemodel = write_net(d, net or small_classifier(), seed=seed, name="deploy")
    caffemodel.rename(d / "small.caffemodel")
    extra = "".join(f"{k}: {v}\n" for k, v in front.items())
    write_model(d, "name: Small\ncaffemodel: small.caffemodel\nlicense: BSD-2-Clause\n" + extra)
    return d


def test_load_forward_and_cache(tmp_path):
    d = model_dir(tmp_path)
    net = load(d)
    assert net.inputs == {"data": (None, 3, 16, 16)} and net.outputs == ["prob"]
    assert net.path.parent == settings().cache_dir / "onnx" and net.path.name.startswith(net.source["sha1"])
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    y = net.forward(data=x)["prob"]
    reference = run_opencv(d / "deploy.prototxt", d / "small.caffemodel", {"data": x}, ["prob"])["prob"]
    assert_close(y, reference)
    # The second load converts nothing: the cached file is used as it is.
    stamp = net.path.stat().st_mtime_ns
    again = load(d)
    assert again.path == net.path and again.path.stat().st_mtime_ns == stamp
    assert np.array_equal(again(data=x)["prob"], y)
    memo = json.loads((settings().cache_dir / "onnx" / "sha1.json").read_text())
    assert [entry["sha1"] for entry in memo.values()] == [net.source["sha1"]]


def test_a_damaged_cache_entry_is_converted_again(tmp_path):
    d = model_dir(tmp_path)
    path = load(d).path
    path.write_bytes(path.read_bytes()[:1000])
    net = load(d)
    assert net.path == path and path.stat().st_size > 1000
    assert net(data=np.zeros((1, 3, 16, 16)))["prob"].shape == (1, 4)


def test_cache_follows_the_prototxt_and_the_weights(tmp_path):
    d = model_dir(tmp_path)
    first = load(d)
    (d / "deploy.prototxt").write_text(
        (d / "deploy.prototxt").read_text().replace("num_output: 6", "num_output: 6 pad: 1")
    )
    with pytest.raises(
        NetError, match="layer 'fc': blob 0 is 4x54 .* expects 4x96"
    ):  # read again, not cached
        load(d)
    d2 = model_dir(tmp_path / "other", seed=1)
    second = load(d2)
    assert second.source["sha1"] != first.source["sha1"] and second.path != first.path
    x = np.ones((1, 3, 16, 16), np.float32)
    assert not np.allclose(first(data=x)["prob"], second(data=x)["prob"])


def test_cache_follows_the_converter_source(tmp_path):
    """An edit to caffe's shape rules (not only to the runtime) must not meet a conversion cached before it."""
    import shutil
    import subprocess
    import sys

    import caffezoo

    d = model_dir(tmp_path)
    cached = load(d).path

    def cached_by(package: Path) -> Path:
        code = (
            "import caffezoo, sys; from caffezoo.runtime import load; "
            "print(caffezoo.__file__); print(load(sys.argv[1]).path)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(d)],
            env={**os.environ, "PYTHONPATH": str(package)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        assert out[0] == str(package / "caffezoo" / "__init__.py")
        return Path(out[1])

    copy = tmp_path / "copy"
    shutil.copytree(
        Path(caffezoo.__file__).parent, copy / "caffezoo", ignore=shutil.ignore_patterns("__pycache__")
    )
    assert cached_by(copy) == cached  # the same source: the same cache entry
    with open(copy / "caffezoo" / "caffe" / "shapes.py", "a") as f:
        f.write("# an edited rule\n")
    assert cached_by(copy) != cached


def test_downloaded_weights_are_not_hashed_again(tmp_path):
    """Weights `caffezoo download` verified: their SHA-1 comes from the blob cache's records."""
    import hashlib

    from caffezoo.download import download

    source = model_dir(tmp_path / "source")
    blob = source / "small.caffemodel"
    sha1 = hashlib.sha1(blob.read_bytes()).hexdigest()
    d = tmp_path / "fetched"
    d.mkdir()
    (d / "deploy.prototxt").write_text((source / "deploy.prototxt").read_text())
    write_model(
        d,
        f"name: Small\ncaffemodel: small.caffemodel\ncaffemodel_url: {blob.as_uri()}\nsha1: {sha1}\n"
        "license: BSD-2-Clause\n",
    )
    download(d, allow_local=True)  # the source is this test's own file
    net = load(d)
    assert net.source["sha1"] == sha1 and net.path.name.startswith(sha1)
    assert not (settings().cache_dir / "onnx" / "sha1.json").exists()  # nothing was hashed


def test_cache_off_converts_in_memory(tmp_path):
    net = load(model_dir(tmp_path), cache=False)
    assert net.path is None
    assert not list((settings().cache_dir / "onnx").glob("*.onnx"))
    assert net(data=np.zeros((2, 3, 16, 16)))["prob"].shape == (2, 4)


@pytest.mark.parametrize(
    "value, message",
    [
        (np.zeros((2, 3, 15, 16), np.float32), r"input 'data': expected shape Nx3x16x16, got 2x3x15x16"),
        (np.zeros((3, 16, 16), np.float32), r"expected shape Nx3x16x16, got 3x16x16"),
        (np.zeros((0, 3, 16, 16), np.float32), r"got 0x3x16x16"),
        (np.zeros((1, 3, 16, 16), np.complex64), r"expected numbers \(float32\), got dtype complex64"),
        (np.array([["a"]]), r"expected numbers \(float32\), got dtype <U1"),
        (None, r"input 'data' is missing: give a Nx3x16x16 float array"),
    ],
)
def test_bad_inputs(tmp_path, value, message):
    net = load(model_dir(tmp_path))
    with pytest.raises(RuntimeInputError, match=message):
        net.forward(**({} if value is None else {"data": value}))


def test_unknown_input_and_other_dtypes(tmp_path):
    net = load(model_dir(tmp_path))
    x = np.random.default_rng(0).integers(0, 255, (1, 3, 16, 16))
    with pytest.raises(RuntimeInputError, match="unknown input 'image': this net takes 'data'"):
        net.forward(data=x, image=x)
    assert_close(net(data=x.astype(np.uint8))["prob"], net(data=x.astype(np.float32))["prob"])
    assert_close(net(data=x.astype(np.float64))["prob"], net(data=x.astype(np.float32))["prob"])


def test_fixed_batch_is_explained(tmp_path):
    n = small_classifier(batch=2)
    n.BatchNorm("bn", "prob", use_global_stats=False)
    net = load(model_dir(tmp_path, n))
    assert net.inputs["data"] == (2, 3, 16, 16)
    with pytest.raises(RuntimeInputError, match=r"got 3x3x16x16 \(the batch size is fixed: .*batch's own"):
        net(data=np.zeros((3, 3, 16, 16)))


def test_missing_weights_point_to_download(tmp_path):
    with pytest.raises(
        ModelDirError, match=r"the weights are not downloaded; `caffezoo download bvlc_alexnet`"
    ):
        load("bvlc_alexnet")


def test_provider_must_be_installed(tmp_path):
    with pytest.raises(
        UsageError, match="provider TensorrtExecutionProvider not installed .*CPUExecutionProvider"
    ):
        load(model_dir(tmp_path), providers=["TensorrtExecutionProvider"])


def test_prototxt_and_weights_directly(tmp_path):
    prototxt, caffemodel = write_net(
        tmp_path, small_classifier(), random_weights(small_classifier().to_proto())
    )
    net = load(prototxt, weights=caffemodel)
    assert net.outputs == ["prob"]
    with pytest.raises(ConversionError, match="a prototxt alone has no weights"):
        load(prototxt)
    with pytest.raises(ConversionError, match="deploy.prototxt: no such prototxt file"):
        load(tmp_path / "deploy.prototxt", weights=caffemodel)


def test_a_net_onnxruntime_cannot_run_is_one_error_naming_the_node(tmp_path, capfd):
    # An Embed index past input_dim (Caffe leaves it undefined): onnxruntime's exception escaped as a
    # traceback, after an "[E:onnxruntime:...]" log line of its own on stderr.
    n = NetBuilder("embed")
    x = n.Input("data", shape=dict(dim=[2, 3]))
    n.Embed("out", x, num_output=5, input_dim=10)
    prototxt, caffemodel = write_net(tmp_path, n)
    net = load(prototxt, weights=caffemodel)
    assert net.forward(data=np.array([[0, 9, 3], [1, 2, 1]], np.float32))["out"].shape == (2, 3, 5)
    capfd.readouterr()
    with pytest.raises(
        RuntimeInputError, match=r"net.prototxt: onnxruntime could not run the net: .*'out/rows'.*"
    ):
        net.forward(data=np.array([[0, 50, 3], [1, 2, 1]], np.float32))
    assert "onnxruntime" not in capfd.readouterr().err
