"""The bundled BAIR nets: generated from Python, committed, loadable, and fit for their weights."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from caffezoo.caffe.bair import render, stale, write_all
from caffezoo.caffe.builder import NetBuilder
from caffezoo.caffe.caffemodel import write_caffemodel
from caffezoo.caffe.net import load_net
from caffezoo.caffe.prototxt import read_solver
from caffezoo.zoo import BUNDLED_DIR


def test_committed_files_are_what_the_definitions_generate():
    assert stale() == [], "run `make bair` (python -m caffezoo.caffe.bair) and commit the result"


def test_regenerating_into_an_empty_tree(tmp_path):
    for model in {model for model, _ in render()}:
        (tmp_path / model).mkdir()
    written = write_all(tmp_path)
    assert len(written) == len(render()) == 14
    assert stale(tmp_path) == [] and write_all(tmp_path) == []
    (tmp_path / "bvlc_alexnet" / "deploy.prototxt").write_text("# edited by hand\n")
    r = subprocess.run(
        [sys.executable, "-m", "caffezoo.caffe.bair", "--check", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "bvlc_alexnet/deploy.prototxt" in r.stderr


@pytest.mark.parametrize(
    "model,params,outputs",
    [
        # Published parameter counts of these architectures.
        ("bvlc_alexnet", 60_965_224, ["prob"]),
        ("bvlc_reference_caffenet", 60_965_224, ["prob"]),
        ("bvlc_googlenet", 6_998_552, ["prob"]),
        ("bvlc_reference_rcnn_ilsvrc13", 60_965_224 - 4097 * 1000 + 4097 * 200, ["fc-rcnn"]),
        ("finetune_flickr_style", 60_965_224 - 4097 * 1000 + 4097 * 20, ["prob"]),
    ],
)
def test_deploy_nets_load(model, params, outputs):
    net = load_net(BUNDLED_DIR / model / "deploy.prototxt")
    assert net.params == params and net.outputs == outputs
    assert net.layers[0].type == "Input" and not net.upgrade_steps


def test_googlenet_pooling_depends_on_ceil():
    net = load_net(BUNDLED_DIR / "bvlc_googlenet" / "deploy.prototxt")
    assert [net[f"pool{i}/3x3_s2"].top_shapes[0][2] for i in (1, 2, 3, 4)] == [56, 28, 14, 7]
    assert net["prob"].top_shapes == [(10, 1000)]


@pytest.mark.parametrize(
    "model", ["bvlc_alexnet", "bvlc_reference_caffenet", "bvlc_googlenet", "finetune_flickr_style"]
)
def test_train_val_nets_load_in_both_phases(model):
    test = load_net(BUNDLED_DIR / model / "train_val.prototxt", phase="TEST")
    train = load_net(BUNDLED_DIR / model / "train_val.prototxt", phase="TRAIN")
    assert any(x.type == "Accuracy" for x in test.layers) and not any(
        x.type == "Accuracy" for x in train.layers
    )
    assert [x.name for x in train.layers].count("data") == 1
    solver = read_solver(BUNDLED_DIR / model / "solver.prototxt")
    assert solver.net == f"models/{model}/train_val.prototxt"


def test_alexnet_and_caffenet_differ_only_in_pool_norm_order():
    alexnet = load_net(BUNDLED_DIR / "bvlc_alexnet" / "deploy.prototxt")
    caffenet = load_net(BUNDLED_DIR / "bvlc_reference_caffenet" / "deploy.prototxt")
    assert [x.name for x in alexnet.layers][3:5] == ["norm1", "pool1"]
    assert [x.name for x in caffenet.layers][3:5] == ["pool1", "norm1"]
    assert caffenet["norm2"].top_shapes == [(10, 256, 13, 13)] == alexnet["pool2"].top_shapes


def test_builder_rejects_what_the_schema_does_not_have():
    n = NetBuilder("x")
    with pytest.raises(TypeError, match="no field 'kernal_size'"):
        n.Convolution("c", "data", kernal_size=3)
    with pytest.raises(TypeError, match="'MAXIMUM' is not one of MAX, AVE, STOCHASTIC"):
        n.Pooling("p", "data", pool="MAXIMUM")
    with pytest.raises(TypeError, match="take no 'alpha'"):
        n.Silence("s", "data", alpha=1)


@pytest.mark.slow
def test_full_size_alexnet_weights_fit_the_bundled_net(cli, tmp_path):
    """A random-weights AlexNet written the way the BAIR binaries were (V1, legacy 4-D shapes)."""
    net = load_net(BUNDLED_DIR / "bvlc_alexnet" / "deploy.prototxt")
    rng = np.random.default_rng(1)

    def weights(layer):
        shapes = net[layer.name].param_shapes or []
        return [rng.standard_normal(shape, np.float32) for shape in shapes]

    path = write_caffemodel(
        tmp_path / "bvlc_alexnet.caffemodel", net.to_proto(), weights, version="V1", legacy_shape=True
    )
    assert path.stat().st_size > 230_000_000
    r = cli("inspect", "bvlc_alexnet", "--weights", path)
    assert r.code == 0 and "the weights fit the net" in r.stdout
    loaded = load_net(BUNDLED_DIR / "bvlc_alexnet" / "deploy.prototxt", path)
    assert [b.shape for b in loaded["fc6"].blobs] == [(4096, 9216), (4096,)]
