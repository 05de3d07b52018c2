"""`caffezoo draw` and caffezoo.caffe.draw: DOT text, SVG from graphviz's dot, files."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from caffe_helpers import SMALL_NET

from caffezoo.caffe.draw import to_dot, to_svg
from caffezoo.caffe.net import load_net
from caffezoo.caffe.prototxt import parse_prototxt
from caffezoo.errors import DrawError
from caffezoo.zoo import BUNDLED_DIR


def small():
    return load_net(parse_prototxt(SMALL_NET).message)


def test_dot_has_a_box_per_layer_and_versions_in_place_blobs():
    dot = to_dot(small(), "TB")
    assert "rankdir=TB;" in dot
    boxes = re.findall(r'"layer:\d+" \[label="([^"]*)"', dot)
    assert [b.split("\\n")[0] for b in boxes] == ["data", "conv", "relu", "ip", "prob"]
    assert "conv\\n(Convolution)\\n4 outputs\\nkernel 3\\n2x4x6x6" in dot
    # relu works in place: it reads conv's first version and writes a second one.
    assert '"blob:conv:0" -> "layer:2"' in dot and '"layer:2" -> "blob:conv:1"' in dot
    assert '"blob:conv:1" -> "layer:3"' in dot


def test_names_are_escaped():
    text = SMALL_NET.replace('name: "small"', 'name: "a \\"quoted\\" net"')
    dot = to_dot(load_net(parse_prototxt(text).message))
    assert dot.startswith('digraph "a \\"quoted\\" net" {')


def test_svg_from_dot_is_a_document_naming_every_layer():
    svg = to_svg(BUNDLED_DIR / "bvlc_googlenet" / "deploy.prototxt")
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    texts = {t.text for t in root.iter() if t.tag.endswith("text")}
    assert {"inception_5b/output", "loss3/classifier", "(Concat)"} <= texts


def test_bad_rankdir():
    with pytest.raises(DrawError, match="rankdir must be one of"):
        to_dot(small(), "XY")


def test_cli_draws_png_and_svg(cli, tmp_path):
    r = cli("draw", "bvlc_reference_caffenet", "-o", tmp_path / "net.png", "--rankdir", "tb")
    assert r.code == 0, r.stderr
    assert (tmp_path / "net.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = cli(
        "draw",
        BUNDLED_DIR / "bvlc_alexnet" / "train_val.prototxt",
        "-o",
        tmp_path / "train.svg",
        "--phase",
        "TRAIN",
        "-q",
    )
    assert r.code == 0 and r.stdout == ""
    svg = (tmp_path / "train.svg").read_text()
    assert "(Data)" in svg and "(SoftmaxWithLoss)" in svg and "(Accuracy)" not in svg


def test_cli_errors(cli, tmp_path):
    r = cli("draw", BUNDLED_DIR / "bvlc_alexnet" / "deploy.prototxt", "-o", tmp_path / "net.gif")
    assert r.code == 1 and "cannot tell the format from the suffix" in r.stderr
    assert not (tmp_path / "net.gif").exists()
    r = cli("draw", BUNDLED_DIR / "bvlc_alexnet" / "deploy.prototxt", "-o", tmp_path / "nowhere" / "net.dot")
    assert (
        r.code == 1
        and r.stderr
        == f"error: {tmp_path / 'nowhere' / 'net.dot'}: cannot write: No such file or directory\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_without_graphviz_dot_output_still_works(cli_process, tmp_path):
    env = {"PATH": str(tmp_path)}  # no `dot` on this PATH
    deploy = BUNDLED_DIR / "bvlc_alexnet" / "deploy.prototxt"
    r = cli_process("draw", deploy, "-o", tmp_path / "net.svg", env=env)
    assert r.code == 1 and "`dot` is not installed" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "net.svg").exists()
    r = cli_process("draw", deploy, "-o", tmp_path / "net.dot", env=env)
    assert r.code == 0 and (tmp_path / "net.dot").read_text().startswith('digraph "AlexNet" {')
