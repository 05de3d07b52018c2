"""Network pictures for model pages: the deploy prototxt drawn as SVG, cached by content.

>>> pics = Pictures(Path("/tmp/svg-cache"))                         # doctest: +SKIP
>>> picture = pics.get(blob_sha, prototxt_bytes)                    # doctest: +SKIP
>>> picture.svg[:4], picture.error                                  # doctest: +SKIP
('<svg', None)

Drawing is the Caffe-formats layer's job (:func:`caffezoo.caffe.draw.to_svg`,
Graphviz ``dot`` underneath); this module only picks the file to draw and keeps
the result, in memory and on disk, keyed by the prototxt's blob SHA-1 (so an
edit draws anew and an unchanged net is drawn once per server). A prototxt that
cannot be drawn gets its reason shown on the page instead.

The SVG is served from its own URL with ``default-src 'none'`` and shown with
``<img>``: a picture loaded that way never runs scripts, whatever labels the
layers carry.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import CaffezooError


@dataclass(frozen=True)
class Picture:
    svg: str | None
    error: str | None = None


def pick_net(names: list[str]) -> str | None:
    """The prototxt to draw: a deploy net, else a train/val net, else any non-solver prototxt."""
    protos = sorted(n for n in names if n.lower().endswith(".prototxt") and "solver" not in n.lower())
    for hint in ("deploy", "train", "val", ""):
        for name in protos:
            if hint in name.lower():
                return name
    return None


def draw_svg(prototxt: bytes) -> str:
    """Draw a net with the Caffe-formats layer (the seam: nothing else here knows Caffe)."""
    try:
        from ..caffe.draw import to_svg
    except ImportError:
        raise CaffezooError("this caffezoo has no network drawing (caffezoo.caffe.draw is missing)") from None
    fd, tmp = tempfile.mkstemp(suffix=".prototxt", prefix="caffezoo-draw-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(prototxt)
        return to_svg(tmp, rankdir="TB")
    finally:
        os.unlink(tmp)


class Pictures:
    """SVGs by prototxt blob SHA-1: an LRU in memory over files in ``cache_dir``."""

    def __init__(self, cache_dir: Path | None, size: int = 256):
        from .api import GistCache  # the server's one LRU

        self.cache_dir = cache_dir
        self._mem = GistCache(size)
        self._lock = threading.Lock()
        self._drawing: dict[str, threading.Lock] = {}

    def _remember(self, key: str, picture: Picture) -> Picture:
        self._mem.put(key, picture)
        return picture

    def cached(self, key: str) -> Picture | None:
        return self._mem.get(key)

    def get(self, key: str, prototxt: bytes) -> Picture:
        """The picture of ``prototxt`` (whose blob SHA-1 is ``key``), drawing it at most once."""
        found = self.cached(key)
        if found is not None:
            return found
        with self._lock:
            lock = self._drawing.setdefault(key, threading.Lock())
        try:
            with lock:  # one drawing per net at a time; the others wait for its result
                return self.cached(key) or self._remember(key, self._draw(key, prototxt))
        finally:
            with self._lock:
                self._drawing.pop(key, None)

    def _draw(self, key: str, prototxt: bytes) -> Picture:
        path = self.cache_dir / f"{key}.svg" if self.cache_dir else None
        if path is not None and path.is_file():
            return Picture(path.read_text(encoding="utf-8"))
        try:
            svg = draw_svg(prototxt)
        except CaffezooError as e:
            return Picture(None, str(e))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".svg-")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(svg)
            os.replace(tmp, path)
        return Picture(svg)
