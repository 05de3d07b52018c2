"""The rules of a gist, shared by the client and the server: ids, logins, file names, limits.

>>> parse_ref("shelhamer/034c6ac3865563b69e60")
GistRef(id='034c6ac3865563b69e60', user='shelhamer')
>>> file_name_problem("deploy.prototxt") is None, file_name_problem("evil\\u202etxt.sh")
(True, 'contains U+202E (an invisible or bidirectional control): expected printable characters only')
>>> check_login("alice")
'alice'

Each rule is written once, here. The server refuses what breaks them with
GitHub's validation-error shape (:class:`Invalid`, answered as 422), and the
client refuses the same names before it writes a file to disk. This module
imports nothing of the zoo but :mod:`caffezoo.errors`, so every layer may use it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import UsageError
from ..hashes import is_hex

__all__ = [
    "GIST_ID_RE",
    "LOGIN_RE",
    "MAX_DESCRIPTION",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "MAX_JSON_CONTAINERS",
    "MAX_JSON_DEPTH",
    "MAX_JSON_TOKENS",
    "MAX_LOGIN",
    "MAX_NAME_BYTES",
    "RESERVED_LOGINS",
    "GistRef",
    "Invalid",
    "check_content",
    "check_description",
    "check_files",
    "check_gist_id",
    "check_login",
    "error",
    "file_name_problem",
    "invalid",
    "json_problem",
    "json_text_problem",
    "looks_like_gist",
    "name_clashes",
    "name_key",
    "parse_ref",
    "text_problem",
    "utf8_text",
    "valid_id",
]

# --------------------------------------------------------------------------- limits

MAX_FILE_BYTES = 10 * 1024 * 1024  # GitHub serves raw files up to 10 MB; beyond, only git clone
MAX_FILES = 1000  # files in one gist (the API lists 300; more are truncated in lists)
MAX_NAME_BYTES = 255  # one file name: what every common file system holds
MAX_DESCRIPTION = 1000  # characters; a model's name goes here, so this is generous
MAX_LOGIN = 39  # GitHub's limit on user names
MAX_JSON_DEPTH = 20  # nesting of a request body; a gist body needs 3
MAX_JSON_CONTAINERS = 4 * MAX_FILES  # objects and arrays in one body; a gist needs 2 + one a file
# Strings, objects, arrays and commas in one body; a gist needs 8 a file (name, object, two keys,
# their values, two commas) and a few more.
MAX_JSON_TOKENS = 16 * MAX_FILES

# A gist id: GitHub's are 20 or 32 hex digits; imported and bundled ids keep their own
# letters, so any 1-32 of [0-9A-Za-z_-] (the database column holds 32).
GIST_ID_RE = re.compile(r"[0-9A-Za-z_-]{1,32}")
# A bare MODEL argument taken for a gist id: GitHub's own shapes only (lower-case hex digits).
_GITHUB_ID_DIGITS = (20, 32)
# GitHub's user names: letters, digits and single hyphens, not at either end, 1-39 long.
LOGIN_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}")
# Names that would shadow the server's own paths (/gists/..., /users/..., /{user}/{id}/...).
RESERVED_LOGINS = frozenset(
    {
        "gists",
        "users",
        "user",
        "api",
        "raw",
        "download",
        "static",
        "login",
        "logout",
        "search",
        "blobs",
        "wiki",
        "models",
        "admin",
        "settings",
    }
)

# --------------------------------------------------------------------------- the error shape


def error(field: str, code: str, message: str, resource: str = "Gist") -> dict[str, str]:
    """One entry of GitHub's validation ``errors`` list."""
    return {"resource": resource, "field": field, "code": code, "message": message}


class Invalid(Exception):
    """A request breaks a rule; ``errors`` are GitHub-style ``{resource, field, code, message}``."""

    def __init__(self, errors: list[dict[str, str]]):
        self.errors = errors
        super().__init__("; ".join(e.get("message", e["code"]) for e in errors))


def invalid(field: str, code: str, message: str, resource: str = "Gist") -> Invalid:
    return Invalid([error(field, code, message, resource)])


# --------------------------------------------------------------------------- ids and logins


def check_gist_id(gist_id: str) -> str:
    if not isinstance(gist_id, str) or not GIST_ID_RE.fullmatch(gist_id):
        raise invalid("id", "invalid", f"gist id {gist_id!r}: expected 1-32 letters, digits, '_' or '-'")
    return gist_id


def check_login(login: str) -> str:
    """A user name this server may hold: GitHub's rule, and none of its own path words."""
    if not isinstance(login, str) or not LOGIN_RE.fullmatch(login) or login.lower() in RESERVED_LOGINS:
        raise invalid(
            "login",
            "invalid",
            f"{login!r} is not a valid user name: 1-{MAX_LOGIN} letters, digits or single "
            "hyphens, not starting or ending with a hyphen, and not a reserved word",
            resource="User",
        )
    return login


def valid_id(gist_id: str, user: str | None = None) -> bool:
    """Whether a gist id (and a login) could exist: what cannot is refused before any lookup."""
    return GIST_ID_RE.fullmatch(gist_id) is not None and (
        user is None or LOGIN_RE.fullmatch(user) is not None
    )


@dataclass(frozen=True)
class GistRef:
    """A gist named by the user: its id, and the owner when the reference gave one."""

    id: str
    user: str | None = None

    @property
    def dirname(self) -> str:
        """The directory name Caffe's script used: the reference with ``/`` as ``-``."""
        return f"{self.user}-{self.id}" if self.user else self.id


def parse_ref(text: str) -> GistRef:
    """Read ``ID``, ``USER/ID`` or a gist URL (``#file-readme-md`` and ``/download`` allowed).

    >>> parse_ref("https://gist.github.com/shelhamer/034c6ac3865563b69e60#file-readme-md")
    GistRef(id='034c6ac3865563b69e60', user='shelhamer')
    """
    raw = text.strip()
    if "://" in raw:
        parts = [p for p in urlsplit(raw).path.split("/") if p]
        if parts and parts[-1] == "download":
            parts.pop()
        if "raw" in parts:
            parts = parts[: parts.index("raw")]
        if "gists" in parts and parts.index("gists") + 1 < len(parts):
            parts = parts[parts.index("gists") + 1 :][:1]
        elif parts and parts[0] == "gist":  # GitHub Enterprise: https://HOST/gist/USER/ID
            parts = parts[1:]
        parts = parts[-2:]
    else:
        parts = raw.split("/")
    if parts:
        parts[-1] = parts[-1].removesuffix(".git")
    if len(parts) == 1 and GIST_ID_RE.fullmatch(parts[0]):
        return GistRef(parts[0])
    if len(parts) == 2 and LOGIN_RE.fullmatch(parts[0]) and GIST_ID_RE.fullmatch(parts[1]):
        return GistRef(parts[1], parts[0])
    raise UsageError(
        f"{text!r} is not a gist: expected an id (like 034c6ac3865563b69e60), USER/ID, or a gist URL"
    )


def looks_like_gist(text: str) -> bool:
    """A bare GitHub-style gist id (20 or 32 hex digits) or a gist URL."""
    if any(is_hex(text, digits, lowercase=True) for digits in _GITHUB_ID_DIGITS):
        return True
    if "://" in text:
        try:
            parse_ref(text)
            return True
        except UsageError:
            return False
    return False


# --------------------------------------------------------------------------- file names

# Characters that look like a path separator or a dot to a reader but are none to
# the file system: a name "evil\u2215..\u2215x" reads as a path it is not.
_LOOKALIKES = frozenset(
    "\u2215\u2044\uff0f\u29f8\u29f5\u29f9\u2216\ufe68\uff3c\u2571\u2572\u0337\u0338\u20e5"
    "\uff0e\u2024\u2025\u2026\ufe52\u3002\uff61\u02d9\u0701\u0702"
)
_WINDOWS_RESERVED = re.compile(r"(con|prn|aux|nul|com\d|lpt\d)(\..*)?", re.IGNORECASE)


def _bad_char(c: str) -> str | None:
    """Why ``c`` may not be in a name: controls, invisible or bidi marks, odd spaces."""
    if c in _LOOKALIKES:
        return "a look-alike of '/', '\\' or '.'"
    category = unicodedata.category(c)
    if category == "Cc":
        return "a control character"
    if category == "Cs":
        return "a lone surrogate (not a character)"
    if category in ("Cf", "Zl", "Zp") or (category == "Zs" and c != " "):
        return "an invisible or bidirectional control"
    if category in ("Co", "Cn"):
        return "a private-use or unassigned code point"
    return None


def text_problem(text: str, *, allow: str = "") -> str | None:
    """Why free text (a description) is unsafe to store: a control other than ``allow``,
    or a lone surrogate, which no database or UTF-8 file can hold."""
    for c in text:
        if c in allow:
            continue
        category = unicodedata.category(c)
        if category == "Cs":
            return f"contains U+{ord(c):04X}, a lone surrogate (not a character)"
        if category == "Cc":
            return f"contains U+{ord(c):04X}, a control character"
    return None


def file_name_problem(name: object) -> str | None:
    """Why ``name`` may not be a gist file or a model-directory file; None when it may.

    A name is 1-255 bytes of printable characters, with no ``/`` or ``\\`` (nor a
    look-alike of either or of ``.``), not hidden (leading ``.``), without leading or
    trailing blanks, and not a device name on Windows.
    """
    if not isinstance(name, str):
        return "expected a string"
    for c in name:
        if why := _bad_char(c):
            return f"contains U+{ord(c):04X} ({why}): expected printable characters only"
    folded = unicodedata.normalize("NFKC", name)
    if name in ("", ".", "..") or any(c in folded for c in "/\\\0"):
        return "expected a plain file name inside the model directory (no '/', '\\' or '..')"
    # A trailing '.' is dropped by Windows ("a.txt." is "a.txt"); a leading combining
    # mark has no letter of its own and draws itself over whatever is shown before it.
    if folded.startswith(".") or folded.endswith(".") or name != name.strip():
        return "expected a visible name: no leading or trailing '.' and no leading or trailing blanks"
    if unicodedata.category(name[0]).startswith("M"):
        return f"starts with U+{ord(name[0]):04X}, a combining mark: expected a letter, digit or symbol first"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"{len(name.encode('utf-8'))} bytes: expected at most {MAX_NAME_BYTES}"
    if _WINDOWS_RESERVED.fullmatch(folded):
        return f"{name!r} is a reserved device name on Windows"
    return None


def name_key(name: str) -> str:
    """What two names of one gist may not share: equal after NFKC and case folding.

    >>> name_key("Cafe\u0301.TXT") == name_key("caf\u00e9.txt") == name_key("caf\u00c9.txt")
    True

    macOS and Windows file systems treat names equal but for case (and macOS, but for
    Unicode form) as one file, so such a pair would overwrite itself on download; and a
    reader cannot tell "\ufb01le" from "file" either.
    """
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def name_clashes(names: Iterable[str]) -> list[str]:
    """Each name that clashes with an earlier one under :func:`name_key`, said as a phrase."""
    seen: dict[str, str] = {}
    out: list[str] = []
    for name in names:
        key = name_key(name)
        if key in seen:
            out.append(f"file names {seen[key]!r} and {name!r} differ only in case or Unicode form")
        seen.setdefault(key, name)
    return out


def check_files(names: Iterable[str]) -> None:
    """A gist's set of names: 1-:data:`MAX_FILES` safe names, none equal but for case or form."""
    names = list(names)
    if not names:
        raise invalid("files", "missing_field", "a gist needs at least one file")
    if len(names) > MAX_FILES:
        raise invalid("files", "too_large", f"{len(names)} files, over the limit of {MAX_FILES}")
    for name in names:
        if why := file_name_problem(name):
            raise invalid("files", "invalid", f"file name {name!r}: {why}")
    if clashes := name_clashes(names):
        raise invalid("files", "already_exists", clashes[0])


# --------------------------------------------------------------------------- contents and descriptions


def utf8_text(content: bytes, what: str) -> str:
    """``content`` as text; :class:`Invalid` naming ``what`` and the first bad byte when it is not UTF-8.

    >>> utf8_text(b"caf\\xc3\\xa9", "a.txt")
    'café'
    """
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as e:
        raise invalid(
            "files", "invalid", f"{what}: binary content (not UTF-8 at byte {e.start}) is not supported"
        ) from None


def check_content(name: str, content: bytes) -> None:
    """Text only: UTF-8, no NUL bytes, not blank, not over :data:`MAX_FILE_BYTES`."""
    if len(content) > MAX_FILE_BYTES:
        raise invalid(
            "files", "too_large", f"{name}: {len(content)} bytes, over the limit of {MAX_FILE_BYTES} per file"
        )
    if b"\0" in content:
        raise invalid("files", "invalid", f"{name}: binary content (NUL bytes) is not supported")
    if not utf8_text(content, name).strip():
        raise invalid("files", "missing_field", f"{name}: contents can't be blank")


def check_description(description: str | None) -> None:
    """At most :data:`MAX_DESCRIPTION` characters of text; tabs and newlines are its only controls."""
    if description is None:
        return
    if not isinstance(description, str):
        raise invalid("description", "invalid", "description must be a string or null")
    if len(description) > MAX_DESCRIPTION:
        raise invalid(
            "description",
            "too_long",
            f"description: {len(description)} characters, over the limit of {MAX_DESCRIPTION}",
        )
    if why := text_problem(description, allow="\t\n\r"):
        raise invalid("description", "invalid", f"description {why}")


_JSON_STRUCTURE = re.compile(r'["\[\]{},]')  # a string's start, a bracket, or a further item


def json_text_problem(text: str, depth: int = MAX_JSON_DEPTH, tokens: int = MAX_JSON_TOKENS) -> str | None:
    """Why a request body's text is too deep or too wide to be a gist request, before it is
    parsed; None if it is not (or is not JSON: the parser says so).

    >>> json_text_problem('{"files": {"a": {"content": "[[,{\\\\"["}}}', depth=3)
    >>> json_text_problem("[" + "1," * 9 + "1]"), json_text_problem("[[[]]]", depth=2)
    (None, 'nested deeper than 2 levels')
    >>> json_text_problem("[" + "1," * 9 + "1]", tokens=9)
    'more than 9 strings, objects, arrays and items'

    Parsed, a body costs many times its size (a 30 MiB one of empty arrays is 700 MB of
    lists, one of short strings 12 times its size) before :func:`json_problem` sees it.
    This walk jumps over each string with json's own scanner (as fast as parsing), builds
    nothing that outlives a step, and stops at the first token past either limit.
    """
    from json.decoder import scanstring

    at = seen = level = 0
    while found := _JSON_STRUCTURE.search(text, at):
        char, at = text[found.start()], found.end()
        if char == '"':
            try:
                at = scanstring(text, at)[1]
            except ValueError:  # unclosed, or a raw control character: json.loads says which
                return None
        elif char in "]}":
            level -= 1
            continue
        seen += 1
        if seen > tokens:
            return f"more than {tokens} strings, objects, arrays and items"
        if char in "[{":
            level += 1
            if level > depth:
                return f"nested deeper than {depth} levels"
    return None


def json_problem(
    value: Any, depth: int = MAX_JSON_DEPTH, containers: int = MAX_JSON_CONTAINERS
) -> str | None:
    """Why a parsed request body is too deep or too wide to be a gist request; None if it is not.

    >>> json_problem({"files": {"a.txt": {"content": "x"}}}) is None, json_problem([[[]]], depth=2)
    (True, 'nested deeper than 2 levels')

    Iterative, with one iterator per level: a hostile body can exhaust neither the
    stack nor memory, and the walk stops at the first container past either limit.
    """
    if not isinstance(value, (dict, list)):
        return None
    seen = 1
    stack = [iter(value.values() if isinstance(value, dict) else value)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, (dict, list)):
                seen += 1
                if seen > containers:
                    return f"more than {containers} objects and arrays"
                stack.append(iter(item.values() if isinstance(item, dict) else item))
                if len(stack) > depth:
                    return f"nested deeper than {depth} levels"
                break
        else:
            stack.pop()
    return None
