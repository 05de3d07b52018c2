"""Model directories: loading, file classification, and the errors of things that are not one."""

from __future__ import annotations

from pathlib import Path

import pytest
from model_helpers import DEPLOY, GOOD_FRONT_MATTER, write_model

from caffezoo.errors import FrontMatterError, ModelDirError, ModelNotFoundError
from caffezoo.modeldir import classify, load, read_dir
from caffezoo.zoo import BUNDLED_DIR, bundled_names, resolve

SOLVER = 'net: "train_val.prototxt"\nbase_lr: 0.01\nmax_iter: 1000\n'
TRAIN_VAL = 'name: "N"\nlayer { name: "d" type: "Data" top: "data" include { phase: TRAIN } }\n'


def test_load_classifies_files_by_name_and_content(tmp_path):
    m = write_model(
        tmp_path / "net",
        GOOD_FRONT_MATTER,
        files={
            "net.prototxt": DEPLOY,
            "a.prototxt": SOLVER,
            "b.prototxt": TRAIN_VAL,
            "odd.prototxt": 'name: "x"\n',
            "deploy_v2.prototxt": SOLVER,  # the name wins over the content
            "helper.py": "print('hi')\n",
            "labels.txt": "cat\ndog\n",
        },
    )
    (m / "test_net.caffemodel").write_bytes(b"\x0a\x03abc")
    (m / "test_net.caffemodel.partial").write_bytes(b"\x00")
    (m / "mean.binaryproto").write_bytes(b"\x08\x01\x00\x10")
    (m / "sub").mkdir()
    (m / ".hidden").write_text("x")
    model = load(m)
    kinds = {f.name: f.kind for f in model.files}
    assert kinds == {
        "readme.md": "readme",
        "net.prototxt": "deploy",
        "a.prototxt": "solver",
        "b.prototxt": "train_val",
        "odd.prototxt": "prototxt",
        "deploy_v2.prototxt": "deploy",
        "helper.py": "text",
        "labels.txt": "text",
        "test_net.caffemodel": "weights",
        "test_net.caffemodel.partial": "partial",
        "mean.binaryproto": "binary",
        "sub": "directory",
    }
    assert model.prototxt("deploy") == m / "deploy_v2.prototxt"
    assert model.prototxt("solver") == m / "a.prototxt"
    assert model.has_weights and model.weights_path == m / "test_net.caffemodel"
    info = {f.name for f in model.info_files()}
    assert info == {
        "readme.md",
        "net.prototxt",
        "a.prototxt",
        "b.prototxt",
        "odd.prototxt",
        "deploy_v2.prototxt",
        "helper.py",
        "labels.txt",
    }


def test_classify_utf8_cut_at_the_read_boundary_is_text(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_bytes(b"a" * 65535 + "é".encode())  # the 2-byte character straddles 64 KiB
    assert classify(p) == "text"
    p.write_bytes(b"\xff\xfe" + b"a" * 100)
    assert classify(p) == "binary"


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: None, "no such directory"),
        (lambda p: p.write_text("x"), "is a file, expected a model directory"),
        (lambda p: p.mkdir(), "the directory is empty"),
        (
            lambda p: (p.mkdir(), (p / "deploy.prototxt").write_text("x")),
            "no readme.md in the model directory",
        ),
        (
            lambda p: (p.mkdir(), (p / "README.md").write_text("x")),
            "found 'README.md'; Caffe's scripts need the lower-case name",
        ),
    ],
)
def test_not_a_model_directory(tmp_path, setup, message):
    p = tmp_path / "m"
    setup(p)
    with pytest.raises(ModelDirError, match=message):
        load(p)


def test_bad_front_matter_raises_with_every_problem(tmp_path):
    m = write_model(tmp_path / "m", "sha1: xyz\ncaffemodel: ../x\n")
    with pytest.raises(FrontMatterError) as e:
        load(m)
    assert [p.line for p in e.value.problems] == [2, 3]


def test_resolve_paths_bundled_names_and_unknowns(tmp_path, caffezoo_home):
    m = write_model(tmp_path / "net", GOOD_FRONT_MATTER)
    assert resolve(str(m)).path == m
    alex = resolve("bvlc_alexnet")
    assert alex.bundled and alex.path == BUNDLED_DIR / "bvlc_alexnet"
    assert alex.weights_path == caffezoo_home / "models" / "bvlc_alexnet" / "bvlc_alexnet.caffemodel"
    with pytest.raises(
        ModelNotFoundError, match="'no_such_model': no such directory, and not a bundled model"
    ):
        resolve("no_such_model")
    with pytest.raises(ModelDirError, match="no such directory"):
        resolve("./missing/dir")


def test_the_five_bundled_models_carry_the_seed_values():
    assert bundled_names() == [
        "bvlc_alexnet",
        "bvlc_googlenet",
        "bvlc_reference_caffenet",
        "bvlc_reference_rcnn_ilsvrc13",
        "finetune_flickr_style",
    ]
    flickr = resolve("finetune_flickr_style").front_matter
    assert flickr.gist_id == "034c6ac3865563b69e60" and flickr.license == "non-commercial"
    google = resolve("bvlc_googlenet").front_matter
    assert google.sha1 == "405fc5acd08a3bb12de8ee5e23a96bec22f08204"
    assert google.caffe_commit == "bc614d1bd91896e3faceaf40b23b72dab47d44f5"


def test_read_dir_keeps_no_more_bytes_than_it_is_told(tmp_path):
    """Each file kept whole is at most ``whole_up_to`` bytes as read (not as listed: a file may
    grow, and /proc's say 0), and all of them together at most ``total_up_to``: a folder of
    many files under the limit (a gist upload keeps its read for the whole upload) costs a
    bounded memory; a file not kept is read again by whoever needs it."""
    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / name).write_bytes(b"x" * 100)
    (tmp_path / "big.txt").write_bytes(b"x" * 101)
    status = Path("/proc/self/status")
    if status.is_file():
        (tmp_path / "proc.txt").symlink_to(status)  # listed as 0 bytes, more when read
    entries = {e.name: e for e in read_dir(tmp_path, whole_up_to=100, total_up_to=250)}
    assert entries["a.txt"].data == entries["b.txt"].data == b"x" * 100
    assert entries["c.txt"].data is None and entries["c.txt"].size == 100  # over the total
    assert entries["big.txt"].data is None and entries["big.txt"].size == 101
    if status.is_file():
        assert entries["proc.txt"].data is None and entries["proc.txt"].size > 100
