"""Checks of prototxt files: what would stop Caffe, as problems with the file and line.

>>> [str(p) for p in check_net_file(Path("deploy.prototxt"), deploy=True)]   # doctest: +SKIP
[]

:func:`caffezoo.validate.check_prototxts` runs these on every prototxt of a
model directory. For each file:

- text syntax (line and column), unknown fields;
- for nets, in each phase the file uses: include/exclude conflicts, layer
  types no Caffe knows, bottoms no earlier layer produces, tops produced twice
  other than in place, shapes that cannot be computed; a deploy net must
  declare the shape of every input;
- for solvers: a net named at all, and found in the model directory.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import NetError, Problem, PrototxtError
from . import caffe_pb2
from ._files import net_file_found
from .layertypes import KNOWN_TYPES
from .net import assemble, wiring_problems
from .prototxt import Prototxt, load_prototxt, parse_prototxt

__all__ = ["check_net_file", "check_solver_file", "solver_net_names"]


def _error(path: Path, line: int | None, message: str) -> Problem:
    return Problem(str(path), line, message, "error")


def _warning(path: Path, line: int | None, message: str) -> Problem:
    return Problem(str(path), line, message, "warning")


def _parse(path: Path, message_type: type, data: bytes | None) -> tuple[Prototxt | None, list[Problem]]:
    """Parse strictly; on unknown fields report each one and go on without them."""

    def parse(skip_unknown: bool) -> Prototxt:
        if data is None:
            return load_prototxt(path, message_type, skip_unknown=skip_unknown)
        return parse_prototxt(data, message_type, path=str(path), skip_unknown=skip_unknown)

    try:
        return parse(False), []
    except PrototxtError as e:
        strict_error = e
    try:
        parsed = parse(True)
    except PrototxtError:
        return None, [_error(path, strict_error.line, _without_location(strict_error))]
    return parsed, [
        _error(
            path,
            s.line,
            f"column {s.column}: unknown field {s.path!r}; BVLC Caffe rejects it (a Caffe fork's parameter?)",
        )
        for s in parsed.skipped
    ]


def _without_location(e: PrototxtError) -> str:
    text = str(e)
    prefix = f"{e.path}:{e.line}:{e.column}: " if e.line else f"{e.path}: "
    text = text[len(prefix) :] if text.startswith(prefix) else text
    return f"column {e.column}: {text}" if e.column else text


def check_net_file(path: Path, *, deploy: bool = False, data: bytes | None = None) -> Iterator[Problem]:
    """Every problem of the net at ``path`` (``data``: its bytes, when read already)."""
    parsed, problems = _parse(path, caffe_pb2.NetParameter, data)
    yield from problems
    if parsed is None:
        return
    net_message: caffe_pb2.NetParameter = parsed.message  # type: ignore[assignment]
    if deploy:
        yield from _deploy_inputs(path, parsed)
    uses_phases = any(
        rule.HasField("phase") for layer in net_message.layer for rule in [*layer.include, *layer.exclude]
    )
    seen: set[tuple[int | None, str]] = set()
    for phase in ("TEST", "TRAIN") if uses_phases and not deploy else ("TEST",):
        for problem in _net_problems(path, parsed, phase):
            key = (problem.line, problem.message)
            if key not in seen:
                seen.add(key)
                yield problem


def _net_problems(path: Path, parsed: Prototxt, phase: str) -> Iterable[Problem]:
    from .shapes import infer_shapes

    try:
        net = assemble(parsed.message, str(path), parsed.lines, phase=phase)  # type: ignore[arg-type]
    except NetError as e:
        yield _error(path, _line_of(str(e)), _strip_path(str(e), path))
        return
    for layer in net.layers:
        if layer.type not in KNOWN_TYPES:
            close = difflib.get_close_matches(layer.type, sorted(KNOWN_TYPES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            what = f"unknown layer type {layer.type!r}{hint}" if layer.type else "the layer has no type"
            yield _error(path, layer.line, f"layer {layer.name!r}: {what}")
    wiring = wiring_problems(net.layers)
    for layer, message in wiring:
        yield _error(
            path,
            layer.line,
            f"layer {layer.name!r}: {message}" + (f" ({phase} phase)" if phase == "TRAIN" else ""),
        )
    if wiring:
        return
    infer_shapes(net)
    for layer in net.layers:
        if layer.problem and layer.type in KNOWN_TYPES:
            yield _error(path, layer.line, f"layer {layer.name!r} ({layer.type}): {layer.problem}")


def _deploy_inputs(path: Path, parsed: Prototxt) -> Iterator[Problem]:
    """A deploy net must say the shape of what it takes."""
    net: caffe_pb2.NetParameter = parsed.message  # type: ignore[assignment]
    first_input = (parsed.lines.get("input") or [None])[0]
    if net.input and not (net.input_shape or net.input_dim):
        yield _error(
            path,
            first_input,
            f"input {', '.join(map(repr, net.input))} has no shape: add input_shape "
            f"{{ dim: ... }} (or four input_dim) per input",
        )
    layer_lines = parsed.lines.get("layer") or parsed.lines.get("layers") or []
    for i, layer in enumerate(net.layer):
        if layer.type == "Input" and not layer.input_param.shape:
            line = layer_lines[i] if i < len(layer_lines) else None
            yield _error(path, line, f"Input layer {layer.name!r} has no input_param {{ shape {{ ... }} }}")
    has_source = (
        net.input or any(layer.type == "Input" or not layer.bottom for layer in net.layer) or net.layers
    )
    if not has_source:
        yield _error(path, None, "the deploy net declares no input: add an Input layer with its shape")


def check_solver_file(path: Path, model_dir: Path, data: bytes | None = None) -> Iterator[Problem]:
    """Every problem of the solver at ``path`` (``data``: its bytes, when read already)."""
    parsed, problems = _parse(path, caffe_pb2.SolverParameter, data)
    yield from problems
    if parsed is None:
        return
    solver: caffe_pb2.SolverParameter = parsed.message  # type: ignore[assignment]
    names = _named_nets(solver)
    inline = solver.HasField("net_param") or solver.HasField("train_net_param")
    if not names and not inline:
        yield _error(path, None, 'the solver names no net: add `net: "train_val.prototxt"`')
    for key, value in names:
        line = (parsed.lines.get(key) or [None])[0]
        # A warning, not an error: the deploy net still runs without the training setup.
        if not net_file_found(model_dir, value):
            yield _warning(
                path,
                line,
                f"{key}: {value!r} is not in the model directory (no {Path(value).name} beside the solver)",
            )


def _named_nets(solver: caffe_pb2.SolverParameter) -> list[tuple[str, str]]:
    names = [("net", solver.net)] if solver.HasField("net") else []
    if solver.HasField("train_net"):
        names.append(("train_net", solver.train_net))
    return names + [("test_net", t) for t in solver.test_net]


def solver_net_names(path: Path, data: bytes | None = None) -> list[str]:
    """The files a solver names as its nets (``net``, ``train_net``, ``test_net``), as written."""
    parsed, _ = _parse(path, caffe_pb2.SolverParameter, data)
    return [value for _, value in _named_nets(parsed.message)] if parsed is not None else []  # type: ignore[arg-type]


def _line_of(message: str) -> int | None:
    m = re.search(r":(\d+): ", message)
    return int(m.group(1)) if m else None


def _strip_path(message: str, path: Path) -> str:
    return re.sub(rf"^{re.escape(str(path))}(:\d+)?: ", "", message)
