"""Images to a Caffe net's input, the way Caffe's data layer and pycaffe's Classifier prepare them.

>>> pre = Preprocessor(channels=3, height=227, width=227, mean=read_mean("imagenet_mean.binaryproto"))  # doctest: +SKIP
>>> pre(["cat.jpg", "dog.png"]).shape                                                           # doctest: +SKIP
(2, 3, 227, 227)

An image is a file path, or an :class:`InMemoryImage` (a decoded upload, which
is never written anywhere). For each image: decode (RGB, or grey for 1-channel
nets), resize (plain bilinear, as Caffe's OpenCV did: see :mod:`.resize`; to
the per-pixel mean's size when there is one, else to ``resize`` or the net's
input size), channels to BGR, scale to ``raw_scale`` (0-255), subtract the
mean, take the centre crop (or, with ``oversample``, the four corners and the
centre, each also mirrored: ten crops), then multiply by ``input_scale``.
"""

from __future__ import annotations

import os
import queue
import struct
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

import numpy as np

from ..errors import ModelDirError, RuntimeInputError, UsageError

if TYPE_CHECKING:
    from PIL.Image import Image as PillowImage

    from ..modeldir import ModelDir

__all__ = [
    "CROPS",
    "Batch",
    "Failed",
    "ImageSource",
    "InOrder",
    "InMemoryImage",
    "Preprocessor",
    "check_images",
    "decode_image",
    "in_mode",
    "load_image",
    "model_mean",
    "open_image",
    "orientation",
    "read_mean",
    "resized",
    "upright",
]

PathT = TypeVar("PathT", bound="str | os.PathLike[str] | InMemoryImage")
T = TypeVar("T")
DRAFT_GAP = 2  # a JPEG is decoded at a reduced scale only while it stays this many times the target size
CROPS = 10  # oversampling: 4 corners + centre, and their mirror images


@dataclass(frozen=True)
class InMemoryImage:
    """An image already decoded in memory, given wherever a file is taken (``run``, ``classify``).

    >>> run(model, [InMemoryImage(Image.open(io.BytesIO(upload)), "upload.jpg")])  # doctest: +SKIP

    What the web zoo's "try it" runs: the upload is never written to a file. ``name``
    stands for the image in results and messages.
    """

    image: PillowImage
    name: str = "the image"

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    def __str__(self) -> str:
        return self.name


ImageSource: TypeAlias = "str | os.PathLike[str] | InMemoryImage"


def read_mean(
    source: str | os.PathLike[str] | Sequence[float] | np.ndarray, base: Path | None = None
) -> np.ndarray:
    """A mean as (C,) per-channel values or a (C, H, W) image.

    ``source`` is a ``.binaryproto`` (Caffe's ``compute_image_mean`` output), a
    ``.npy`` file (pycaffe's ``ilsvrc_2012_mean.npy``), a list of values in
    the net's channel order (BGR for BVLC models, e.g. ``[104, 117, 123]``), or
    a mean already read (an array, returned as float32).
    """
    if isinstance(source, np.ndarray):
        return _mean_shape(np.asarray(source, np.float32), "mean")
    if isinstance(source, (list, tuple)):
        values = np.asarray(source, np.float32)
        if values.ndim != 1 or not values.size:
            raise ModelDirError(f"mean: expected a list of per-channel numbers, got {list(source)!r}")
        return values
    path = Path(source) if base is None else base / source
    if not path.is_file():
        raise ModelDirError(f"{path}: mean file not found")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ModelDirError(f"{path}: not a readable .npy array ({e})") from None
    else:
        array = _read_binaryproto(path)
    return _mean_shape(np.asarray(array, np.float32), str(path))


def model_mean(
    mean: str | os.PathLike[str] | Sequence[float] | np.ndarray | None, model: ModelDir | None
) -> np.ndarray | None:
    """The ``mean`` given, else the one ``model``'s front matter names (found in its directory), else None.

    >>> model_mean([104, 117, 123], None)
    array([104., 117., 123.], dtype=float32)
    """
    if mean is not None:
        return read_mean(mean)
    if model is not None and model.front_matter.mean is not None:
        return read_mean(model.front_matter.mean, model.path)
    return None


def _mean_shape(array: np.ndarray, where: str) -> np.ndarray:
    while array.ndim > 3 and array.shape[0] == 1:  # a BlobProto's leading num axis
        array = array[0]
    if array.ndim not in (1, 3) or not array.size:
        raise ModelDirError(
            f"{where}: a mean must be C values or a C x H x W image, not shape "
            f"{'x'.join(map(str, array.shape))}"
        )
    return array


def _read_binaryproto(path: Path) -> np.ndarray:
    from google.protobuf.message import DecodeError

    from ..caffe import caffe_pb2
    from ..caffe.caffemodel import blob_from_proto
    from ..errors import CaffemodelError

    proto = caffe_pb2.BlobProto()
    try:
        proto.ParseFromString(path.read_bytes())
        blob = blob_from_proto(proto)
    except (DecodeError, CaffemodelError) as e:
        raise ModelDirError(f"{path}: not a Caffe mean file (.binaryproto BlobProto): {e}") from None
    if blob.data is None or not blob.data.size:
        raise ModelDirError(f"{path}: the mean file holds no values")
    return blob.data


@dataclass
class Failed:
    """An image that could not be read, and why (the message names it): a run that keeps going lists it
    among its results, in its place, and goes on with the others.

    >>> Failed("a.jpg", "a.jpg: not an image").to_json()
    {'image': 'a.jpg', 'error': 'a.jpg: not an image'}
    """

    image: str
    error: str

    def to_json(self) -> dict[str, str]:
        return {"image": self.image, "error": self.error}


@dataclass
class Batch(Generic[PathT]):
    """Images prepared for the net: ``x`` is N x C x H x W, ``sizes`` each image's own (width, height);
    ``failed``, the images of this batch that could not be read (with ``skip_bad``), and why."""

    paths: list[PathT]
    x: np.ndarray
    sizes: list[tuple[int, int]]
    failed: list[tuple[int, PathT, RuntimeInputError]] = field(default_factory=list)  # (place in batch, ...)
    start: int = 0  # the place of the batch's first image among all the images


class InOrder:
    """Items told to ``tell`` in the images' order, each image that could not be read (a batch's
    ``failed``) as a :class:`Failed` in its place: the caller adds the readable images' results one by
    one, in order.

    >>> told = []
    >>> order = InOrder(told.append)
    >>> order.batch(Batch(["b.jpg"], x, [(4, 3)], [(0, "a.jpg", RuntimeInputError("a.jpg: bad"))]))  # doctest: +SKIP
    >>> order.add("result of b.jpg")                                                              # doctest: +SKIP
    """

    def __init__(self, tell: Callable[[Any], None]):
        self.tell = tell
        self.done = 0  # images told so far
        self._failed: dict[int, Failed] = {}

    def batch(self, batch: Batch[Any]) -> None:
        """A batch is about to be run: its failures are told once the images before them are."""
        for place, path, error in batch.failed:
            self._failed[batch.start + place] = Failed(str(path), str(error))
        self._flush()

    def add(self, item: Any) -> None:
        self._flush()
        self.tell(item)
        self.done += 1
        self._flush()

    def _flush(self) -> None:
        while self.done in self._failed:
            self.tell(self._failed.pop(self.done))
            self.done += 1


@dataclass
class Preprocessor:
    """Caffe-style preparation of images for one input of ``channels`` x ``height`` x ``width``."""

    channels: int
    height: int
    width: int
    mean: np.ndarray | None = None  # (C,) or (C, H, W), in the net's channel order
    resize: tuple[int, int] | None = None  # (H, W) before cropping; default: the mean's or the input's size
    raw_scale: float = 255.0
    input_scale: float = 1.0
    swap_channels: bool = True  # RGB -> BGR, as Caffe's OpenCV-decoded training images were
    oversample: bool = False

    def __post_init__(self) -> None:
        if self.resize is not None:
            if len(self.resize) != 2 or min(self.resize) < 1:
                raise UsageError(
                    f"resize: expected a height and a width of 1 or more, got {tuple(self.resize)}"
                )
            if self.resize[0] < self.height or self.resize[1] < self.width:
                raise UsageError(
                    f"resize {self.resize[0]}x{self.resize[1]} is smaller than the net's input "
                    f"{self.height}x{self.width}: there would be nothing to crop it from"
                )
        if self.mean is not None:
            m = self.mean
            if m.shape[0] not in (1, self.channels) or (m.ndim == 1 and m.size not in (1, self.channels)):
                raise ModelDirError(
                    f"mean of shape {'x'.join(map(str, m.shape))} does not fit a "
                    f"{self.channels}-channel input"
                )
            if self.per_pixel_mean and (m.shape[1] < self.height or m.shape[2] < self.width):
                raise ModelDirError(
                    f"mean image {m.shape[1]}x{m.shape[2]} is smaller than the net's input "
                    f"{self.height}x{self.width}"
                )

    @property
    def per_pixel_mean(self) -> bool:
        return self.mean is not None and self.mean.ndim == 3

    @property
    def size(self) -> tuple[int, int]:
        """The size images are resized to before cropping."""
        if self.resize:
            return self.resize
        if self.per_pixel_mean:
            return int(self.mean.shape[1]), int(self.mean.shape[2])
        return self.height, self.width

    def __call__(self, images: Sequence[ImageSource]) -> np.ndarray:
        """N x C x H x W (N x 10 crops with ``oversample``), float32."""
        return self.prepare(images)[0]

    def prepare(self, images: Sequence[ImageSource]) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """What calling does, and each image's own (width, height), read while decoding it."""
        if not images:
            return np.zeros((0, self.channels, self.height, self.width), np.float32), []
        decoded = [decode_image(path, self.channels, self.size) for path in images]
        sizes = [size for _, size in decoded]
        if len(decoded) == 1:  # already its own contiguous array: no copy to concatenate
            return self.from_array(decoded[0][0]), sizes
        return np.concatenate([self.from_array(image) for image, _ in decoded]), sizes

    def batches(self, images: Sequence[PathT], size: int, skip_bad: bool = False) -> Iterator[Batch[PathT]]:
        """``images`` prepared in batches of ``size``, each decoded on a worker thread while the caller runs
        the net on the one before.

        An image that cannot be read raises its RuntimeInputError, in the images' order; with
        ``skip_bad`` it is left out of its batch's ``paths`` and listed in its ``failed`` instead (a
        batch may then hold no image at all).

        >>> for batch in pre.batches(["a.jpg", "b.jpg", "c.jpg"], 2): ...   # doctest: +SKIP
        """
        chunks = [(i, list(images[i : i + size])) for i in range(0, len(images), size)]
        prepare = self._prepare_good if skip_bad else self._prepare_all
        if len(chunks) < 2:  # nothing to overlap
            yield from (prepare(chunk) for chunk in chunks)
            return
        # Pillow's decoding and resizing and onnxruntime's forward pass release the GIL, so the next batch's
        # images are read while the net runs: the two overlap instead of taking turns on the cores.
        yield from _ahead(prepare, chunks)

    def _prepare_all(self, chunk: tuple[int, list[PathT]]) -> Batch[PathT]:
        start, images = chunk
        return Batch(images, *self.prepare(images), start=start)

    def _prepare_good(self, chunk: tuple[int, list[PathT]]) -> Batch[PathT]:
        """The images that can be read, and the others with their errors."""
        start, images = chunk
        good: list[PathT] = []
        failed: list[tuple[int, PathT, RuntimeInputError]] = []
        arrays: list[np.ndarray] = []
        sizes: list[tuple[int, int]] = []
        for place, path in enumerate(images):
            try:
                image, size = decode_image(path, self.channels, self.size)
            except RuntimeInputError as e:
                failed.append((place, path, e))
                continue
            good.append(path)
            arrays.append(self.from_array(image))
            sizes.append(size)
        x = arrays[0] if len(arrays) == 1 else np.concatenate(arrays) if arrays else self.prepare([])[0]
        return Batch(good, x, sizes, failed, start)

    def one(self, path: ImageSource) -> np.ndarray:
        return self.from_array(load_image(path, self.channels, self.size))

    def from_array(self, image: np.ndarray) -> np.ndarray:
        """An image already decoded and resized to :attr:`size`: C x H x W floats in [0, 1] (scaled in place)."""
        h, w = self.size
        c = self.channels
        if image.shape != (c, h, w):  # H x W x C (its input before the resize moved) reads as rows
            raise RuntimeInputError(f"expected an image of shape {(c, h, w)} (C x H x W), got {image.shape}")
        image *= np.float32(self.raw_scale)  # in place: the caller's array is this call's own
        order = range(c - 1, -1, -1) if self.swap_channels and c == 3 else range(c)  # RGB -> BGR
        mean = self._mean((h, w))
        # One pass per channel does the channel swap and the mean: the same numbers as doing them one
        # after another, without a second pass over the whole image.
        x = np.empty((c, h, w), np.float32)
        for dst, src in enumerate(order):
            m = mean if isinstance(mean, float) else mean[dst if mean.shape[0] > 1 else 0]
            np.subtract(image[src], m, out=x[dst])
        crops = self._crops(x)
        if self.input_scale != 1:
            crops = crops * np.float32(self.input_scale)
        return np.ascontiguousarray(crops, dtype=np.float32)

    def _mean(self, size: tuple[int, int]) -> np.ndarray | float:
        m = self.mean
        if m is None:
            return 0.0
        if m.ndim == 1:
            return m.reshape(-1, 1, 1)
        if m.shape[1:] == size:
            return m
        return m.mean(axis=(1, 2)).reshape(-1, 1, 1)  # a mean image of another size: its channel means

    def _crops(self, x: np.ndarray) -> np.ndarray:
        _, h, w = x.shape
        ch, cw = self.height, self.width
        top, left = (h - ch) // 2, (w - cw) // 2
        if not self.oversample:
            return x[None, :, top : top + ch, left : left + cw]
        corners = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), (top, left)]
        crops = np.stack([x[:, i : i + ch, j : j + cw] for i, j in corners])
        return np.concatenate([crops, crops[:, :, :, ::-1]])


def _ahead(function: Callable[[Any], T], items: Sequence[Any]) -> Iterator[T]:
    """``function(item)`` for each of ``items`` in turn, each computed on a worker thread while the caller
    works on the one before.

    One thread for all items: a thread started anew for each would, on a busy machine, wait its turn
    behind every other runnable thread before it ran at all. A daemon thread, and nobody waits for it when
    the caller stops early: a Ctrl-C or SIGTERM while an image is read from a stalled pipe or network file
    ends the process instead of waiting with it.
    """
    wanted: queue.SimpleQueue[Any] = queue.SimpleQueue()
    done: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()

    def work() -> None:
        while (item := wanted.get()) is not _STOP:
            try:
                done.put((True, function(item)))
            except BaseException as e:  # handed to the caller, who raises it as if it had made the call
                done.put((False, e))

    threading.Thread(target=work, name="caffezoo-decode", daemon=True).start()
    try:
        wanted.put(items[0])
        for i in range(len(items)):
            ok, value = done.get()  # a bad image raises here, in the order of the images
            if not ok:  # before asking for the next: nobody would take it
                raise value
            if i + 1 < len(items):
                wanted.put(items[i + 1])  # one ahead, no more: memory stays at two batches
            yield value
    finally:
        wanted.put(_STOP)  # the thread ends after the item it may be working on


_STOP = object()


def load_image(path: ImageSource, channels: int, size: tuple[int, int]) -> np.ndarray:
    """The image at ``path`` (or in memory) resized (bilinear) to ``size`` (H, W): C x H x W floats in [0, 1]."""
    return decode_image(path, channels, size)[0]


def decode_image(
    path: ImageSource, channels: int, size: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`load_image`, and the upright image's own (width, height): what opening the file again and
    turning it as its EXIF orientation says would tell."""
    if channels not in (1, 3):
        raise RuntimeInputError(f"{path}: the net takes {channels} channels; images give 1 or 3")
    with open_image(path) as im:
        turn = orientation(im)
        width, height = im.size
        return resized(im, channels, size, turn), ((height, width) if turn in SIDEWAYS else (width, height))


def resized(im: Any, channels: int, size: tuple[int, int], turn: int | None = None) -> np.ndarray:
    """A Pillow image just opened (not yet decoded), upright, at ``size`` (H, W): C x H x W floats in [0, 1].

    Resized as Caffe's data layer and OpenCV's ``blobFromImage`` resize: plain bilinear, no smoothing
    (:func:`.resize.bilinear`). A JPEG at least 4x that size both ways is decoded at 1/2, 1/4 or 1/8
    scale, in the DCT, staying at least twice that size, as Pillow's thumbnail() does: a 12-megapixel
    photo prepared for a 300x300 input 3-4x faster, each value within a few levels of 255 of decoding it
    whole (the tests measure how close). The DCT's scaling averages the pixels it drops, which plain
    bilinear from the whole image would skip over. Other formats ignore the draft.

    ``turn`` is the EXIF orientation (default: the image's own, :func:`orientation`): the decoded (and
    drafted) pixels are turned upright before the resize, as OpenCV's ``imread`` turns them. Turning the
    small result instead would be cheaper, but the uint8 resize rounds its weights, so a mirrored
    resize differs by a level here and there from the upright one (and from a web upload turned first).
    """
    from .resize import bilinear

    turn = orientation(im) if turn is None else turn
    stored = (size[1], size[0]) if turn in SIDEWAYS else size  # (H, W) before turning
    mode = "L" if channels == 1 else "RGB"
    original = im.size
    drafted = im.draft(None, (DRAFT_GAP * stored[1], DRAFT_GAP * stored[0]))
    im = in_mode(im, mode)
    pixels = np.asarray(im)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if drafted and im.size != original:
        # A drafted width of ceil(width / scale) holds a partial last column (and row): keep the whole
        # ones, and the partial one when it is mostly picture, so the resize spans the picture alone.
        _, _, right, bottom = drafted[1]
        pixels = pixels[: max(1, round(bottom)), : max(1, round(right))]
    if turn != 1:
        pixels = np.ascontiguousarray(_TURNS[turn](pixels))
    return bilinear(pixels, size)


SIDEWAYS = (5, 6, 7, 8)  # EXIF orientations whose upright image swaps width and height
# EXIF orientation -> the stored H x W x C pixels turned upright (views), as Pillow's
# ImageOps.exif_transpose and OpenCV's imread turn them: 2 mirrored, 3 upside down, 4 flipped,
# 5 transposed, 6 turned a quarter clockwise, 7 transposed across the other diagonal, 8 a quarter anticlockwise.
_TURNS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda x: x[:, ::-1],
    3: lambda x: x[::-1, ::-1],
    4: lambda x: x[::-1],
    5: lambda x: x.transpose(1, 0, 2),
    6: lambda x: x[::-1].transpose(1, 0, 2),
    7: lambda x: x[::-1, ::-1].transpose(1, 0, 2),
    8: lambda x: x[:, ::-1].transpose(1, 0, 2),
}


def orientation(im: Any) -> int:
    """A Pillow image's EXIF orientation, 1 (upright) to 8; 1 when it has none or an unknown value.

    Read from the header alone (no pixel is decoded), as ``ImageOps.exif_transpose`` reads it: also a
    PNG's ``eXIf`` and an XMP ``tiff:Orientation``. A TIFF is the exception, 1: Pillow (6.2 on) turns it
    upright itself as it loads it, so it is loaded here, where its size changes to the upright one
    (a broken one raises as decoding it would).
    """
    if hasattr(im, "tag_v2"):  # a TIFF: turning it again would turn it twice
        im.load()
        return 1
    if not im.info.keys() & _EXIF_KEYS:  # no metadata
        return 1
    try:
        with warnings.catch_warnings():  # Pillow warns of a corrupt block: as if none, nothing to act on
            warnings.simplefilter("ignore")
            value = im.getexif().get(_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError, struct.error):  # a broken EXIF block: as if none
        return 1
    return value if value in _TURNS else 1


_ORIENTATION = 0x0112  # the EXIF tag
_EXIF_KEYS = {"exif", "Raw profile type exif", "xmp", "XML:com.adobe.xmp"}


def upright(im: Any, turn: int | None = None) -> Any:
    """A Pillow image turned as ``turn`` (default: its own EXIF orientation, :func:`orientation`) says, its
    EXIF and XMP dropped (so nothing turns it twice); ``im`` itself when there is nothing to turn.

    Give ``turn`` when ``im`` is made from an opened image (converted, resized): a 16-bit image converted
    to 8 bits keeps none of the metadata that said how to turn it.
    """
    turn = orientation(im) if turn is None else turn
    if turn == 1:
        return im
    from PIL import Image

    turned = im.transpose(Image.Transpose[_TRANSPOSES[turn]])
    turned.info = {k: v for k, v in turned.info.items() if k not in _EXIF_KEYS}
    return turned


# EXIF orientation -> Pillow's transpose that turns it upright, as ImageOps.exif_transpose picks it
_TRANSPOSES = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}


def in_mode(im: Any, mode: str) -> Any:
    """A Pillow image in ``mode`` ("RGB" or "L"): a 16-bit grey (a PNG's ``I;16``, or ``I``) is scaled to
    8 bits first, where Pillow's ``convert`` clips it (all but the darkest pixels white).

    >>> in_mode(Image.open("depth16.png"), "RGB").mode                          # doctest: +SKIP
    'RGB'
    """
    if im.mode == mode:  # converting an image already in the mode only copies it
        return im
    if im.mode.startswith("I"):
        from PIL import Image

        grey = np.rint(np.asarray(im, np.float32) / 257).clip(0, 255).astype(np.uint8)
        im = Image.fromarray(grey, "L")
    return im if im.mode == mode else im.convert(mode)


@contextmanager
def open_image(path: ImageSource) -> Iterator[Any]:
    """A Pillow image; any failure to read or decode it is a RuntimeInputError naming the file.

    An :class:`InMemoryImage` is its image, as it is (not closed afterwards: it is the caller's).
    """
    from PIL import Image, UnidentifiedImageError

    memory = isinstance(path, InMemoryImage)
    p = path if memory else Path(path)
    try:
        if memory:
            yield p.image  # a lazily decoded image may still fail here: the same messages
        else:
            with Image.open(p) as im:
                yield im
    except FileNotFoundError:
        raise RuntimeInputError(f"{p}: no such image file") from None
    except IsADirectoryError:
        raise RuntimeInputError(f"{p}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise RuntimeInputError(
            f"{p}: not an image (or a format Pillow cannot read: use JPEG, PNG, BMP, TIFF...)"
        ) from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise RuntimeInputError(f"{p}: cannot decode the image: {e}") from None


def check_images(paths: Sequence[ImageSource]) -> None:
    """Fail early, naming the file, when any path is not an image (reads headers only)."""
    for path in paths:
        with open_image(path):
            pass
