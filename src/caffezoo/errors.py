"""Every exception caffezoo raises on purpose.

All of them derive from :class:`CaffezooError`, whose message is written for a
person: it names the file, line or key at fault and what was expected. The CLI
prints that message as one line and exits with :attr:`CaffezooError.exit_code`.

>>> try:
...     raise FrontMatterError("models/x/readme.md", "sha1: expected 40 hex digits", line=4)
... except CaffezooError as e:
...     print(e)
models/x/readme.md:4: sha1: expected 40 hex digits
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Literal

__all__ = [
    "CaffemodelError",
    "CaffezooError",
    "ChecksumError",
    "ConfigError",
    "ConversionError",
    "DiskSpaceError",
    "DownloadError",
    "DrawError",
    "FrontMatterError",
    "GistError",
    "ModelDirError",
    "ModelNotFoundError",
    "NetError",
    "OfflineError",
    "Problem",
    "PrototxtError",
    "RuntimeInputError",
    "UsageError",
    "WriteError",
]


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth a warning) in a file: ``path:line: message``."""

    path: str
    line: int | None
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


class CaffezooError(Exception):
    """Base class: a problem the user can act on, never a bug."""

    exit_code: int = 1


class UsageError(CaffezooError):
    """The arguments of a call do not make sense together."""

    exit_code = 2


class ConfigError(CaffezooError):
    """An environment variable or configuration file holds a bad value."""


class ModelNotFoundError(CaffezooError):
    """MODEL is neither an existing directory, a bundled model nor a known gist."""


class ModelDirError(CaffezooError):
    """A model directory cannot be read: missing, not a directory, no readme..."""


class FrontMatterError(ModelDirError):
    """The YAML front matter of a ``readme.md`` is missing or malformed.

    ``problems`` lists every fault found at once, each with its line when known.
    """

    def __init__(self, path: str | PathLike[str], problems: Sequence[Problem] | str, line: int | None = None):
        self.path = str(path)
        if isinstance(problems, str):
            problems = [Problem(self.path, line, problems)]
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class PrototxtError(CaffezooError):
    """A prototxt file cannot be parsed; the message is ``file:line:col: what``.

    ``path``, ``line`` and ``column`` say where, when known (1-based).
    """

    def __init__(
        self, message: str, path: str | None = None, line: int | None = None, column: int | None = None
    ):
        self.path, self.line, self.column = path, line, column
        super().__init__(message)


class WriteError(CaffezooError):
    """A file cannot be written: its folder is missing or read-only, or the disk is full."""


class CaffemodelError(CaffezooError):
    """A ``.caffemodel`` (binary NetParameter) cannot be read."""


class NetError(CaffezooError):
    """A network definition is inconsistent: unknown bottoms, bad shapes, mismatched blobs."""


class DrawError(CaffezooError):
    """A net cannot be drawn: graphviz's ``dot`` is missing or failed."""


class DownloadError(CaffezooError):
    """Fetching bytes failed after every source and retry was tried."""


class ChecksumError(DownloadError):
    """Bytes arrived but their SHA-1 (or SHA-256, or size) is not the expected one."""


class OfflineError(DownloadError):
    """``CAFFEZOO_OFFLINE=1`` is set and what was asked for is not in the cache."""


class DiskSpaceError(DownloadError):
    """The disk is full, or a file-size limit or quota stops the download."""


class GistError(CaffezooError):
    """A gist API call failed (HTTP status, rate limit, truncated content...)."""


class ConversionError(CaffezooError):
    """A Caffe net cannot be converted to ONNX (unsupported layers, missing blobs)."""


class RuntimeInputError(CaffezooError):
    """Inputs given to a net at run time do not fit it (shape, dtype, not an image)."""
