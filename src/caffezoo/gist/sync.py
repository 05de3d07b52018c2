"""Model info <-> gists: upload a model directory, download one, list them.

>>> result = upload("models/my_net")            # create, write gist_id back, update  # doctest: +SKIP
>>> result.gist_id, [s.name for s in result.skipped]                                  # doctest: +SKIP
('9f2c...', ['my_net.caffemodel'])
>>> download("BVLC/034c6ac3865563b69e60").path                                         # doctest: +SKIP
PosixPath('models/BVLC-034c6ac3865563b69e60')

A downloaded gist is written only when every file name passes the same rule
the server applies (:func:`.rules.file_name_problem`): nothing is written otherwise.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..caffe._files import read_regular
from ..config import settings
from ..errors import CaffezooError, GistError, ModelDirError, OfflineError, Problem
from ..frontmatter import read_text, write_keys
from ..modeldir import README, Entry, ModelDir, load, read_dir
from ..schema import require
from ..validate import validate, validate_dir
from .client import Gist, GistClient
from .rules import MAX_FILE_BYTES, GistRef, file_name_problem, looks_like_gist, name_clashes, parse_ref

__all__ = [
    "DownloadResult",
    "Skipped",
    "UploadResult",
    "collect_files",
    "contents",
    "download",
    "list_gists",
    "resolve_model",
    "upload",
]


# --------------------------------------------------------------------------- upload


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


@dataclass
class UploadResult:
    """What ``upload`` did (or, with ``dry_run``, would do)."""

    action: str  # "create", "update" or "unchanged"
    gist_id: str | None
    html_url: str | None
    public: bool
    description: str | None
    sent: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    kept_remote: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False


def collect_files(path: Path, entries: list[Entry] | None = None) -> tuple[dict[str, str], list[Skipped]]:
    """The model info to send (top-level text files) and what is left out, with why.

    ``entries`` is the directory as read already (:func:`~caffezoo.modeldir.read_dir`).
    """
    files: dict[str, str] = {}
    skipped: list[Skipped] = []
    for entry in read_dir(path, whole_up_to=MAX_FILE_BYTES) if entries is None else entries:
        name = entry.name
        if ".caffemodel" in name.lower():
            skipped.append(
                Skipped(
                    name,
                    "weights (*.caffemodel*) are never uploaded: host them and give caffemodel_url and sha1",
                )
            )
        elif name.startswith("."):
            skipped.append(Skipped(name, "hidden file"))
        elif entry.is_link:
            skipped.append(Skipped(name, "symbolic link: only regular files are sent"))
        elif entry.is_dir:
            skipped.append(Skipped(name, "subfolder: a gist cannot hold folders"))
        elif not entry.is_file:
            skipped.append(Skipped(name, "not a regular file"))
        elif (why := file_name_problem(name)) is not None:
            skipped.append(Skipped(name, f"file name: {why}"))
        elif entry.size > MAX_FILE_BYTES:
            skipped.append(
                Skipped(
                    name,
                    f"{entry.size} bytes: over the {MAX_FILE_BYTES} bytes a gist file may hold through the API",
                )
            )
        else:
            data = entry.data if entry.data is not None else read_regular(entry.path)
            try:
                text = None if b"\0" in data else data.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            if text is None:
                skipped.append(Skipped(name, "binary file: gists take UTF-8 text only"))
            elif not text.strip():
                skipped.append(Skipped(name, "empty file: gists cannot hold empty files"))
            else:
                files[name] = text
    return files, skipped


def _checked_model(path: str | os.PathLike[str]) -> ModelDir:
    """The model directory, validated and loaded from one read of its files, which it keeps
    (``ModelDir.entries``) for :func:`collect_files`; refuse with every error listed."""
    m, found = validate_dir(path, whole_up_to=MAX_FILE_BYTES)
    problems = [p for p in found if p.severity == "error"]
    if m is None or problems:
        shown = [str(p) for p in problems[:10]]
        if len(problems) > 10:
            shown.append(f"... and {len(problems) - 10} more (see `caffezoo validate {path}`)")
        raise ModelDirError(
            f"{path}: not uploaded, the model directory has "
            f"{len(problems)} error{'s' * (len(problems) != 1)}:\n" + "\n".join(shown)
        )
    require(m.front_matter, "upload", str(m.readme_path))
    return m


def upload(
    path: str | os.PathLike[str],
    *,
    public: bool | None = None,
    dry_run: bool = False,
    prune: bool = False,
    client: GistClient | None = None,
) -> UploadResult:
    """Upload a model directory's info as a gist; create it, or update the one in ``gist_id``.

    On create, ``gist_id`` is written into ``readme.md`` (that line only) and
    the gist is updated so its readme carries the id too. ``public`` defaults
    to secret, as Caffe's ``gist -p`` did; it cannot change after creation.
    """
    m = _checked_model(path)
    files, skipped = collect_files(m.path, m.entries)
    description = m.front_matter.name
    if README not in files:
        why = next((s.reason for s in skipped if s.name == README), "unreadable")
        raise ModelDirError(f"{m.readme_path}: cannot be sent ({why})")
    own_client = client is None
    client = client or GistClient()
    try:
        if m.front_matter.gist_id is None:
            result = UploadResult(
                "create",
                None,
                None,
                bool(public),
                description,
                sent=sorted(files),
                skipped=skipped,
                dry_run=dry_run,
            )
            if dry_run:
                return result
            gist = client.create(description, bool(public), files)
            try:
                write_keys(m.readme_path, {"gist_id": gist.id})
            except CaffezooError as e:
                raise GistError(
                    f"created gist {gist.id} ({gist.html_url}) but could not write its id "
                    f"into {m.readme_path}: {e}\nadd the line `gist_id: {gist.id}` by hand"
                ) from None
            gist = client.update(gist.id, {README: {"content": read_text(m.readme_path)}})
            result.gist_id, result.html_url = gist.id, gist.html_url
            return result
        return _update(m, files, skipped, client, public=public, dry_run=dry_run, prune=prune)
    finally:
        if own_client:
            client.close()


def _update(
    m: ModelDir,
    files: dict[str, str],
    skipped: list[Skipped],
    client: GistClient,
    *,
    public: bool | None,
    dry_run: bool,
    prune: bool,
) -> UploadResult:
    ref = parse_ref(str(m.front_matter.gist_id))
    remote = client.get(ref.id)
    result = UploadResult(
        "update",
        remote.id,
        remote.html_url,
        remote.public,
        m.front_matter.name,
        skipped=skipped,
        dry_run=dry_run,
    )
    if public is not None and public != remote.public:
        result.warnings.append(
            f"gist {remote.id} stays {'public' if remote.public else 'secret'}: "
            "the API cannot change a gist's visibility after it is created"
        )
    changes: dict[str, Any] = {}
    for name, text in files.items():
        old = remote.files.get(name)
        if old is None or old.data() != text.encode("utf-8"):
            changes[name] = {"content": text}
    missing = sorted(n for n in remote.files if n not in files)
    if prune:
        for name in missing:
            old_data = remote.files[name].data()
            # A local file that is new, with the very same content: the file was renamed.
            new_name = next(
                (
                    n
                    for n, c in changes.items()
                    if n not in remote.files
                    and old_data is not None
                    and c.get("content", "").encode("utf-8") == old_data
                ),
                None,
            )
            if new_name is not None:
                del changes[new_name]
                changes[name] = {"filename": new_name}
                result.renamed.append((name, new_name))
            else:
                changes[name] = None
                result.deleted.append(name)
    else:
        result.kept_remote = missing
    result.sent = sorted(n for n, c in changes.items() if c is not None and "content" in c)
    desc_changed = (remote.description or None) != result.description
    if not changes and not desc_changed:
        result.action = "unchanged"
        return result
    if not dry_run:
        client.update(remote.id, changes, description=result.description if desc_changed else None)
    return result


# --------------------------------------------------------------------------- download


@dataclass
class DownloadResult:
    path: Path
    gist_id: str
    files: list[str]
    html_url: str | None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    owner: str | None = None
    description: str | None = None


def contents(gist: Gist, client: GistClient) -> dict[str, bytes]:
    """Every file's bytes: from the JSON, or from ``raw_url`` when the API cut it short.

    Refuses (:class:`GistError`) file names that are unsafe to write, or that differ only in case or Unicode form.
    """
    if gist.truncated:
        raise GistError(
            f"gist {gist.id} has more files than the API lists (300): clone "
            f"{gist.git_pull_url or 'it with git'} instead"
        )
    bad = [f"{name!r}: {why}" for name in gist.files if (why := file_name_problem(name))]
    bad += name_clashes(gist.files)
    if bad:
        raise GistError(
            f"gist {gist.id}: refusing unsafe file names, nothing was written:\n  " + "\n  ".join(bad)
        )
    out: dict[str, bytes] = {}
    for name, f in gist.files.items():
        data = f.data()
        if data is None:
            if f.size is not None and f.size > MAX_FILE_BYTES:
                raise GistError(
                    f"gist {gist.id}: {name} has {f.size} bytes, more than the API serves "
                    f"({MAX_FILE_BYTES}); clone {gist.git_pull_url or 'the gist with git'}"
                )
            if not f.raw_url:
                raise GistError(f"gist {gist.id}: {name} is truncated and has no raw_url")
            data = client.raw(f.raw_url, f.size)
        out[name] = data
    return out


def download(
    gist: str | GistRef,
    dest: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    into: str | os.PathLike[str] = "models",
    client: GistClient | None = None,
) -> DownloadResult:
    """Download a gist into a new model directory (default ``models/<user-id>`` as Caffe's script).

    The files are written into a temporary directory next to ``dest`` and
    renamed into place, so a failure leaves nothing half-written; an existing
    non-empty ``dest`` is replaced only with ``force``. The result is validated.
    """
    ref = parse_ref(gist) if isinstance(gist, str) else gist
    target = Path(dest) if dest is not None else Path(into) / ref.dirname
    if target.exists() and not target.is_dir():
        raise ModelDirError(f"{target}: is a file, expected a directory to download into")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise ModelDirError(
            f"{target}: already exists and is not empty; pass --force to replace it (its files would be lost)"
        )
    own_client = client is None
    client = client or GistClient()
    try:
        g = client.get(ref.id)
        files = contents(g, client)
    finally:
        if own_client:
            client.close()
    result = DownloadResult(target, g.id, sorted(files), g.html_url, owner=g.owner, description=g.description)
    if ref.user and g.owner and ref.user.lower() != g.owner.lower():
        result.warnings.append(f"gist {g.id} belongs to {g.owner}, not {ref.user}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        tmp.chmod(0o755)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result.problems = validate(target)
    return result


def list_gists(user: str | None = None, *, limit: int = 100, client: GistClient | None = None) -> list[Gist]:
    """A user's public gists, or the token owner's gists (secret ones too) when ``user`` is None."""
    if client is not None:
        return client.list(user, limit)
    with GistClient() as c:
        return c.list(user, limit)


# --------------------------------------------------------------------------- MODEL = a gist


def resolve_model(text: str) -> ModelDir | None:
    """The ``zoo.RESOLVERS`` entry: a gist's model info, cached under ``CAFFEZOO_HOME``.

    Online, the cache is refreshed from the API; offline, the cached copy is used.
    Weights go to ``<data>/models/gist-<id>``, outside the refreshed cache.
    """
    if not looks_like_gist(text):
        return None
    ref = parse_ref(text)
    s = settings()
    cached = s.cache_dir / "gists" / ref.id
    if s.offline:
        if not (cached / README).is_file():
            raise OfflineError(f"gist {ref.id} is not in the cache ({cached}) and CAFFEZOO_OFFLINE is set")
    else:
        download(ref, cached, force=True)
    return load(cached, weights_dir=s.models_dir / f"gist-{ref.id}")
