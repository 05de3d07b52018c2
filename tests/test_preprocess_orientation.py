"""EXIF orientation: a photo is read upright, as OpenCV's ``imread`` (what users compare against) reads it,
so boxes, class maps and ``-o`` pictures are in the upright image's pixels.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image
from runtime_helpers import natural_image
from test_runtime_session import model_dir
from test_runtime_tasks import scorer

from caffezoo.runtime.draw import read_rgb
from caffezoo.runtime.preprocess import Preprocessor, decode_image, orientation
from caffezoo.runtime.tasks import run

ORIENTATIONS = range(1, 9)
SIDEWAYS = (5, 6, 7, 8)


def oriented(path, turn: int, width: int = 64, height: int = 40, seed: int = 1, **save):
    """An image stored ``width`` x ``height`` whose EXIF orientation tag says ``turn``."""
    exif = Image.Exif()
    exif[0x0112] = turn
    Image.fromarray(natural_image(np.random.default_rng(seed), height, width)).save(path, exif=exif, **save)
    return path


@pytest.mark.parametrize("turn", ORIENTATIONS)
def test_each_orientation_reads_as_opencv_reads_it(tmp_path, turn):
    path = oriented(tmp_path / "photo.jpg", turn, quality=95)
    expected = cv2.imread(str(path))[:, :, ::-1].astype(np.int16)  # imread applies the orientation
    assert expected.shape[:2] == ((64, 40) if turn in SIDEWAYS else (40, 64))
    got = read_rgb(path).astype(np.int16)  # what -o draws on
    assert got.shape == expected.shape
    assert np.abs(got - expected).mean() < 1.0  # two JPEG decoders; a wrong turn is off by tens
    # What the net is fed: warped to 24 x 30, as blobFromImage warps imread's image.
    blob = cv2.dnn.blobFromImage(cv2.imread(str(path)), 1.0, (30, 24), (104, 117, 123), crop=False)
    x = Preprocessor(3, 24, 30, mean=np.array([104, 117, 123], np.float32))([path])
    assert x.shape == blob.shape and np.abs(x - blob).mean() < 1.0
    _, size = decode_image(path, 3, (24, 30))
    assert size == (expected.shape[1], expected.shape[0])  # (width, height) of the upright image


@pytest.mark.parametrize("turn", ORIENTATIONS)
def test_the_net_sees_the_pixels_pillow_turns_upright(tmp_path, turn):
    """Exactly the pixels of the image turned upright by Pillow, then resized."""
    from PIL import ImageOps

    path = oriented(tmp_path / "photo.png", turn, 48, 32)  # lossless: the same pixels both ways
    with Image.open(path) as im:
        assert orientation(im) == turn
        turned = ImageOps.exif_transpose(im)
    turned.save(tmp_path / "upright.png")
    pre = Preprocessor(3, 20, 28)
    assert np.array_equal(pre([path]), pre([tmp_path / "upright.png"]))
    assert np.array_equal(read_rgb(path), np.asarray(turned))


def test_segment_maps_and_pictures_are_upright(tmp_path):
    d = model_dir(tmp_path, scorer(size=(16, 20)), seed=3)
    path = oriented(tmp_path / "photo.png", 6, 50, 30)
    with Image.open(path) as im:
        from PIL import ImageOps

        ImageOps.exif_transpose(im).save(tmp_path / "upright.png")
    (got,) = run(d, [path], task="segment", output=tmp_path / "got.png").items
    (want,) = run(d, [tmp_path / "upright.png"], task="segment", output=tmp_path / "want.png").items
    assert (got.width, got.height) == (30, 50) and got.map.shape == (50, 30)
    assert np.array_equal(got.map, want.map)
    with Image.open(tmp_path / "got.png") as a, Image.open(tmp_path / "want.png") as b:
        assert a.size == b.size == (30, 50)


def test_a_broken_exif_block_reads_as_upright(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(natural_image(np.random.default_rng(0), 20, 30)).save(
        path, exif=b"Exif\x00\x00MM\x00*junk"
    )
    with Image.open(path) as im:
        assert orientation(im) == 1
    assert read_rgb(path).shape == (20, 30, 3)


@pytest.mark.parametrize("turn", ORIENTATIONS)
def test_a_tiff_is_turned_once(tmp_path, turn):
    """Pillow turns a TIFF upright itself as it loads it (and reports the upright size before): the
    orientation must not be applied a second time."""
    from PIL import ImageOps

    path = oriented(tmp_path / "scan.tiff", turn, 48, 32)
    with Image.open(path) as im:
        turned = ImageOps.exif_transpose(im)
    turned.save(tmp_path / "upright.png")
    pre = Preprocessor(3, 20, 28)
    assert np.array_equal(pre([path]), pre([tmp_path / "upright.png"]))
    _, size = decode_image(path, 3, (20, 28))
    assert size == turned.size == ((32, 48) if turn in SIDEWAYS else (48, 32))
    assert np.array_equal(read_rgb(path), np.asarray(turned))


def sixteen_bit(path, turn: int, width: int = 64, height: int = 40):
    """A 16-bit grey PNG (Pillow's I;16) whose eXIf orientation says ``turn``."""
    exif = Image.Exif()
    exif[0x0112] = turn
    grey = natural_image(np.random.default_rng(2), height, width)[:, :, 1].astype(np.uint16) * 257
    Image.fromarray(grey).save(path, exif=exif)
    return path


@pytest.mark.parametrize("turn", [3, 6])
def test_a_16_bit_image_is_drawn_upright_as_it_is_run(tmp_path, turn):
    """The picture -o draws on is turned as the net's input is, whatever mode the image is stored in."""
    path = sixteen_bit(tmp_path / "depth.png", turn)
    with Image.open(path) as im:
        assert im.mode == "I;16" and orientation(im) == turn
    _, (width, height) = decode_image(path, 3, (20, 28))
    drawn = read_rgb(path)
    assert drawn.shape == (height, width, 3) == ((64, 40, 3) if turn in SIDEWAYS else (40, 64, 3))
    x = Preprocessor(3, height, width, raw_scale=1.0)([path])[0]
    assert np.abs(x[::-1].transpose(1, 2, 0) * 255 - drawn).max() < 1  # the same pixels, the same way up


@pytest.mark.parametrize("mode", ["RGB", "P"])
def test_an_exif_after_the_pixels_turns_the_net_input_and_the_picture_alike(tmp_path, mode):
    """A PNG's eXIf chunk after its IDAT is in Pillow's info only once the pixels are loaded: the
    orientation is read from the image as opened, so converting a palette image (which loads it) for
    -o does not turn the picture the net saw unturned."""
    import struct
    import zlib

    exif = Image.Exif()
    exif[0x0112] = 6
    body = exif.tobytes()
    late = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    path = tmp_path / "late.png"
    Image.fromarray(natural_image(np.random.default_rng(4), 40, 64)).convert(mode).save(path)
    data = path.read_bytes()
    end = data.rindex(b"IEND") - 4
    path.write_bytes(data[:end] + late + data[end:])
    _, (width, height) = decode_image(path, 3, (20, 28))
    assert read_rgb(path).shape == (height, width, 3)
