"""Images in, top-k classes out: what ``caffezoo run`` does.

>>> for p in classify("bvlc_alexnet", ["cat.jpg"], top=3):          # doctest: +SKIP
...     print(p.image, [(c.label, round(c.score, 3)) for c in p.top])
cat.jpg [('n02123045 tabby, tabby cat', 0.312), ...]

The model directory's front matter supplies the mean (``mean``: a
``.binaryproto``, a ``.npy`` or per-channel values) and the class names
(``labels``: a text file, one name per line); the deploy net supplies the
input size. Images go through the net in batches.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from ..errors import ModelDirError, UsageError
from .preprocess import CROPS, Failed, ImageSource, InOrder, Preprocessor, check_images, model_mean
from .session import InferenceNet, load

if TYPE_CHECKING:
    from ..modeldir import ModelDir

__all__ = ["DEFAULT_BATCH", "Labels", "Prediction", "Scored", "class_names", "classify", "read_labels"]

DEFAULT_BATCH = 8
# A labels file, or the class names themselves (a caller that holds them in memory: the web zoo).
Labels: TypeAlias = "str | os.PathLike[str] | Sequence[str]"


@dataclass
class Scored:
    """One class of a prediction."""

    index: int
    label: str | None
    score: float


@dataclass
class Prediction:
    """The best classes for one image, best first."""

    image: str
    top: list[Scored] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"image": self.image, "top": [vars(s) for s in self.top]}


def classify(
    model: str | os.PathLike[str],
    images: Sequence[ImageSource],
    *,
    top: int = 5,
    batch_size: int | None = None,
    oversample: bool = False,
    resize: tuple[int, int] | None = None,
    raw_scale: float = 255.0,
    mean: str | Sequence[float] | np.ndarray | None = None,
    labels: Labels | None = None,
    output: str | None = None,
    net: InferenceNet | None = None,
    progress: Callable[[int], None] | None = None,
    keep_going: bool = False,
    each: Callable[[Prediction | Failed], None] | None = None,
    **load_options,
) -> list[Prediction | Failed]:
    """Classify ``images`` with MODEL (or an already loaded ``net``); ``mean``/``labels`` override the front
    matter's (a net loaded from a bare prototxt has no front matter: only these).

    Files given here are found from the working directory; those the front
    matter names, in the model directory. ``progress(n)`` is told after each
    batch how many images it held. An image that cannot be read raises a RuntimeInputError before
    any is run; with ``keep_going``, it becomes a :class:`~.preprocess.Failed` in its place and the
    others are run. ``each(item)`` is told of every result (and failure) as it is made.
    """
    if top < 1:
        raise UsageError(f"--top must be 1 or more, not {top}")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size must be 1 or more, not {batch_size}")
    if not keep_going:
        check_images(images)
    net = net or load(model, **load_options)  # resolves MODEL once: a gist MODEL is fetched once
    m = net.model
    name, shape = _image_input(net)
    blob = _output(net, output)
    pre = Preprocessor(
        shape[1],
        shape[2],
        shape[3],
        resize=resize,
        raw_scale=raw_scale,
        oversample=oversample,
        mean=model_mean(mean, m),
    )
    names, source = class_names(labels, m)
    fixed = shape[0]
    size = fixed or batch_size or DEFAULT_BATCH
    crops = CROPS if oversample else 1
    if fixed and oversample and fixed % CROPS:
        raise UsageError(
            f"the net takes batches of exactly {fixed}; oversampling needs a multiple of {CROPS}"
        )
    per_batch = max(1, size // crops) if fixed else size
    results: list[Prediction | Failed] = []

    def tell(item: Prediction | Failed) -> None:
        results.append(item)
        if each is not None:
            each(item)

    order = InOrder(tell)
    for batch in pre.batches(images, per_batch, skip_bad=keep_going):
        order.batch(batch)
        chunk, x = batch.paths, batch.x
        if not chunk:
            if progress is not None:
                progress(len(batch.failed))
            continue
        if fixed and len(x) < fixed:  # a net with a fixed batch: pad the last one
            x = np.concatenate([x, np.zeros((fixed - len(x), *x.shape[1:]), np.float32)])
        scores = net.forward(**{name: x})[blob]
        scores = scores[: len(chunk) * crops].reshape(len(chunk), crops, -1).mean(axis=1)
        if names is not None and len(names) != scores.shape[1]:
            raise ModelDirError(
                f"{source}: {len(names)} labels, but the net's {blob!r} has {scores.shape[1]} classes"
            )
        for path, row in zip(chunk, scores):
            best = np.argsort(-row, kind="stable")[:top]
            order.add(
                Prediction(
                    str(path), [Scored(int(i), names[i] if names else None, float(row[i])) for i in best]
                )
            )
        if progress is not None:
            progress(len(chunk) + len(batch.failed))
    return results


def _image_input(net: InferenceNet) -> tuple[str, tuple]:
    images = {k: v for k, v in net.inputs.items() if len(v) == 4}
    if len(images) != 1:
        raise UsageError(
            f"the net has {len(net.inputs)} inputs ({', '.join(net.inputs)}); `run` feeds one "
            f"N x C x H x W image input"
        )
    name, shape = next(iter(images.items()))
    return name, shape


def _output(net: InferenceNet, wanted: str | None) -> str:
    if wanted:
        if wanted not in net.outputs:
            raise UsageError(f"no output {wanted!r}; the net's outputs are {', '.join(net.outputs)}")
        return wanted
    if len(net.outputs) != 1:
        raise UsageError(f"the net has several outputs ({', '.join(net.outputs)}): choose one with --output")
    return net.outputs[0]


def class_names(labels: Labels | None, model: ModelDir | None) -> tuple[list[str] | None, str]:
    """The class names ``labels`` gives (a file, or the names), else the model's labels file; and
    what they came from, for messages.

    >>> class_names(["cat", "dog"], None)
    (['cat', 'dog'], 'the labels given')
    """
    if labels is not None and not isinstance(labels, (str, os.PathLike)):
        names = [str(n) for n in labels]
        return names, "the labels given"
    path = Path(labels) if labels is not None else model.labels_path if model is not None else None
    return (read_labels(path), str(path)) if path is not None else (None, "")


def read_labels(path: Path) -> list[str]:
    """Class names, one per line (e.g. ``synset_words.txt``); trailing empty lines dropped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ModelDirError(f"{path}: labels file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelDirError(f"{path}: cannot read the labels: {e}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]
