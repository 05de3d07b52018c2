"""Network pictures for model pages: the deploy prototxt drawn as SVG, cached by content.

>>> pics = Pictures(Path("/tmp/svg-cache"))                         # doctest: +SKIP
>>> picture = await pics.get(blob_sha, prototxt_bytes)              # doctest: +SKIP
>>> picture.svg[:4], picture.error                                  # doctest: +SKIP
('<svg', None)

Drawing is the Caffe-formats layer's job (:func:`caffezoo.caffe.draw.to_svg`,
Graphviz ``dot`` underneath); this module only picks the file to draw and keeps
the result, in memory and on disk, keyed by the prototxt's blob SHA-1 (so an
edit draws anew and an unchanged net is drawn once per server). A prototxt that
cannot be drawn gets its reason shown on the page instead.

Drawing is bounded work: a net over :data:`MAX_DRAW_BYTES` or ``max_layers``
layers is refused before ``dot`` runs (``dot``'s time grows much faster than the
net: 800 layers take seconds, 1,500 a minute or more), ``dot`` is killed after
``timeout`` seconds, and runs go through a :class:`~.work.Lane` (one at a time by
default, a few more queued, then 503). Every request for a net being drawn
awaits the same run as a coroutine: 45 requests for one new net hold no thread
and start one ``dot``.

The SVG is served from its own URL with ``default-src 'none'`` and shown with
``<img>``: a picture loaded that way never runs scripts, whatever labels the
layers carry.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import CaffezooError
from .caches import ByteCache, CachePart, size_of
from .work import Busy, Lane

__all__ = ["Picture", "Pictures", "pick_net"]

MAX_DRAW_BYTES = 1024 * 1024  # parsing alone takes seconds past this


@dataclass(frozen=True)
class Picture:
    svg: str | None
    error: str | None = None

    def __cache_size__(self) -> int:
        return size_of(self.svg or "") + size_of(self.error or "") + 100  # memory, not length


def pick_net(names: list[str]) -> str | None:
    """The prototxt to draw: a deploy net, else a train/val net, else any non-solver prototxt."""
    protos = sorted(n for n in names if n.lower().endswith(".prototxt") and "solver" not in n.lower())
    for hint in ("deploy", "train", "val", ""):
        for name in protos:
            if hint in name.lower():
                return name
    return None


def draw_svg(prototxt: bytes, *, timeout: float = 120.0, max_layers: int | None = None) -> str:
    """Draw a net with the Caffe-formats layer (the seam: nothing else here knows Caffe)."""
    try:
        from ..caffe.draw import to_svg
        from ..caffe.net import load_net
    except ImportError:
        raise CaffezooError("this caffezoo has no network drawing (caffezoo.caffe.draw is missing)") from None
    if len(prototxt) > MAX_DRAW_BYTES:
        raise CaffezooError(
            f"the prototxt is {len(prototxt):,} bytes, over the {MAX_DRAW_BYTES:,} this server draws; "
            "`caffezoo draw` draws it on your machine"
        )
    fd, tmp = tempfile.mkstemp(suffix=".prototxt", prefix="caffezoo-draw-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(prototxt)
        net = load_net(tmp, phase="TEST", strict=False)
    except CaffezooError as e:  # "<tmp>:3: ..." names a server's temporary file: say "line 3: ..."
        raise CaffezooError(str(e).replace(f"{tmp}:", "line ")) from None
    finally:
        os.unlink(tmp)
    if max_layers is not None and len(net.layers) > max_layers:
        raise CaffezooError(
            f"the net has {len(net.layers):,} layers, over the {max_layers:,} this server draws; "
            "`caffezoo draw` draws it on your machine"
        )
    return to_svg(net, rankdir="TB", timeout=timeout, nice=True)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


class Pictures:
    """SVGs by prototxt blob SHA-1: a byte-bounded cache in memory over files in ``cache_dir``."""

    def __init__(
        self,
        cache_dir: Path | None,
        cache: CachePart | ByteCache | None = None,
        *,
        lane: Lane | None = None,
        timeout: float = 20.0,
        max_layers: int = 1000,
    ):
        self.cache_dir = cache_dir
        self._mem = cache if cache is not None else ByteCache().part("svg")
        self.lane = lane or Lane("draw", workers=1, queue=8, deadline=2 * timeout + 5)
        self.timeout, self.max_layers = timeout, max_layers
        self._pending: dict[str, asyncio.Future] = {}
        self.waiting = 0  # requests awaiting a drawing (coroutines, not threads)

    def cached(self, key: str) -> Picture | None:
        return self._mem.get(key)

    def ready(self, key: str) -> bool:
        """Whether the picture of ``key`` is drawn (or known undrawable): in memory, or on disk
        (a picture too big for the memory cache is only there)."""
        path = self._path(key)
        return self.cached(key) is not None or (path is not None and path.is_file())

    async def get(self, key: str, prototxt: bytes) -> Picture:
        """The picture of ``prototxt`` (whose blob SHA-1 is ``key``), drawing it at most once
        at a time however many ask; :class:`~.work.Busy` when the drawing queue is full."""
        found = self.cached(key)
        if found is not None:
            return found
        path = self._path(key)
        if path is not None and key not in self._pending:
            from starlette.concurrency import run_in_threadpool

            # Drawn before (another process, an earlier run): read, without a place in the drawing queue.
            svg = await run_in_threadpool(_read, path)
            if svg is not None:
                return self._mem.put(key, Picture(svg))
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(self.lane.run(self._draw, key, prototxt))
            self._pending[key] = task
            task.add_done_callback(lambda t: self._finished(key, t))
        self.waiting += 1
        try:
            return await asyncio.shield(task)
        finally:
            self.waiting -= 1

    async def wait(self, key: str, prototxt: bytes, timeout: float) -> Picture | None:
        """The picture if it is ready within ``timeout`` seconds, else None (still drawing, or busy);
        the drawing goes on either way."""
        try:
            return await asyncio.wait_for(self.get(key, prototxt), timeout)
        except (TimeoutError, Busy):
            return None

    def _finished(self, key: str, task: asyncio.Future) -> None:
        self._pending.pop(key, None)
        if not task.cancelled() and task.exception() is None:
            self._mem.put(key, task.result())

    def _path(self, key: str) -> Path | None:
        return self.cache_dir / f"{key}.svg" if self.cache_dir else None

    def _draw(self, key: str, prototxt: bytes) -> Picture:
        path = self._path(key)
        if path is not None and path.is_file():
            return Picture(path.read_text(encoding="utf-8"))
        try:
            svg = draw_svg(prototxt, timeout=self.timeout, max_layers=self.max_layers)
        except (RecursionError, UnicodeError, ValueError) as e:  # the parser's limits, not ours
            return Picture(None, f"the prototxt cannot be read ({type(e).__name__})")
        except CaffezooError as e:
            return Picture(None, str(e))  # kept in memory only: a restart (or a bigger budget) tries again
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".svg-")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(svg)
            os.replace(tmp, path)
        return Picture(svg)
