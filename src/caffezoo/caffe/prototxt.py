"""Read and write Caffe's text files: net definitions and solvers.

>>> net = read_prototxt("models/bvlc_alexnet/deploy.prototxt")    # doctest: +SKIP
>>> net.layer[1].name, net.layer[1].convolution_param.num_output  # doctest: +SKIP
('conv1', 96)
>>> solver = read_solver("models/bvlc_alexnet/solver.prototxt")   # doctest: +SKIP
>>> write_prototxt("copy.prototxt", net)                          # doctest: +SKIP

Parsing is protobuf's own text format, so everything Caffe accepts is
accepted here: ``#`` comments, single-quoted strings, messages with or without
``:``, ``;`` or ``,`` after a field, ``True``/``False``. Every error is a
:class:`~caffezoo.errors.PrototxtError` reading ``file:line:col: what``.

Files written by Caffe forks (SSD, PSPNet, SegNet...) carry parameter blocks
BVLC Caffe does not know. The common ones are in caffezoo's schema; for the
rest, ``skip_unknown=True`` skips them and :func:`load_prototxt` says which
were skipped, with their lines.

The result is the file as written: V0/V1 nets and ``input:`` fields are
upgraded by :mod:`caffezoo.caffe.upgrade` (which :func:`caffezoo.caffe.net.load_net`
does for you).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from google.protobuf import text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from ..errors import PrototxtError
from . import caffe_pb2
from ._files import atomic_open, looks_binary, open_error, read_regular

__all__ = [
    "M",
    "MAX_DEPTH",
    "MAX_TEXT_BYTES",
    "Prototxt",
    "UnknownField",
    "is_repeated",
    "load_prototxt",
    "parse_prototxt",
    "read_prototxt",
    "read_solver",
    "to_text",
    "upgrade_solver",
    "write_prototxt",
]


M = TypeVar("M", bound=Message)

# Deeper nesting than any Caffe schema allows is an attack or garbage; refuse
# it before protobuf's recursive parser meets it.
MAX_DEPTH = 64
# Largest text file read; the biggest real prototxts are a few MB.
MAX_TEXT_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class UnknownField:
    """A field the schema does not know, skipped with ``skip_unknown=True``."""

    path: str  # e.g. "layer[12].interp_param"
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.line}:{self.column}: {self.path}"


@dataclass
class Prototxt:
    """A parsed text file with the positions the message itself cannot keep."""

    path: str
    message: Message
    # Line of every top-level field occurrence, in file order, by field name:
    # lines["layer"][3] is where the fourth ``layer {`` starts.
    lines: dict[str, list[int]] = field(default_factory=dict)
    skipped: list[UnknownField] = field(default_factory=list)


def read_prototxt(path: str | os.PathLike[str], *, skip_unknown: bool = False) -> caffe_pb2.NetParameter:
    """The :class:`NetParameter` in the text file at ``path``, exactly as written."""
    return load_prototxt(path, caffe_pb2.NetParameter, skip_unknown=skip_unknown).message


def read_solver(path: str | os.PathLike[str], *, skip_unknown: bool = False) -> caffe_pb2.SolverParameter:
    """The :class:`SolverParameter` at ``path``, with Caffe's solver upgrade applied.

    The deprecated enum ``solver_type`` becomes the string ``type``.
    """
    solver = load_prototxt(path, caffe_pb2.SolverParameter, skip_unknown=skip_unknown).message
    upgrade_solver(solver, str(path))
    return solver


_SOLVER_TYPES = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta", 5: "Adam"}


def upgrade_solver(solver: caffe_pb2.SolverParameter, path: str = "<solver>") -> None:
    """Turn ``solver_type: ADAM`` into ``type: "Adam"`` in place, as Caffe does."""
    if not solver.HasField("solver_type"):
        return
    if solver.HasField("type"):
        raise PrototxtError(
            f"{path}: both `solver_type` (deprecated) and `type` are set; keep `type` only", path=path
        )
    solver.type = _SOLVER_TYPES[solver.solver_type]
    solver.ClearField("solver_type")


def load_prototxt(
    path: str | os.PathLike[str],
    message_type: type[M] = caffe_pb2.NetParameter,
    *,
    skip_unknown: bool = False,
) -> Prototxt:
    """Parse the text file at ``path`` as ``message_type``; keep layer lines and skipped fields."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_TEXT_BYTES:
            raise PrototxtError(
                f"{p}: {size} bytes is too large for a text prototxt "
                f"(limit {MAX_TEXT_BYTES}); is it a binary .caffemodel?",
                path=str(p),
            )
        data = read_regular(p)
    except OSError as e:
        raise open_error(PrototxtError, p, e, "a .prototxt file") from None
    return parse_prototxt(data, message_type, path=str(p), skip_unknown=skip_unknown)


def parse_prototxt(
    text: str | bytes,
    message_type: type[M] = caffe_pb2.NetParameter,
    *,
    path: str = "<string>",
    skip_unknown: bool = False,
) -> Prototxt:
    """Parse prototxt ``text`` (str or bytes); ``path`` only names it in errors."""
    if isinstance(text, bytes):
        text = _decode(text, path)
    # Strict parsing needs no pre-scan: the schema has no recursive message, so
    # protobuf's parser cannot be driven deep. Skipping unknown blocks can be,
    # so the scan (which bounds the depth) comes first then.
    scan = _scan(text, message_type.DESCRIPTOR, path) if skip_unknown else None
    message = message_type()
    try:
        text_format.Parse(text, message, allow_unknown_field=skip_unknown)
    except text_format.ParseError as e:
        line, col = e.GetLine(), e.GetColumn()
        detail = _clean(str(e))
        if detail.startswith("unknown field"):
            detail += (
                "; a parameter of a Caffe fork? Skip such blocks with skip_unknown=True "
                "(--skip-unknown on the command line)"
            )
        raise PrototxtError(f"{path}:{line}:{col}: {detail}", path=path, line=line, column=col) from None
    except RecursionError:  # cannot happen after _scan; never let it escape as a crash
        raise PrototxtError(f"{path}: nested too deeply", path=path) from None
    if scan is None:
        scan = _scan(text, message_type.DESCRIPTOR, path)
    return Prototxt(path, message, scan.lines, scan.unknown)


def _decode(data: bytes, path: str) -> str:
    if looks_binary(data[:4096]):
        raise PrototxtError(
            f"{path}: is a binary file, not a text prototxt (a .caffemodel? pass weights with --weights)",
            path=path,
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        # Caffe reads bytes, so Latin-1 comments work there: accept them too.
        line = data.count(b"\n", 0, e.start) + 1
        if b"\0" in data:
            raise PrototxtError(f"{path}:{line}: not UTF-8 text", path=path, line=line) from None
        return data.decode("latin-1")


def _clean(message: str) -> str:
    """protobuf's message without its ``1:2 :`` prefix and the echo of the line."""
    message = re.sub(r"^\d+:\d+ : ", "", message)
    message = re.sub(r"^'.*': (?=[A-Z])", "", message, flags=re.S)
    m = re.match(r'Message type "([\w.]+)" has no field named "(\w+)"\.', message)
    if m:
        return f"unknown field {m.group(2)!r} in {m.group(1)}"
    return message


# ------------------------------------------------------------- the scanner
#
# A light pass over the tokens that finds what protobuf's parser does not
# report: where each top-level field starts, which fields the schema does not
# know (all of them, with their paths), and nesting too deep to parse safely.
# It never rejects text protobuf would accept; syntax errors are left to
# protobuf, which reports them with their line and column.

# White space and newlines are no tokens: the regex engine skips them (and any stray
# character) between matches, which halves the tokens this loop sees; a token's line
# is counted from the newlines before it, when it is needed.
_TOKEN = re.compile(
    r"""
    (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<open>[{<]) | (?P<close>[}>]) | (?P<colon>:) | (?P<sep>[;,]) | (?P<lbracket>\[) | (?P<rbracket>\])
  | (?P<word>[^\s{}<>:;,\[\]"'\#]+)
""",
    re.X,
)


@dataclass
class _Scan:
    lines: dict[str, list[int]] = field(default_factory=dict)
    unknown: list[UnknownField] = field(default_factory=list)


def _scan(text: str, descriptor: Descriptor, path: str) -> _Scan:
    out = _Scan()
    # Stack of (descriptor or None when inside an unknown block, path, counts).
    stack: list[tuple[Descriptor | None, str, dict[str, int]]] = [(descriptor, "", {})]
    line, counted = 1, 0  # the line at offset `counted` (no token holds a newline)
    pending: tuple[FieldDescriptor | None, str] | None = None  # a field name awaiting its value
    expect_value = False
    list_depth = 0
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "comment":
            continue
        desc, prefix, counts = stack[-1]
        if kind == "open":
            if len(stack) > MAX_DEPTH:
                at = m.start()
                line += text.count("\n", counted, at)
                col = at - text.rfind("\n", 0, at)
                raise PrototxtError(
                    f"{path}:{line}:{col}: nested more than {MAX_DEPTH} levels deep",
                    path=path,
                    line=line,
                    column=col,
                )
            fd, fpath = pending if pending else (None, prefix + ".?")
            sub = fd.message_type if (fd is not None and fd.message_type is not None) else None
            stack.append((sub, fpath, {}))
            pending, expect_value = None, False
        elif kind == "close":
            if len(stack) > 1:
                stack.pop()
            pending, expect_value = None, False
        elif kind == "lbracket":
            list_depth += 1
        elif kind == "rbracket":
            list_depth = max(0, list_depth - 1)
            if list_depth == 0:
                pending, expect_value = None, False
        elif kind == "colon":
            expect_value = pending is not None
        elif kind == "sep":
            if not list_depth:
                pending, expect_value = None, False
        elif expect_value or list_depth:  # a word or a string: a value
            if not list_depth:
                pending, expect_value = None, False
        elif kind == "word":
            name = m.group()
            at = m.start()
            line += text.count("\n", counted, at)
            counted = at
            if len(stack) == 1:
                out.lines.setdefault(name, []).append(line)
            index = counts.get(name, 0)
            counts[name] = index + 1
            fpath = f"{prefix}.{name}" if prefix else name
            fd = None
            if desc is not None:
                fd = desc.fields_by_name.get(name)
                if fd is None:
                    out.unknown.append(UnknownField(fpath, line, at - text.rfind("\n", 0, at)))
            if fd is not None and is_repeated(fd):
                fpath = f"{fpath}[{index}]"
            pending = (fd, fpath)
            expect_value = False
    return out


def is_repeated(fd: FieldDescriptor) -> bool:
    """protobuf 4 has ``label``; protobuf 7 dropped it for ``is_repeated``."""
    flag = getattr(fd, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return fd.label == FieldDescriptor.LABEL_REPEATED


# ------------------------------------------------------------------ writing

# protobuf's Python printer writes floats as "1.0"; Caffe's C++ one writes "1".
_WHOLE_FLOAT = re.compile(r"^(\s*\w+: -?\d+)\.0$", re.M)


def to_text(message: Message) -> str:
    """``message`` in Caffe's own text layout: two-space indent, fields in number order.

    This is what Caffe's ``upgrade_net_proto_text`` writes: V2 nets print the
    net's fields first and every ``layer { ... }`` last; floats are the
    shortest text that reads back to the same float32 (``0.1``, ``1``, ``1e-05``).
    """
    return _WHOLE_FLOAT.sub(r"\1", text_format.MessageToString(message, as_utf8=True))


def write_prototxt(path: str | os.PathLike[str], message: Message, *, header: str | None = None) -> Path:
    """Write ``message`` as text to ``path`` (atomically); ``header`` becomes ``#`` comment lines."""
    text = to_text(message)
    if header:
        text = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines()) + text
    p = Path(path)
    with atomic_open(p) as f:
        f.write(text.encode("utf-8"))
    return p
