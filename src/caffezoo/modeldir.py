"""Model directories: the unit of the zoo.

A model directory holds ``readme.md`` (front matter, then prose), prototxt
files, optional helper scripts and, once downloaded, the weights file named by
the ``caffemodel`` key.

>>> m = load("models/bvlc_alexnet")                       # doctest: +SKIP
>>> m.front_matter.sha1, m.prototxt("deploy").name         # doctest: +SKIP
('9116a64c0fbe4459d18f4bb6b56d647b63920377', 'deploy.prototxt')
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .caffe._files import read_regular
from .errors import ModelDirError
from .frontmatter import Readme, read_readme
from .schema import FrontMatter, validate_front_matter

__all__ = [
    "Entry",
    "FileKind",
    "ModelDir",
    "ModelFile",
    "PROTOTXT_KINDS",
    "README",
    "check_dir",
    "classify",
    "dir_problem",
    "is_there",
    "list_files",
    "load",
    "prototxt_kind",
    "read_dir",
]


README = "readme.md"
# Label sets several models share (the ILSVRC 2012 class names): a `labels` file a model
# directory lacks is looked for here, so the bundled ImageNet models ship one copy.
SHARED_LABELS_DIR = Path(__file__).parent / "labels"

FileKind = Literal[
    "readme", "deploy", "train_val", "solver", "prototxt", "weights", "partial", "text", "binary", "directory"
]
PROTOTXT_KINDS = ("deploy", "train_val", "solver", "prototxt")

# Matched against the whole prototxt text; a light look that needs no protobuf.
_SOLVER_RE = re.compile(r"^\s*(base_lr|max_iter|lr_policy|solver_mode|test_iter|snapshot_prefix)\s*:", re.M)
_DATA_RE = re.compile(
    r"type\s*:\s*\"?(Data|ImageData|HDF5Data|WindowData|DATA|IMAGE_DATA|HDF5_DATA|WINDOW_DATA)\"?\b"
    r"|\binclude\s*\{[^}]*phase\s*:",
    re.S,
)
_DEPLOY_RE = re.compile(r"^\s*input(_dim|_shape)?\s*[:{]|type\s*:\s*\"Input\"", re.M)


@dataclass(frozen=True)
class Entry:
    """One entry of a directory as :func:`read_dir` saw it."""

    name: str
    path: Path
    is_link: bool
    is_dir: bool  # a folder, or a link to one
    is_file: bool  # a regular file, or a link to one
    size: int  # 0 for a folder or a link to nothing
    data: bytes | None = field(default=None, repr=False)  # the whole file, when read_dir read it


@dataclass(frozen=True)
class ModelFile:
    """One entry of a model directory and what it is."""

    name: str
    kind: FileKind
    size: int

    @property
    def is_info(self) -> bool:
        """Part of the model info (what a gist holds): text files at the top level."""
        return self.kind not in ("weights", "partial", "binary", "directory")


@dataclass
class ModelDir:
    """A loaded model directory.

    ``weights_dir`` is where the weights file lives: the directory itself,
    except for bundled models, whose package folder may be read-only.
    """

    path: Path
    readme: Readme
    front_matter: FrontMatter
    files: list[ModelFile] = field(default_factory=list)
    bundled: bool = False
    weights_dir: Path | None = None
    # The directory as read (hidden entries too), with the bytes read_dir kept: what
    # reads the files again (checks, `gist upload`) takes them from here.
    entries: list[Entry] = field(default_factory=list, repr=False, compare=False)

    @property
    def name(self) -> str:
        """The directory's name, which is how the seed's scripts name a model."""
        return self.path.name

    @property
    def readme_path(self) -> Path:
        return self.path / README

    @property
    def weights_path(self) -> Path | None:
        """Where the ``caffemodel`` file is (or would be, once downloaded)."""
        fm = self.front_matter
        if not fm.caffemodel:
            return None
        return (self.weights_dir or self.path) / fm.caffemodel

    @property
    def has_weights(self) -> bool:
        p = self.weights_path
        return p is not None and p.is_file()

    @property
    def labels_path(self) -> Path | None:
        """The ``labels`` file: in the model directory, else the shared label set of that name."""
        name = self.front_matter.labels
        if not name:
            return None
        own = self.path / name
        shared = SHARED_LABELS_DIR / name
        return shared if not own.is_file() and shared.is_file() else own

    def data(self, name: str) -> bytes | None:
        """The bytes of file ``name`` when they were read with the listing, else None."""
        return next((e.data for e in self.entries if e.name == name), None)

    def prototxt(self, kind: str) -> Path | None:
        """The first prototxt of ``kind`` (deploy, train_val, solver), by name order."""
        for f in self.files:
            if f.kind == kind:
                return self.path / f.name
        return None

    def info_files(self) -> list[ModelFile]:
        """The model-info files: what `caffezoo gist upload` sends."""
        return [f for f in self.files if f.is_info]

    def weights_clash(self) -> str | None:
        """The model's own file that ``caffemodel`` names (the readme, a prototxt, any file of
        the model info), which the weights would replace; None when it names none."""
        name = self.front_matter.caffemodel or ""
        own = {_same_file_key(f.name): f.name for f in self.info_files()}
        key = _same_file_key(name)
        if key in own:
            return own[key]
        return name if key == README or key.endswith(".prototxt") else None


def _same_file_key(name: str) -> str:
    """``name`` as the file it opens on any system: case folded (macOS, Windows), without
    the ``::$DATA`` stream suffix and trailing dots and spaces that Windows drops.

    >>> _same_file_key("Deploy.Prototxt. ."), _same_file_key("README.md::$DATA")
    ('deploy.prototxt', 'readme.md')
    """
    key = name.casefold()
    if key.endswith("::$data"):
        key = key[: -len("::$data")]
    return key.rstrip(". ")


def classify(path: Path, data: bytes | None = None) -> FileKind:
    """Say what a file in a model directory is, by name first and then by content.

    ``data`` is the file's bytes when they were read already.
    """
    name = path.name
    lower = name.lower()
    if path.is_dir():
        return "directory"
    if lower == README:
        return "readme"
    if ".caffemodel" in lower:
        return "partial" if lower.endswith((".partial", ".incomplete", ".tmp")) else "weights"
    if lower.endswith(".prototxt"):
        return prototxt_kind(path, data)
    if data is not None:
        head = data[:65536]
    else:
        try:
            head = read_regular(path, 65535)
        except OSError:  # unreadable, or a pipe or a device (never waited on)
            return "binary"
    if b"\0" in head:
        return "binary"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # a multi-byte character cut by the 64 KiB read is fine
            return "binary"
    return "text"


def prototxt_kind(path: Path, data: bytes | None = None) -> FileKind:
    """deploy, train_val or solver: by the file's name when it says, else by its content
    (``data``, when the file was read already)."""
    stem = path.name.lower()
    if "solver" in stem:
        return "solver"
    if "deploy" in stem:
        return "deploy"
    if "train" in stem or "val" in stem:
        return "train_val"
    try:
        data = read_regular(path) if data is None else data
    except OSError:  # the check that reads it says why
        return "prototxt"
    # decoded as read_text does, newlines included
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace").read()
    if _SOLVER_RE.search(text):
        return "solver"
    if _DATA_RE.search(text):
        return "train_val"
    if _DEPLOY_RE.search(text):
        return "deploy"
    return "prototxt"


def read_dir(path: Path, *, whole_up_to: int | None = None, total_up_to: int = 64 << 20) -> list[Entry]:
    """Every entry of ``path`` (hidden ones too) by name, from one ``scandir``.

    With ``whole_up_to``, the bytes of each visible file of at most that many
    bytes, weights excepted, are read too, so that whoever needs them (``validate``, ``gist
    upload``) has them without opening the file again; at most ``total_up_to`` bytes are kept
    in all, so that a folder of many such files costs bounded memory. A file that cannot be
    read, or is not kept, is listed without them: its reader reads it, or says why.

    >>> [e.name for e in read_dir(Path("models/bvlc_alexnet"))]  # doctest: +SKIP
    ['deploy.prototxt', 'readme.md', 'solver.prototxt', 'train_val.prototxt']
    """
    out = []
    kept = 0
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        is_dir, is_file = entry.is_dir(), entry.is_file()
        try:
            size = 0 if is_dir else entry.stat().st_size
        except OSError:  # a symbolic link to nothing: listed, and `validate` says so
            size = 0
        data = None
        wanted = not entry.name.startswith(".") and ".caffemodel" not in entry.name.lower()
        if (
            is_file
            and wanted
            and whole_up_to is not None
            and size <= whole_up_to
            and kept + size <= total_up_to
        ):
            try:
                data = read_regular(entry.path, whole_up_to)
            except OSError:
                data = None
            if data is not None and (len(data) > whole_up_to or kept + len(data) > total_up_to):
                size = max(size, len(data))  # grown since listed (or a /proc file, listed as 0)
                data = None
            kept += len(data or b"")
        out.append(Entry(entry.name, Path(entry.path), entry.is_symlink(), is_dir, is_file, size, data))
    return out


def list_files(path: Path, entries: list[Entry] | None = None) -> list[ModelFile]:
    """Every entry of the directory (or of ``entries``, read already), classified, sorted by
    name (hidden files skipped)."""
    out = []
    for entry in read_dir(path) if entries is None else entries:
        if entry.name.startswith("."):
            continue
        kind = classify(entry.path, entry.data)
        out.append(ModelFile(entry.name, kind, 0 if kind == "directory" else entry.size))
    return out


def dir_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not a model directory to read, in words; None when it is one.

    >>> dir_problem("m" * 300)
    'cannot read: File name too long'
    """
    try:
        Path(path).stat()
    except (FileNotFoundError, NotADirectoryError):
        return "no such directory"
    except OSError as e:  # a name too long, no permission...: said, not a traceback
        return f"cannot read: {e.strerror or e}"
    if not Path(path).is_dir():
        return "is a file, expected a model directory (a folder with a readme.md)"
    return None


def check_dir(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` as a Path if it is an existing directory; else a clear error."""
    p = Path(path)
    problem = dir_problem(p)
    if problem is not None:
        raise ModelDirError(f"{p}: {problem}")
    return p


def is_there(path: Path, test=Path.exists) -> bool:
    """``test(path)`` (``Path.exists``, ``Path.is_file``...), False for a path the system refuses
    to look up at all (a name over 255 bytes, no permission): such a MODEL is not there."""
    try:
        return test(path)
    except OSError:
        return False


def load(path: str | os.PathLike[str], *, bundled: bool = False, weights_dir: Path | None = None) -> ModelDir:
    """Load the model directory at ``path``; raise on anything that stops it being one.

    >>> load("models/bvlc_alexnet").front_matter.name    # doctest: +SKIP
    'BAIR/BVLC AlexNet Model'
    """
    p = check_dir(path)
    readme_path = p / README
    if not readme_path.is_file():
        if not any(p.iterdir()):
            raise ModelDirError(f"{p}: the directory is empty, expected a readme.md and prototxt files")
        other = [f.name for f in p.iterdir() if f.name.lower() == README]
        hint = f" (found {other[0]!r}; Caffe's scripts need the lower-case name)" if other else ""
        raise ModelDirError(f"{readme_path}: no readme.md in the model directory{hint}")
    readme = read_readme(readme_path)
    fm = validate_front_matter(readme.data, str(readme_path), readme.lines)
    return ModelDir(
        path=p,
        readme=readme,
        front_matter=fm,
        files=list_files(p),
        bundled=bundled,
        weights_dir=weights_dir,
    )
