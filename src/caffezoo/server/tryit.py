"""Try it: run a model whose weights the server holds on an uploaded image, as ``caffezoo run`` does.

>>> tryit = TryIt(storage, mirror, limits, work_dir)                      # doctest: +SKIP
>>> tried = tryit.run(entry, form_body, content_type)                     # doctest: +SKIP
>>> tried.task, [(c.label, round(c.score, 3)) for c in tried.top]         # doctest: +SKIP
('classify', [('n02123045 tabby, tabby cat', 0.312), ...])

Off unless the operator asks (``caffezoo serve --try``): it spends the
server's CPU. A model can be tried when its task is one this server runs
(classify; detect, with SSD's ``DetectionOutput`` or Faster R-CNN's
proposals; segment: class maps and edge maps; no task named: what the net
computes, as ``caffezoo run`` decides), its network converts (the catalog's
facts), and the server holds its weights: in a local store, or in a remote
one (S3), whence they are copied to a bounded local cache (:mod:`.tryfiles`)
with their SHA-1 checked. The net is converted once (``caffezoo run``'s
conversion cache) and kept loaded for the next upload, a few nets at most.

The work is :func:`caffezoo.runtime.tasks.run`'s on an
:class:`~caffezoo.runtime.preprocess.InMemoryImage`, and the picture
:func:`caffezoo.runtime.tasks.picture`'s: this module only decodes the
upload, within bounds, and reads the model's labels and mean from its gist.
Pages carry a Content-Security-Policy that allows images from this server only
(no ``data:`` URIs), so a drawn picture is kept in the database for a few minutes
under an unguessable token (:class:`ResultPictures`), bounded in bytes and count
across the zoo, and served from ``/tried/TOKEN.png`` by whichever process or
replica the browser's request reaches.

Every upload is bounded: bytes (``--try-max-bytes``, refused before they are
read when the request says its length), pixels (the header's width x height,
checked before anything is decoded: a decompression bomb is refused
unopened), formats (JPEG, PNG, GIF, BMP, WebP). An image over
:data:`WORK_SIDE` pixels on a side is scaled down to that before it is run
(a big JPEG is decoded at a reduced scale): results are in the pixels of the
image shown. The work runs in the ``try`` lane (:mod:`.work`): a few at once,
a short queue, a deadline; past that, 503 with ``Retry-After``. Uploads live in
memory for the request and are never written anywhere.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import HTTP
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CaffezooError, ChecksumError, DiskSpaceError, RuntimeInputError

if TYPE_CHECKING:
    from ..runtime.preprocess import InMemoryImage
    from .mirror import Mirror
    from .storage import Storage
    from .tables import Entry
    from .work import Limits

log = logging.getLogger("caffezoo.server")

FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
TRIED = ("classify", "detect", "segment")  # what this server runs (caption needs two nets, embed a file)
WORK_SIDE = 1024  # an upload larger on a side is scaled down to this before it is run and drawn
MAX_LABELS_BYTES = 1024 * 1024
MAX_MEAN_BYTES = 64 * 1024 * 1024
LOADED_NETS = 2  # nets kept loaded (an AlexNet is a quarter gigabyte)
TOP = 5
MAX_ROWS = 100  # boxes or classes listed on the page (all are drawn)
PICTURES_BYTES = 32 * 1024 * 1024  # drawn pictures kept for their pages, together
PICTURES_COUNT = 64
PICTURE_SECONDS = 600.0
PICTURES_LOCK_SECONDS = 5.0  # a picture's writer waits this long for the others; then it is not kept
PICTURES_LOCK = 8211331  # PostgreSQL advisory lock: one picture writer at a time (coherence's is ...330)
# The form has two fields; each part's header is parsed by the email package, ~20 us per byte of
# parameters: without these an 8 MB body of tiny parts holds the lane (and the GIL) for minutes.
MAX_PARTS = 8
MAX_PART_HEAD = 4096  # bytes: a Content-Disposition with a long UTF-8 file name, and a Content-Type

__all__ = [
    "ResultPictures",
    "TryError",
    "TryIt",
    "Tried",
    "decode_upload",
    "form_fields",
    "read_form",
    "task_of",
    "why_not",
]


class TryError(CaffezooError):
    """An upload the server will not run; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


@dataclass
class Tried:
    """What the result page shows: the upload's size and format, and the task's results."""

    task: str
    width: int
    height: int
    format: str
    run_size: tuple[int, int]  # the size it was run and drawn at (smaller than the upload's when scaled down)
    seconds: float
    top: list[Any] = field(default_factory=list)  # classify: classifier.Scored, best first
    detections: list[Any] = field(default_factory=list)  # detect: tasks.Detection, best first
    threshold: float | None = None
    areas: list[Any] = field(default_factory=list)  # segment: tasks.Area, largest first
    edges: dict[str, float] | None = None  # segment, an edge map: its mean and share above 0.5
    picture: bytes | None = None  # the drawing, as PNG
    picture_url: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def scaled(self) -> bool:
        return self.run_size != (self.width, self.height)


@dataclass
class Form:
    image: bytes
    threshold: float


def task_of(entry: Entry) -> str | None:
    """The task ``entry``'s front matter names, as ``caffezoo run`` reads it (None: it names none)."""
    from ..runtime.tasks import task_from_text

    return task_from_text(entry.task)


def why_not(entry: Entry, mirror: Mirror | None) -> str | None:
    """Why ``entry`` cannot be tried here (None: it can)."""
    task = task_of(entry)
    if entry.task and task not in TRIED:
        return f"this server runs classification, detection and segmentation models; this one's task is {entry.task!r}"
    if not entry.net_sha:
        return "the model has no network"
    if entry.convertible is not True:
        return "caffezoo cannot convert its network"
    if task == "detect":
        types = json.loads(entry.layer_types or "{}")
        if "DetectionOutput" not in types and "Python" not in types:
            return (
                "its network has no SSD DetectionOutput or Faster R-CNN proposal layer to give boxes "
                "(an R-CNN scores regions proposed elsewhere)"
            )
    if mirror is None or not mirror.has(entry.sha1):
        return "this server does not hold its weights"
    if entry.weights_fit is False:
        return "the weights this server holds do not fit the network"
    return None


def read_form(body: bytes, content_type: str) -> Form:
    """The ``image`` file and the optional ``threshold`` of a multipart/form-data body (in memory only)."""
    from ..runtime.tasks import DEFAULT_THRESHOLD

    fields = form_fields(body, content_type)
    if "image" not in fields:
        raise TryError(400, "the form has no 'image' file field")
    if not fields["image"]:
        raise TryError(400, "no image was chosen: pick a file and try again")
    threshold = DEFAULT_THRESHOLD
    text = fields.get("threshold", b"").decode("ascii", "replace").strip()
    if text:
        try:
            threshold = float(text)
        except ValueError:
            threshold = -1.0
        if not 0.0 <= threshold <= 1.0:  # NaN too
            raise TryError(400, f"threshold: expected a number from 0 to 1, not {text[:20]!r}")
    return Form(fields["image"], threshold)


def form_fields(body: bytes, content_type: str) -> dict[str, bytes]:
    """The fields of a multipart/form-data ``body`` by name (the first of each name), as sent.

    The body is cut at its boundary by ``bytes.split``, at C speed: the email package's parser
    walks it line by line in Python, 0.3 s holding the GIL for an 8 MB photo, time the event
    loop waits. Only each part's few header lines go through the email package (quoting, parameters).
    """
    kind = BytesHeaderParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    )
    boundary = kind.get_boundary()
    if kind.get_content_type() != "multipart/form-data" or not boundary:
        raise TryError(415, "expected a form upload (multipart/form-data) with an image field")
    delimiter = b"\r\n--" + boundary.encode("latin-1", "replace")
    pieces = (b"\r\n" + body).split(delimiter, MAX_PARTS + 1)  # never more pieces than that
    if len(pieces) == MAX_PARTS + 2 and not pieces[-1].startswith(b"--"):
        raise TryError(413, f"the form has more than {MAX_PARTS} fields; send the image (and a threshold)")
    if len(pieces) < 3 or not pieces[-1].startswith(b"--"):  # a preamble, parts, the closing "--"
        raise TryError(400, "the upload is not a well-formed multipart form")
    fields: dict[str, bytes] = {}
    for piece in pieces[1:-1]:
        head, blank, content = piece.partition(b"\r\n\r\n")
        if not blank:
            raise TryError(400, "the upload is not a well-formed multipart form")
        if len(head) > MAX_PART_HEAD:
            raise TryError(413, f"a field's header is over {MAX_PART_HEAD:,} bytes")
        part = BytesHeaderParser(policy=HTTP).parsebytes(
            head.lstrip(b" \t").removeprefix(b"\r\n") + b"\r\n\r\n"
        )
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str) and name not in fields:
            fields[name] = content
    return fields


def decode_upload(
    data: bytes, max_pixels: int, side: int = WORK_SIDE
) -> tuple[InMemoryImage, str, tuple[int, int]]:
    """The upload as an RGB image at most ``side`` pixels on a side, upright (its EXIF orientation applied,
    as :func:`~caffezoo.runtime.preprocess.decode_image` applies it to a file), its format, and its own
    upright (width, height).

    The header's dimensions are checked before any pixel is decoded; a big JPEG is decoded at a
    reduced scale (DCT scaling) no smaller than the size it is scaled to.
    """
    from PIL import Image, UnidentifiedImageError

    from ..runtime.preprocess import SIDEWAYS, InMemoryImage, in_mode, orientation, upright

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
            turn = orientation(im)  # read now: converting a 16-bit image drops its EXIF
            scale = min(1.0, side / max(width, height, 1))
            target = (max(1, round(width * scale)), max(1, round(height * scale)))  # as stored
            drafted = im.draft(None, target)  # a JPEG: decoded at 1/2 to 1/8 scale, still >= target
            box = drafted[1] if drafted and im.size != (width, height) else None  # the whole picture, exactly
            rgb = in_mode(im, "RGB")  # a 16-bit grey scaled, not clipped
            if rgb is im:  # already RGB: decoded now, while its file is open
                rgb = im.copy()
            if rgb.size != target:
                rgb = rgb.resize(target, Image.Resampling.BILINEAR, box=box)
            if turn in SIDEWAYS:
                width, height = height, width
            rgb = upright(rgb, turn)  # the small picture turned, not the whole one; the orientation dropped
    except UnidentifiedImageError:
        raise TryError(415, f"not an image this server reads (use {', '.join(FORMATS)})") from None
    except Image.DecompressionBombError as e:
        raise TryError(413, f"the image is too large: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise TryError(422, f"cannot decode the image: {e}") from None
    return InMemoryImage(rgb, "the upload"), kind, (width, height)


class ResultPictures:
    """Drawn results kept in the database for their pages: ``put`` gives an unguessable token,
    ``get`` the PNG until it expires or is pushed out (at most ``count`` pictures and
    ``max_bytes`` across the whole zoo). Any process or replica on the database serves it.

    >>> pictures = ResultPictures(Storage("sqlite://"), max_bytes=1000, count=2, seconds=60)  # doctest: +SKIP
    >>> token = pictures.put(b"png")                                                          # doctest: +SKIP
    >>> pictures.get(token), pictures.get("guess")                                            # doctest: +SKIP
    (b'png', None)

    Each ``put`` purges the expired pictures and evicts the oldest until the new one fits, in
    the transaction that inserts it, one writer at a time (SQLite's write lock; a transaction
    advisory lock on PostgreSQL), so the bounds hold however many processes draw.
    """

    def __init__(
        self,
        storage: Storage,
        max_bytes: int = PICTURES_BYTES,
        count: int = PICTURES_COUNT,
        seconds: float = PICTURE_SECONDS,
        lock_seconds: float = PICTURES_LOCK_SECONDS,
    ):
        self.storage = storage
        self.max_bytes, self.count, self.seconds = max_bytes, count, seconds
        self.lock_seconds = lock_seconds

    def _totals(self) -> tuple[int, int]:
        from sqlalchemy import func, select

        from .tables import TriedPicture

        with self.storage.session() as s:
            n, size = s.execute(select(func.count(), func.coalesce(func.sum(TriedPicture.size), 0))).one()
        return int(n), int(size)

    def __len__(self) -> int:
        return self._totals()[0]

    @property
    def bytes(self) -> int:
        return self._totals()[1]

    def purge(self) -> int:
        """Remove the expired pictures (a server starting: nothing may be stored for a while); how many."""
        from sqlalchemy import delete
        from sqlalchemy.exc import DBAPIError

        from .storage import now
        from .tables import TriedPicture

        try:
            with self.storage.session(write=True) as s:
                self._only_writer(s)  # a stuck writer's row locks would hold the start for ever
                return s.execute(delete(TriedPicture).where(TriedPicture.expires <= now())).rowcount
        except DBAPIError as e:  # the next picture stored purges them
            log.warning("try-it: the expired pictures were not purged: %s", str(e.orig or e).splitlines()[0])
            return 0

    def _only_writer(self, s: Any) -> None:
        """Make ``s``'s transaction the only picture writer, waiting ``lock_seconds`` at most.

        SQLite's BEGIN IMMEDIATE already did; PostgreSQL takes a transaction advisory lock, not
        waited for without end: a writer whose connection hangs keeps it until the server notices."""
        from sqlalchemy import text

        if not self.storage.is_sqlite:
            wait = f"{max(1, round(self.lock_seconds * 1000))}ms"
            s.execute(text("SELECT set_config('lock_timeout', :wait, true)"), {"wait": wait})
            s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PICTURES_LOCK})

    def put(self, png: bytes, content_type: str = "image/png") -> str | None:
        """Keep ``png``; its token (None: it is larger than all the room there is, or the database
        did not take it in time: its page goes without it)."""
        from sqlalchemy.exc import DBAPIError

        if len(png) > self.max_bytes or self.count < 1:
            return None
        try:
            return self._store(png, content_type)
        except DBAPIError as e:  # a writer stuck with the lock, a database gone: not the page's end
            log.warning("try-it: a result picture was not kept: %s", str(e.orig or e).splitlines()[0])
            return None

    def _store(self, png: bytes, content_type: str) -> str:
        from datetime import timedelta

        from sqlalchemy import delete, select

        from .storage import now
        from .tables import TriedPicture

        token = secrets.token_urlsafe(18)
        with self.storage.session(write=True) as s:
            self._only_writer(s)
            at = now()
            s.execute(delete(TriedPicture).where(TriedPicture.expires <= at))
            kept = s.execute(select(TriedPicture.id, TriedPicture.size).order_by(TriedPicture.id)).all()
            total, gone = sum(size for _, size in kept), []
            for pid, size in kept:  # oldest first, until the new one fits
                if len(kept) - len(gone) < self.count and total + len(png) <= self.max_bytes:
                    break
                gone.append(pid)
                total -= size
            if gone:
                s.execute(delete(TriedPicture).where(TriedPicture.id.in_(gone)))
            s.add(
                TriedPicture(
                    token=token,
                    content=png,
                    content_type=content_type,
                    size=len(png),
                    expires=at + timedelta(seconds=self.seconds),
                )
            )
        return token

    def get(self, token: str) -> tuple[bytes, str] | None:
        """The picture ``token`` names and its content type, while it is kept."""
        from sqlalchemy import select

        from .storage import now
        from .tables import TriedPicture

        with self.storage.session() as s:
            found = s.execute(
                select(TriedPicture.content, TriedPicture.content_type).where(
                    TriedPicture.token == token, TriedPicture.expires > now()
                )
            ).first()
        return (bytes(found[0]), found[1]) if found is not None else None


@dataclass
class _Loaded:
    net: Any  # caffezoo.runtime.session.InferenceNet
    task: str
    labels: list[str] | None
    mean: Any
    notes: list[str]


class TryIt:
    """Loaded nets, and the run of one upload on one of them."""

    def __init__(self, storage: Storage, mirror: Mirror, limits: Limits, work_dir: Path):
        from ..runtime.session import cache_dir
        from .tryfiles import TryFiles

        self.storage, self.mirror, self.limits = storage, mirror, limits
        self.work_dir = Path(work_dir)
        self.files = TryFiles(self.work_dir / "weights", cache_dir(), limits.try_cache_bytes)
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

    def _weights(self, entry: Entry) -> Path:
        """The weights as a local file; a remote store's are copied here first (SHA-1 checked)."""
        from .blobstore import BlobStoreError
        from .tryfiles import TooLarge

        try:
            return self.files.weights(self.mirror.store, entry.sha1 or "")
        except KeyError:
            raise TryError(409, "this server does not hold its weights") from None
        except TooLarge as e:
            raise TryError(409, f"{entry.name} cannot be tried here: {e}") from None
        except ChecksumError:
            log.warning("try-it: the blob store's copy of %s does not have that SHA-1", entry.sha1)
            raise TryError(409, "the weights this server holds are damaged") from None
        except BlobStoreError as e:
            log.warning("blob store: %s", e)  # its address, the bucket: for the operator only
            raise TryError(503, "the blob store is unavailable; try again shortly", retry_after=30) from None
        except (DiskSpaceError, OSError) as e:  # the copy found the disk full (its partial is gone)
            log.warning("try-it: cannot copy the weights of %s here: %s", entry.sha1, e)
            raise TryError(
                503,
                "this server's disk has no room for the model's weights just now; try again later",
                retry_after=60,
            ) from None

    def _load(self, entry: Entry) -> _Loaded:
        key = (entry.net_sha or "", entry.sha1 or "")
        with self._lock:
            loaded = self._nets.get(key)
            if loaded is not None:
                self._nets.move_to_end(key)
                return loaded
        from ..runtime.session import load
        from ..runtime.tasks import ready_for

        prototxt = self._prototxt(entry)
        with self.files.hold(entry.sha1 or ""):
            weights = self._weights(entry)
            try:
                # One onnxruntime thread per upload: the lane's workers are the parallelism, and the
                # event loop keeps a core for the cheap requests (benchmarks/web.py).
                options = {"weights": weights, "threads": 1}
                net = load(str(prototxt), **options)
                task, net = ready_for(str(prototxt), net, task_of(entry), **options)
            except TryError:
                raise
            except CaffezooError as e:
                raise TryError(409, f"the model cannot run here: {self._public(e, entry)}") from None
            self.files.used(entry.sha1 or "", net.path)
        labels = self._labels(entry)
        notes = [labels] if isinstance(labels, str) else []  # a note saying why there are none
        mean, why = self._mean(entry)
        loaded = _Loaded(net, task, None if isinstance(labels, str) else labels, mean, notes + why)
        with self._lock:
            self._nets[key] = loaded
            while len(self._nets) > LOADED_NETS:
                self._nets.popitem(last=False)
        return loaded

    def _labels(self, entry: Entry) -> list[str] | str | None:
        """The class names the front matter's ``labels`` names (a gist file, or a shared label set); a
        note when they are not there."""
        fm = json.loads(entry.front_matter or "{}")
        if not isinstance(fm.get("labels"), str):
            return None
        raw = self._gist_file(entry, fm["labels"], MAX_LABELS_BYTES)
        if raw is None:  # as ModelDir.labels_path: a shared label set of that name
            from ..modeldir import SHARED_LABELS_DIR

            shared = SHARED_LABELS_DIR / Path(fm["labels"]).name
            try:
                raw = shared.read_bytes() if shared.is_file() else None
            except OSError:  # a name past what a file system holds (ENAMETOOLONG): no such set
                raw = None
        if raw is None:
            return f"the labels file {fm['labels']!r} is not among the model's files"
        labels = [line.strip() for line in raw.decode("utf-8", "replace").splitlines()]
        while labels and not labels[-1]:
            labels.pop()
        return labels

    def _mean(self, entry: Entry) -> tuple[Any, list[str]]:
        """The front matter's ``mean`` (values, or a gist file) as an array; notes when it is not usable."""
        from ..atomic import atomic_write_bytes
        from ..runtime.preprocess import read_mean

        fm = json.loads(entry.front_matter or "{}")
        if isinstance(fm.get("mean"), list):
            try:
                return read_mean([float(v) for v in fm["mean"]]), []
            except (CaffezooError, TypeError, ValueError):
                return None, ["the front matter's mean is not usable; none was subtracted"]
        if not isinstance(fm.get("mean"), str):
            return None, []
        raw = self._gist_file(entry, fm["mean"], MAX_MEAN_BYTES)
        if raw is None:
            return None, [f"the mean file {fm['mean']!r} is not among the model's files; none was subtracted"]
        # Named by its bytes, not by the gist's name: a name of 255 bytes after the net's SHA is past
        # what a file system holds (a 500); only the suffix tells read_mean the format.
        suffix = ".npy" if fm["mean"].lower().endswith(".npy") else ".binaryproto"
        path = self.work_dir / "means" / f"{hashlib.sha1(raw).hexdigest()}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, raw)
        try:
            return read_mean(path), []
        except CaffezooError as e:
            why = self._public(e, entry).replace(f"…/means/{path.name}", fm["mean"])
            return None, [f"the mean file cannot be read ({why}); none was subtracted"]

    def _public(self, error: Exception, entry: Entry) -> str:
        """``error``'s first line with this server's own paths replaced by the names the model gives."""
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        text = text.replace(
            str(self.work_dir / "nets" / f"{entry.net_sha}.prototxt"), entry.net_file or "the net"
        )
        for root in (self.work_dir, getattr(self.mirror.store, "root", None)):
            if root is not None:
                text = text.replace(str(root), "…")
        return text

    def run(self, entry: Entry, body: bytes, content_type: str) -> Tried:
        """What ``entry``'s net says of the image in the form ``body``; :class:`TryError` says what is wrong."""
        from ..runtime.draw import encode_png, read_rgb
        from ..runtime.tasks import run

        t0 = time.perf_counter()
        form = read_form(body, content_type)
        # Decoded first: a file that is no image (or too big) is refused before the net is converted and loaded.
        image, kind, (width, height) = decode_upload(form.image, self.limits.try_max_pixels)
        loaded = self._load(entry)
        try:
            result = run(
                "",  # the net is loaded: MODEL is not read again
                [image],
                net=loaded.net,
                task=loaded.task,
                threshold=form.threshold,
                top=TOP,
                labels=loaded.labels,
                mean=loaded.mean,
            )
        except RuntimeInputError as e:
            raise TryError(422, f"the model cannot run on this image: {self._public(e, entry)}") from None
        except CaffezooError as e:
            raise TryError(409, f"the model cannot run here: {self._public(e, entry)}") from None
        (item,) = result.items
        tried = Tried(result.task, width, height, kind, image.image.size, 0.0, notes=list(loaded.notes))
        if result.task == "classify":
            tried.top = item.top
        else:
            from ..runtime.tasks import picture

            tried.picture = encode_png(picture(item, read_rgb(image)))
            if result.task == "detect":
                tried.detections, tried.threshold = item.detections, form.threshold
            elif item.edges:
                tried.edges = item.to_json()["edges"]
            else:
                tried.areas = item.areas
        tried.seconds = time.perf_counter() - t0
        return tried


# --------------------------------------------------------------------------- the routes

from fastapi.responses import Response  # noqa: E402
from starlette.requests import Request  # noqa: E402

from .routing import Router  # noqa: E402
from .work import AnswerBudget, BodyRefused, Busy, busy_response, held_body  # noqa: E402

router = Router()


@router.post("/models/{entry_id}/try")
async def try_model(request: Request, entry_id: str) -> Response:
    """The form's answer: a page with the results (and the picture), or one saying what was wrong."""
    from ..gist.rules import valid_id
    from .pages import render

    tryit: TryIt | None = request.app.state.tryit
    if tryit is None or not valid_id(entry_id):
        return render("error.html", status=404, title="Not found", message="Trying models is off here.", q="")
    lane = request.app.state.try_lane
    if lane.admitted >= lane.workers + lane.queue:  # before reading megabytes we would drop
        raise Busy(lane.name, lane.retry_after)
    limit = tryit.limits.try_max_bytes
    uploads: AnswerBudget = request.app.state.try_uploads
    try:
        # The form's own bytes around the image on top of the limit.
        async with held_body(request, uploads, limit + 64 * 1024) as body:
            return await _answer(request, tryit, lane, entry_id, body)
    except BodyRefused as e:
        if e.status == 503:
            wait = uploads.retry_after
            busy = Busy(
                "try uploads", wait, f"the server is receiving too many uploads; try again in {wait} s"
            )
            response = busy_response(request, busy)
            response.headers["Connection"] = "close"  # its body is not read
            return response
        why = {
            413: f"the upload is over {limit:,} bytes",
            408: f"the upload did not arrive within {uploads.send_deadline:g} seconds",
        }[e.status]
        return _failed(render, entry_id, TryError(e.status, why), close=True)


async def _answer(request: Request, tryit: TryIt, lane: Any, entry_id: str, body: bytes) -> Response:
    """The answer page for ``body``, once it has been run."""
    from . import catalog
    from .pages import render

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
        tried = await lane.run(tryit.run, entry, body, request.headers.get("content-type", ""))
    except TryError as e:
        return _failed(render, entry_id, e, entry)
    finally:
        del body
    if tried.picture is not None:
        from starlette.concurrency import run_in_threadpool

        token = await run_in_threadpool(request.app.state.try_pictures.put, tried.picture)
        tried.picture, tried.picture_url = None, f"/tried/{token}.png" if token else None
    response = render("try.html", entry=entry, entry_id=entry_id, tried=tried, rows=MAX_ROWS, q="")
    response.headers.update(_NO_STORE)
    return response


_NO_STORE = {"Cache-Control": "no-store"}  # the answer holds what the visitor uploaded
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")  # secrets.token_urlsafe's alphabet


@router.get("/tried/{token}.png")
async def tried_picture(request: Request, token: str) -> Response:
    """A result's picture, for its page, while it is kept."""
    from starlette.concurrency import run_in_threadpool

    pictures: ResultPictures = request.app.state.try_pictures
    # Only what put() could have made reaches the database: PostgreSQL refuses a NUL in text (a 500).
    found = await run_in_threadpool(pictures.get, token) if _TOKEN.fullmatch(token) else None
    if found is None:
        from .errors import error_response

        return error_response(404, "Not Found: this picture has expired (pictures are kept a few minutes)")
    png, media_type = found
    return Response(png, media_type=media_type, headers={"Cache-Control": "private, max-age=600"})


def _failed(
    render: Any, entry_id: str, e: TryError, entry: Entry | None = None, *, close: bool = False
) -> Response:
    """The form's page with ``e`` said; ``close``: the connection ends with it (a body left unread)."""
    response = render(
        "try.html", status=e.status, entry=entry, entry_id=entry_id, error=str(e), tried=None, q=""
    )
    response.headers.update(_NO_STORE)
    if close:
        response.headers["Connection"] = "close"
    if e.retry_after:
        response.headers["Retry-After"] = str(e.retry_after)
    return response
