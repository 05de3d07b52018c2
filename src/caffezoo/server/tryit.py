"""Try it: classify an uploaded image with a model whose weights the server holds.

>>> tryit = TryIt(storage, mirror, limits, work_dir)                      # doctest: +SKIP
>>> answer = tryit.classify(entry, jpeg_bytes)                            # doctest: +SKIP
>>> [(c.label, round(c.score, 3)) for c in answer.top]                    # doctest: +SKIP
[('n02123045 tabby, tabby cat', 0.312), ...]

Off unless the operator asks (``caffezoo serve --try``): it spends the
server's CPU. A model can be tried when its task is a classification, its
network converts (the catalog's facts), and the server's mirror holds its
weights. The net is converted once (``caffezoo run``'s conversion cache) and
kept loaded for the next upload, a few nets at most.

Every upload is bounded: bytes (``--try-max-bytes``, refused before they are
read when the request says its length), pixels (the header's width x height,
checked before anything is decoded: a decompression bomb is refused
unopened), formats (JPEG, PNG, GIF, BMP, WebP). The work runs in the ``try``
lane (:mod:`.work`): a few at once, a short queue, a deadline; past that, 503
with ``Retry-After``. Uploads live in memory for the request and are never
written anywhere.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CaffezooError

if TYPE_CHECKING:
    import numpy as np

    from ..runtime.classifier import Scored
    from .mirror import Mirror
    from .storage import Storage
    from .tables import Entry
    from .work import Limits

FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
MAX_LABELS_BYTES = 1024 * 1024
MAX_MEAN_BYTES = 64 * 1024 * 1024
LOADED_NETS = 2  # nets kept loaded (an AlexNet is a quarter gigabyte)
TOP = 5

__all__ = ["TryError", "TryIt", "Tried", "decode_image", "image_from_form", "why_not"]


class TryError(CaffezooError):
    """An upload the server will not classify; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Tried:
    """What the result page shows."""

    top: list[Scored]
    width: int
    height: int
    format: str
    seconds: float
    output: str
    notes: list[str] = field(default_factory=list)


def why_not(entry: Entry, mirror: Mirror | None) -> str | None:
    """Why ``entry`` cannot be tried here (None: it can)."""
    if not entry.task or "classif" not in entry.task.lower():
        return "only classification models can be tried here"
    if not entry.net_sha:
        return "the model has no network"
    if entry.convertible is not True:
        return "caffezoo cannot convert its network"
    if mirror is None or not mirror.has(entry.sha1):
        return "this server does not hold its weights"
    if mirror.store.local_path(entry.sha1) is None:
        return "its weights are in this server's object store, not on this machine"
    if entry.weights_fit is False:
        return "the weights this server holds do not fit the network"
    return None


def image_from_form(body: bytes, content_type: str, field_name: str = "image") -> bytes:
    """The bytes of the file field ``field_name`` of a multipart/form-data body (in memory only)."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise TryError(415, "expected a form upload (multipart/form-data) with an image field")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise TryError(400, "the upload is not a well-formed multipart form")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == field_name:
            data = part.get_payload(decode=True) or b""
            if not data:
                raise TryError(400, "no image was chosen: pick a file and try again")
            return data
    raise TryError(400, f"the form has no {field_name!r} file field")


def decode_image(
    data: bytes, channels: int, size: tuple[int, int], max_pixels: int
) -> tuple[np.ndarray, tuple[int, int, str]]:
    """``data`` as H x W x C floats in [0, 1] at ``size`` (H, W), and its (width, height, format).

    The header's dimensions are checked before any pixel is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    from ..runtime.preprocess import resized

    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise TryError(
                    413,
                    f"the image is {width:,} x {height:,} pixels; this server takes at most "
                    f"{max_pixels:,} pixels",
                )
            kind = im.format or "?"
            array = resized(im, channels, size)  # as `caffezoo run` prepares it (a big JPEG: decoded scaled)
    except UnidentifiedImageError:
        raise TryError(415, f"not an image this server reads (use {', '.join(FORMATS)})") from None
    except Image.DecompressionBombError as e:
        raise TryError(413, f"the image is too large: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise TryError(422, f"cannot decode the image: {e}") from None
    return array, (width, height, kind)


@dataclass
class _Loaded:
    net: Any  # caffezoo.runtime.session.InferenceNet
    input_name: str
    shape: tuple
    output: str
    labels: list[str] | None
    mean: Any
    notes: list[str]


class TryIt:
    """Loaded nets for classification, and the classification of one upload."""

    def __init__(self, storage: Storage, mirror: Mirror, limits: Limits, work_dir: Path):
        self.storage, self.mirror, self.limits = storage, mirror, limits
        self.work_dir = Path(work_dir)
        self._nets: OrderedDict[tuple[str, str], _Loaded] = OrderedDict()
        self._lock = threading.Lock()

    def _gist_file(self, entry: Entry, name: str, limit: int) -> bytes | None:
        view = self.storage.get_gist(entry.gist_id) if entry.gist_id else None
        if view is None:
            return None
        found = next((f for f in view.files if f.filename == name), None)
        if found is None or found.content is None or len(found.content) > limit:
            return None
        return found.content

    def _prototxt(self, entry: Entry) -> Path:
        """The analysed net as a file named by its blob (the conversion cache keys on its path's bytes)."""
        from ..atomic import atomic_write_bytes

        path = self.work_dir / "nets" / f"{entry.net_sha}.prototxt"
        if not path.is_file():
            from sqlalchemy import select

            from .tables import Blob

            with self.storage.session() as s:
                content = s.scalar(select(Blob.content).where(Blob.sha == entry.net_sha))
            if content is None:
                raise TryError(409, "the model's network is gone")
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, content)
        return path

    def _load(self, entry: Entry) -> _Loaded:
        key = (entry.net_sha or "", entry.sha1 or "")
        with self._lock:
            loaded = self._nets.get(key)
            if loaded is not None:
                self._nets.move_to_end(key)
                return loaded
        from ..atomic import atomic_write_bytes
        from ..runtime.classifier import _image_input, _output
        from ..runtime.preprocess import read_mean
        from ..runtime.session import load

        try:
            net = load(
                str(self._prototxt(entry)), weights=self.mirror.store.local_path(entry.sha1), threads=1
            )
            input_name, shape = _image_input(net)
            output = _output(net, "prob" if "prob" in net.outputs else None)
        except TryError:
            raise
        except CaffezooError as e:
            raise TryError(409, f"the model cannot run here: {str(e).splitlines()[0]}") from None
        fm = json.loads(entry.front_matter or "{}")
        notes: list[str] = []
        labels = None
        if isinstance(fm.get("labels"), str):
            raw = self._gist_file(entry, fm["labels"], MAX_LABELS_BYTES)
            if raw is None:  # as ModelDir.labels_path: a shared label set of that name
                from ..modeldir import SHARED_LABELS_DIR

                shared = SHARED_LABELS_DIR / Path(fm["labels"]).name
                raw = shared.read_bytes() if shared.is_file() else None
            if raw is None:
                notes.append(f"the labels file {fm['labels']!r} is not among the model's files")
            else:
                labels = [line.strip() for line in raw.decode("utf-8", "replace").splitlines()]
                while labels and not labels[-1]:
                    labels.pop()
        mean = None
        if isinstance(fm.get("mean"), list):
            try:
                mean = read_mean([float(v) for v in fm["mean"]])
            except (CaffezooError, TypeError, ValueError):
                notes.append("the front matter's mean is not usable; none was subtracted")
        elif isinstance(fm.get("mean"), str):
            raw = self._gist_file(entry, fm["mean"], MAX_MEAN_BYTES)
            if raw is None:
                notes.append(
                    f"the mean file {fm['mean']!r} is not among the model's files; none was subtracted"
                )
            else:
                path = self.work_dir / "means" / f"{entry.net_sha}-{Path(fm['mean']).name}"
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, raw)
                try:
                    mean = read_mean(path)
                except CaffezooError as e:
                    notes.append(f"the mean file cannot be read ({e}); none was subtracted")
        loaded = _Loaded(net, input_name, shape, output, labels, mean, notes)
        with self._lock:
            self._nets[key] = loaded
            while len(self._nets) > LOADED_NETS:
                self._nets.popitem(last=False)
        return loaded

    def classify(self, entry: Entry, body: bytes, content_type: str) -> Tried:
        """Top-5 classes of the image in the form ``body``; :class:`TryError` says what is wrong."""
        import numpy as np

        from ..runtime.classifier import Scored
        from ..runtime.preprocess import Preprocessor

        t0 = time.perf_counter()
        data = image_from_form(body, content_type)
        loaded = self._load(entry)
        _, channels, height, width = loaded.shape
        try:
            pre = Preprocessor(channels, height, width, mean=loaded.mean)
        except CaffezooError as e:
            raise TryError(409, f"the model cannot run here: {e}") from None
        image, (w, h, kind) = decode_image(data, channels, pre.size, self.limits.try_max_pixels)
        x = pre.from_array(image)
        fixed = loaded.shape[0]
        if fixed and fixed > 1:  # a net with a fixed batch: pad it
            x = np.concatenate([x, np.zeros((fixed - 1, *x.shape[1:]), np.float32)])
        scores = loaded.net.forward(**{loaded.input_name: x})[loaded.output]
        row = scores[0].reshape(-1)
        best = np.argsort(-row, kind="stable")[:TOP]
        names = loaded.labels if loaded.labels and len(loaded.labels) == row.size else None
        notes = list(loaded.notes)
        if loaded.labels and names is None:
            notes.append(f"{len(loaded.labels)} labels for {row.size} classes: showing class numbers")
        top = [Scored(int(i), names[i] if names else None, float(row[i])) for i in best]
        return Tried(top, w, h, kind, time.perf_counter() - t0, loaded.output, notes)


# --------------------------------------------------------------------------- the route

from fastapi import APIRouter, Request  # noqa: E402
from fastapi.responses import Response  # noqa: E402

router = APIRouter()


@router.post("/models/{entry_id}/try")
async def try_model(request: Request, entry_id: str) -> Response:
    """The form's answer: a page with the top-5 classes, or one saying what was wrong."""
    from ..gist.rules import valid_id
    from . import catalog
    from .pages import render
    from .work import Busy

    tryit: TryIt | None = request.app.state.tryit
    if tryit is None or not valid_id(entry_id):
        return render("error.html", status=404, title="Not found", message="Trying models is off here.", q="")
    lane = request.app.state.try_lane
    if lane.admitted >= lane.workers + lane.queue:  # before reading megabytes we would drop
        raise Busy(lane.name, lane.retry_after)
    limit = tryit.limits.try_max_bytes
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + 64 * 1024:
        return _failed(render, entry_id, TryError(413, f"the upload is over {limit:,} bytes"))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit + 64 * 1024:
            return _failed(render, entry_id, TryError(413, f"the upload is over {limit:,} bytes"))
        chunks.append(chunk)
    body = b"".join(chunks)
    with request.app.state.storage.session() as s:
        entry = catalog.get_entry(s, entry_id)
    if entry is None:
        return render(
            "error.html", status=404, title="Not found", message=f"There is no model {entry_id!r}.", q=""
        )
    reason = why_not(entry, request.app.state.mirror)
    if reason:
        return _failed(render, entry_id, TryError(409, f"{entry.name} cannot be tried here: {reason}"))
    try:
        tried = await lane.run(tryit.classify, entry, body, request.headers.get("content-type", ""))
    except TryError as e:
        return _failed(render, entry_id, e, entry)
    finally:
        del body, chunks
    return render("try.html", entry=entry, entry_id=entry_id, tried=tried, q="")


def _failed(render: Any, entry_id: str, e: TryError, entry: Entry | None = None) -> Response:
    return render("try.html", status=e.status, entry=entry, entry_id=entry_id, error=str(e), tried=None, q="")
