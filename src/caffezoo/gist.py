"""Model info <-> gists, on GitHub or on a caffezoo server (same REST API).

>>> result = upload("models/my_net")            # create, write gist_id back, update  # doctest: +SKIP
>>> result.gist_id, [s.name for s in result.skipped]                                  # doctest: +SKIP
('9f2c...', ['my_net.caffemodel'])
>>> download("BVLC/034c6ac3865563b69e60").path                                         # doctest: +SKIP
PosixPath('models/BVLC-034c6ac3865563b69e60')

The API base is ``CAFFEZOO_GIST_API`` (GitHub, GitHub Enterprise
``https://HOST/api/v3``, or ``caffezoo serve``); the token comes from
``CAFFEZOO_TOKEN``, ``GITHUB_TOKEN`` or ``~/.gist`` and is only ever sent to
that API's origin. Rate limits are honoured (short waits are waited out,
long ones fail with the reset time) and 5xx answers are retried with backoff.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from . import _http
from .config import settings
from .errors import CaffezooError, GistError, ModelDirError, OfflineError, Problem, UsageError
from .frontmatter import read_text, write_keys
from .modeldir import README, ModelDir, load
from .schema import check_file_name, require
from .validate import validate

API_VERSION = "2022-11-28"
MAX_FILE_BYTES = 10 * 1024 * 1024  # GitHub serves raw files up to 10 MB; beyond, only git clone
NO_TOKEN = (
    "this needs an API token: set CAFFEZOO_TOKEN or GITHUB_TOKEN, or put the token "
    "in ~/.gist (for a caffezoo server: `caffezoo serve token create USER`)"
)


# --------------------------------------------------------------------------- gist references


@dataclass(frozen=True)
class GistRef:
    """A gist named by the user: its id, and the owner when the reference gave one."""

    id: str
    user: str | None = None

    @property
    def dirname(self) -> str:
        """The directory name Caffe's script used: the reference with ``/`` as ``-``."""
        return f"{self.user}-{self.id}" if self.user else self.id


_ID_RE = re.compile(r"[0-9A-Za-z_-]{1,64}")
_USER_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62})")
# What a bare MODEL argument must look like to be taken for a gist id (GitHub's are 20 or 32 hex).
_GIST_ID_RE = re.compile(r"[0-9a-f]{20}|[0-9a-f]{32}")


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
    if len(parts) == 1 and _ID_RE.fullmatch(parts[0]):
        return GistRef(parts[0])
    if len(parts) == 2 and _USER_RE.fullmatch(parts[0]) and _ID_RE.fullmatch(parts[1]):
        return GistRef(parts[1], parts[0])
    raise UsageError(
        f"{text!r} is not a gist: expected an id (like 034c6ac3865563b69e60), USER/ID, or a gist URL"
    )


def safe_name(name: str) -> str | None:
    """Why ``name`` may not be written into a model directory, or None when it may."""
    try:
        check_file_name(name)
    except ValueError as e:
        return str(e)
    if name.startswith(".") or name != name.strip() or len(name.encode("utf-8")) > 255:
        return "expected a visible name of at most 255 bytes without leading or trailing blanks"
    return None


# --------------------------------------------------------------------------- the API client


@dataclass
class GistFile:
    filename: str
    size: int | None = None
    raw_url: str | None = None
    content: str | None = None
    truncated: bool = False
    encoding: str = "utf-8"

    def data(self) -> bytes | None:
        """The content as bytes when the API gave all of it, else None (fetch ``raw_url``)."""
        if self.content is None or self.truncated:
            return None
        if self.encoding == "base64":
            return base64.b64decode(self.content)
        return self.content.encode("utf-8")


@dataclass
class Gist:
    """The fields of a gist that caffezoo uses; missing fields are tolerated."""

    id: str
    description: str | None = None
    public: bool = False
    html_url: str | None = None
    git_pull_url: str | None = None
    owner: str | None = None
    updated_at: str | None = None
    files: dict[str, GistFile] = field(default_factory=dict)
    truncated: bool = False
    versions: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Any) -> Gist:
        if not isinstance(data, dict) or not isinstance(data.get("id"), (str, int)):
            raise GistError(f"the API answered something that is not a gist: {str(data)[:200]!r}")
        gist_id = str(data["id"])
        files: dict[str, GistFile] = {}
        for key, f in _typed(data, "files", dict, gist_id, {}).items():
            if not isinstance(f, dict):
                continue
            name = _typed(f, "filename", str, gist_id) or key
            files[name] = GistFile(
                filename=name,
                size=_typed(f, "size", int, gist_id),
                raw_url=_typed(f, "raw_url", str, gist_id),
                content=_typed(f, "content", str, gist_id),
                truncated=bool(f.get("truncated")),
                encoding=_typed(f, "encoding", str, gist_id) or "utf-8",
            )
        owner = data.get("owner")
        return cls(
            id=gist_id,
            description=_typed(data, "description", str, gist_id),
            public=bool(data.get("public")),
            html_url=_typed(data, "html_url", str, gist_id),
            git_pull_url=_typed(data, "git_pull_url", str, gist_id),
            owner=_typed(owner, "login", str, gist_id) if isinstance(owner, dict) else None,
            updated_at=_typed(data, "updated_at", str, gist_id),
            files=files,
            truncated=bool(data.get("truncated")),
            versions=[h.get("version") for h in data.get("history") or [] if isinstance(h, dict)],
        )


def _typed(data: dict, key: str, kind: type, gist_id: str, default: Any = None) -> Any:
    """``data[key]`` when it is missing, null or a ``kind``; a :class:`GistError` otherwise."""
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        expected = {dict: "an object", str: "a string", int: "an integer"}[kind]
        raise GistError(
            f"the API answered a malformed gist {gist_id}: {key!r} is {repr(value)[:100]}, "
            f"expected {expected}"
        )
    return value


_FROM_SETTINGS = object()  # GistClient(token=...) not given: use settings().token


def _origin(url: httpx.URL | str) -> tuple[str, str, int | None]:
    u = httpx.URL(str(url))
    return u.scheme, u.host, u.port


class _TokenAuth(httpx.Auth):
    """Adds the token to requests for the API's own origin, and to nothing else."""

    def __init__(self, token: str, api: str):
        self._token, self._origin = token, _origin(api)

    def __repr__(self) -> str:
        return "_TokenAuth(<hidden>)"

    def auth_flow(self, request: httpx.Request):
        if _origin(request.url) == self._origin:
            request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


class GistClient:
    """A small client of the Gist REST API.

    >>> GistClient("http://127.0.0.1:8000").get("0123456789abcdef0123")   # doctest: +SKIP
    """

    def __init__(
        self,
        api: str | None = None,
        token: str | None | object = _FROM_SETTINGS,
        *,
        max_wait: float = 60.0,
        retries: int = 4,
        backoff: float = 1.0,
        timeout: float = 30.0,
        policy: _http.Policy | None = None,
    ):
        s = settings()
        self.api = (api or s.gist_api).rstrip("/")
        if s.offline:
            raise OfflineError(f"CAFFEZOO_OFFLINE is set: not contacting {self.api}")
        secret = s.token if token is _FROM_SETTINGS else token
        self.has_token = bool(secret)
        self.max_wait, self.retries, self.backoff = max_wait, retries, backoff
        # policy: a server-side caller's outbound-URL policy; the API itself is the operator's choice.
        self._http = _http.client(
            timeout=timeout,
            auth=_TokenAuth(secret, self.api) if secret else None,
            headers={"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION},
            policy=policy.with_trusted(self.api) if policy else None,
        )

    def __enter__(self) -> GistClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---------------------------------------------------------------- transport

    def _rate_wait(self, r: httpx.Response) -> float | None:
        """Seconds to wait before retrying a rate-limited answer; None if it is not one."""
        if r.status_code not in (403, 429):
            return None
        h = r.headers
        if "retry-after" in h:
            wait = _http.retry_after(h["retry-after"])
            return 60.0 if wait is None else wait
        if h.get("x-ratelimit-remaining") == "0":
            try:
                return max(0.0, float(h["x-ratelimit-reset"]) - time.time())
            except (KeyError, ValueError):
                return 60.0
        return 60.0 if r.status_code == 429 else None

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send with retries: rate limits (when the wait is short) and 5xx (idempotent methods)."""
        full = url if "://" in url else f"{self.api}{url}"
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                r = self._http.request(method, full, **kwargs)
            except _http.Refused:  # a server-side caller's policy: no second try changes it
                raise GistError(f"{method} {full}: {_http.REFUSED}") from None
            except httpx.TransportError as e:
                if last or method == "POST":
                    raise GistError(f"{method} {full}: {type(e).__name__}: {e or 'no answer'}") from None
                time.sleep(_http.backoff(attempt + 1, base=self.backoff))
                continue
            wait = self._rate_wait(r)
            if wait is not None:
                if wait <= self.max_wait and not last:
                    time.sleep(wait)
                    continue
                reset = r.headers.get("x-ratelimit-reset")
                when = (
                    datetime.fromtimestamp(float(reset), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                    if reset and reset.isdigit()
                    else f"in {wait:.0f} s"
                )
                raise GistError(
                    f"{method} {full}: rate limit exceeded ({r.status_code}); it resets at "
                    f"{when} — try again then, or use a token for a higher limit"
                )
            if r.status_code >= 500 and method != "POST" and not last:
                time.sleep(_http.backoff(attempt + 1, base=self.backoff))
                continue
            return r
        raise AssertionError("unreachable")  # pragma: no cover

    def _json(self, method: str, url: str, what: str, **kwargs: Any) -> Any:
        r = self.request(method, url, **kwargs)
        if r.status_code >= 400:
            raise self._error(r, method, what)
        return None if r.status_code == 204 else _decode(r, method)

    def _error(self, r: httpx.Response, method: str, what: str) -> GistError:
        try:
            body = r.json()
        except ValueError:
            body = {}
        message = body.get("message") if isinstance(body, dict) else None
        details = (
            [
                e.get("message") or f"{e.get('field')}: {e.get('code')}"
                for e in (body.get("errors") or [])
                if isinstance(e, dict)
            ]
            if isinstance(body, dict)
            else []
        )
        host = httpx.URL(self.api).host
        if r.status_code == 401:
            return GistError(
                f"{method} {r.url}: {message or 'unauthorized'} (401): the token from "
                "CAFFEZOO_TOKEN / GITHUB_TOKEN / ~/.gist was refused by " + host
                if self.has_token
                else f"{method} {r.url}: 401: {NO_TOKEN}"
            )
        if r.status_code == 404:
            return GistError(
                f"{what}: not found on {host} (404)"
                + ("; it may belong to another account" if method != "GET" else "")
            )
        text = f"{method} {r.url}: {r.status_code} {message or r.reason_phrase}"
        return GistError(text + "".join(f"\n  {d}" for d in details))

    # ---------------------------------------------------------------- endpoints

    def get(self, gist_id: str) -> Gist:
        return Gist.from_json(self._json("GET", f"/gists/{gist_id}", f"gist {gist_id}"))

    def create(self, description: str | None, public: bool, files: dict[str, str]) -> Gist:
        self._need_token()
        body = {
            "description": description,
            "public": public,
            "files": {n: {"content": c} for n, c in files.items()},
        }
        return Gist.from_json(self._json("POST", "/gists", "new gist", json=body))

    def update(self, gist_id: str, files: dict[str, Any], description: str | None = None) -> Gist:
        """PATCH: ``files`` maps current names to ``{"content"?, "filename"?}`` or None (delete)."""
        self._need_token()
        body: dict[str, Any] = {"files": files}
        if description is not None:
            body["description"] = description
        return Gist.from_json(self._json("PATCH", f"/gists/{gist_id}", f"gist {gist_id}", json=body))

    def delete(self, gist_id: str) -> None:
        self._need_token()
        self._json("DELETE", f"/gists/{gist_id}", f"gist {gist_id}")

    def list(self, user: str | None = None, limit: int = 100) -> list[Gist]:
        """A user's public gists, or (no user) the token owner's; following ``Link: rel=next``."""
        if user is None:
            self._need_token()
        elif not _USER_RE.fullmatch(user):  # it goes into the URL's path
            raise UsageError(f"{user!r} is not a user name: expected letters, digits, '-', '_' or '.'")
        url: str | None = f"/users/{user}/gists" if user else "/gists"
        out: list[Gist] = []
        params: dict[str, Any] | None = {"per_page": min(100, max(1, limit))}
        while url and len(out) < limit:
            r = self.request("GET", url, params=params)
            if r.status_code >= 400:
                raise self._error(r, "GET", f"gists of {user}" if user else "your gists")
            page = _decode(r, "GET")
            if not isinstance(page, list):
                raise GistError(f"GET {r.url}: expected a list of gists, got {str(page)[:200]!r}")
            out += [Gist.from_json(g) for g in page]
            url, params = r.links.get("next", {}).get("url"), None
        return out[:limit]

    def raw(self, url: str, expected_size: int | None = None) -> bytes:
        r = self.request("GET", url)
        if r.status_code >= 400:
            raise GistError(f"GET {url}: {r.status_code} {r.reason_phrase}")
        if expected_size is not None and len(r.content) != expected_size:
            raise GistError(f"GET {url}: got {len(r.content)} bytes, the gist says {expected_size}")
        return r.content

    def _need_token(self) -> None:
        if not self.has_token:
            raise GistError(NO_TOKEN)


def _decode(r: httpx.Response, method: str) -> Any:
    try:
        return r.json()
    except ValueError:
        raise GistError(f"{method} {r.url}: expected JSON, got {r.headers.get('content-type')!r}") from None


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


def collect_files(path: Path) -> tuple[dict[str, str], list[Skipped]]:
    """The model info to send (top-level text files) and what is left out, with why."""
    files: dict[str, str] = {}
    skipped: list[Skipped] = []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
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
        elif entry.is_symlink():
            skipped.append(Skipped(name, "symbolic link: only regular files are sent"))
        elif entry.is_dir():
            skipped.append(Skipped(name, "subfolder: a gist cannot hold folders"))
        elif not entry.is_file():
            skipped.append(Skipped(name, "not a regular file"))
        elif (why := safe_name(name)) is not None:
            skipped.append(Skipped(name, f"file name: {why}"))
        elif entry.stat().st_size > MAX_FILE_BYTES:
            skipped.append(
                Skipped(
                    name,
                    f"{entry.stat().st_size} bytes: over the {MAX_FILE_BYTES} "
                    "bytes a gist file may hold through the API",
                )
            )
        else:
            data = Path(entry.path).read_bytes()
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
    """Load a model directory after validating it; refuse with every error listed."""
    problems = [p for p in validate(path) if p.severity == "error"]
    if problems:
        shown = [str(p) for p in problems[:10]]
        if len(problems) > 10:
            shown.append(f"... and {len(problems) - 10} more (see `caffezoo validate {path}`)")
        raise ModelDirError(
            f"{path}: not uploaded, the model directory has "
            f"{len(problems)} error{'s' * (len(problems) != 1)}:\n" + "\n".join(shown)
        )
    m = load(path)
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
    files, skipped = collect_files(m.path)
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

    Refuses (:class:`GistError`) file names that are unsafe to write, or that differ only in case.
    """
    if gist.truncated:
        raise GistError(
            f"gist {gist.id} has more files than the API lists (300): clone "
            f"{gist.git_pull_url or 'it with git'} instead"
        )
    bad = [f"{name!r}: {why}" for name in gist.files if (why := safe_name(name))]
    lower: dict[str, str] = {}
    for name in gist.files:
        if name.lower() in lower:
            bad.append(f"{name!r}: differs from {lower[name.lower()]!r} only in case")
        lower[name.lower()] = name
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


def looks_like_gist(text: str) -> bool:
    """A bare GitHub-style gist id (20 or 32 hex digits) or a gist URL."""
    if _GIST_ID_RE.fullmatch(text):
        return True
    if "://" in text:
        try:
            parse_ref(text)
            return True
        except UsageError:
            return False
    return False


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


__all__ = [
    "Gist",
    "GistClient",
    "GistFile",
    "GistRef",
    "DownloadResult",
    "Skipped",
    "UploadResult",
    "contents",
    "download",
    "list_gists",
    "parse_ref",
    "resolve_model",
    "upload",
]
