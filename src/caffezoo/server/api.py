"""The Gist-compatible REST API: GitHub's paths, shapes and status codes.

Mounted at the server's root, so ``CAFFEZOO_GIST_API=http://HOST:PORT`` points
caffezoo's client (or any GitHub gist client that takes a base URL) at it.
Bodies are parsed here, by hand, to answer bad input the way GitHub does:
400 for unparseable JSON, 413 for oversized bodies, 422 with an ``errors``
list for everything else. Storage does the work (:mod:`.storage`).
"""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..gist.rules import (
    LOGIN_RE,
    MAX_JSON_DEPTH,
    Invalid,
    check_description,
    file_name_problem,
    json_problem,
    json_text_problem,
    utf8_text,
    valid_id,
)
from ..hashes import is_hex, is_sha1
from .auth import caller, require_caller
from .errors import ApiError, validation
from .gist_json import commits_json, gist_json
from .routing import Router
from .storage import UNSET, FileChange, GistView, NotFound, ReadOnly, Storage, StorageError
from .work import BodyRefused, held_body

__all__ = ["JSON_TYPE", "MAX_BODY_BYTES", "base_url", "json_response", "parse_body", "router"]

MAX_BODY_BYTES = 30 * 1024 * 1024
JSON_TYPE = "application/json; charset=utf-8"
MAX_PAGE = 1_000_000

router = Router()


# --------------------------------------------------------------------------- helpers


def storage(request: Request) -> Storage:
    return request.app.state.storage


def base_url(request: Request) -> str:
    """The server's public URL, for ``url``/``raw_url``/``html_url`` and every page's links:
    ``--base-url`` when set, else the address the connection reached (the bind address).

    Never the request's ``Host`` header: what is cached is keyed on this, and a
    visitor must not be able to choose the links others are shown (nor make the
    server render and keep one copy of a page per ``Host`` value).
    """
    configured = getattr(request.app.state, "base_url", None)
    if configured:
        return configured
    scope = request.scope
    server = scope.get("server") or ("127.0.0.1", 80)
    host = f"[{server[0]}]" if ":" in str(server[0]) else str(server[0])
    return f"{scope.get('scheme', 'http')}://{host}:{server[1]}{scope.get('root_path', '')}".rstrip("/")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, status_code=status, media_type=JSON_TYPE, headers=headers)


def not_found() -> ApiError:
    return ApiError(404, "Not Found")


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, with GitHub's answers to bad bodies.

    Bodies being received or parsed share ``--body-bytes`` (a full budget: 503 with Retry-After,
    the body unread) and each must arrive within ``--body-deadline`` seconds (else 408): a token
    holder opening many slow uploads holds neither memory nor connections for long.
    """
    try:
        async with held_body(request, request.app.state.api_bodies, MAX_BODY_BYTES) as raw:
            # Parsing 30 MB of small arrays takes seconds: never on the event loop.
            return await run_in_threadpool(parse_body, raw)
    except BodyRefused as e:
        headers = {"Connection": "close"}  # the rest of the body is not read
        if e.retry_after is not None:
            headers["Retry-After"] = str(e.retry_after)
        message = (
            f"Request body too large: the limit is {MAX_BODY_BYTES} bytes" if e.status == 413 else e.message
        )
        raise ApiError(e.status, message, headers=headers) from None


def parse_body(raw: bytes) -> dict[str, Any]:
    """``raw`` as a JSON object: 400 when it is no JSON object or too deep or wide, 422 when
    it is not UTF-8 or gives a key twice."""
    try:
        text = utf8_text(raw, "the body")
    except Invalid as e:
        raise ApiError(422, "Validation Failed", e.errors) from None
    if why := json_text_problem(text):  # before parsing: parsed, a wide body costs many times its size
        raise ApiError(400, f"Problems parsing JSON: {why}")
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:
        raise validation(
            "files", "already_exists", f"the key {e.key!r} appears twice in one object: send it once"
        ) from None
    except RecursionError:
        raise ApiError(400, f"Problems parsing JSON: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        raise ApiError(400, "Problems parsing JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "Body should be a JSON object")
    if why := json_problem(data):
        raise ApiError(400, f"Problems parsing JSON: {why}")
    return data


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique: ``{"a": 1, "a": 2}`` is ambiguous, not "the last wins"."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _unknown_keys(data: dict[str, Any], allowed: set[str], where: str = "") -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise validation(
            extra[0],
            "invalid",
            f"unknown field{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))}"
            f"{where}; expected {', '.join(sorted(allowed))}",
        )


def _text(name: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise validation("files", "invalid", f"{name}: content must be a string")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise validation(
            "files", "invalid", f"{name}: binary content (lone surrogate escapes) is not supported"
        ) from None


def _description(data: dict[str, Any]) -> str | None:
    value = data.get("description")
    try:
        check_description(value)
    except Invalid as e:
        raise ApiError(422, "Validation Failed", e.errors) from None
    return value


def _files_object(data: dict[str, Any], required: bool) -> dict[str, Any] | None:
    files = data.get("files")
    if files is None:
        if required:
            raise validation("files", "missing_field", "files is required")
        return None
    if not isinstance(files, dict):
        raise validation("files", "invalid", "files must be an object mapping file names to {content}")
    return files


def parse_create(data: dict[str, Any]) -> tuple[str | None, bool, dict[str, bytes]]:
    _unknown_keys(data, {"description", "public", "files"})
    public = data.get("public", False)
    if public in ("true", "false"):
        public = public == "true"
    if not isinstance(public, bool):
        raise validation("public", "invalid", "public must be true or false")
    files = _files_object(data, required=True) or {}
    if not files:
        raise validation("files", "missing_field", "files must name at least one file")
    out: dict[str, bytes] = {}
    for name, spec in files.items():
        if not isinstance(spec, dict):
            raise validation("files", "invalid", f"{name}: expected an object with content")
        _unknown_keys(spec, {"content"}, f" in file {name!r}")
        if "content" not in spec:
            raise validation("files", "missing_field", f"{name}: content is required")
        out[name] = _text(name, spec["content"])
    return _description(data), public, out


def parse_update(data: dict[str, Any]) -> tuple[Any, dict[str, FileChange | None]]:
    _unknown_keys(data, {"description", "files"})
    if "description" not in data and "files" not in data:
        raise validation("files", "missing_field", "at least one of description or files is required")
    description = _description(data) if "description" in data else UNSET
    files = _files_object(data, required=False) or {}
    changes: dict[str, FileChange | None] = {}
    for name, spec in files.items():
        if spec is None:
            changes[name] = None
            continue
        if not isinstance(spec, dict):
            raise validation("files", "invalid", f"{name}: expected an object or null")
        _unknown_keys(spec, {"content", "filename"}, f" in file {name!r}")
        new_name = spec.get("filename")
        if new_name is not None and not isinstance(new_name, str):
            raise validation("files", "invalid", f"{name}: filename must be a string")
        content = _text(name, spec["content"]) if spec.get("content") is not None else None
        changes[name] = FileChange(content=content, filename=new_name)
    return description, changes


async def call(fn, *args, **kwargs):
    """Run a storage call in the thread pool; its refusals become HTTP answers."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except NotFound:
        raise not_found() from None
    except ReadOnly as e:
        raise ApiError(403, str(e)) from None
    except Invalid as e:
        raise ApiError(422, "Validation Failed", e.errors) from None
    except StorageError as e:  # pragma: no cover - every subclass is mapped above
        raise ApiError(422, str(e)) from None


def page_params(request: Request) -> tuple[int, int, datetime | None]:
    """``per_page`` (1-100, default 30), ``page`` (>= 1), ``since`` (ISO 8601)."""
    q = request.query_params
    values = {}
    for name, default in (("per_page", 30), ("page", 1)):
        raw = q.get(name)
        if raw is None or raw == "":
            values[name] = default
            continue
        try:
            values[name] = int(raw)
        except ValueError:
            raise validation(
                name, "invalid", f"{name} must be a positive integer, got {raw!r}", resource="Search"
            ) from None
        if not 1 <= values[name] <= MAX_PAGE:
            raise validation(
                name, "invalid", f"{name} must be between 1 and {MAX_PAGE}, got {raw!r}", resource="Search"
            )
    since = None
    if q.get("since"):
        try:
            since = datetime.fromisoformat(q["since"].replace("Z", "+00:00"))
            if since.tzinfo is not None:  # (in UTC it may fall outside years 1-9999: OverflowError)
                since = since.astimezone(UTC).replace(tzinfo=None)
        except (ValueError, OverflowError):
            raise validation(
                "since",
                "invalid",
                f"since must be an ISO 8601 time like 2024-01-31T12:00:00Z, got {q['since']!r}",
                resource="Search",
            ) from None
    return min(values["per_page"], 100), values["page"], since


def link_header(request: Request, page: int, per_page: int, total: int) -> str | None:
    last = max(1, -(-total // per_page))
    params = dict(request.query_params)

    def url(p: int) -> str:
        params.update(page=str(p), per_page=str(per_page))
        return f"{base_url(request)}{request.url.path}?{urlencode(params)}"

    links = []
    if page < last:
        links += [f'<{url(page + 1)}>; rel="next"', f'<{url(last)}>; rel="last"']
    if page > 1:
        links += [f'<{url(1)}>; rel="first"', f'<{url(min(page - 1, last))}>; rel="prev"']
    return ", ".join(links) or None


async def list_response(request: Request, owner: str | None, public_only: bool) -> Response:
    per_page, page, since = page_params(request)
    views, total = await call(
        storage(request).list_gists,
        owner,
        public_only=public_only,
        since=since,
        limit=per_page,
        offset=(page - 1) * per_page,
    )
    base = base_url(request)
    link = link_header(request, page, per_page, total)
    return json_response(
        [gist_json(v, base, full=False) for v in views], headers={"Link": link} if link else None
    )


def check_id(gist_id: str, user: str | None = None) -> None:
    """Ids and logins that cannot exist are 404 before they reach the database."""
    if not valid_id(gist_id, user):
        raise not_found()


def gist_body(request: Request, view: GistView) -> bytes:
    return json.dumps(
        gist_json(view, base_url(request), full=True), ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")


# --------------------------------------------------------------------------- endpoints


@router.post("/gists")
async def create_gist(request: Request) -> Response:
    login = await run_in_threadpool(require_caller, request)
    description, public, files = parse_create(await read_json(request))
    view = await call(storage(request).create_gist, login, description, public, files)
    body = gist_body(request, view)
    return Response(
        body,
        status_code=201,
        media_type=JSON_TYPE,
        headers={"Location": f"{base_url(request)}/gists/{view.id}"},
    )


@router.get("/gists")
async def list_gists(request: Request) -> Response:
    login = await run_in_threadpool(caller, request)
    # With a token: the caller's gists, secret ones too; anonymous: every public gist.
    return await list_response(request, login, public_only=login is None)


@router.get("/gists/public")
async def list_public(request: Request) -> Response:
    await run_in_threadpool(caller, request)
    return await list_response(request, None, public_only=True)


@router.get("/users/{user}/gists")
async def list_user_gists(request: Request, user: str) -> Response:
    await run_in_threadpool(caller, request)
    if not LOGIN_RE.fullmatch(user) or await run_in_threadpool(storage(request).login_of, user) is None:
        raise not_found()
    return await list_response(request, user, public_only=True)


def _fresh_gist_bytes(request: Request, gist_id: str) -> bytes:
    """The JSON of the newest revision, read from the database and cached."""
    view = storage(request).get_gist(gist_id)
    if view is None:
        raise not_found()
    body = gist_body(request, view)
    request.app.state.gist_cache.put((gist_id, view.serial, base_url(request)), body)
    return body


@router.get("/gists/{gist_id}")
async def get_gist(request: Request, gist_id: str) -> Response:
    """The newest revision, from the cache while the gist's serial has not moved (read from
    the database, or on PostgreSQL held in memory until a write anywhere says otherwise: a
    write through another replica shows at once, see :mod:`.coherence`)."""
    check_id(gist_id)
    if request.headers.get("authorization") is not None:
        await run_in_threadpool(caller, request)
    # On the event loop: SQLite answers in microseconds without I/O waits, PostgreSQL from
    # memory or through an async connection; a thread hop would cost more than the query.
    state = await storage(request).state_async(gist_id)
    if state is None:
        raise not_found()
    body = request.app.state.gist_cache.get((gist_id, state[1], base_url(request)))
    if body is None:
        # Serializing a big gist is rendering: in the render lane, so a crowd of requests for
        # different big gists waits there (or gets 503) instead of each holding its own copy.
        body = await request.app.state.render_lane.run(_fresh_gist_bytes, request, gist_id)
    return Response(body, media_type=JSON_TYPE)


async def _update(request: Request, gist_id: str) -> Response:
    check_id(gist_id)
    login = await run_in_threadpool(require_caller, request)
    description, changes = parse_update(await read_json(request))
    view = await call(storage(request).update_gist, gist_id, login, description=description, changes=changes)
    return Response(gist_body(request, view), media_type=JSON_TYPE)


@router.patch("/gists/{gist_id}")
async def update_gist(request: Request, gist_id: str) -> Response:
    return await _update(request, gist_id)


@router.post("/gists/{gist_id}")
async def update_gist_post(request: Request, gist_id: str) -> Response:
    """The Ruby ``gist -u`` tool updates with POST; GitHub accepted it as PATCH."""
    return await _update(request, gist_id)


@router.delete("/gists/{gist_id}")
async def delete_gist(request: Request, gist_id: str) -> Response:
    check_id(gist_id)
    login = await run_in_threadpool(require_caller, request)
    await call(storage(request).delete_gist, gist_id, login)
    return Response(status_code=204)


@router.get("/gists/{gist_id}/commits")
async def list_commits(request: Request, gist_id: str) -> Response:
    check_id(gist_id)
    await run_in_threadpool(caller, request)
    view = await call(storage(request).get_gist, gist_id)
    if view is None:
        raise not_found()
    return json_response(commits_json(view, base_url(request)))


@router.get("/gists/{gist_id}/{sha}")
async def get_revision(request: Request, gist_id: str, sha: str) -> Response:
    check_id(gist_id)
    await run_in_threadpool(caller, request)
    if not is_hex(sha, (4, 40)):
        raise validation(
            "sha",
            "invalid",
            f"{sha!r} is not a revision: expected the hex `version` of an entry in the gist's history",
        )
    view = await call(storage(request).get_gist, gist_id, sha)
    if view is None:
        raise not_found()
    return Response(gist_body(request, view), media_type=JSON_TYPE)


@router.get("/{user}/{gist_id}/raw/{sha}/{filename}")
async def raw_file(request: Request, user: str, gist_id: str, sha: str, filename: str) -> Response:
    """A file's bytes, as GitHub's ``raw_url``: plain text that a browser will not sniff or run."""
    check_id(gist_id, user)
    if not is_sha1(sha) or file_name_problem(filename):
        raise not_found()
    data = await run_in_threadpool(storage(request).raw, user, gist_id, sha, filename)
    if data is None:
        raise not_found()
    return Response(
        data,
        media_type="text/plain; charset=utf-8",
        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox"},
    )


def zip_bytes(view: GistView) -> bytes:
    """The gist as ``<id>-<version>/<file>``: what Caffe's script unpacks with ``unzip -j``."""
    buf = io.BytesIO()
    top = f"{view.id}-{view.version}"
    when = view.updated_at.timetuple()[:6]
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo(f"{top}/", when), b"")
        for f in view.files:
            info = zipfile.ZipInfo(f"{top}/{f.filename}", when)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, f.content or b"")
    return buf.getvalue()


def _zip_of(request: Request, gist_id: str, user: str | None) -> tuple[str, bytes]:
    """The gist's id and the zip of its newest revision, read from the database."""
    view = storage(request).get_gist(gist_id)
    if view is None or (user is not None and user.lower() != view.owner.lower()):
        raise not_found()
    return view.id, zip_bytes(view)


async def _download(request: Request, gist_id: str, user: str | None) -> Response:
    check_id(gist_id, user)
    # Reading a gist's files and zipping them is rendering: in the render lane, as its JSON is.
    # In the thread pool, each of 40 requests held its own copy of the files and of the zip
    # (4 downloads of a 150 MB gist at once: 1.6 GB), before --inflight-bytes could count it.
    found_id, data = await request.app.state.render_lane.run(_zip_of, request, gist_id, user)
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{found_id}.zip"'},
    )


@router.get("/{gist_id}/download")
async def download_zip(request: Request, gist_id: str) -> Response:
    return await _download(request, gist_id, None)


@router.get("/{user}/{gist_id}/download")
async def download_user_zip(request: Request, user: str, gist_id: str) -> Response:
    return await _download(request, gist_id, user)
