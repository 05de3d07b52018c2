"""Atomic file writes: the whole new file, or the old one untouched.

>>> with atomic_open("net.caffemodel") as f:     # doctest: +SKIP
...     f.write(b"...")
>>> atomic_write_bytes("readme.md", b"---\\nname: Net\\n---\\n")   # doctest: +SKIP

Every writer of the project (front matter, prototxt, caffemodel, ONNX, drawings)
goes through :func:`atomic_open`. The code lives in :mod:`caffezoo.caffe._files`:
the Caffe-format layer imports nothing outside ``caffe/`` but :mod:`caffezoo.errors`,
and it writes files too; every other layer imports it from here.
"""

from __future__ import annotations

from .caffe._files import atomic_open, atomic_write_bytes

__all__ = ["atomic_open", "atomic_write_bytes"]
