"""Run a zoo model on onnxruntime; conversions are cached so the second load is instant.

>>> net = load("bvlc_alexnet")                       # doctest: +SKIP
>>> net.inputs, net.outputs                          # doctest: +SKIP
({'data': (None, 3, 227, 227)}, ['prob'])
>>> net.forward(data=batch)["prob"].shape            # doctest: +SKIP
(4, 1000)

The converted model lives under ``CAFFEZOO_HOME``'s cache, in ``onnx/``, named
by the SHA-1 of the weights and a digest of everything else the ONNX depends
on: the prototxt's bytes, the converter (its version, and the source of
:mod:`caffezoo.runtime` and :mod:`caffezoo.caffe`), the opset and the options.
The weights' SHA-1 is itself remembered per file identity (device, inode,
size, mtime), so a warm load hashes nothing and converts nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import settings
from ..errors import CaffezooError, RuntimeInputError, UsageError
from .convert import CONVERTER_VERSION, DEFAULT_OPSET, convert_net, locate
from .convert import load as load_caffe

if TYPE_CHECKING:
    from ..modeldir import ModelDir

__all__ = ["TINY_MACS", "InferenceNet", "load"]

Shape = tuple[int | None, ...]


@dataclass
class InferenceNet:
    """A converted Caffe net in an onnxruntime session: ``forward(**inputs) -> {blob: array}``."""

    path: Path | None  # the ONNX file (None: converted in memory, cache=False)
    session: Any  # onnxruntime.InferenceSession
    inputs: dict[str, Shape]  # None where the size may vary (the batch axis)
    outputs: list[str]
    source: dict[str, str] = field(default_factory=dict)  # prototxt, weights, sha1
    model: ModelDir | None = None  # the model directory MODEL named (None for a bare prototxt)

    def forward(self, **inputs: Any) -> dict[str, np.ndarray]:
        """Run the net; every input by its blob name, as an N x C x H x W float array."""
        feed = inputs
        for name, expected in self.inputs.items():
            value = inputs.get(name)
            # The usual call (the right names, float32 C-contiguous arrays that fit) costs no copies and
            # little Python: on tiny nets that overhead is as long as the forward pass.
            if not (
                type(value) is np.ndarray
                and value.dtype == _FLOAT32
                and value.flags.c_contiguous
                and _fits(value.shape, expected)
            ):
                if feed is inputs:
                    feed = dict(inputs)
                feed[name] = self._check(name, value)
        if len(inputs) != len(self.inputs):  # every input is there (or _check said so): so names are extra
            self._unknown(inputs)
        # The public run, not its private C++ session: that saved 0.4 us of a P-Net's 16 us call (within
        # noise against OpenCV) but skipped onnxruntime's fallback to CPU when a GPU provider fails.
        try:
            results = self.session.run(self.outputs, feed)
        except Exception as e:
            if not type(e).__module__.startswith("onnxruntime"):
                raise
            # A net that converts but cannot run on these values (an Embed index past input_dim, an ROI
            # of another image): onnxruntime's message names the node, which is named for its layer.
            message = str(e).split(" : ")[-1].strip()
            where = self.source.get("prototxt", "the net")
            raise RuntimeInputError(f"{where}: onnxruntime could not run the net: {message}") from None
        return dict(zip(self.outputs, results))

    def _unknown(self, inputs: dict[str, Any]) -> None:
        unknown = sorted(set(inputs) - set(self.inputs))
        if unknown:
            raise RuntimeInputError(
                f"unknown input{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}: "
                f"this net takes {', '.join(map(repr, self.inputs))}"
            )

    __call__ = forward

    def _check(self, name: str, value: Any) -> np.ndarray:
        expected = self.inputs[name]
        want = "x".join("N" if d is None else str(d) for d in expected)
        if value is None:
            raise RuntimeInputError(f"input {name!r} is missing: give a {want} float array")
        array = np.asarray(value)
        if array.dtype.kind not in "fiu":
            raise RuntimeInputError(f"input {name!r}: expected numbers (float32), got dtype {array.dtype}")
        shape = array.shape
        if not _fits(shape, expected):
            why = self.source.get("static_batch")
            hint = (
                f" (the batch size is fixed: {why})" if why and expected and expected[0] is not None else ""
            )
            raise RuntimeInputError(
                f"input {name!r}: expected shape {want}, got {'x'.join(map(str, shape)) or 'a scalar'}{hint}"
            )
        return np.ascontiguousarray(array, dtype=np.float32)


_FLOAT32 = np.dtype(np.float32)


def _fits(shape: tuple[int, ...], expected: Shape) -> bool:
    """``shape`` has ``expected``'s sizes (None: any) and a batch of at least one."""
    if shape == expected:
        return not shape or shape[0] != 0
    if len(shape) != len(expected) or (shape and shape[0] == 0):
        return False
    for e, s in zip(expected, shape):
        if e is not None and e != s:
            return False
    return True


# ------------------------------------------------------------ loading


def load(
    model: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    providers: Sequence[str] | None = None,
    opset: int = DEFAULT_OPSET,
    input_shapes: dict[str, Sequence[int]] | None = None,
    fill_missing: bool = False,
    threads: int | None = None,
    cache: bool = True,
    outputs: Sequence[str] = (),
) -> InferenceNet:
    """Load MODEL (a model directory, bundled name or ``.prototxt`` + ``weights``) for inference.

    ``providers`` are onnxruntime execution providers in order of preference
    (default: CPU); ``threads`` caps onnxruntime's intra-op threads (default: its own choice, but one
    for nets under TINY_MACS per image); ``outputs``
    are blobs to return besides the net's outputs (features for ``embed``).
    """
    prototxt, weights_path, expected, model_dir = locate(model, weights)
    options = {
        "opset": opset,
        "input_shapes": {k: list(v) for k, v in sorted((input_shapes or {}).items())},
        "fill_missing": fill_missing,
    }
    if outputs:  # only when asked, so that existing cache entries keep their names
        options["outputs"] = sorted(set(outputs))
    sha1 = weights_sha1(weights_path, expected)
    onnx_path = cached_path(sha1, prototxt, options) if cache else None
    session = None
    if onnx_path is not None and onnx_path.is_file():
        try:
            session = make_session(onnx_path, providers=providers, threads=threads)
        except CaffezooError:
            raise
        except Exception:  # onnxruntime cannot read the cached file (damaged): convert again
            onnx_path.unlink(missing_ok=True)
    if session is None:
        net = load_caffe(prototxt, weights_path, input_shapes=input_shapes, fill_missing=fill_missing)
        converted = convert_net(net, opset=opset, outputs=list(outputs))
        if onnx_path is None:
            source: Path | bytes = converted.proto().SerializeToString()
        else:
            onnx_path.parent.mkdir(parents=True, exist_ok=True)
            source = converted.save(onnx_path)
        session = make_session(source, providers=providers, threads=threads)
    meta = session.get_modelmeta().custom_metadata_map
    if threads is None and _tiny(meta):  # one thread: no worker to wake on every call
        session = make_session(onnx_path or source, providers=providers, threads=1)
    inputs = {i.name: tuple(d if isinstance(d, int) else None for d in i.shape) for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    info = {"prototxt": str(prototxt), "weights": str(weights_path), "sha1": sha1}
    if meta.get("caffezoo.static_batch"):
        info["static_batch"] = meta["caffezoo.static_batch"]
    return InferenceNet(onnx_path, session, inputs, outputs, info, model_dir)


# Nets doing less work than this per image run on one onnxruntime thread unless told otherwise: waking
# a sleeping worker costs tens of microseconds, more than such a net's whole forward pass.
TINY_MACS = 20_000_000


def _tiny(meta: dict[str, str]) -> bool:
    try:
        return 0 < int(meta.get("caffezoo.macs_per_image", "0")) < TINY_MACS
    except ValueError:
        return False


def make_session(
    model: Path | bytes, *, providers: Sequence[str] | None = None, threads: int | None = None
) -> Any:
    """An onnxruntime session with every graph optimisation on and non-spinning worker threads."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = list(providers or ["CPUExecutionProvider"])
    missing = [p for p in wanted if p not in available]
    if missing:
        raise UsageError(
            f"onnxruntime provider{'s' * (len(missing) > 1)} {', '.join(missing)} not installed "
            f"(available: {', '.join(available)})"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 4  # errors reach the user as exceptions, not as log lines (3 logged them)
    # Idle worker threads sleep instead of spinning: on a machine shared with other work
    # (the usual case for a CLI) spinning steals the cores the other threads need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=wanted)


def cache_dir() -> Path:
    return settings().cache_dir / "onnx"


def cached_path(weights_sha1: str, prototxt: Path, options: dict[str, Any]) -> Path:
    """Where the conversion of these weights, this prototxt and these options is cached."""
    h = hashlib.sha1(usedforsecurity=False)
    h.update(prototxt.read_bytes())
    h.update(json.dumps({"converter": converter_digest(), **options}, sort_keys=True).encode())
    return cache_dir() / f"{weights_sha1}-{h.hexdigest()[:16]}.onnx"


@functools.cache
def converter_digest() -> str:
    """CONVERTER_VERSION and the converter's source: an edited rule never meets a stale cache."""
    h = hashlib.sha1(CONVERTER_VERSION.encode(), usedforsecurity=False)
    for path in converter_sources():
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def converter_sources() -> list[Path]:
    """Every module the ONNX depends on: the runtime's and caffe's (prototxt, upgrade, shapes, weights)."""
    package = Path(__file__).parent.parent
    return sorted([*(package / "runtime").glob("*.py"), *(package / "caffe").glob("*.py")])


def weights_sha1(path: Path, expected: str | None = None) -> str:
    """SHA-1 of a weights file, computed once per file identity (device, inode, size, mtime).

    Weights that ``caffezoo download`` verified against the front matter's
    ``expected`` SHA-1 are taken from the blob cache's records, unread.
    """
    from ..fetch import BlobCache, hash_file
    from ..fetch.records import identity, write_json_atomic

    if expected and BlobCache().records.is_verified(path, expected):
        return expected
    stamp = identity(os.stat(path))
    memo_path = cache_dir() / "sha1.json"
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    memo = memo if isinstance(memo, dict) else {}
    key = str(Path(path).resolve())
    entry = memo.get(key)
    if isinstance(entry, dict) and entry.get("identity") == stamp:
        return str(entry["sha1"])
    digest = hash_file(path).sha1
    memo[key] = {"identity": stamp, "sha1": digest}
    write_json_atomic(memo_path, memo)
    return digest
