"""What ``caffezoo run`` does with each kind of model: classify, detect, segment or embed images.

>>> result = run("ssd_300", ["street.jpg"], threshold=0.5, output="out.png")   # doctest: +SKIP
>>> result.task, result.items[0].to_json()["detections"][0]                   # doctest: +SKIP
('detect', {'label': 7, 'name': 'car', 'score': 0.97, 'box': [12.0, 40.5, 180.2, 133.0]})

The task is ``task=`` if given, else the front matter's ``task`` (free text:
"image classification", "object detection", "semantic segmentation"...),
else what the net computes: a ``DetectionOutput`` or region-proposal layer detects, a score map
(an output with height and width) segments, anything else classifies.

- *classify*: :func:`~caffezoo.runtime.classifier.classify`, top-k classes;
- *detect*: SSD's ``DetectionOutput`` rows, boxes scaled to the image's pixels
  and kept at ``threshold`` or above; or Faster R-CNN's proposals refined per
  class, with per-class NMS, as py-faster-rcnn's test script does;
- *segment*: per-pixel argmax of the score map (one channel: an edge or
  probability map), at the image's size, with each class's area;
- *embed*: the blob ``blob`` of every image, written batch by batch to a
  ``.npy`` file of N x (the blob's shape);
- *caption*: :func:`~caffezoo.runtime.caption.caption`, a sentence per image
  from an LRCN-style image net and word net.

Images are warped to the net's input for detect and segment (what SSD and
FCN were trained on; the results are mapped back to the image), and
prepared as the classifier prepares them for classify and embed. An image is
a file, or an :class:`~.preprocess.InMemoryImage` (the web zoo's uploads);
:func:`picture` draws a result as ``-o`` does, for a caller that shows it
rather than saves it.
"""

from __future__ import annotations

import collections
import functools
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelDirError, RuntimeInputError, UsageError
from .caption import MAX_WORDS, Captioned, caption
from .classifier import DEFAULT_BATCH, Labels, Prediction, class_names, classify
from .preprocess import (
    Batch,
    Failed,
    ImageSource,
    InMemoryImage,
    InOrder,
    Preprocessor,
    check_images,
    model_mean,
)
from .session import InferenceNet, load

TASKS = ("classify", "detect", "segment", "caption", "embed")
DEFAULT_THRESHOLD = 0.5  # as OpenCV's object_detection sample
# Front-matter words that name a task (the BAIR cards say "image classification").
_TASK_WORDS = {  # in order: "edge detection" is a per-pixel map, not boxes
    "edge": "segment",
    "boundar": "segment",
    "contour": "segment",
    "classif": "classify",
    "recogni": "classify",
    "detect": "detect",
    "segment": "segment",
    "parsing": "segment",
    "caption": "caption",
    "descri": "caption",
    "embed": "embed",
    "feature": "embed",
}


def task_from_text(text: str | None) -> str | None:
    """The task a front matter's ``task`` names, if it names one.

    >>> task_from_text("semantic segmentation"), task_from_text("whatever")
    ('segment', None)
    """
    if not text:
        return None
    lower = text.lower()
    if lower in TASKS:
        return lower
    for word, task in _TASK_WORDS.items():
        if re.search(r"\b" + word, lower):  # a word's start: "knowledge" holds no "edge"
            return task
    return None


def image_files(paths: Sequence[ImageSource]) -> list[Path | InMemoryImage]:
    """``paths`` with every folder replaced by the images in it (by name; not its subfolders)."""
    from PIL import Image

    known = {ext.lower() for ext in Image.registered_extensions()}
    found: list[Path | InMemoryImage] = []
    for given in paths:
        if isinstance(given, InMemoryImage):
            found.append(given)
            continue
        p = Path(given)
        try:
            if p.is_dir():
                inside = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in known)
                if not inside:
                    raise UsageError(f"{p}: a folder with no image files in it (JPEG, PNG, BMP...)")
                found.extend(inside)
            elif not p.exists() and not p.is_symlink():
                # A mistyped name: said now, before the model loads (a folder's bad files are skipped).
                raise RuntimeInputError(f"{p}: no such image file")
            else:
                found.append(p)
        except OSError as e:  # a name too long, a folder not searchable: what stat said, not a traceback
            raise RuntimeInputError(f"{p}: {e.strerror or e}") from None
    if not found:
        raise UsageError("no images given")
    return found


# ------------------------------------------------------------ results


@dataclass
class Detection:
    """One box, in the image's pixels: ``box`` is (xmin, ymin, xmax, ymax)."""

    label: int
    name: str | None
    score: float
    box: tuple[float, float, float, float]

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "name": self.name, "score": self.score, "box": list(self.box)}


@dataclass
class Detected:
    image: str
    width: int
    height: int
    detections: list[Detection] = field(default_factory=list)
    picture: str | None = None  # the PNG written, if any

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "width": self.width,
            "height": self.height,
            "detections": [d.to_json() for d in self.detections],
            "picture": self.picture,
        }


@dataclass
class Area:
    """How much of the image one class covers."""

    label: int
    name: str | None
    pixels: int
    fraction: float


@dataclass
class Segmented:
    """A class map (or, with ``edges``, a 0-1 map) at the image's size; ``areas`` for class maps."""

    image: str
    width: int
    height: int
    map: np.ndarray  # H x W: class indices (int), or edge strengths (float)
    edges: bool = False
    areas: list[Area] = field(default_factory=list)
    picture: str | None = None

    def to_json(self) -> dict[str, Any]:
        info: dict[str, Any] = {"image": self.image, "width": self.width, "height": self.height}
        if self.edges:
            info["edges"] = {
                "mean": float(self.map.mean()),
                "fraction_above_half": float((self.map > 0.5).mean()),
            }
        else:
            info["classes"] = [vars(a) for a in self.areas]
        info["picture"] = self.picture
        return info


@dataclass
class Embedded:
    """Where the features went: ``path`` holds an N x ``shape`` float32 array, in ``images`` order."""

    path: str
    blob: str
    shape: list[int]
    images: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "blob": self.blob, "shape": self.shape, "images": self.images}


@dataclass
class RunResult:
    """What one ``caffezoo run`` found: the task and one item per image (one :class:`Embedded` for embed)."""

    task: str
    items: list[Any]

    @property
    def failed(self) -> list[Failed]:
        """The images that could not be read (a run with ``keep_going``)."""
        return [item for item in self.items if isinstance(item, Failed)]

    def to_json(self) -> dict[str, Any]:
        from .._json import jsonable

        return {"task": self.task, "results": [jsonable(i) for i in self.items]}


# ------------------------------------------------------------ the one entry point


def run(
    model: str | os.PathLike[str],
    images: Sequence[ImageSource],
    *,
    task: str | None = None,
    output: str | os.PathLike[str] | None = None,
    blob: str | None = None,
    net: InferenceNet | None = None,
    progress: Callable[[int], None] | None = None,
    keep_going: bool = False,
    each: Callable[[Any], None] | None = None,
    # how images become the net's input, for every task
    batch_size: int | None = None,
    resize: tuple[int, int] | None = None,
    raw_scale: float = 255.0,
    mean: str | Sequence[float] | np.ndarray | None = None,
    labels: Labels | None = None,
    # one task's own
    threshold: float = DEFAULT_THRESHOLD,  # detect
    top: int = 5,  # classify
    oversample: bool = False,  # classify
    max_words: int = MAX_WORDS,  # caption
    **load_options: Any,
) -> RunResult:
    """Run MODEL on ``images`` (files or folders of them) for its task; see the module's docstring.

    ``output`` is where pictures go (detect, segment: a ``.png`` for one image,
    a folder for several) or the ``.npy`` of features (embed, required).
    ``blob`` is the blob to read (embed: required; others: default the net's
    output). ``progress(n)`` is told after each batch how many images it held.
    ``max_words`` caps a caption's length. ``net`` is MODEL already loaded
    (:func:`~caffezoo.runtime.load`), to run many calls on one session. ``labels`` is a
    file or the class names themselves; ``mean`` a file, per-channel values or an array.

    An image that cannot be read raises a RuntimeInputError naming it, before any is run. With
    ``keep_going`` it becomes a :class:`~.preprocess.Failed` item in its place and the others are run
    (embed still stops: its file has a row for every image or is not written). ``each(item)`` is told
    of every item (and failure) as soon as it is made, for a caller that shows results as they come.
    """
    if task is not None and task not in TASKS:
        raise UsageError(f"--task {task!r}: expected one of {', '.join(TASKS)}")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size must be 1 or more, not {batch_size}")
    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold must be between 0 and 1, not {threshold}")
    paths = image_files(images)
    if not keep_going:
        check_images(paths)
    caption_options = dict(
        max_words=max_words,
        raw_scale=raw_scale,
        mean=mean,
        labels=labels,
        progress=progress,
        keep_going=keep_going,
        each=each,
    )
    if task == "caption":  # two nets, neither of which `load(model)` would pick reliably
        from ..zoo import resolve

        _prints_only("caption", output)

        return RunResult("caption", caption(resolve(model), paths, **caption_options, **load_options))
    if net is None or (blob and blob not in net.outputs):
        net = load(model, outputs=(blob,) if blob else (), **load_options)  # resolves MODEL once
    m = net.model
    wanted = task or (task_from_text(m.front_matter.task) if m else None) or ("embed" if blob else None)
    if wanted == "caption":
        if m is None:
            raise UsageError("--task caption needs a model directory (its image net and word net)")
        _prints_only("caption", output)
        return RunResult("caption", caption(m, paths, **caption_options, **load_options))
    if wanted == "embed" and not blob:
        raise UsageError("--task embed needs --blob NAME: the blob whose values to save")
    if wanted == "embed" and output is None:
        raise UsageError("--task embed needs -o FILE.npy: where to write the features")
    wanted, net = ready_for(model, net, wanted, blob, **load_options)
    if wanted == "classify":
        _prints_only("classify", output)
        found: list[Any] = classify(
            model,
            paths,
            top=top,
            batch_size=batch_size,
            oversample=oversample,
            resize=resize,
            raw_scale=raw_scale,
            mean=mean,
            labels=labels,
            output=blob,
            net=net,
            progress=progress,
            keep_going=keep_going,
            each=each,
        )
        return RunResult("classify", found)
    if oversample and wanted != "classify":
        raise UsageError(f"--oversample averages class scores: it has no meaning for {wanted}")
    if keep_going and wanted == "embed":  # it stops at a bad image: better before any is run
        check_images(paths)
    job = _Job(
        net,
        paths,
        batch_size,
        resize,
        raw_scale,
        mean,
        labels,
        progress,
        warp=wanted != "embed",
        keep_going=keep_going,
        each=each,
    )
    if wanted == "detect":
        return RunResult("detect", job.detect(threshold, output))
    if wanted == "segment":
        return RunResult("segment", job.segment(blob, output))
    job.add(job.embed(blob or "", Path(output or "")))
    return RunResult("embed", job.items)


def _prints_only(task: str, output: str | os.PathLike[str] | None) -> None:
    """``task`` writes no file: an ``-o`` would be ignored in silence."""
    if output is not None:
        raise UsageError(f"-o is for pictures (detect, segment) and features (embed); {task} prints")


def ready_for(
    model: str | os.PathLike[str],
    net: InferenceNet,
    task: str | None = None,
    blob: str | None = None,
    **load_options: Any,
) -> tuple[str, InferenceNet]:
    """The task to run (``task``, else :func:`infer_task`'s) and MODEL's ``net`` ready for it: a
    Faster R-CNN's proposals (its boxes, refined) among the outputs, loaded again with them if not.

    For a caller that keeps the net for many calls of :func:`run` (``net=``): the web zoo's try-it.
    """
    wanted = task or infer_task(net)
    rois = _layer_types(net).get(PROPOSALS, [])[:1] if wanted == "detect" else []
    if rois and rois[0] not in net.outputs:
        m = net.model
        net = load(model, outputs=tuple(o for o in (blob, rois[0]) if o), **load_options)
        net.model = net.model or m
    return wanted, net


def infer_task(net: InferenceNet) -> str:
    """detect (a DetectionOutput or proposal layer), segment (an output with height and width) or classify."""
    types = _layer_types(net)
    if "DetectionOutput" in types or PROPOSALS in types:
        return "detect"
    shapes = [net.session.get_outputs()[i].shape for i in range(len(net.outputs))]
    spatial = [
        s for s in shapes if len(s) == 4 and all(isinstance(d, int) for d in s[2:]) and s[2] * s[3] > 1
    ]
    return "segment" if spatial else "classify"


PROPOSALS = "Python:ProposalLayer"  # how _layer_types names py-faster-rcnn's proposal layers


def _layer_types(net: InferenceNet) -> dict[str, list[str]]:
    """Layer type -> the tops of layers of that type, from the deploy prototxt (proposals: PROPOSALS)."""
    prototxt = net.source.get("prototxt")
    if not prototxt:
        return {}
    stat = os.stat(prototxt)
    return _read_layer_types(prototxt, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _read_layer_types(prototxt: str, mtime_ns: int, size: int) -> dict[str, list[str]]:
    """Parsed once per file version: each call of `run` on a loaded net would otherwise parse it again."""
    from ..caffe.prototxt import read_prototxt

    types: dict[str, list[str]] = {}
    for layer in read_prototxt(prototxt).layer:
        p = layer.python_param
        kind = (
            PROPOSALS
            if p.layer == "ProposalLayer" and p.module.split(".")[-1] == "proposal_layer"
            else layer.type
        )
        types.setdefault(kind, []).extend(layer.top)
    return types


# ------------------------------------------------------------ batches through one session


@dataclass
class _Job:
    net: InferenceNet
    paths: list[Path | InMemoryImage]
    batch_size: int | None
    resize: tuple[int, int] | None
    raw_scale: float
    mean: str | Sequence[float] | np.ndarray | None
    labels: Labels | None
    progress: Callable[[int], None] | None
    warp: bool  # images warped whole to the input (detect, segment), not resized and centre-cropped
    keep_going: bool = False
    each: Callable[[Any], None] | None = None
    items: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        from .classifier import _image_input

        self.order = InOrder(self.tell)
        self.model = self.net.model
        self._stems: collections.Counter[str] | None = None
        self.input, shape = _image_input(self.net)
        mean = model_mean(self.mean, self.model)
        if self.warp and mean is not None and mean.ndim == 3:
            mean = mean.mean(axis=(1, 2))  # a mean image: its channel means, as the image is warped whole
        if self.warp and self.resize:
            raise UsageError(
                "--resize is for classify and embed: detect and segment warp the image to the input"
            )
        self.pre = Preprocessor(
            shape[1], shape[2], shape[3], resize=self.resize, raw_scale=self.raw_scale, mean=mean
        )
        self.fixed = shape[0]
        self.size = self.fixed or self.batch_size or DEFAULT_BATCH
        self.names, self.names_source = class_names(self.labels, self.model)

    def batches(
        self, outputs: Sequence[str], embed: bool = False
    ) -> Iterator[tuple[Batch[Path | InMemoryImage], dict[str, np.ndarray]]]:
        """(images, {blob: values of just those images}) for each batch; with ``keep_going``, the images
        that cannot be read are told as :class:`Failed` items and left out (embed never skips one: its
        file has a row for every image)."""
        skip = self.keep_going and not embed
        for batch in self.pre.batches(self.paths, self.size, skip_bad=skip):
            self.order.batch(batch)
            if not batch.paths:
                if self.progress is not None:
                    self.progress(len(batch.failed))
                continue
            x = batch.x
            if self.fixed and len(x) < self.fixed:  # a net with a fixed batch: pad the last one
                x = np.concatenate([x, np.zeros((self.fixed - len(x), *x.shape[1:]), np.float32)])
            feed = {self.input: x}
            if "im_info" in self.net.inputs:  # Faster R-CNN: the input's height, width and scale
                feed["im_info"] = np.array([self.im_info(*batch.sizes[0])], np.float32)
            results = self.net.forward(**feed)
            yield batch, {k: results[k] for k in outputs}
            if self.progress is not None:
                self.progress(len(batch.paths) + len(batch.failed))

    def add(self, item: Any) -> None:
        """The next image's result, told to ``each`` as soon as it is made (after any failure before it)."""
        self.order.add(item)

    def tell(self, item: Any) -> None:
        self.items.append(item)
        if self.each is not None:
            self.each(item)

    def im_info(self, width: int, height: int) -> list[float]:
        """(height, width, scale) of the input an image of ``width`` x ``height`` is warped to; the scale is
        the geometric mean of the two axes' (py-faster-rcnn's im_scale, with which boxes under 16 image
        pixels are dropped)."""
        sy, sx = self.pre.height / height, self.pre.width / width
        return [float(self.pre.height), float(self.pre.width), float(np.sqrt(sx * sy))]

    def check_names(self, classes: int, blob: str) -> None:
        """A labels file names each of ``blob``'s ``classes``, as classify requires."""
        if self.names is not None and len(self.names) != classes:
            raise ModelDirError(
                f"{self.names_source}: {len(self.names)} labels, but the net's {blob!r} has {classes} classes"
            )

    def name(self, label: int) -> str | None:
        return self.names[label] if self.names is not None and 0 <= label < len(self.names) else None

    def picture_path(self, output: str | os.PathLike[str] | None, image: Path | InMemoryImage) -> Path | None:
        """Where the picture of ``image`` goes: ``output`` itself for one image, else ``NAME.png`` in that
        folder (``NAME.EXT.png`` when two images share a name)."""
        if output is None:
            return None
        out = Path(output)
        if len(self.paths) == 1 and not out.is_dir():
            return out
        if out.exists() and not out.is_dir():
            raise UsageError(
                f"-o {out}: {len(self.paths)} images need a folder for their pictures, not a file"
            )
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"-o {out}: cannot make the folder: {e.strerror}") from None
        if self._stems is None:  # counted once: a folder of thousands of images stays linear
            self._stems = collections.Counter(p.stem for p in self.paths)
        return out / (f"{image.name}.png" if self._stems[image.stem] > 1 else f"{image.stem}.png")

    # ---------------------------------------------------------- detect

    def detect(self, threshold: float, output: str | os.PathLike[str] | None) -> list[Detected | Failed]:
        """SSD: DetectionOutput's rows of this image, scaled to its pixels; Faster R-CNN: see below."""
        types = _layer_types(self.net)
        if PROPOSALS in types:
            return self.detect_faster_rcnn(threshold, output, types[PROPOSALS][0])
        tops = types.get("DetectionOutput", [])
        blob = next((t for t in tops if t in self.net.outputs), None)
        if blob is None:
            raise UsageError(
                f"--task detect needs an SSD DetectionOutput layer among the net's outputs "
                f"({', '.join(self.net.outputs)}) or Faster R-CNN's proposal layer; a net that scores "
                f"regions proposed elsewhere (R-CNN) can score the whole image with --task classify"
            )
        for batch, results in self.batches([blob]):
            rows = results[blob].reshape(-1, 7)
            for i, (path, (width, height)) in enumerate(zip(batch.paths, batch.sizes)):
                mine = rows[(rows[:, 0] == i) & (rows[:, 1] >= 0) & (rows[:, 2] >= threshold)]
                mine = mine[np.argsort(-mine[:, 2], kind="stable")]
                size = np.array([width, height, width, height], np.float64)
                boxes = np.clip(mine[:, 3:7].astype(np.float64) * size, 0, size).tolist()
                dets = [
                    Detection(int(label), self.name(int(label)), float(score), tuple(box))
                    for (label, score), box in zip(mine[:, 1:3].tolist(), boxes)
                ]
                self.add(self.detected(path, width, height, dets, output))
        return self.items

    def detected(
        self, path: Path | InMemoryImage, width: int, height: int, dets: list[Detection], output: Any
    ) -> Detected | Failed:
        """The result for one image, its picture drawn if ``output`` says where."""
        return self.drawn(Detected(str(path), width, height, dets), path, output)

    def drawn(self, item: Any, path: Path | InMemoryImage, output: Any) -> Any:
        """``item``, its picture written where ``output`` says (if it says). The image is read again to
        draw on: with ``keep_going``, one that can no longer be read (deleted since it was run) is a
        :class:`Failed` instead, as if it had never been readable."""
        from .draw import read_rgb, write_png

        target = self.picture_path(output, path)
        if target is None:
            return item
        try:
            image = read_rgb(path)
        except RuntimeInputError as e:
            if not self.keep_going:
                raise
            return Failed(str(path), str(e))
        write_png(picture(item, image), target)
        item.picture = str(target)
        return item

    def detect_faster_rcnn(self, threshold: float, output: Any, rois_blob: str) -> list[Detected | Failed]:
        """py-faster-rcnn's im_detect and demo: proposals refined per class by ``bbox_pred``, mapped to the
        image, clipped, then per class (not the background) scores >= ``threshold`` and NMS at 0.3."""
        scores_blob, deltas_blob = self._frcnn_heads()
        for batch, results in self.batches([rois_blob, scores_blob, deltas_blob]):
            (path,), ((width, height),) = batch.paths, batch.sizes  # one image at a time, as proposals take
            sy, sx = self.pre.height / height, self.pre.width / width
            boxes = results[rois_blob][:, 1:5].astype(np.float64) / [sx, sy, sx, sy]
            scores, deltas = (_rows(results[b]) for b in (scores_blob, deltas_blob))  # R x C, R x 4C
            self.check_names(scores.shape[1], scores_blob)
            if deltas.shape[1] == 8 and scores.shape[1] != 2:  # R-FCN: one box for every class but background
                deltas = np.tile(deltas[:, 4:8], (1, scores.shape[1]))
            pred = refine_boxes(boxes, deltas)
            pred[:, 0::2] = np.clip(pred[:, 0::2], 0, width - 1)
            pred[:, 1::2] = np.clip(pred[:, 1::2], 0, height - 1)
            dets: list[Detection] = []
            for label in range(1, scores.shape[1]):
                keep = np.flatnonzero(scores[:, label] >= threshold)
                cls_boxes = pred[keep, 4 * label : 4 * label + 4]
                cls_scores = scores[keep, label]
                for i in nms(cls_boxes, cls_scores, FRCNN_NMS):
                    box = tuple(float(v) for v in cls_boxes[i])
                    dets.append(Detection(label, self.name(label), float(cls_scores[i]), box))
            dets.sort(key=lambda d: -d.score)
            self.add(self.detected(path, width, height, dets, output))
        return self.items

    def _frcnn_heads(self) -> tuple[str, str]:
        """The class probabilities (R x C) and box deltas (R x 4C, or R-FCN's class-agnostic R x 8) among the
        outputs: py-faster-rcnn's names, else by shape."""
        outs = {o.name: o.shape for o in self.net.session.get_outputs()}
        if "cls_prob" in outs and "bbox_pred" in outs:
            return "cls_prob", "bbox_pred"
        flat = {n: s[-1] for n, s in outs.items() if len(s) == 2 and isinstance(s[-1], int)}
        for a, c in flat.items():
            for b, c4 in flat.items():
                if c4 in (4 * c, 8) and a != b:  # per class, or R-FCN's class-agnostic (background, object)
                    return a, b
        raise UsageError(
            f"a Faster R-CNN net needs class scores (R x C) and box deltas (R x 4C) among its outputs "
            f"({', '.join(self.net.outputs)})"
        )

    # ---------------------------------------------------------- segment

    def segment(self, blob: str | None, output: str | os.PathLike[str] | None) -> list[Segmented | Failed]:
        from PIL import Image

        name = blob or self._score_map()
        for batch, results in self.batches([name]):
            scores = results[name]
            if scores.ndim != 4:
                raise UsageError(
                    f"--task segment needs an N x C x H x W score map; {name!r} is "
                    f"{'x'.join(map(str, scores.shape))}"
                )
            for i, (path, (width, height)) in enumerate(zip(batch.paths, batch.sizes)):
                s = scores[i]
                if s.shape[0] == 1:  # an edge (or probability) map: its values, resized bilinearly
                    plane = Image.fromarray(s[0].astype(np.float32), mode="F")
                    values = np.asarray(plane.resize((width, height), Image.Resampling.BILINEAR))
                    item = Segmented(str(path), width, height, values, edges=True)
                else:  # class scores: argmax at the net's size, then each pixel takes its nearest cell's class
                    self.check_names(s.shape[0], name)
                    grid = channel_argmax(s)
                    class_map = nearest(grid, height, width)
                    areas = self._areas(area_counts(grid, height, width), class_map.size)
                    item = Segmented(str(path), width, height, class_map, areas=areas)
                self.add(self.drawn(item, path, output))
        return self.items

    def _score_map(self) -> str:
        maps = [
            name
            for name, o in zip(self.net.outputs, self.net.session.get_outputs())
            if len(o.shape) == 4
            and all(isinstance(d, int) for d in o.shape[2:])
            and o.shape[2] * o.shape[3] > 1
        ]
        fused = [n for n in maps if "fuse" in n.lower()]  # HED: the fused edge map, not the side outputs
        if len(maps) == 1 or len(fused) == 1:
            return (fused or maps)[0]
        if not maps:
            raise UsageError(
                f"--task segment needs a score map (N x C x H x W) among the net's outputs "
                f"({', '.join(self.net.outputs)})"
            )
        raise UsageError(f"the net has several score maps ({', '.join(maps)}): choose one with --blob")

    def _areas(self, counts: np.ndarray, total: int) -> list[Area]:
        order = np.argsort(-counts, kind="stable")
        return [
            Area(int(k), self.name(int(k)), int(counts[k]), float(counts[k]) / total)
            for k in order
            if counts[k]
        ]

    # ---------------------------------------------------------- embed

    def embed(self, blob: str, path: Path) -> Embedded:
        """Stream each batch's ``blob`` into ``path`` (.npy), atomically: all images, or no file."""
        from ..atomic import atomic_open

        if path.suffix.lower() != ".npy":
            raise UsageError(f"-o {path}: features are written as a .npy file (name it FILE.npy)")
        if blob not in self.net.outputs:
            raise UsageError(f"no blob {blob!r} in the net")
        shape: list[int] = []
        with atomic_open(path) as out:
            for batch, results in self.batches([blob], embed=True):
                values = np.ascontiguousarray(results[blob][: len(batch.paths)], dtype="<f4")
                if not shape:
                    shape = list(values.shape[1:])
                    header = {"descr": "<f4", "fortran_order": False, "shape": (len(self.paths), *shape)}
                    np.lib.format.write_array_header_1_0(out, header)
                out.write(values.tobytes())
        return Embedded(str(path), blob, shape, [str(p) for p in self.paths])


FRCNN_NMS = 0.3  # py-faster-rcnn's demo and test scripts


def refine_boxes(boxes: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """py-faster-rcnn's ``bbox_transform_inv``: R x 4 boxes moved by R x 4C deltas -> R x 4C boxes.

    >>> refine_boxes(np.array([[0.0, 0, 9, 19]]), np.zeros((1, 4))).tolist()
    [[0.0, 0.0, 10.0, 20.0]]
    """
    widths = boxes[:, 2] - boxes[:, 0] + 1.0
    heights = boxes[:, 3] - boxes[:, 1] + 1.0
    cx, cy = boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights
    dx, dy, dw, dh = (deltas[:, k::4] for k in range(4))
    pcx, pcy = dx * widths[:, None] + cx[:, None], dy * heights[:, None] + cy[:, None]
    pw, ph = np.exp(dw) * widths[:, None], np.exp(dh) * heights[:, None]
    out = np.empty(deltas.shape, np.float64)
    out[:, 0::4], out[:, 1::4] = pcx - 0.5 * pw, pcy - 0.5 * ph
    out[:, 2::4], out[:, 3::4] = pcx + 0.5 * pw, pcy + 0.5 * ph
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """py-faster-rcnn's ``py_cpu_nms``: greedy by score; a box goes when its IoU (sizes + 1 pixel) with a kept
    one exceeds ``threshold``. Returns the kept indices, best first."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter) <= threshold]
    return keep


def nearest(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """``grid`` (h x w) resized to ``height`` x ``width`` by nearest neighbour, pixel for pixel as Pillow's
    NEAREST resize (which is 3x slower on a class map, and needs a copy out of the picture).

    >>> nearest(np.array([[1, 2], [3, 4]]), 3, 4).tolist()
    [[1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    """
    rows, columns = repeats(grid.shape[0], height), repeats(grid.shape[1], width)
    # Each cell repeated, columns on the small grid then whole rows: copies, 7x faster than gathering
    # every pixel through an index array.
    return np.repeat(np.repeat(grid, columns, axis=1), rows, axis=0)


def repeats(n_in: int, n_out: int) -> np.ndarray:
    """How many of ``n_out`` pixels take each of ``n_in`` cells under Pillow's NEAREST resize (0 for a cell
    skipped when shrinking).

    >>> repeats(2, 3).tolist(), repeats(3, 1).tolist()
    ([1, 2], [0, 1, 0])
    """
    # Pillow's affine transform walks the source by adding the step to 0.5 step, pixel after pixel;
    # np.add.accumulate adds in the same order, so ties (x.0 exactly or just below) agree.
    step = n_in / n_out
    walk = np.full(n_out, step)
    walk[0] = step * 0.5
    cells = np.minimum(np.add.accumulate(walk).astype(np.intp), n_in - 1)  # never decreasing
    return np.bincount(cells, minlength=n_in)


def area_counts(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """``np.bincount(nearest(grid, height, width).ravel())`` from the grid's cells, each weighed by the
    pixels it covers: the class areas without counting every pixel of the image.

    >>> area_counts(np.array([[1, 2], [3, 4]]), 3, 4).tolist()
    [0, 2, 2, 4, 4]
    """
    pixels = np.outer(repeats(grid.shape[0], height), repeats(grid.shape[1], width))
    return np.bincount(grid.reshape(-1), weights=pixels.reshape(-1)).astype(np.int64)  # exact below 2**53


def channel_argmax(scores: np.ndarray) -> np.ndarray:
    """``np.argmax(scores, axis=0)`` of a C x H x W map as int32 (the first of equal maxima wins), from
    contiguous whole-array passes: numpy's argmax walks axis 0 with a stride, 8x slower.

    >>> channel_argmax(np.array([[[1.0, 5.0]], [[3.0, 5.0]]])).tolist()
    [[1, 0]]
    """
    c = len(scores)
    top = scores.max(axis=0)
    # Channel k at the maximum scores c - k, others 0: the largest score is the lowest channel at the
    # maximum. Small integers, so the marks take a quarter of the floats' memory (C <= 255: one byte).
    rank = np.arange(c, 0, -1, dtype=np.min_scalar_type(c)).reshape(c, *(1,) * (scores.ndim - 1))
    marks = np.multiply(np.equal(scores, top), rank, dtype=rank.dtype)
    best = marks.max(axis=0).astype(np.int32)
    # No channel equals a NaN maximum: numpy's argmax takes the first NaN; keep today's answer there, 0.
    return np.where(best > 0, c - best, 0).astype(np.int32, copy=False)


def _rows(a: np.ndarray) -> np.ndarray:
    """``a`` as a matrix of its first axis by the rest (zero rows stay a matrix)."""
    return a.reshape(a.shape[0], int(np.prod(a.shape[1:])))


def picture(item: Detected | Segmented, image: np.ndarray) -> np.ndarray:
    """``item`` drawn as ``caffezoo run -o`` draws it, on ``image`` (its H x W x 3 uint8 RGB pixels):
    boxes labelled with class and score, a class map as a colour overlay, an edge map in grey.

    >>> write_png(picture(result.items[0], read_rgb("street.jpg")), "out.png")   # doctest: +SKIP
    """
    from .draw import draw_boxes, grey, overlay

    if isinstance(item, Detected):
        boxes = [(d.box, f"{d.name or d.label} {d.score:.2f}", d.label) for d in item.detections]
        return draw_boxes(image, boxes)
    return grey(item.map) if item.edges else overlay(image, item.map)


def summary_lines(result: RunResult) -> Iterator[str]:
    """Plain-text lines (rich markup escaped) for the command line; an image that could not be read has
    none here (the command line says so on stderr)."""
    for item in result.items:
        yield from item_lines(item)


def item_lines(item: Any) -> Iterator[str]:
    """:func:`summary_lines` of one item, to print it as soon as it is made."""
    from rich.markup import escape

    if isinstance(item, Prediction):
        yield f"[bold]{escape(item.image)}[/]"
        for s in item.top:
            label = f"  {escape(s.label)}" if s.label else ""
            yield f"  {s.score:.4f}  {s.index:>5}{label}"
    elif isinstance(item, Detected):
        yield f"[bold]{escape(item.image)}[/]  {len(item.detections)} detections"
        for d in item.detections:
            x0, y0, x1, y1 = d.box
            yield (
                f"  {d.score:.4f}  {d.label:>5}  {escape(d.name or '')}  "
                f"[{x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}]"
            )
    elif isinstance(item, Segmented):
        yield f"[bold]{escape(item.image)}[/]  {item.width}x{item.height}"
        if item.edges:
            info = item.to_json()["edges"]
            yield f"  edge map: mean {info['mean']:.4f}, {info['fraction_above_half']:.2%} above 0.5"
        for a in item.areas:
            yield f"  {a.fraction:7.2%}  {a.pixels:>9} px  {a.label:>5}  {escape(a.name or '')}"
    elif isinstance(item, Captioned):
        yield f"[bold]{escape(item.image)}[/]  {escape(item.sentence)}"
    elif isinstance(item, Embedded):
        yield (
            f"wrote {escape(item.path)}: {len(item.images)} x {'x'.join(map(str, item.shape)) or '1'} "
            f"float32 (blob {escape(item.blob)})"
        )
    if getattr(item, "picture", None):
        yield f"  picture: {escape(item.picture)}"


__all__ = [
    "TASKS",
    "Detected",
    "Detection",
    "Embedded",
    "Failed",
    "RunResult",
    "Segmented",
    "item_lines",
    "picture",
    "run",
]
