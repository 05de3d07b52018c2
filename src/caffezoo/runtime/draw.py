"""Pictures of what a model said: boxes with labels, class maps as colour overlays, edge maps in grey.

>>> write_png(draw_boxes(read_rgb("cat.jpg"), [((10, 20, 110, 90), "cat 0.93", 8)]), "out.png")  # doctest: +SKIP
>>> write_png(overlay(read_rgb("street.jpg"), class_map), "out.png")                  # doctest: +SKIP

Colours are PASCAL VOC's palette (the one FCN and SegNet results are shown
in), indexed by class; pictures are written atomically, as PNG whatever the
name says, so a failed write leaves no half-written file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_open
from .preprocess import in_mode, open_image, orientation, upright

__all__ = ["OVERLAY_ALPHA", "draw_boxes", "grey", "overlay", "palette", "read_rgb", "write_png"]

OVERLAY_ALPHA = 0.5  # how much of the class colour goes into an overlay pixel


def palette(count: int) -> np.ndarray:
    """PASCAL VOC's colour map: ``count`` x 3 uint8, class 0 black, 1 dark red, 2 dark green...

    >>> palette(3).tolist()
    [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    """
    colours = np.zeros((count, 3), np.uint8)
    for k in range(count):
        c, r, g, b = k, 0, 0, 0
        for bit in range(8):  # the class index's bits, interleaved into the three channels' high bits
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        colours[k] = (r, g, b)
    return colours


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """The image at ``path`` as H x W x 3 uint8 RGB, at its own size, upright (its EXIF orientation applied)."""
    with open_image(path) as im:
        turn = orientation(im)  # of the image as opened: converting a 16-bit one drops its EXIF
        return np.asarray(upright(in_mode(im, "RGB"), turn), np.uint8).copy()


def overlay(image: np.ndarray, class_map: np.ndarray) -> np.ndarray:
    """``image`` (H x W x 3) blended with each pixel's class colour: (1 - a) * image + a * colour, rounded."""
    colours = palette(int(class_map.max(initial=0)) + 1)[class_map]
    mixed = (1 - OVERLAY_ALPHA) * image.astype(np.float32) + OVERLAY_ALPHA * colours.astype(np.float32)
    return np.rint(mixed).astype(np.uint8)


def grey(values: np.ndarray) -> np.ndarray:
    """An edge or probability map (H x W, 0 to 1) as 0-255 grey levels; values outside are clipped."""
    return np.rint(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)


def draw_boxes(
    image: np.ndarray, boxes: Sequence[tuple[tuple[float, float, float, float], str, int]]
) -> np.ndarray:
    """``image`` with each ``(box, text, class)`` drawn: a 2-pixel rectangle in the class colour, the text
    on a filled band above it (inside it when there is no room above)."""
    from PIL import Image, ImageDraw, ImageFont

    picture = Image.fromarray(image)
    pen = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    colours = palette(max((c for _, _, c in boxes), default=0) + 2)
    height, width = image.shape[:2]
    for box, text, cls in boxes:
        # whole pixels, inside the picture: the outline is drawn on the box's own border pixels
        x0, y0, x1, y1 = (
            min(max(int(round(v)), 0), limit - 1) for v, limit in zip(box, (width, height, width, height))
        )
        colour = tuple(int(v) for v in colours[cls + 1 if cls == 0 else cls])  # class 0 is black: skip it
        pen.rectangle([x0, y0, x1, y1], outline=colour, width=2)
        if text:
            left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
            tw, th = right - left + 4, bottom - top + 4
            ty = y0 - th if y0 - th >= 0 else y0
            pen.rectangle([x0, ty, x0 + tw, ty + th], fill=colour)
            pen.text((x0 + 2 - left, ty + 2 - top), text, fill=(255, 255, 255), font=font)
    return np.asarray(picture)


def encode_png(array: np.ndarray, compress_level: int = 1) -> bytes:
    """An H x W (grey) or H x W x 3 (RGB) uint8 array as PNG bytes, in memory (level 1: quick,
    a little larger than the default 6)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG", compress_level=compress_level)
    return out.getvalue()


def write_png(array: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write an H x W (grey) or H x W x 3 (RGB) uint8 array as a PNG, atomically."""
    from PIL import Image

    p = Path(path)
    with atomic_open(p) as out:
        Image.fromarray(array).save(out, format="PNG")
    return p
