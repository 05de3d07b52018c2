"""Start a new model directory that already validates.

>>> path = new_model("models/my_net", name="My Net", license="CC-BY-4.0")   # doctest: +SKIP
>>> sorted(p.name for p in path.iterdir())                                 # doctest: +SKIP
['readme.md']
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import ValidationError

from .atomic import atomic_write_bytes
from .errors import ModelDirError, UsageError, WriteError
from .frontmatter import format_value
from .gist.rules import file_name_problem
from .schema import FrontMatter

__all__ = ["new_model"]


_TEMPLATE = """\
---
name: {name}
caffemodel: {caffemodel}
{url_line}
{sha1_line}
caffe_version: {caffe_version}
license: {license}
---

# {title}

One or two sentences: what the model does, what it was trained for, and the
paper or project it comes from.

## Training data

Which data set, which split, and any preprocessing (crop size, mean, scale).

## Results

The numbers a user can reproduce (e.g. top-1 / top-5 on a named validation
set), and the iteration of the snapshot that gives them.

## License

{license_text}
"""


def new_model(
    path: str | os.PathLike[str],
    *,
    name: str,
    license: str = "unspecified",
    caffemodel: str | None = None,
    caffemodel_url: str | None = None,
    sha1: str | None = None,
    caffe_version: str = "1.0",
) -> Path:
    """Create ``path`` with a ``readme.md`` whose front matter and sections a user fills in."""
    p = Path(path)
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise ModelDirError(f"{p}: already exists and is not an empty directory; choose a new path")
    if not name.strip():
        raise UsageError("--name: expected the model's title, found an empty string")
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", p.name).strip("._") or "model"
    caffemodel = caffemodel or f"{stem}.caffemodel"
    if why := file_name_problem(caffemodel):
        raise UsageError(f"--caffemodel {caffemodel!r}: {why}")
    # The schema checks --url and --sha1 exactly as it checks a readme.
    for option, key, value in (("--url", "caffemodel_url", caffemodel_url), ("--sha1", "sha1", sha1)):
        if value is not None:
            try:
                FrontMatter.model_validate({key: value})
            except ValidationError as e:
                raise UsageError(f"{option} {value!r}: {e.errors()[0]['ctx']['error']}") from None
    url_line = (
        f"caffemodel_url: {format_value(caffemodel_url)}"
        if caffemodel_url
        else ("# caffemodel_url: https://example.org/where/the/weights/live.caffemodel")
    )
    sha1_line = f"sha1: {sha1.lower()}" if sha1 else f"# sha1: the 40 hex digits of `sha1sum {caffemodel}`"
    license_text = (
        f"{license}."
        if license != "unspecified"
        else "Say under which terms others may use the weights (e.g. CC-BY-4.0, BSD-2-Clause)."
    )
    text = _TEMPLATE.format(
        name=format_value(name),
        caffemodel=format_value(caffemodel),
        url_line=url_line,
        sha1_line=sha1_line,
        caffe_version=format_value(caffe_version),
        license=format_value(license),
        title=name,
        license_text=license_text,
    )
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(f"{p}: cannot create the directory: {e.strerror}") from e
    atomic_write_bytes(p / "readme.md", text.encode("utf-8"))
    return p
