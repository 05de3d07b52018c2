"""Computed facts about a model's network: what it costs, and whether caffezoo can run it.

>>> f = net_facts(Path("models/bvlc_alexnet/deploy.prototxt").read_bytes())   # doctest: +SKIP
>>> f.input_shape, f.params, f.macs, f.convertible                             # doctest: +SKIP
('3x227x227', 60965224, 724406816, True)

The catalog computes them when a gist's network changes (in the indexing
transaction: :func:`caffezoo.server.catalog.index_gist`), never on a page
view, with the same library ``caffezoo inspect`` and ``caffezoo convert``
use. The work is bounded: a prototxt over :data:`MAX_NET_BYTES` or with more
than :data:`MAX_LAYERS` layers is not analysed (its facts say why), so a
hostile file cannot stall a write. Whether mirrored weights fit the net needs
the weights, so the mirror's job checks that (:func:`check_mirrored`) after a
blob arrives.
"""

from __future__ import annotations

import copy
import json
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CaffezooError

if TYPE_CHECKING:
    from .mirror import Mirror
    from .storage import Storage

# Bumped whenever what is computed changes: every entry is recomputed on the next start.
FACTS_VERSION = 1
MAX_NET_BYTES = 512 * 1024  # GoogLeNet's deploy net is 36 KB, ResNet-152's about 200 KB
MAX_LAYERS = 2000  # ResNet-152 has about 700
MAX_PROBLEMS = 20

__all__ = [
    "FACTS_VERSION",
    "MAX_LAYERS",
    "MAX_NET_BYTES",
    "NetFacts",
    "check_mirrored",
    "net_facts",
    "weights_fit",
]


@dataclass
class NetFacts:
    """What the zoo says about a network (None: could not be worked out, see ``error``)."""

    input_shape: str | None = None  # one sample: "3x227x227" (several inputs: "data 3x224x224, im_info 3")
    params: int | None = None
    macs: int | None = None  # multiply-accumulates per sample
    layers: int | None = None
    layer_types: dict[str, int] = field(default_factory=dict)  # type -> how many, most used first
    convertible: bool | None = None  # None: not known (the net does not load, or no converter installed)
    unsupported: list[str] = field(default_factory=list)  # what `caffezoo convert` cannot do
    error: str | None = None

    def json(self) -> dict[str, Any]:
        return {
            "input_shape": self.input_shape,
            "params": self.params,
            "macs_per_sample": self.macs,
            "layers": self.layers,
            "layer_types": self.layer_types,
            "convertible": self.convertible,
            "unsupported": self.unsupported,
            "error": self.error,
        }


def _sample_shape(shape: tuple[int, ...] | None) -> str:
    if not shape:
        return "?"
    return "x".join(str(d) for d in shape[1:]) or "scalar"


def _count_layers(message: Any) -> int:
    return len(message.layer) + len(message.layers)


def net_facts(prototxt: bytes, name: str = "deploy.prototxt") -> NetFacts:
    """The facts of a deploy (or train/val) prototxt, given as bytes; never raises for a bad net.

    >>> net_facts(b"not a net").error                                      # doctest: +SKIP
    'deploy.prototxt:1:5: ...'
    """
    if len(prototxt) > MAX_NET_BYTES:
        return NetFacts(
            error=f"{name}: {len(prototxt):,} bytes is over the {MAX_NET_BYTES:,} this zoo analyses"
        )
    from ..caffe.net import load_net
    from ..caffe.prototxt import parse_prototxt
    from ..caffe.summary import Summary

    try:
        parsed = parse_prototxt(prototxt, path=name, skip_unknown=True)
        if _count_layers(parsed.message) > MAX_LAYERS:
            n = _count_layers(parsed.message)
            return NetFacts(error=f"{name}: {n:,} layers is over the {MAX_LAYERS:,} this zoo analyses")
        net = load_net(parsed, phase="TEST", strict=False)
    except CaffezooError as e:
        return NetFacts(error=str(e).splitlines()[0][:500])
    except RecursionError:  # a bound the parser should keep; never let indexing fail on it
        return NetFacts(error=f"{name}: nested too deeply")
    summary = Summary(net, name)
    inputs = net.inputs
    if len(inputs) == 1:
        shape = _sample_shape(next(iter(inputs.values())))
    else:
        shape = ", ".join(f"{k} {_sample_shape(v)}" for k, v in inputs.items()) or None
    totals = summary.to_json()["totals"]
    types = Counter(layer.type or "(no type)" for layer in net.layers)
    problems = [f"layer {x.name!r}: {x.problem}" for x in net.layers if x.problem]
    facts = NetFacts(
        input_shape=shape[:200] if shape else None,
        params=totals["params"],
        macs=totals["macs_per_sample"],
        layers=totals["layers"],
        layer_types=dict(types.most_common()),
        error="; ".join(problems[:3])[:500] if problems else None,
    )
    try:
        from ..runtime.convert import unsupported_layers
    except ImportError:  # no caffezoo[run]: the converter's table is not here to ask
        return facts
    facts.unsupported = unsupported_layers(net)[:MAX_PROBLEMS]
    facts.convertible = not facts.unsupported and not problems
    return facts


_BY_BLOB: OrderedDict[tuple[str, str], NetFacts] = OrderedDict()
_BY_BLOB_LOCK = threading.Lock()


def facts_of_blob(sha: str, content: bytes, name: str) -> NetFacts:
    """:func:`net_facts` remembered by the prototxt's blob SHA-1: many models share one net."""
    key = (sha, name)
    with _BY_BLOB_LOCK:
        found = _BY_BLOB.get(key)
        if found is not None:
            _BY_BLOB.move_to_end(key)
            return copy.deepcopy(found)
    facts = net_facts(content, name)
    with _BY_BLOB_LOCK:
        _BY_BLOB[key] = facts
        while len(_BY_BLOB) > 256:
            _BY_BLOB.popitem(last=False)
    return copy.deepcopy(facts)


def weights_fit(prototxt: bytes, caffemodel: Path, name: str = "deploy.prototxt") -> tuple[bool, list[str]]:
    """Whether ``caffemodel`` fits the net as ``caffezoo inspect --weights`` judges it, and why not.

    >>> weights_fit(deploy_bytes, Path("bvlc_alexnet.caffemodel"))          # doctest: +SKIP
    (True, [])
    """
    from ..caffe.net import attach_weights, load_net
    from ..caffe.prototxt import parse_prototxt

    if len(prototxt) > MAX_NET_BYTES:
        return False, [f"{name}: too large to analyse"]
    try:
        parsed = parse_prototxt(prototxt, path=name, skip_unknown=True)
        if _count_layers(parsed.message) > MAX_LAYERS:
            return False, [f"{name}: too many layers to analyse"]
        net = load_net(parsed, phase="TEST", strict=False)
        attach_weights(net, caffemodel, strict=False)
    except CaffezooError as e:
        return False, str(e).splitlines()[:MAX_PROBLEMS]
    fatal = [str(p) for p in net.weight_problems if p.fatal]
    return not fatal, fatal[:MAX_PROBLEMS]


def check_mirrored(storage: Storage, mirror: Mirror) -> int:
    """Check the weights the mirror holds against their nets where not checked yet; return how many.

    The job after a blob arrives (and after an edit changed a mirrored model's net).
    """
    from sqlalchemy import select

    from . import catalog
    from .tables import Blob, Entry

    with storage.session() as s:
        rows = s.execute(
            select(Entry.pk, Entry.sha1, Entry.net_sha, Entry.net_file, Entry.weights_fit).where(
                Entry.sha1.is_not(None), Entry.weights_fit.is_(None) | Entry.mirrored.is_(False)
            )
        ).all()
    done = 0
    for pk, sha1, net_sha, net_file, fit in rows:
        if not mirror.has(sha1):
            continue
        local = mirror.store.local_path(sha1)  # None: a remote store (the fit is judged where it is local)
        fits, why = fit, None
        if fit is None and net_sha is not None and local is not None:
            with storage.session() as s:
                content = s.scalar(select(Blob.content).where(Blob.sha == net_sha))
            if content is not None:
                fits, why = weights_fit(content, local, net_file or "deploy.prototxt")
        with storage.session(write=True) as s:
            entry = s.get(Entry, pk)
            if entry is None or entry.net_sha != net_sha or entry.sha1 != sha1:
                continue  # edited meanwhile: the next run checks the new net
            entry.mirrored = True
            if entry.weights_size is None and local is not None:  # a size nothing else gave
                entry.weights_size = local.stat().st_size
            if why is not None:
                entry.weights_fit, entry.weights_problems = fits, "\n".join(why)
            catalog.bump(s)
        done += 1
    return done


def layer_types_text(types: dict[str, int]) -> str:
    return json.dumps(types, separators=(",", ":"))
