"""YAML front matter of a model's ``readme.md``: find it, load it safely, edit it in place.

The block is found the way Caffe's ``download_model_binary.py`` finds it: the
first line that is exactly ``---`` once surrounding white space is stripped,
up to the next such line. Everything outside the block is prose and is never
touched.

>>> doc = parse_readme("---\\nname: Net\\nsha1: 0123\\n---\\nprose\\n")
>>> doc.data["sha1"], doc.lines["sha1"]
('0123', 3)
>>> print(set_keys(doc.text, {"gist_id": "abc123"}), end="")
---
name: Net
sha1: 0123
gist_id: abc123
---
prose

Loading is safe: only plain YAML types are constructed; any tag such as
``!!python/object/apply`` is refused with its line, never executed. Scalars of
keys that are strings by nature (``sha1``, ``gist_id``...) keep their source
text, so ``sha1: 0123`` stays ``"0123"`` instead of becoming a number.

Edits change only the lines of the keys being set: key order, comments,
quoting, prose and line endings stay byte for byte.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_write_bytes
from .errors import FrontMatterError, ModelDirError
from .hashes import is_hex

__all__ = [
    "MAX_DEPTH",
    "MAX_FRONT_MATTER_CHARS",
    "Readme",
    "STRING_KEYS",
    "find_block",
    "format_value",
    "load_yaml_mapping",
    "parse_readme",
    "read_readme",
    "read_text",
    "set_keys",
    "split_lines",
    "write_keys",
]


# Keys whose values are strings by nature: their source text wins over YAML's
# guess (a hex id of digits only would otherwise become an int or a float).
STRING_KEYS = frozenset(
    {
        "name",
        "caffemodel",
        "caffemodel_url",
        "sha1",
        "sha256",
        "caffe_commit",
        "caffe_version",
        "gist_id",
        "license",
        "task",
        "dataset",
        "labels",
        "paper",
    }
)

_CORE_TAGS = {
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
}
# Front matter is a flat mapping of small values; nesting deeper than this is refused
# before anything recursive (the YAML constructor, validation, JSON) walks it.
MAX_DEPTH = 32
# And longer than this is refused unread: pure-Python YAML reads nested flow lists at
# about 15 KB/s, so a gist's 10 MB readme of them held a server thread for 20 minutes.
# The bundled models' front matter is under 1 KB.
MAX_FRONT_MATTER_CHARS = 32 * 1024

# A universal-newline line splitter that keeps each line's own ending, as
# Python's text mode (which Caffe's script uses) splits lines.
_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


@dataclass
class Readme:
    """A parsed ``readme.md``: its text, front-matter values and where they are.

    ``start`` and ``end`` are the 1-based line numbers of the two ``---`` lines;
    ``lines`` maps each top-level key to its 1-based line in the file.
    """

    path: str
    text: str
    data: dict[str, Any]
    start: int
    end: int
    lines: dict[str, int] = field(default_factory=dict)

    @property
    def body(self) -> str:
        """The prose after the front matter."""
        return "".join(split_lines(self.text)[self.end :])

    def line_of(self, key: str) -> int | None:
        return self.lines.get(key)


def split_lines(text: str) -> list[str]:
    """Split ``text`` into lines that keep their endings (``\\n``, ``\\r\\n`` or ``\\r``)."""
    return _LINE_RE.findall(text)


def find_block(lines: list[str], path: str = "readme.md") -> tuple[int, int]:
    """0-based indexes of the opening and closing ``---`` lines, as Caffe finds them."""
    marks = [i for i, line in enumerate(lines) if line.strip() == "---"]
    if not marks:
        raise FrontMatterError(
            path, "no front matter: expected a YAML block between two lines of '---'", line=1
        )
    if len(marks) == 1:
        raise FrontMatterError(
            path,
            f"front matter opened by '---' on line {marks[0] + 1} is never closed: "
            "expected a second line of '---'",
            line=marks[0] + 1,
        )
    return marks[0], marks[1]


def read_text(
    path: str | os.PathLike[str], what: str = "a readme.md file", *, data: bytes | None = None
) -> str:
    """Read a readme (or, naming ``what``, another Markdown file) as UTF-8, with errors that name it.

    ``data`` is the file's bytes when they were read already.
    """
    p = Path(path)
    try:
        raw = p.read_bytes() if data is None else data
    except FileNotFoundError:
        raise ModelDirError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ModelDirError(f"{p}: is a directory, expected {what}") from None
    except OSError as e:
        raise ModelDirError(f"{p}: cannot read: {e.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise FrontMatterError(
            p,
            f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); save it as UTF-8",
            line=line,
        ) from None


def parse_readme(text: str, path: str | os.PathLike[str] = "readme.md") -> Readme:
    """Find and load the front matter of ``text``; raise :class:`FrontMatterError` on any fault."""
    path = str(path)
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = split_lines(text)
    start, end = find_block(lines, path)
    yaml_text = "".join(lines[start + 1 : end])
    if len(yaml_text) > MAX_FRONT_MATTER_CHARS:
        raise FrontMatterError(
            path,
            f"front matter of {len(yaml_text):,} characters: at most {MAX_FRONT_MATTER_CHARS:,} are read "
            "(keep long text in the prose below it)",
            line=start + 1,
        )
    data, key_lines = load_yaml_mapping(yaml_text, path, first_line=start + 2)
    return Readme(path=path, text=text, data=data, start=start + 1, end=end + 1, lines=key_lines)


def read_readme(path: str | os.PathLike[str]) -> Readme:
    """Read and parse the ``readme.md`` at ``path``."""
    return parse_readme(read_text(path), path)


def _yaml(kind: str):
    # ruamel.yaml is imported lazily: `caffezoo --help` should not pay for it.
    from ruamel.yaml import YAML

    return YAML(typ=kind, pure=True)


def _yaml_error(e: Exception, path: str, first_line: int) -> FrontMatterError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    line = first_line + mark.line if mark is not None else None
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    what = f"{context}, {problem}" if context else problem
    return FrontMatterError(path, f"YAML syntax error: {what}", line=line)


def _check_nodes(root: Any, path: str, first_line: int) -> None:
    """Refuse tags beyond plain YAML, and anchors/aliases (which could blow up traversal)."""
    from ruamel.yaml.nodes import MappingNode, SequenceNode

    seen: set[int] = set()
    stack = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        line = first_line + node.start_mark.line
        if depth > MAX_DEPTH:
            raise FrontMatterError(path, f"values nested more than {MAX_DEPTH} levels deep", line=line)
        if id(node) in seen:
            raise FrontMatterError(
                path,
                "YAML anchors and aliases (&name, *name) are not supported in front matter "
                "(the anchor is on this line)",
                line=line,
            )
        seen.add(id(node))
        tag = str(node.tag)
        if tag not in _CORE_TAGS:
            raise FrontMatterError(
                path,
                f"YAML tag {tag.replace('tag:yaml.org,2002:', '!!')!r} is not allowed: "
                "front matter may hold only plain strings, numbers, lists and mappings",
                line=line,
            )
        if isinstance(node, MappingNode):
            for k, v in node.value:
                stack.extend(((k, depth + 1), (v, depth + 1)))
        elif isinstance(node, SequenceNode):
            stack.extend((v, depth + 1) for v in node.value)


# The plain front matter most readmes have, read without ruamel.yaml (see _plain_mapping).
# Keys of at most 128 characters: YAML refuses a plain key of more than 1024.
_PLAIN_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_-]{0,127}):(?: +(.*))?")
# A plain scalar YAML reads as this very text: it starts with a letter, and holds no
# indicator that could end it (": ", " #") or make it a flow collection.
_PLAIN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9 _./()+\-:,@'=&?%~!*;]*")
_PLAIN_ITEM = re.compile(r"[A-Za-z][A-Za-z0-9 _./()+\-@'=&?%~!*;]*")  # in [...]: no ':' or ','
_NOT_TEXT = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})
_QUOTED = re.compile(r"\"([ -!#-\[\]-~]*)\"|'([ -&(-~]*)'")  # printable ASCII, no escapes


def _plain_scalar(text: str, item: bool) -> tuple[bool, Any]:
    """(True, value) for a scalar whose meaning is certain, else (False, None)."""
    quoted = _QUOTED.fullmatch(text)
    if quoted:
        return True, quoted.group(1) if quoted.group(1) is not None else quoted.group(2)
    if re.fullmatch(r"0|[1-9][0-9]{0,17}", text):
        return True, int(text)
    if (
        (_PLAIN_ITEM if item else _PLAIN_TEXT).fullmatch(text)
        and text.lower() not in _NOT_TEXT
        and ": " not in text
        and " #" not in text
        and not text.endswith((":", " "))
    ):
        return True, text
    return False, None


_FLOW_MAPPINGS = re.compile(r"\[\{[^{}\[\]\"'#&*!|>%`]+\}(?: *, *\{[^{}\[\]\"'#&*!|>%`]+\})*\]")
_PLAIN_FLOAT = re.compile(r"(?:0|[1-9][0-9]{0,14})\.[0-9]{1,15}")


def _plain_mapping_list(text: str) -> list[dict[str, Any]] | None:
    """``[{dataset: ILSVRC 2012 val, metric: top-1, value: 57.1}, ...]`` (flat flow mappings of
    plain words, integers and decimals: the front matter's ``results``) as ruamel.yaml reads it;
    None for anything else."""
    if not _FLOW_MAPPINGS.fullmatch(text):
        return None
    out = []
    for body in re.findall(r"\{([^{}]*)\}", text):
        item: dict[str, Any] = {}
        for pair in body.split(","):
            key, sep, raw = pair.strip().partition(": ")
            raw = raw.strip()
            if not sep or key != key.rstrip() or not _PLAIN_ITEM.fullmatch(key) or key.lower() in _NOT_TEXT:
                return None
            if key in item:
                return None  # ruamel.yaml refuses a repeated key: it says so
            if _PLAIN_FLOAT.fullmatch(raw):
                item[key] = float(raw)
                continue
            ok, value = _plain_scalar(raw, item=True)
            if not ok or not raw:
                return None
            item[key] = value
        out.append(item)
    return out


def _plain_mapping(yaml_text: str, first_line: int) -> tuple[dict[str, Any], dict[str, int]] | None:
    """``key: value`` lines of plain words, numbers, quoted text and flat ``[a, b]`` lists, read
    exactly as ruamel.yaml reads them; None for anything else, which ruamel.yaml then reads."""
    data: dict[str, Any] = {}
    key_lines: dict[str, int] = {}
    for number, line in enumerate(split_lines(yaml_text)):
        line = line.rstrip("\r\n").rstrip(" ")
        if not line or line.startswith("#"):
            if line.startswith("#") and not re.fullmatch(r"#[ -~]*", line):
                return None
            continue
        match = _PLAIN_KEY.fullmatch(line)
        if not match or match.group(1) in data or match.group(1).lower() in _NOT_TEXT:
            return None
        key, text = match.group(1), match.group(2) or ""
        if not text:
            value: Any = None
        elif text.startswith("[{") and text.endswith("}]"):
            value = _plain_mapping_list(text)
            if value is None:
                return None
        elif text.startswith("[") and text.endswith("]"):
            inner = text[1:-1].strip()
            value = []
            for item in inner.split(",") if inner else []:
                ok, item_value = _plain_scalar(item.strip(), item=True)
                if not ok or not item.strip():
                    return None
                value.append(item_value)
        elif key in STRING_KEYS and is_hex(text, (1, 64)):
            value = text  # a digest or commit: a string by nature keeps its source text, as below
        else:
            ok, value = _plain_scalar(text, item=False)
            if not ok:
                return None
            if key in STRING_KEYS and isinstance(value, int):
                value = text
        data[key], key_lines[key] = value, first_line + number
    return data, key_lines


def load_yaml_mapping(
    yaml_text: str, path: str = "readme.md", first_line: int = 1
) -> tuple[dict[str, Any], dict[str, int]]:
    """Safely load a YAML mapping; return it with each top-level key's 1-based line."""
    plain = _plain_mapping(yaml_text, first_line)
    if plain is not None:
        return plain
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.nodes import MappingNode, ScalarNode

    try:
        root = _yaml("rt").compose(yaml_text)
    except YAMLError as e:
        raise _yaml_error(e, path, first_line) from None
    except RecursionError:  # the composer recurses: [[[[...]]]] hundreds deep
        raise FrontMatterError(
            path, f"values nested more than {MAX_DEPTH} levels deep", line=first_line
        ) from None
    if root is None:
        return {}, {}
    if not isinstance(root, MappingNode):
        kind = "a list" if root.id == "sequence" else f"the scalar {root.value!r}"
        raise FrontMatterError(
            path,
            f"expected a mapping of keys to values, found {kind}",
            line=first_line + root.start_mark.line,
        )
    _check_nodes(root, path, first_line)

    key_lines: dict[str, int] = {}
    raw: dict[str, str] = {}
    for key_node, value_node in root.value:
        line = first_line + key_node.start_mark.line
        if not isinstance(key_node, ScalarNode):
            raise FrontMatterError(path, "a key must be a plain word, found a list or mapping", line=line)
        key = key_node.value
        if key in key_lines:
            raise FrontMatterError(
                path, f"key {key!r} appears twice (first on line {key_lines[key]})", line=line
            )
        key_lines[key] = line
        if isinstance(value_node, ScalarNode) and key in STRING_KEYS and value_node.value != "":
            if not (value_node.style is None and value_node.value in ("~", "null", "Null", "NULL")):
                raw[key] = value_node.value
    try:
        loaded = _yaml("safe").load(yaml_text)
    except YAMLError as e:  # e.g. an int too odd to construct
        raise _yaml_error(e, path, first_line) from None
    except ValueError as e:  # an int of more than 4300 digits: Python's int() refuses it
        raise FrontMatterError(path, f"a value YAML cannot read: {str(e).split(';')[0]}") from None
    data: dict[str, Any] = {str(k): v for k, v in loaded.items()}
    data.update(raw)
    return data, key_lines


# --------------------------------------------------------------------------- writing


def format_value(value: Any, _flow: bool = False) -> str:
    """Render ``value`` as a one-line YAML scalar or flow collection.

    One line, always: Caffe's script strips each line's indentation before
    parsing, which would break block-style nesting.

    >>> format_value("https://x.org/a.caffemodel"), format_value("0123"), format_value([1, 2])
    ('https://x.org/a.caffemodel', "'0123'", '[1, 2]')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v, True) for v in value) + "]"
    if isinstance(value, Mapping):
        items = (f"{format_value(str(k), True)}: {format_value(v, True)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    text = str(value)
    if _plain_ok(text, _flow):
        return text
    if "'" not in text and text.isprintable():
        return "'" + text + "'"
    return _double_quoted(text)


_PLAIN_RE = re.compile(r"[A-Za-z0-9_./+-][A-Za-z0-9_./:@+~=&%?,() -]*")


def _plain_ok(text: str, flow: bool = False) -> bool:
    if not _PLAIN_RE.fullmatch(text) or text != text.strip() or ": " in text or " #" in text:
        return False
    if text.endswith(":") or (flow and any(c in text for c in "?,[]{}")):
        return False  # PyYAML (Caffe's parser) refuses '?' and ',' in flow plain scalars
    # Plain only when YAML 1.2 (caffezoo) and YAML 1.1 (PyYAML, Caffe's scripts) both
    # read it back as this very string: `on`, `0123` or `1e3` need quotes in 1.1.
    for version in ((1, 2), (1, 1)):
        loader = _yaml("safe")
        loader.version = version
        try:
            if loader.load(f"k: {text}\n") != {"k": text}:
                return False
        except Exception:
            return False
    return True


_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}


def _double_quoted(text: str) -> str:
    """A YAML double-quoted scalar: printable characters as they are, the rest escaped."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c.isprintable() and c not in "\u2028\u2029\ufeff":
            out.append(c)
        elif c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif ord(c) <= 0xFF:
            out.append(f"\\x{ord(c):02x}")
        elif ord(c) <= 0xFFFF:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    return '"' + "".join(out) + '"'


def _quoted_like(old_style: str | None, value: Any) -> str:
    """Render a string keeping the quoting style the user chose for the old value."""
    if isinstance(value, str) and old_style == '"':
        return _double_quoted(value)
    if isinstance(value, str) and old_style == "'" and value.isprintable():
        return "'" + value.replace("'", "''") + "'"
    return format_value(value)


def set_keys(text: str, updates: Mapping[str, Any], path: str = "readme.md") -> str:
    """Return ``text`` with front-matter keys set, changing only their lines.

    An existing single-line value is replaced in place (its quoting style and
    trailing comment kept); a multi-line one is replaced by one line; a new key
    is added as the last line of the block, with the file's line ending.
    """
    from ruamel.yaml.nodes import ScalarNode

    readme = parse_readme(text, path)  # validates first: never edit a block we cannot read
    text = readme.text
    lines = split_lines(text)
    first = readme.start  # 0-based index of the first YAML line
    root = _yaml("rt").compose("".join(lines[first : readme.end - 1]))
    nodes = {k.value: (k, v) for k, v in root.value} if root is not None else {}
    eol = re.search(r"\r\n|\r|\n", lines[readme.start - 1])
    eol_text = eol.group(0) if eol else "\n"
    indent = min((k.start_mark.column for k, _ in nodes.values()), default=0)

    additions: list[str] = []
    edits: list[tuple[int, int, str]] = []  # (first line index, last line index, replacement)
    for key, value in updates.items():
        if key in nodes:
            k, v = nodes[key]
            kl = first + k.start_mark.line
            single = isinstance(v, ScalarNode) and v.start_mark.line == v.end_mark.line == k.start_mark.line
            if single and v.value != "":
                line = lines[kl]
                rendered = _quoted_like(v.style, value)
                new = line[: v.start_mark.column] + rendered + line[v.end_mark.column :]
                edits.append((kl, kl, new))
            else:
                # Empty or multi-line value: rewrite the key's lines as one.
                last = first + max(v.end_mark.line - (1 if v.end_mark.column == 0 else 0), k.start_mark.line)
                while last > kl and lines[last].strip()[:1] in ("#", ""):
                    last -= 1  # comments after a block value belong to no key: keep them
                line_eol = re.search(r"(\r\n|\r|\n)\Z", lines[last])
                end = line_eol.group(0) if line_eol else eol_text
                edits.append((kl, last, " " * indent + f"{format_value(key)}: {format_value(value)}{end}"))
        else:
            additions.append(" " * indent + f"{format_value(key)}: {format_value(value)}{eol_text}")

    for lo, hi, new in sorted(edits, reverse=True):
        lines[lo : hi + 1] = [new]
    closing = readme.end - 1  # index of the closing '---'; edits replace 1+ lines with 1
    closing -= sum(hi - lo for lo, hi, _ in edits)
    if additions and closing > 0 and not re.search(r"[\r\n]\Z", lines[closing - 1]):
        lines[closing - 1] += eol_text  # the block's last line had no ending: mend before appending
    lines[closing:closing] = additions
    new_text = "".join(lines)

    check = parse_readme(new_text, path)  # the safety net: the edit must read back as intended
    for key, value in updates.items():
        got = check.data.get(key)
        want = str(value) if key in STRING_KEYS and value is not None else value
        if got != want and not (isinstance(want, tuple) and list(want) == got):
            raise FrontMatterError(path, f"{key}: could not be written back (read {got!r} after writing)")
    return new_text


def write_keys(path: str | os.PathLike[str], updates: Mapping[str, Any]) -> Readme:
    """Set front-matter keys in the readme at ``path``, atomically.

    >>> write_keys("models/my_net/readme.md", {"gist_id": "034c6ac3865563b69e60"})  # doctest: +SKIP
    """
    p = Path(path)
    old = read_text(p)
    bom = "\ufeff" if old.startswith("\ufeff") else ""
    new = bom + set_keys(old, updates, str(p))
    atomic_write_bytes(p, new.encode("utf-8"))
    return parse_readme(new, p)
