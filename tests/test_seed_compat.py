"""What Caffe's own scripts accept, caffezoo accepts; what caffezoo writes, Caffe's scripts read."""

from __future__ import annotations

import pytest
from model_helpers import write_model
from test_frontmatter import caffe_parse

from caffezoo.frontmatter import write_keys
from caffezoo.validate import has_errors, validate
from caffezoo.zoo import BUNDLED_DIR, bundled_names

SEED_KEYS = ("name", "caffemodel", "caffemodel_url", "license", "sha1", "caffe_commit", "gist_id")


@pytest.mark.parametrize("name", bundled_names())
def test_bundled_readmes_parse_with_caffes_rule(name):
    from caffezoo.zoo import resolve

    text = (BUNDLED_DIR / name / "readme.md").read_text()
    caffe = caffe_parse(text)
    fm = resolve(name).front_matter
    for key in SEED_KEYS:
        assert caffe.get(key) == getattr(fm, key), key
    # download_model_binary.py needs exactly these three
    assert all(caffe[k] for k in ("caffemodel", "caffemodel_url", "sha1"))


def test_minimal_directory_that_download_model_binary_accepts(tmp_path):
    # Caffe's script needs only readme.md with these three keys: that is a model directory.
    m = write_model(
        tmp_path / "m",
        "caffemodel: m.caffemodel\ncaffemodel_url: http://h/m.caffemodel\n"
        "sha1: 4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46\n",
    )
    assert not has_errors(validate(m))


def test_a_directory_laid_out_like_caffes_models_folder(tmp_path):
    readme = """---
name: BVLC CaffeNet Model
caffemodel: bvlc_reference_caffenet.caffemodel
caffemodel_url: http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel
license: unrestricted
sha1: 4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46
caffe_commit: 709dc15af4a06bebda027c1eb2b3f3e3375d5077
---

This model is the result of following the Caffe [ImageNet model training instructions](http://example).
"""
    m = tmp_path / "bvlc_reference_caffenet"
    m.mkdir()
    (m / "readme.md").write_text(readme)
    (m / "deploy.prototxt").write_text(
        'name: "CaffeNet"\nlayer { name: "data" type: "Input" top: "data" '
        "input_param { shape: { dim: 10 dim: 3 dim: 227 dim: 227 } } }\n"
    )
    (m / "train_val.prototxt").write_text(
        'name: "CaffeNet"\nlayer { name: "data" type: "Data" top: "data" include { phase: TRAIN } }\n'
    )
    (m / "solver.prototxt").write_text(
        'net: "models/bvlc_reference_caffenet/train_val.prototxt"\nbase_lr: 0.01\nmax_iter: 450000\n'
    )
    problems = validate(m)
    assert not has_errors(problems), [str(p) for p in problems]


def test_gist_id_written_back_is_read_by_caffes_rule_and_by_the_upload_scripts_sed(tmp_path):
    import re

    m = write_model(tmp_path / "m", "name: Net\ncaffemodel: m.caffemodel\n", body="\n# Net\n\nProse.\n")
    before = (m / "readme.md").read_text().splitlines()
    write_keys(m / "readme.md", {"gist_id": "034c6ac3865563b69e60"})
    text = (m / "readme.md").read_text()
    assert caffe_parse(text)["gist_id"] == "034c6ac3865563b69e60"
    # upload_model_to_gist.sh reads it with: sed -n 's/gist_id: *//p'
    assert [re.sub(r"gist_id: *", "", line) for line in text.splitlines() if "gist_id:" in line] == [
        "034c6ac3865563b69e60"
    ]
    after = text.splitlines()
    assert after[:3] + after[4:] == before
