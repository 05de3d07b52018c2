"""`caffezoo run` per task: detect, segment, embed, the task's choice, folders, and the pictures it draws.

Expected values come from the converted net itself (``load(...).forward`` on
the same preprocessed input), so each test checks what `run` does with the
outputs: the mapping to image pixels, the thresholds, the drawing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from model_helpers import write_model
from PIL import Image
from runtime_helpers import natural_image
from test_runtime_session import model_dir, small_classifier
from test_runtime_ssd import _ssd

from caffezoo.caffe.builder import NetBuilder
from caffezoo.errors import ModelDirError, RuntimeInputError, UsageError, WriteError
from caffezoo.modeldir import SHARED_LABELS_DIR
from caffezoo.runtime import load
from caffezoo.runtime.draw import OVERLAY_ALPHA, palette
from caffezoo.runtime.preprocess import Preprocessor
from caffezoo.runtime.tasks import run, task_from_text


def picture(path, width, height, seed=0):
    Image.fromarray(natural_image(np.random.default_rng(seed), height, width)).save(path)
    return path


def scorer(classes=3, size=(16, 20), sigmoid=False) -> NetBuilder:
    """A fully convolutional net: a class score map at the input's size (one channel: an edge map)."""
    n = NetBuilder("fcn")
    x = n.Input("data", shape=dict(dim=[1, 3, *size]))
    x = n.Convolution("score", x, num_output=classes, kernel_size=3, pad=1)
    if sigmoid:
        n.Sigmoid("edges", x)
    return n


def forward(d, image, blob, raw_scale=255.0, mean=None):
    """What the net computes for ``image`` prepared as `run` prepares it (warped to the input)."""
    net = load(d)
    _, c, h, w = net.inputs["data"]
    mean = None if mean is None else np.asarray(mean, np.float32)
    return net.forward(data=Preprocessor(c, h, w, raw_scale=raw_scale, mean=mean)([image]))[blob]


# ------------------------------------------------------------ detect


def test_detect_maps_boxes_to_image_pixels_and_draws_them(tmp_path):
    d = model_dir(tmp_path, _ssd(keep_top_k=4, threshold=0.2), seed=3, task="object detection")
    image = picture(tmp_path / "street.png", 320, 200)
    rows = forward(d, image, "detection_out", raw_scale=1.0)[0, 0]  # inputs 0-1: scores not saturated
    assert len(rows) == 4 and (rows[:, 2] > 0.2).all()
    best = np.sort(rows[:, 2])[::-1]
    threshold = float(best[1] + best[2]) / 2  # keeps the best two
    kept = rows[rows[:, 2] >= threshold]
    result = run(d, [image], threshold=threshold, output=tmp_path / "out.png", raw_scale=1.0)
    assert result.task == "detect"
    (item,) = result.items
    assert (item.width, item.height) == (320, 200) and len(item.detections) == 2
    scale = np.array([320, 200, 320, 200])
    for det, row in zip(item.detections, kept[np.argsort(-kept[:, 2])]):
        assert det.label == int(row[1]) and det.score == pytest.approx(float(row[2]))
        assert np.allclose(det.box, np.clip(row[3:] * scale, 0, scale), atol=1e-3)
    drawn = np.asarray(Image.open(tmp_path / "out.png").convert("RGB"))
    original = np.asarray(Image.open(image).convert("RGB"))
    assert drawn.shape == original.shape
    for det in item.detections:  # the left edge of each box, half-way down, in its class's colour
        x0, y0, x1, y1 = (int(round(v)) for v in det.box)
        x0, x1 = min(x0, 319), min(x1, 319)
        colour = palette(det.label + 1)[det.label]
        assert (drawn[(y0 + y1) // 2, x0] == colour).all(), (det, drawn[(y0 + y1) // 2, x0])
    changed = np.any(drawn != original, axis=2)
    inside = np.zeros_like(changed)
    for det in item.detections:  # every changed pixel belongs to a box or the label above it
        x0, y0, x1, y1 = (int(round(v)) for v in det.box)
        inside[max(0, y0 - 20) : y1 + 1, max(0, x0) : max(x1, x0 + 120) + 1] = True
    assert changed.any() and not (changed & ~inside).any()


def test_detect_json_for_a_folder_and_nothing_found(tmp_path, cli):
    d = model_dir(
        tmp_path, _ssd(keep_top_k=3), seed=3
    )  # no task in the front matter: DetectionOutput says it
    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(3):
        picture(folder / f"p{i}.jpg", 60 + 10 * i, 40, seed=i)
    (folder / "notes.txt").write_text("not an image")
    result = cli("run", d, folder, "--json", "--threshold", "0", "-o", tmp_path / "boxes", "-b", "2")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["task"] == "detect" and [r["image"] for r in data["results"]] == [
        str(folder / f"p{i}.jpg") for i in range(3)
    ]
    for i, r in enumerate(data["results"]):
        assert r["width"] == 60 + 10 * i and len(r["detections"]) == 3
        assert r["picture"] == str(tmp_path / "boxes" / f"p{i}.png")
        assert Image.open(r["picture"]).size == (60 + 10 * i, 40)
        for det in r["detections"]:
            x0, y0, x1, y1 = det["box"]
            assert 0 <= x0 <= x1 <= r["width"] and 0 <= y0 <= y1 <= 40
    nothing = cli("run", d, folder / "p0.jpg", "--json", "--threshold", "0.99", "--raw-scale", "1")
    assert nothing.code == 0 and json.loads(nothing.stdout)["results"][0]["detections"] == []


# ------------------------------------------------------------ segment


def test_segment_overlay_pixels_are_the_argmax_classes(tmp_path):
    d = model_dir(tmp_path, scorer(), task="semantic segmentation", mean="[128, 128, 128]")
    image = picture(tmp_path / "scene.png", 20, 16)  # the net's own size: one pixel per score
    scores = forward(d, image, "score", mean=[128, 128, 128])[0]
    expected = np.argmax(scores, axis=0)
    assert len(np.unique(expected)) == 3  # the test sees every class
    result = run(d, [image], output=tmp_path / "mask.png")
    (item,) = result.items
    assert result.task == "segment" and np.array_equal(item.map, expected)
    counts = np.bincount(expected.reshape(-1), minlength=3)
    assert sorted((a.label, a.pixels) for a in item.areas) == [(k, int(counts[k])) for k in range(3)]
    assert sum(a.fraction for a in item.areas) == pytest.approx(1.0)
    drawn = np.asarray(Image.open(tmp_path / "mask.png").convert("RGB")).astype(float)
    original = np.asarray(Image.open(image).convert("RGB")).astype(float)
    blended = (1 - OVERLAY_ALPHA) * original + OVERLAY_ALPHA * palette(3)[expected]
    assert np.abs(drawn - blended).max() <= 0.5 + 1e-9


def test_segment_maps_classes_back_to_a_larger_image(tmp_path):
    d = model_dir(tmp_path, scorer())
    image = picture(tmp_path / "big.png", 40, 32)  # twice the net's size: each score covers 2 x 2 pixels
    small = np.argmax(forward(d, image, "score")[0], axis=0)
    (item,) = run(d, [image], task="segment").items
    assert item.map.shape == (32, 40)
    assert np.array_equal(item.map, np.repeat(np.repeat(small, 2, axis=0), 2, axis=1))


def test_segment_edge_map_is_grey(tmp_path, cli):
    d = model_dir(tmp_path, scorer(classes=1, sigmoid=True))
    image = picture(tmp_path / "edges.png", 20, 16)
    values = forward(d, image, "edges")[0, 0]
    result = cli("run", d, image, "--task", "segment", "-o", tmp_path / "edges_out.png", "--json")
    assert result.code == 0, result.stderr
    info = json.loads(result.stdout)["results"][0]
    assert info["edges"]["mean"] == pytest.approx(float(values.mean()), abs=1e-5)
    grey = np.asarray(Image.open(tmp_path / "edges_out.png"))
    assert grey.ndim == 2 and np.abs(grey - np.rint(values * 255)).max() <= 1


# ------------------------------------------------------------ embed


def test_embed_writes_every_image_batch_by_batch(tmp_path, cli):
    d = model_dir(tmp_path)
    folder = tmp_path / "pics"
    folder.mkdir()
    images = [picture(folder / f"{i}.png", 24, 20, seed=i) for i in range(5)]
    out = tmp_path / "features.npy"
    result = cli("run", d, folder, "--blob", "conv1", "-o", out, "-b", "2")
    assert result.code == 0, result.stderr
    assert f"wrote {out}: 5 x 6x7x7 float32 (blob conv1)" in result.stdout
    features = np.load(out)
    net = load(d, outputs=["conv1"])
    expected = net.forward(data=Preprocessor(3, 16, 16)(images))["conv1"]
    assert features.shape == (5, 6, 7, 7) and np.allclose(features, expected, atol=1e-5)


@pytest.mark.parametrize("task", ["segment", "embed"])
def test_output_that_is_a_pipe_or_device_is_refused_not_replaced(tmp_path, task):
    import os
    import stat

    d = model_dir(tmp_path, scorer(), task="semantic segmentation")
    image = picture(tmp_path / "a.png", 24, 20)
    pipe = tmp_path / "out.npy"
    os.mkfifo(pipe)  # as /dev/stdout or /dev/full: renaming a file over it replaced the device (as root)
    blob = {"embed": "score"}.get(task)
    with pytest.raises(WriteError, match=f"{pipe}: cannot write: not a regular file"):
        run(d, [image], task=task, output=pipe, blob=blob)
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_sigterm_mid_embed_leaves_neither_features_nor_a_temporary_file(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import threading

    from download_helpers import no_temp_files, wait_for

    d = model_dir(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    first = picture(work / "a.png", 24, 20)
    # The second image is a pipe fed once: its header is checked, then reading its pixels waits, with
    # the first image's features already in the temporary file.
    stalled = work / "b.png"
    os.mkfifo(stalled)
    png = first.read_bytes()
    threading.Thread(target=lambda: stalled.write_bytes(png), daemon=True).start()
    out = work / "features.npy"
    p = subprocess.Popen(
        [sys.executable, "-m", "caffezoo", "run", d, first, stalled, "--blob", "conv1", "-o", out, "-b", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: not no_temp_files(work), what="features being written")
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and not out.exists() and no_temp_files(work), os.listdir(work)


@pytest.mark.parametrize(
    "args, message",
    [
        (("--blob", "conv1"), "--task embed needs -o FILE.npy"),
        (("--task", "embed", "-o", "f.npy"), "--task embed needs --blob NAME"),
        (("--blob", "conv1", "-o", "f.csv"), "features are written as a .npy file"),
        (("--blob", "nope", "-o", "f.npy"), "no blob named 'nope' in the net"),
        (("--task", "caption"), "--task caption needs two deploy nets (LRCN's layout)"),
        (("--task", "translate"), "--task 'translate': expected one of classify, detect, segment"),
        (("--threshold", "2", "--task", "detect"), "--threshold must be between 0 and 1, not 2.0"),
        (("--task", "detect"), "--task detect needs an SSD DetectionOutput layer"),
        (("--task", "segment"), "--task segment needs a score map"),
        (("-o", "x.png"), "-o is for pictures (detect, segment) and features (embed); classify prints"),
    ],
)
def test_bad_task_options_are_one_line_and_write_nothing(tmp_path, cli_process, args, message):
    d = model_dir(tmp_path)
    image = picture(tmp_path / "a.png", 16, 16)
    result = cli_process("run", d, image, *args, cwd=tmp_path)
    assert result.code != 0 and "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "small_model"]


def test_an_empty_folder_and_a_bad_image_in_a_folder(tmp_path):
    d = model_dir(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="a folder with no image files in it"):
        run(d, [empty])
    (empty / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(RuntimeInputError, match="broken.png"):
        run(d, [empty])


def a_folder_with_bad_images(tmp_path):
    """Five images; the second is not an image at all, the fourth a JPEG cut short (its header reads)."""
    folder = tmp_path / "pics"
    folder.mkdir()
    for i in (0, 2, 4):
        picture(folder / f"p{i}.jpg", 40, 30, seed=i)
    (folder / "p1.jpg").write_bytes(b"not an image")
    whole = picture(tmp_path / "whole.jpg", 40, 30).read_bytes()
    (folder / "p3.jpg").write_bytes(whole[: len(whole) // 3])
    return folder, [folder / f"p{i}.jpg" for i in range(5)]


@pytest.mark.parametrize("task", ["segment", "classify"])
def test_bad_images_in_a_folder_are_named_and_the_others_run(tmp_path, cli_process, task):
    d = model_dir(tmp_path, scorer() if task == "segment" else small_classifier(batch=1), seed=3)
    folder, images = a_folder_with_bad_images(tmp_path)
    result = cli_process("run", d, folder, "-b", "2", "--task", task)
    assert result.code == 1 and "Traceback" not in result.stderr, result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3, result.stderr  # one line per bad image, then how many there were
    assert str(images[1]) in errors[0] and "not an image" in errors[0]
    assert str(images[3]) in errors[1] and "cannot decode" in errors[1]
    assert "2 of 5 images could not be read" in errors[2]
    printed = [line for line in result.stdout.splitlines() if line.startswith(str(folder))]
    assert [line.split()[0] for line in printed] == [str(images[i]) for i in (0, 2, 4)]
    # --json stays one valid document: each bad image in its place, with its error.
    result = cli_process("run", d, folder, "-b", "2", "--task", task, "--json")
    assert result.code == 1 and len(result.stderr.strip().splitlines()) == 3, result.stderr
    data = json.loads(result.stdout)
    items = data if task == "classify" else data["results"]
    assert [r["image"] for r in items] == [str(p) for p in images]
    assert ["error" in r for r in items] == [False, True, False, True, False]
    assert "not an image" in items[1]["error"]


def test_results_are_told_as_they_are_made(tmp_path):
    d = model_dir(tmp_path, scorer(), seed=3)
    folder, images = a_folder_with_bad_images(tmp_path)
    told = []
    result = run(d, [folder], keep_going=True, batch_size=1, each=lambda item: told.append(item.image))
    assert told == [str(p) for p in images] == [item.image for item in result.items]
    assert [f.image for f in result.failed] == [str(images[1]), str(images[3])]
    with pytest.raises(RuntimeInputError, match="p1.jpg"):  # without keep_going: before any is run
        run(d, [folder], each=told.append)


def test_an_image_gone_before_its_picture_is_drawn_is_named_and_skipped(tmp_path):
    """-o reads each image again to draw on it: one deleted in between is a failure in its place, and the
    others are still run and drawn."""
    d = model_dir(tmp_path, scorer(), seed=3)
    folder = tmp_path / "pics"
    folder.mkdir()
    images = [picture(folder / f"p{i}.jpg", 40, 30, seed=i) for i in range(4)]

    def each(item):
        if item.image == str(images[0]):  # p1 is decoded and run with p0 (one batch): gone before drawn
            images[1].unlink()

    result = run(
        d, [folder], task="segment", output=tmp_path / "out", batch_size=2, keep_going=True, each=each
    )
    assert [item.image for item in result.items] == [str(p) for p in images]
    assert [f.image for f in result.failed] == [str(images[1])] and "no such" in result.failed[0].error
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.png", "p2.png", "p3.png"]


def test_file_names_that_are_not_utf8_are_printed_not_a_traceback(tmp_path):
    """A name from an old archive (Latin-1 bytes) on a UTF-8 terminal, whose stdout is strict: printed as
    the bytes it is, as ls prints it; in --json as escapes that json.loads and os.fsencode turn back."""
    d = model_dir(tmp_path, scorer(), seed=3)
    folder = tmp_path / "pics"
    folder.mkdir()
    good, bad = os.fsdecode(b"caf\xe9.jpg"), os.fsdecode(b"\xff.jpg")
    picture(folder / good, 40, 30)
    (folder / bad).write_bytes(b"not an image")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}  # as Python sets it up under en_US.UTF-8

    def caffezoo(*args):
        return subprocess.run(
            [sys.executable, "-m", "caffezoo", "run", d, folder, *args],
            capture_output=True,
            env=env,
            timeout=120,
        )

    p = caffezoo("--task", "segment")
    assert p.returncode == 1 and b"Traceback" not in p.stderr, p.stderr.decode(errors="replace")
    assert os.fsencode(folder / good) in p.stdout.splitlines()[0]
    p = caffezoo("--task", "segment", "--json")
    assert p.returncode == 1 and b"Traceback" not in p.stderr, p.stderr.decode(errors="replace")
    items = json.loads(p.stdout.decode("utf-8"))["results"]  # valid UTF-8, valid JSON
    assert [os.fsencode(r["image"]) for r in items] == [os.fsencode(folder / good), os.fsencode(folder / bad)]
    assert "not an image" in items[1]["error"]


# ------------------------------------------------------------ which task, labels


def test_task_words_of_the_front_matter():
    assert [task_from_text(t) for t in ("image classification", "Object Detection", "edge detection")] == [
        "classify",
        "detect",
        "segment",  # HED: an edge map, not boxes
    ]
    assert task_from_text("knowledge-distilled classification") == "classify"
    assert [task_from_text(t) for t in ("scene parsing", "video captioning", "embed", None, "magic")] == [
        "segment",
        "caption",
        "embed",
        None,
        None,
    ]


def test_the_front_matter_task_wins_over_the_outputs(tmp_path):
    d = model_dir(tmp_path, scorer(), task="image classification")  # a score map, but the card says classify
    image = picture(tmp_path / "a.png", 20, 16)
    result = run(d, [image], top=2)
    assert result.task == "classify" and len(result.items[0].top) == 2
    assert run(d, [image], task="segment").task == "segment"


def test_bundled_imagenet_models_share_one_labels_file(tmp_path):
    from caffezoo.zoo import resolve

    paths = {
        name: resolve(name).labels_path
        for name in ("bvlc_alexnet", "bvlc_reference_caffenet", "bvlc_googlenet")
    }
    assert set(paths.values()) == {SHARED_LABELS_DIR / "ilsvrc12_synset_words.txt"}
    names = (SHARED_LABELS_DIR / "ilsvrc12_synset_words.txt").read_text().splitlines()
    assert len(names) == 1000 and names[281] == "n02123045 tabby, tabby cat"


def test_a_model_names_the_shared_labels_and_its_own_file_wins(tmp_path):
    n = small_classifier(classes=1000)
    d = model_dir(tmp_path, n, labels="ilsvrc12_synset_words.txt")
    image = picture(tmp_path / "a.png", 16, 16)
    (item,) = run(d, [image], top=3).items
    assert all(s.label.startswith("n0") or s.label.startswith("n1") for s in item.top)
    (d / "ilsvrc12_synset_words.txt").write_text("".join(f"own {i}\n" for i in range(1000)))
    (item,) = run(d, [image], top=3).items
    assert all(s.label == f"own {s.index}" for s in item.top)


# ------------------------------------------------------------ Faster R-CNN


@pytest.mark.parametrize("family", ["faster_rcnn", "r_fcn"])
def test_region_detections_follow_the_test_script(tmp_path, family):
    import test_runtime_layers
    from test_runtime_layers import nms_ref

    classes = 4 if family == "faster_rcnn" else 3
    # Random weights: inputs small enough that scores and boxes do not saturate.
    raw_scale = 255.0 if family == "faster_rcnn" else 1.0
    mean = [128 * raw_scale / 255] * 3
    d = model_dir(tmp_path, getattr(test_runtime_layers, family)(classes=classes), seed=5)
    image = picture(tmp_path / "room.png", 256, 150, seed=2)
    net = load(d, outputs=["rois"])
    assert net.inputs == {"data": (1, 3, 96, 128), "im_info": (1, 3)}
    x = Preprocessor(3, 96, 128, raw_scale=raw_scale, mean=np.array(mean, np.float32))([image])
    sy, sx = 96 / 150, 128 / 256
    out = net.forward(data=x, im_info=np.array([[96, 128, np.sqrt(sx * sy)]], np.float32))
    # py-faster-rcnn's im_detect: proposals to image pixels, refined per class, clipped; then NMS 0.3 per class
    boxes = out["rois"][:, 1:5].astype(np.float64) / [sx, sy, sx, sy]
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    cx, cy = boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h
    threshold = 0.25 if family == "faster_rcnn" else 0.05  # 0.05: test_net.py's own threshold
    expected = []
    for label in range(1, classes):
        # R-FCN's boxes are class-agnostic: columns 4:8 (the object's) serve every class
        first = 4 * label if family == "faster_rcnn" else 4
        dx, dy, dw, dh = out["bbox_pred"][:, first : first + 4].T
        px, py, pw, ph = dx * w + cx, dy * h + cy, np.exp(dw) * w, np.exp(dh) * h
        pred = np.stack([px - pw / 2, py - ph / 2, px + pw / 2, py + ph / 2], 1)
        pred = np.clip(pred, 0, [255, 149, 255, 149])
        scores = out["cls_prob"][:, label]
        keep = scores >= threshold
        for i in nms_ref(pred[keep], scores[keep], 0.3):
            expected.append((float(scores[keep][i]), label, pred[keep][i]))
    expected.sort(key=lambda t: -t[0])
    assert len(expected) >= 2
    result = run(
        d, [image], threshold=threshold, output=tmp_path / "regions.png", raw_scale=raw_scale, mean=mean
    )
    (item,) = result.items
    assert result.task == "detect" and len(item.detections) == len(expected)
    for det, (score, label, box) in zip(item.detections, expected):
        assert det.label == label and det.score == pytest.approx(score, abs=1e-6)
        assert np.allclose(det.box, box, atol=1e-3)
    assert Image.open(tmp_path / "regions.png").size == (256, 150)


def test_pictures_of_several_images_need_a_folder_and_keep_apart(tmp_path):
    d = model_dir(tmp_path, scorer())
    images = [picture(tmp_path / "a.png", 20, 16), picture(tmp_path / "a.jpg", 20, 16, seed=1)]
    (tmp_path / "taken.png").write_bytes(b"x")
    with pytest.raises(UsageError, match="2 images need a folder for their pictures, not a file"):
        run(d, images, task="segment", output=tmp_path / "taken.png")
    result = run(d, images, task="segment", output=tmp_path / "maps")
    assert [i.picture for i in result.items] == [
        str(tmp_path / "maps" / "a.png.png"),
        str(tmp_path / "maps" / "a.jpg.png"),
    ]
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["a.jpg.png", "a.png.png"]


# ------------------------------------------------------------ caption (LRCN)


def lrcn_dir(tmp_path, vocab=8, features=5, hidden=7, seed=0):
    """LRCN's layout in miniature: an image net and a word net in one directory, one caffemodel for both."""
    from caffezoo.caffe.caffemodel import write_caffemodel

    image = NetBuilder("lrcn_cnn")
    x = image.Input("data", shape=dict(dim=[1, 3, 16, 16]))
    x = image.ReLU(
        "relu1", image.Convolution("conv1", x, num_output=4, kernel_size=3, stride=2), in_place=True
    )
    image.InnerProduct("fc8", x, num_output=features)
    word = NetBuilder("lrcn_words")
    cont = word.Input("cont_sentence", shape=dict(dim=[1, 1]))
    sentence = word.Input("input_sentence", shape=dict(dim=[1, 1]))
    feats = word.Input("image_features", shape=dict(dim=[1, features]))
    embedded = word.Embed("embed", sentence, num_output=6, input_dim=vocab, bias_term=False)
    h = word.LSTM("lstm", embedded, cont, feats, num_output=hidden)
    word.Softmax("probs", word.InnerProduct("predict", h, num_output=vocab, axis=2), axis=2)
    rng = np.random.default_rng(seed)
    blobs = {
        "conv1": [rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.01, np.zeros(4, np.float32)],
        "fc8": [
            rng.standard_normal((features, 196)).astype(np.float32) * 0.1,
            np.zeros(features, np.float32),
        ],
        "embed": [rng.standard_normal((vocab, 6)).astype(np.float32)],
        "lstm": [
            rng.standard_normal(s).astype(np.float32)
            for s in [(4 * hidden, 6), (4 * hidden,), (4 * hidden, features), (4 * hidden, hidden)]
        ],
        "predict": [rng.standard_normal((vocab, hidden)).astype(np.float32) * 3, np.zeros(vocab, np.float32)],
    }
    d = tmp_path / "lrcn"
    d.mkdir()
    (d / "lrcn_cnn.deploy.prototxt").write_text(image.to_text())
    (d / "lrcn_word_to_preds.deploy.prototxt").write_text(word.to_text())
    both = image.to_proto()
    both.layer.extend(word.to_proto().layer)
    write_caffemodel(d / "lrcn.caffemodel", both, blobs)
    (d / "vocabulary.txt").write_text("".join(f"w{i}\n" for i in range(1, vocab)))
    write_model(
        d,
        "name: Mini LRCN\ncaffemodel: lrcn.caffemodel\nlicense: BSD-2-Clause\ntask: image captioning\n"
        "labels: vocabulary.txt\nmean: [128, 128, 128]\n",
    )
    return d, blobs


def test_caption_is_greedy_word_by_word(tmp_path):
    from test_runtime_layers import lstm_ref

    d, blobs = lrcn_dir(tmp_path)
    image = picture(tmp_path / "cat.png", 16, 16)
    # The image net's features (its own parity is another test's business), then the word model in numpy.
    features = load(d / "lrcn_cnn.deploy.prototxt", weights=d / "lrcn.caffemodel").forward(
        data=Preprocessor(3, 16, 16, mean=np.full(3, 128, np.float32))([image])
    )["fc8"]
    words: list[int] = []
    for _ in range(6):
        sentence = np.array([0, *words], np.float64)
        cont = np.array([0] + [1] * len(words), np.float64)
        e = blobs["embed"][0][sentence.astype(int)][:, None, :].astype(np.float64)
        h, _, _ = lstm_ref(e, cont[:, None], [b.astype(np.float64) for b in blobs["lstm"]], features)
        logits = h[-1, 0] @ blobs["predict"][0].T.astype(np.float64)
        word = int(np.argmax(logits))
        if word == 0:
            break
        words.append(word)
    assert words, "the test should see at least one word"
    result = run(d, [image], max_words=6)
    (item,) = result.items
    assert result.task == "caption" and item.words == words
    assert item.sentence == " ".join(f"w{w}" for w in words)
    assert all(0 < p <= 1 for p in item.probabilities)


@pytest.mark.parametrize("task", ["caption", None])  # asked for, or the card's "image captioning"
def test_caption_refuses_a_picture_it_would_not_draw(tmp_path, task):
    d, _ = lrcn_dir(tmp_path)
    image = picture(tmp_path / "cat.png", 16, 16)
    with pytest.raises(UsageError, match="-o is for pictures .* caption prints"):
        run(d, [image], task=task, output=tmp_path / "out.png")  # was ignored: no picture, no word said
    assert not (tmp_path / "out.png").exists()


def test_caption_needs_both_nets_and_a_fitting_vocabulary(tmp_path, cli_process):
    d, _ = lrcn_dir(tmp_path)
    image = picture(tmp_path / "cat.png", 16, 16)
    (d / "vocabulary.txt").write_text("just\nthree\nwords\n")
    result = cli_process("run", d, image, "--json")
    assert result.code == 1 and "vocabulary.txt: 3 words, but the word net has 8" in result.stderr
    (d / "lrcn_word_to_preds.deploy.prototxt").unlink()
    result = cli_process("run", d, image)
    assert result.code == 1 and "needs two deploy nets (LRCN's layout)" in result.stderr
    assert "Traceback" not in result.stderr


def test_faster_rcnn_with_no_proposals_finds_nothing(tmp_path):
    from test_runtime_layers import faster_rcnn

    d = model_dir(tmp_path, faster_rcnn(classes=4), seed=5)
    image = picture(tmp_path / "tiny.png", 4, 3)  # im_info scale 27: every box is under 16 x 27 pixels
    result = run(d, [image], task="detect", threshold=0.0)
    assert result.items[0].detections == []


@pytest.mark.parametrize("count", [2, 4, 1000])
def test_a_labels_file_that_does_not_fit_the_classes_is_refused(tmp_path, count):
    # As classify refuses it: 2 names left class 2 unnamed, and ImageNet's 1000 named a 3- or 4-class
    # net's classes wrongly, in silence.
    from test_runtime_layers import faster_rcnn

    names = tmp_path / "names.txt"
    names.write_text("".join(f"class{k}\n" for k in range(count)))
    image = picture(tmp_path / "a.png", 20, 16)
    seg = model_dir(tmp_path / "seg", scorer(classes=3), task="semantic segmentation")
    with pytest.raises(
        ModelDirError, match=f"names.txt: {count} labels, but the net's 'score' has 3 classes"
    ):
        run(seg, [image], labels=names)
    if count != 4:
        frcnn = model_dir(tmp_path / "frcnn", faster_rcnn(classes=4), seed=5)
        with pytest.raises(ModelDirError, match=f"{count} labels, but the net's 'cls_prob' has 4 classes"):
            run(frcnn, [image], task="detect", threshold=0.0, labels=names)


def test_large_jpegs_decoded_at_a_reduced_scale_find_what_the_whole_decode_finds(tmp_path):
    """Large JPEGs are decoded at 1/2-1/8 scale (see test_runtime_classify): the boxes and class maps are
    those of the image decoded whole and area-averaged (what the DCT's scaling approximates), to within a
    pixel and 0.01 of a score."""

    def whole(pre, path):  # decoded whole, then area-averaged: what the DCT's reduced scale approximates
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        area = cv2.resize(rgb, (pre.width, pre.height), interpolation=cv2.INTER_AREA)
        return pre.from_array(area.transpose(2, 0, 1).astype(np.float32) / np.float32(255))

    d = model_dir(tmp_path / "ssd", _ssd(keep_top_k=5, threshold=0.2), seed=3)
    image = tmp_path / "street.jpg"  # 10x the 64x64 input: decoded at 1/4
    Image.fromarray(natural_image(np.random.default_rng(3), 512, 640)).save(image, quality=92)
    rows = load(d).forward(data=whole(Preprocessor(3, 64, 64, raw_scale=1.0), image))["detection_out"][0, 0]
    found = run(d, [image], threshold=0.0, raw_scale=1.0).items[0].detections
    assert len(found) == len(rows) == 5
    scale = np.array([640, 512, 640, 512])
    for row in rows:  # each expected box found, by label and place (near-equal scores may swap order)
        box = np.clip(row[3:] * scale, 0, scale)
        assert any(
            f.label == int(row[1])
            and abs(f.score - row[2]) <= 0.01
            and np.abs(np.array(f.box) - box).max() <= 1
            for f in found
        ), (row, found)

    seg = model_dir(tmp_path / "seg", scorer(classes=3), task="semantic segmentation")
    image = tmp_path / "scene.jpg"  # 10x the 20x16 input
    Image.fromarray(natural_image(np.random.default_rng(4), 160, 200)).save(image, quality=92)
    scores = load(seg).forward(data=whole(Preprocessor(3, 16, 20), image))["score"][0]
    expected = np.asarray(
        Image.fromarray(scores.argmax(axis=0).astype(np.uint8)).resize((200, 160), Image.Resampling.NEAREST)
    )
    assert (run(seg, [image]).items[0].map == expected).mean() >= 0.99  # measured: 0.997-1 over six images


@pytest.mark.parametrize("levels", [2, 3, 1000])
def test_channel_argmax_is_numpys_argmax_ties_included(levels):
    from caffezoo.runtime.tasks import channel_argmax

    rng = np.random.default_rng(levels)
    for shape in [(21, 17, 23), (2, 5, 7), (1, 3, 3), (300, 4, 5)]:  # 300 classes: marks wider than a byte
        scores = rng.integers(0, levels, shape).astype(np.float32)  # few levels: many ties
        assert np.array_equal(channel_argmax(scores), scores.argmax(axis=0))
        assert channel_argmax(scores).dtype == np.int32


def test_channel_argmax_of_a_nan_pixel_is_class_0():
    """NaN equals no channel: the pixel stays class 0, as before, never a class past the last."""
    from caffezoo.runtime.tasks import channel_argmax

    scores = np.zeros((3, 2, 2), np.float32)
    scores[2, 0, 0] = np.nan
    scores[1, 1, 1] = 1
    assert channel_argmax(scores).tolist() == [[0, 0], [0, 1]]


def test_a_folder_on_a_terminal_shows_a_progress_bar(tmp_path):
    """stderr a terminal: a bar counting images; --json: none (stdout stays machine-readable either way)."""
    import os
    import pty
    import subprocess
    import sys

    d = model_dir(tmp_path)
    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(5):
        picture(folder / f"{i}.png", 16, 16, seed=i)

    def on_terminal(*args):
        main, secondary = pty.openpty()
        env = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
        p = subprocess.run(
            [sys.executable, "-m", "caffezoo", "run", str(d), str(folder), "-b", "2", *args],
            stdout=subprocess.PIPE,
            stderr=secondary,
            env=env,
            timeout=120,
        )
        os.close(secondary)
        seen = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal is closed once everything is read
                break
            if not chunk:
                break
            seen += chunk
        os.close(main)
        return p, seen.decode(errors="replace")

    p, terminal = on_terminal()
    assert p.returncode == 0 and "images" in terminal and "5/5" in terminal, terminal
    assert p.stdout.decode().count(str(folder)) == 5  # one block per image
    p, terminal = on_terminal("--json")
    assert p.returncode == 0 and "5/5" not in terminal
    assert len(json.loads(p.stdout)) == 5


def test_an_r_cnn_card_says_detection_but_the_net_scores_regions(tmp_path, cli_process):
    d = model_dir(tmp_path, task="object detection")  # like bvlc_reference_rcnn_ilsvrc13: class scores only
    image = picture(tmp_path / "a.png", 16, 16)
    result = cli_process("run", d, image)
    assert result.code == 2 and "Traceback" not in result.stderr  # a usage error
    assert "can score the whole image with --task classify" in result.stderr
    assert cli_process("run", d, image, "--task", "classify").code == 0


@pytest.mark.parametrize(
    "grid, size",
    [
        ((256, 256), (480, 640)),
        ((7, 9), (480, 640)),
        ((300, 300), (123, 457)),
        ((64, 48), (1080, 1920)),
        ((3, 7), (1, 1)),
    ],
)
def test_class_maps_are_resized_as_pillow_does(grid, size):
    from caffezoo.runtime.tasks import nearest

    cells = np.arange(grid[0] * grid[1], dtype=np.int32).reshape(grid)  # every cell its own class
    pillow = Image.fromarray(cells, mode="I").resize(size[::-1], Image.Resampling.NEAREST)
    assert np.array_equal(nearest(cells, *size), np.asarray(pillow).astype(np.int32))


@pytest.mark.parametrize("grid, size", [((256, 256), (480, 640)), ((300, 300), (123, 457)), ((3, 7), (1, 1))])
def test_class_areas_from_the_grid_count_the_resized_map(grid, size):
    from caffezoo.runtime.tasks import area_counts, nearest

    classes = np.random.default_rng(1).integers(0, 21, grid).astype(np.int32)
    counts = area_counts(classes, *size)
    assert np.array_equal(counts, np.bincount(nearest(classes, *size).reshape(-1), minlength=len(counts)))


# ------------------------------------------------------------ images in memory (the web zoo's uploads)


@pytest.mark.parametrize("kind", ["detect", "segment", "edges", "classify"])
def test_an_image_in_memory_gives_what_its_file_gives(tmp_path, kind):
    from caffezoo.runtime.draw import read_rgb
    from caffezoo.runtime.preprocess import InMemoryImage
    from caffezoo.runtime.tasks import picture as draw

    net = {
        "detect": _ssd(keep_top_k=4, threshold=0.2),
        "segment": scorer(),
        "edges": scorer(classes=1, sigmoid=True),
        "classify": small_classifier(batch=1),
    }[kind]
    d = model_dir(tmp_path, net, seed=3)
    image = picture(tmp_path / "photo.png", 40, 32)
    options = dict(threshold=0.0, raw_scale=1.0) if kind == "detect" else {}
    task = "segment" if kind == "edges" else kind
    from_file = run(
        d, [image], task=task, output=None if kind == "classify" else tmp_path / "out.png", **options
    )
    with Image.open(image) as im:
        im.load()
        in_memory = run(d, [InMemoryImage(im, "upload")], task=task, **options)
    (a,), (b,) = from_file.items, in_memory.items
    assert b.image == "upload"
    if kind == "classify":
        assert [(s.index, s.score) for s in a.top] == [(s.index, s.score) for s in b.top]
        return
    if kind == "detect":
        assert a.detections and [d.to_json() for d in a.detections] == [d.to_json() for d in b.detections]
    else:
        assert np.array_equal(a.map, b.map) and a.areas == b.areas
    # What `-o` wrote is what `picture` draws, without a file.
    drawn = np.asarray(Image.open(tmp_path / "out.png"))
    assert np.array_equal(draw(b, read_rgb(InMemoryImage(im, "upload"))), drawn)


def test_labels_given_as_names(tmp_path):
    d = model_dir(tmp_path, scorer(classes=3), task="semantic segmentation")
    image = picture(tmp_path / "a.png", 20, 16)
    (item,) = run(d, [image], labels=["sky", "road", "tree"]).items
    assert {a.name for a in item.areas} <= {"sky", "road", "tree"} and all(a.name for a in item.areas)
    with pytest.raises(
        ModelDirError, match="the labels given: 2 labels, but the net's 'score' has 3 classes"
    ):
        run(d, [image], labels=["sky", "road"])


def test_a_bare_prototxt_with_weights_runs_every_task(tmp_path, cli):
    # The help says MODEL may be a deploy .prototxt with --weights: classify looked for a model
    # directory's front matter there and failed.
    from runtime_helpers import write_net

    image = picture(tmp_path / "a.png", 20, 16)
    for task, net in (("classify", small_classifier(batch=1)), ("segment", scorer())):
        prototxt, weights = write_net(tmp_path, net, name=task)
        result = cli("run", prototxt, "--weights", weights, image, "--task", task, "--json")
        assert result.code == 0, result.stderr
