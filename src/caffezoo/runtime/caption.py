"""Describe images with an LRCN-style captioner: an image net, then a word net, one word at a time.

>>> for c in caption(load_model("lrcn_coco"), ["cat.jpg"]):          # doctest: +SKIP
...     print(c.image, c.sentence)
cat.jpg a cat sitting on a couch

The layout of Donahue et al.'s LRCN captioning models: one weights file and
two deploy nets in the model directory,

- the *image net* (e.g. ``lrcn_cnn.deploy.prototxt``): an N x C x H x W image
  in, one feature vector per image out;
- the *word net* (e.g. ``lrcn_word_to_preds.deploy.prototxt``): inputs
  ``input_sentence`` and ``cont_sentence`` (T x N) and the image's features
  (N x F), out the next word's probabilities (T x N x V).

Decoding is greedy, as LRCN's captioner does at temperature 0: start with word
0 (the start and end of a sentence), feed the words so far, take the most
probable next word, stop at word 0 or after ``max_words``. The word net is
converted with T = ``max_words`` and run on the whole prefix at every step, so
nothing depends on a state kept between forward passes. Word names are the
``labels`` file (the vocabulary), with ``<EOS>`` put in front when it has one
line fewer than the net has words.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelDirError, RuntimeInputError, UsageError
from .preprocess import Failed, Preprocessor, model_mean
from .session import InferenceNet, load

if TYPE_CHECKING:
    from ..modeldir import ModelDir

__all__ = ["MAX_WORDS", "Captioned", "caption"]

WORDS = ("input_sentence", "cont_sentence")
MAX_WORDS = 20
EOS = 0


@dataclass
class Captioned:
    image: str
    words: list[int] = field(default_factory=list)
    sentence: str = ""
    probabilities: list[float] = field(default_factory=list)  # of each word chosen

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "sentence": self.sentence,
            "words": self.words,
            "probabilities": self.probabilities,
        }


def find_nets(m: ModelDir) -> tuple[Path, Path, str]:
    """(image net, word net, the word net's image-feature input) among the model's deploy prototxts."""
    from ..caffe.net import load_net

    deploys = [m.path / f.name for f in m.files if f.kind in ("deploy", "prototxt")]
    word = image = None
    for path in deploys:
        try:
            inputs = load_net(path, strict=False).inputs
        except Exception:  # a prototxt that is no net (a solver named oddly): not one of the two
            continue
        if all(w in inputs for w in WORDS):
            word = (path, inputs)
        elif len(inputs) == 1 and len(next(iter(inputs.values())) or ()) == 4:
            image = image or path
    if word is None or image is None:
        raise ModelDirError(
            f"{m.path}: --task caption needs two deploy nets (LRCN's layout): an image net with one "
            f"N x C x H x W input, and a word net with inputs {' and '.join(WORDS)}"
        )
    features = [k for k in word[1] if k not in WORDS]
    if len(features) != 1:
        raise ModelDirError(
            f"{word[0]}: the word net should take one input besides {' and '.join(WORDS)} (the image "
            f"features), not {len(features)}"
        )
    return image, word[0], features[0]


def caption(
    m: ModelDir,
    images: Sequence[Path],
    *,
    max_words: int = MAX_WORDS,
    raw_scale: float = 255.0,
    mean: str | Sequence[float] | None = None,
    labels: str | os.PathLike[str] | None = None,
    progress: Callable[[int], None] | None = None,
    keep_going: bool = False,
    each: Callable[[Captioned | Failed], None] | None = None,
    **load_options: Any,
) -> list[Captioned | Failed]:
    """A sentence per image (see the module's docstring); ``keep_going`` and ``each`` as for
    :func:`~caffezoo.runtime.tasks.run`."""
    from .classifier import read_labels

    if max_words < 1:
        raise UsageError(f"--max-words must be 1 or more, not {max_words}")
    weights = load_options.pop("weights", None) or m.weights_path
    if weights is None:
        raise ModelDirError(
            f"{m.readme_path}: no `caffemodel` key in the front matter: which file holds the weights?"
        )
    if not Path(weights).is_file():
        raise ModelDirError(
            f"{weights}: the weights are not downloaded; `caffezoo download {m.path}` fetches them"
        )
    image_proto, word_proto, feature_input = find_nets(m)
    image_net = load(image_proto, weights=weights, **load_options)
    if len(image_net.outputs) != 1:
        raise UsageError(f"{image_proto}: the image net should have one output (the features)")
    ((name, shape),) = image_net.inputs.items()
    pre = Preprocessor(shape[1], shape[2], shape[3], raw_scale=raw_scale, mean=model_mean(mean, m))
    features_of = image_net.outputs[0]
    size = None
    word_net: InferenceNet | None = None
    vocab: list[str] | None = None
    results: list[Captioned | Failed] = []

    def add(item: Captioned | Failed) -> None:
        results.append(item)
        if each is not None:
            each(item)
        if progress is not None:
            progress(1)

    for path in images:
        try:
            x = pre([path])
        except RuntimeInputError as e:
            if not keep_going:
                raise
            add(Failed(str(path), str(e)))
            continue
        if shape[0] and shape[0] > 1:
            x = np.concatenate([x, np.zeros((shape[0] - 1, *x.shape[1:]), np.float32)])
        features = image_net.forward(**{name: x})[features_of][:1].reshape(1, -1)
        if word_net is None:
            size = features.shape[1]
            word_net = load(
                word_proto,
                weights=weights,
                input_shapes={WORDS[0]: [max_words, 1], WORDS[1]: [max_words, 1], feature_input: [1, size]},
                **load_options,
            )
            labels_path = Path(labels) if labels else m.labels_path
            vocab = read_labels(labels_path) if labels_path else None
        words, chosen = _greedy(word_net, feature_input, features, max_words)
        if vocab is not None:
            classes = _vocabulary_size(word_net)
            if len(vocab) == classes - 1:
                vocab = ["<EOS>", *vocab]
            elif len(vocab) != classes:
                raise ModelDirError(
                    f"{labels or m.labels_path}: {len(vocab)} words, but the word net has {classes}"
                )
        sentence = " ".join(vocab[w] if vocab else str(w) for w in words)
        add(Captioned(str(path), words, sentence, chosen))
    return results


def _vocabulary_size(net: InferenceNet) -> int:
    return int(next(o.shape[-1] for o in net.session.get_outputs() if len(o.shape) == 3))


def _greedy(
    net: InferenceNet, feature_input: str, features: np.ndarray, max_words: int
) -> tuple[list[int], list[float]]:
    probs_blob = next(
        (o.name for o in net.session.get_outputs() if len(o.shape) == 3),
        None,
    )
    if probs_blob is None:
        raise UsageError(f"the word net has no T x N x V output (its outputs: {', '.join(net.outputs)})")
    words: list[int] = []
    chosen: list[float] = []
    cont = np.ones((max_words, 1), np.float32)
    cont[0] = 0
    for step in range(max_words):
        sentence = np.zeros((max_words, 1), np.float32)
        sentence[1 : step + 1, 0] = words
        probs = net.forward(**{WORDS[0]: sentence, WORDS[1]: cont, feature_input: features})[probs_blob]
        row = probs[step, 0]
        word = int(np.argmax(row))
        if word == EOS:
            break
        words.append(word)
        chosen.append(float(row[word]))
    return words, chosen
