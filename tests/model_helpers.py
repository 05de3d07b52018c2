"""Model directories for tests: ``write_model(path, front_matter)`` and the texts most tests use."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_model(
    path: Path,
    front_matter: str,
    body: str = "\nProse.\n",
    files: dict[str, str] | None = None,
    newline: str = "\n",
) -> Path:
    """Make a model directory with ``readme.md`` = ``---`` front matter ``---`` body."""
    path.mkdir(parents=True, exist_ok=True)
    text = "---\n" + front_matter.strip("\n") + "\n---\n" + body
    (path / "readme.md").write_bytes(text.replace("\n", newline).encode())
    for name, content in (files or {}).items():
        (path / name).write_text(content)
    return path


GOOD_FRONT_MATTER = """\
name: Test Net
caffemodel: test_net.caffemodel
caffemodel_url: http://127.0.0.1:1/test_net.caffemodel
license: BSD-2-Clause
sha1: 9116a64c0fbe4459d18f4bb6b56d647b63920377
caffe_commit: 709dc15af4a06bebda027c1eb2b3f3e3375d5077
"""

DEPLOY = """\
name: "TestNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
"""
