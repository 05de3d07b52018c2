"""Caffe-style preprocessing and classify(): means, crops, oversampling, labels, batches, bad images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from gist_helpers import scripted  # noqa: F401  (a fixture)
from PIL import Image
from runtime_helpers import assert_close, natural_image, run_opencv
from test_runtime_session import model_dir, small_classifier

from caffezoo.caffe.caffemodel import blob_to_proto
from caffezoo.config import settings
from caffezoo.errors import ModelDirError, RuntimeInputError, UsageError
from caffezoo.runtime import classify, load
from caffezoo.runtime.preprocess import Preprocessor, read_mean


def save(path, array) -> str:
    Image.fromarray(array).save(path)
    return str(path)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(3)
    return [save(tmp_path / f"img{i}.png", natural_image(rng, 20 + i, 24 + 2 * i)) for i in range(11)]


def test_image_at_input_size_with_channel_means(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)
    path = save(tmp_path / "x.png", rgb)
    x = Preprocessor(3, 16, 16, mean=np.array([104, 117, 123], np.float32))([path])
    expected = rgb[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) - np.array([104, 117, 123]).reshape(
        3, 1, 1
    )
    assert x.shape == (1, 3, 16, 16) and np.allclose(x[0], expected, atol=1e-3)


def test_mean_image_sets_the_size_then_the_centre_crop(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (30, 40, 3), np.uint8)
    path = save(tmp_path / "x.png", rgb)
    mean = np.random.default_rng(2).uniform(90, 130, (3, 10, 12)).astype(np.float32)
    np.save(tmp_path / "mean.npy", mean)
    x = Preprocessor(3, 8, 8, mean=read_mean("mean.npy", tmp_path), raw_scale=255, input_scale=0.5)([path])
    resized = cv2.resize(rgb, (12, 10), interpolation=cv2.INTER_LINEAR).astype(np.float32)  # as Caffe's
    full = resized[:, :, ::-1].transpose(2, 0, 1) - mean  # subtract at the mean's size, then crop
    assert np.abs(x[0] - 0.5 * full[:, 1:9, 2:10]).max() <= 0.5 * 1.001  # one level of 255, halved


@pytest.mark.parametrize(
    "height, width, size, channels",
    [
        (480, 640, (300, 300), 3),
        (37, 53, (300, 300), 3),
        (480, 640, (227, 227), 1),
        (600, 800, (256, 320), 3),
    ],
)
def test_images_are_resized_as_opencv_blob_from_image_resizes_them(tmp_path, height, width, size, channels):
    """Plain bilinear, pixel centres aligned, edges repeated, no smoothing when shrinking: the blob is
    OpenCV's (Caffe's data layer resizes with the same cv::resize) to within one level of 255."""
    rgb = natural_image(np.random.default_rng(height), height, width)
    path = save(tmp_path / "x.png", rgb if channels == 3 else rgb[:, :, 0])  # lossless: one decoded image
    mean = [104.0, 117.0, 123.0][:channels]
    x = Preprocessor(channels, *size, mean=np.array(mean, np.float32), raw_scale=255, input_scale=0.5)([path])
    flags = cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE
    blob = cv2.dnn.blobFromImage(cv2.imread(path, flags), 0.5, size[::-1], mean, swapRB=False, crop=False)
    diff = np.abs(x - blob)
    assert x.shape == blob.shape and diff.max() <= 0.5 * 1.001 and diff.mean() < 0.5 * 0.5


def test_binaryproto_and_list_means(tmp_path):
    mean = np.random.default_rng(3).uniform(0, 255, (1, 3, 5, 6)).astype(np.float32)
    (tmp_path / "mean.binaryproto").write_bytes(blob_to_proto(mean).SerializeToString())
    assert np.array_equal(read_mean(tmp_path / "mean.binaryproto"), mean[0])
    assert np.array_equal(read_mean([104, 117, 123]), np.array([104, 117, 123], np.float32))


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda d: np.save(d / "m.npy", np.zeros((4, 8, 8))),
            "mean of shape 4x8x8 does not fit a 3-channel input",
        ),
        (
            lambda d: np.save(d / "m.npy", np.zeros((3, 5, 5))),
            "mean image 5x5 is smaller than the net's input 8x8",
        ),
        (
            lambda d: np.save(d / "m.npy", np.zeros((3, 8))),
            "a mean must be C values or a C x H x W image, not shape 3x8",
        ),
        (lambda d: (d / "m.npy").write_bytes(b"not numpy"), "not a readable .npy array"),
        (lambda d: (d / "m.binaryproto").write_bytes(b"\xff" * 40), "not a Caffe mean file"),
        (lambda d: None, "m.npy: mean file not found"),
    ],
)
def test_bad_means(tmp_path, make, message):
    make(tmp_path)
    name = "m.binaryproto" if (tmp_path / "m.binaryproto").exists() else "m.npy"
    with pytest.raises(ModelDirError, match=message):
        Preprocessor(3, 8, 8, mean=read_mean(name, tmp_path))


def test_mean_values_must_be_one_per_channel():
    with pytest.raises(ModelDirError, match="mean of shape 2 does not fit a 3-channel input"):
        Preprocessor(3, 8, 8, mean=read_mean([104.0, 117.0]))


def test_oversample_is_ten_crops(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 256, (10, 12, 3), np.uint8)
    path = save(tmp_path / "x.png", rgb)
    crops = Preprocessor(3, 6, 8, resize=(10, 12), oversample=True)([path])
    full = Preprocessor(3, 10, 12)([path])[0]
    corners = [full[:, :6, :8], full[:, :6, 4:], full[:, 4:, :8], full[:, 4:, 4:], full[:, 2:8, 2:10]]
    assert crops.shape == (10, 3, 6, 8)
    for i, c in enumerate(corners):
        assert np.array_equal(crops[i], c) and np.array_equal(crops[i + 5], c[:, :, ::-1])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("hello"), "not an image"),
        (lambda p: p.mkdir(), "is a directory, not an image"),
        (lambda p: None, "no such image file"),
        (lambda p: p.write_bytes(_jpeg()[:300]), "cannot decode the image"),
    ],
)
def test_bad_images_are_named(tmp_path, make, message):
    path = tmp_path / "photo.jpg"
    make(path)
    with pytest.raises(RuntimeInputError, match=f"photo.jpg: {message}"):
        Preprocessor(3, 8, 8)([path])


def test_batches_decoded_ahead_are_the_batches_decoded_in_turn(tmp_path, images):
    """The next batch is read on a worker thread while the net runs: the same arrays, the images' own
    sizes, and a bad image raises where its batch is reached, after the batches before it."""
    pre = Preprocessor(3, 8, 8, mean=np.array([104, 117, 123], np.float32))
    batches = list(pre.batches(images, 4))
    assert [b.paths for b in batches] == [images[0:4], images[4:8], images[8:11]]
    for b in batches:
        assert np.array_equal(b.x, pre(b.paths))
        assert b.sizes == [Image.open(p).size for p in b.paths]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(_jpeg()[:300])
    seen = []
    with pytest.raises(RuntimeInputError, match="broken.jpg: cannot decode the image"):
        for b in pre.batches([*images[:4], broken, *images[4:]], 2):
            seen.append(b.paths)
    assert seen == [images[0:2], images[2:4]]


def test_no_batch_is_decoded_after_a_bad_one():
    """A batch that fails to decode ends the run: the worker is not sent the next one, which would be read
    in the background (a whole batch of large images) after the caller has been given the error."""
    import threading

    from caffezoo.runtime.preprocess import _ahead

    decoded = []

    def prepare(chunk: str) -> str:
        decoded.append(chunk)
        if chunk == "bad":
            raise RuntimeInputError("bad: cannot decode the image")
        return chunk

    before = set(threading.enumerate())
    with pytest.raises(RuntimeInputError, match="bad: cannot decode"):
        list(_ahead(prepare, ["first", "bad", "third", "fourth"]))
    for thread in set(threading.enumerate()) - before:  # the worker ends once told to stop: wait for it
        thread.join(timeout=60)
    assert decoded == ["first", "bad"]


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_close_to_its_area_average(tmp_path):
    """A JPEG at least 4x the input both ways is decoded in the DCT at 1/2, 1/4 or 1/8 scale, staying at
    least twice the size it is resized to (Pillow's draft). The DCT's scaling averages the pixels it
    drops, so the result is near the whole image's area average (cv2 INTER_AREA), nearer than plain
    bilinear of the whole image, which samples 2x2 of every ~10x8 pixels and aliases fine texture
    (measured on 1600x1200: mean 2.5 levels from the area average, against 8.5 for whole + bilinear).
    A smaller JPEG is decoded whole: OpenCV's resize of it, to within its rounding."""
    pre = Preprocessor(3, 150, 150)  # BGR values 0-255, no mean
    for (width, height), decoded_whole in (((1600, 1200), False), ((500, 400), True)):
        path = tmp_path / f"{width}.jpg"
        Image.fromarray(natural_image(np.random.default_rng(width), height, width)).save(path, quality=92)
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        got = pre([path])[0][::-1].transpose(1, 2, 0)
        bilinear = cv2.resize(rgb, (150, 150), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        if decoded_whole:
            assert np.abs(got - bilinear).max() <= 1
        else:
            area = cv2.resize(rgb, (150, 150), interpolation=cv2.INTER_AREA).astype(np.float32)
            diff = np.abs(got - area)
            assert diff.mean() <= 4 and np.percentile(diff, 99) <= 16
            assert diff.mean() < 0.5 * np.abs(bilinear - area).mean()


def _jpeg() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(natural_image(np.random.default_rng(0), 64, 64)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_classify_top_k_labels_and_batches(tmp_path, images):
    d = model_dir(tmp_path, mean="[104, 117, 123]", labels="classes.txt")
    (d / "classes.txt").write_text("cat\ndog\nbird\nfish\n\n")
    one_by_one = [classify(d, [image], top=3)[0] for image in images]
    batched = classify(d, images, top=3, batch_size=4)
    assert [p.image for p in batched] == images
    for a, b in zip(one_by_one, batched):
        assert [s.index for s in a.top] == [s.index for s in b.top]
        assert np.allclose([s.score for s in a.top], [s.score for s in b.top], atol=1e-6)
    for p in batched:
        scores = [s.score for s in p.top]
        assert scores == sorted(scores, reverse=True) and len(scores) == 3
        assert all(s.label == ["cat", "dog", "bird", "fish"][s.index] for s in p.top)
    # The same numbers as OpenCV on the same preprocessed input.
    x = Preprocessor(3, 16, 16, mean=np.array([104, 117, 123], np.float32))(images[:1])
    reference = run_opencv(d / "deploy.prototxt", d / "small.caffemodel", {"data": x}, ["prob"])["prob"][0]
    assert all(abs(s.score - reference[s.index]) <= 1e-4 for s in batched[0].top)


def test_classify_oversample_averages_the_crops(tmp_path, images):
    d = model_dir(tmp_path, mean="[104, 117, 123]")
    got = classify(d, images[:2], top=4, oversample=True, resize=(24, 24))
    net = load(d)
    crops = Preprocessor(
        3, 16, 16, mean=np.array([104, 117, 123], np.float32), resize=(24, 24), oversample=True
    )(images[:2])
    expected = net(data=crops)["prob"].reshape(2, 10, 4).mean(1)
    for p, row in zip(got, expected):
        assert_close(np.array([s.score for s in sorted(p.top, key=lambda s: s.index)]), row)
        assert p.top[0].label is None


def test_classify_with_a_fixed_batch_pads_the_last_one(tmp_path, images):
    n = small_classifier(batch=4)
    n.BatchNorm("bn", "prob", use_global_stats=False)  # depends on the whole batch: fixed at 4
    d = model_dir(tmp_path, n)
    got = classify(d, images[:6], top=1)
    assert len(got) == 6 and load(d).inputs["data"][0] == 4


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(batch_size=0), "--batch-size must be 1 or more, not 0"),
        (dict(batch_size=-1), "--batch-size must be 1 or more, not -1"),
        (
            dict(resize=(12, 20)),
            "resize 12x20 is smaller than the net's input 16x16: there would be nothing to crop",
        ),
        (dict(resize=(0, 20)), r"resize: expected a height and a width of 1 or more, got \(0, 20\)"),
        (dict(resize=(20,)), r"resize: expected a height and a width of 1 or more, got \(20,\)"),
    ],
)
def test_bad_options_are_refused(tmp_path, images, options, message):
    with pytest.raises(UsageError, match=message):
        classify(model_dir(tmp_path), images[:2], **options)


def test_mean_files_given_are_found_from_the_working_directory(tmp_path, images, monkeypatch):
    """The front matter's ``mean`` is in the model directory; a ``mean`` given to classify is the caller's path."""
    d = model_dir(tmp_path, mean="mean.npy")
    np.save(d / "mean.npy", np.array([104, 117, 123], np.float32))
    np.save(tmp_path / "mine.npy", np.array([90, 100, 110], np.float32))
    monkeypatch.chdir(tmp_path)

    def scores(**options) -> list[float]:
        return [s.score for p in classify(d, images[:2], top=4, **options) for s in p.top]

    assert scores() == scores(mean=[104, 117, 123])
    assert scores(mean="mine.npy") == scores(mean=[90, 100, 110]) != scores()
    with pytest.raises(ModelDirError, match="^mean.npy: mean file not found"):  # not the model directory's
        classify(d, images[:1], mean="mean.npy")


def test_a_gist_model_is_fetched_once(tmp_path, images, scripted, monkeypatch):  # noqa: F811
    """MODEL as a gist id: classify reads its model info from the API once, not once per step."""
    d = model_dir(tmp_path, mean="[104, 117, 123]", labels="classes.txt")
    (d / "classes.txt").write_text("cat\ndog\nbird\nfish\n")
    gist_id = "a1b2c3d4e5f60718293a"
    files = {
        name: {"filename": name, "content": (d / name).read_text(), "truncated": False}
        for name in ("readme.md", "deploy.prototxt", "classes.txt")
    }
    api = scripted()
    api.script("GET", f"/gists/{gist_id}", (200, {"id": gist_id, "files": files, "truncated": False}))
    monkeypatch.setenv("CAFFEZOO_GIST_API", api.url)
    weights = settings().models_dir / f"gist-{gist_id}" / "small.caffemodel"
    weights.parent.mkdir(parents=True)
    weights.write_bytes((d / "small.caffemodel").read_bytes())
    got = classify(gist_id, images[:2], top=2)
    assert [[(s.index, s.label) for s in p.top] for p in got] == [
        [(s.index, s.label) for s in p.top] for p in classify(d, images[:2], top=2)
    ]
    assert len(api.requests("GET", f"/gists/{gist_id}")) == 1


def test_labels_must_match_the_classes(tmp_path, images):
    d = model_dir(tmp_path, labels="classes.txt")
    (d / "classes.txt").write_text("cat\ndog\n")
    with pytest.raises(ModelDirError, match="classes.txt: 2 labels, but the net's 'prob' has 4 classes"):
        classify(d, images[:1])


def test_a_bad_image_stops_before_any_work(tmp_path, images):
    d = model_dir(tmp_path)
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    with pytest.raises(RuntimeInputError, match="notes.jpg: not an image"):
        classify(d, [*images, bad])
    assert not list(settings().cache_dir.glob("**/*.onnx"))  # nothing was converted
    classify(d, images[:1])
    assert len(list(settings().cache_dir.glob("**/*.onnx"))) == 1  # where a conversion would have gone


def test_a_16_bit_grey_png_is_prepared_and_drawn_as_its_8_bit_self(tmp_path):
    from caffezoo.runtime.draw import read_rgb
    from caffezoo.runtime.preprocess import load_image

    grey = np.asarray(Image.fromarray(natural_image(np.random.default_rng(3), 40, 50)).convert("L"))
    Image.fromarray(grey).save(tmp_path / "eight.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")  # Pillow: I;16
    for channels in (1, 3):
        eight = load_image(tmp_path / "eight.png", channels, (32, 32))
        assert np.array_equal(load_image(tmp_path / "sixteen.png", channels, (32, 32)), eight)
    assert np.array_equal(read_rgb(tmp_path / "sixteen.png"), read_rgb(tmp_path / "eight.png"))


def test_the_resize_graph_is_read_by_the_oldest_onnxruntime_caffezoo_supports():
    """pyproject allows onnxruntime 1.17, which reads models up to IR version 9, with any onnx >= 1.16,
    whose make_model writes its own newest IR version (14 with onnx 1.23): the resize graph carries the
    oldest IR version of its opset, as every graph the converter writes does, or no image is prepared."""
    from caffezoo.runtime.resize import _model

    model = _model(3, 8, 8)
    assert model.ir_version <= 9 and model.opset_import[0].version == 13


@pytest.mark.parametrize("channels", [1, 3])
def test_from_array_refuses_the_old_height_width_channels_layout(channels):
    """from_array took H x W x C until the resize moved to C x H x W: an array in the old layout is
    refused with the shape it should have had, not read as rows (a square grey image was read silently)."""
    from caffezoo.errors import RuntimeInputError

    pre = Preprocessor(channels, 8, 8)
    with pytest.raises(RuntimeInputError, match=rf"\({channels}, 8, 8\).*\(8, 8, {channels}\)"):
        pre.from_array(np.zeros((8, 8, channels), np.float32))
    assert pre.from_array(np.zeros((channels, 8, 8), np.float32)).shape == (1, channels, 8, 8)
