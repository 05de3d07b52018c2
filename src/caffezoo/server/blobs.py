"""``/blobs/sha1/<sha1>``: weights served from the mirror's store, and owners' uploads.

    curl -r 0-99 http://127.0.0.1:8000/blobs/sha1/9116a64c...         # Range works
    curl -T net.caffemodel -H "Authorization: token $T" http://127.0.0.1:8000/blobs/sha1/9116a64c...

The layout is the one ``caffezoo.fetch`` expects of a mirror, so clients list
this server in ``CAFFEZOO_MIRRORS``. A blob's ETag is its SHA-1: it never
changes, so ``If-Range`` resumes are always safe and caches may keep it for
good. An upload is accepted only from the owner of a model whose front matter
names that SHA-1; the bytes are hashed on the way to disk and renamed into
place only when they match.
"""

from __future__ import annotations

import os

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from ..errors import ChecksumError
from ..hashes import is_sha1
from .api import json_response
from .auth import require_caller
from .errors import ApiError
from .mirror import Mirror
from .models import Entry

MAX_UPLOAD_BYTES = 16 * 1024**3
UPLOAD_BATCH = 1024 * 1024

router = APIRouter()


class BlobResponse(FileResponse):
    # Bigger reads than Starlette's 64 KiB: fewer thread hops and sends per megabyte.
    chunk_size = 1024 * 1024


def _mirror(request: Request) -> Mirror:
    return request.app.state.mirror


@router.api_route("/blobs/sha1/{sha1}", methods=["GET", "HEAD"])
async def get_blob(request: Request, sha1: str) -> Response:
    if not is_sha1(sha1):
        raise ApiError(404, "Not Found")
    sha1 = sha1.lower()
    path = _mirror(request).path(sha1)
    try:
        st = await run_in_threadpool(os.stat, path)
    except FileNotFoundError:
        raise ApiError(404, f"Not Found: this server has no blob {sha1}") from None
    return BlobResponse(
        path,
        stat_result=st,
        media_type="application/octet-stream",
        headers={"ETag": f'"{sha1}"', "Cache-Control": "public, max-age=31536000, immutable"},
    )


def _owned_sizes(request: Request, login: str, sha1: str) -> list[int | None] | None:
    """Sizes promised by the caller's models that name ``sha1``; None when none does."""
    with request.app.state.storage.session() as s:
        sizes = list(
            s.scalars(select(Entry.size).where(Entry.sha1 == sha1, func.lower(Entry.owner) == login.lower()))
        )
    return sizes or None


@router.put("/blobs/sha1/{sha1}")
async def put_blob(request: Request, sha1: str) -> Response:
    login = await run_in_threadpool(require_caller, request)
    if not is_sha1(sha1):
        raise ApiError(422, f"{sha1!r} is not a SHA-1: expected 40 hexadecimal digits")
    sha1 = sha1.lower()
    sizes = await run_in_threadpool(_owned_sizes, request, login, sha1)
    if sizes is None:
        raise ApiError(
            403,
            f"none of {login}'s models has sha1 {sha1} in its front matter: upload the "
            "model info (readme.md with that sha1) first",
        )
    mirror = _mirror(request)
    limit = next((s for s in sizes if s is not None), MAX_UPLOAD_BYTES)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"{length} bytes, but the model says the weights are {limit} bytes")
    if mirror.has(sha1):
        return json_response({"sha1": sha1, "size": mirror.path(sha1).stat().st_size, "status": "present"})
    upload = await run_in_threadpool(mirror.begin_upload, sha1)
    try:
        batch, size = [], 0
        async for chunk in request.stream():
            batch.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"more than {limit} bytes: the model says the weights are {limit} bytes")
            if sum(map(len, batch)) >= UPLOAD_BATCH:
                await run_in_threadpool(upload.write, b"".join(batch))
                batch = []
        if batch:
            await run_in_threadpool(upload.write, b"".join(batch))
        path = await run_in_threadpool(upload.finish)
    except ChecksumError as e:
        raise ApiError(422, str(e)) from None
    except BaseException:
        await run_in_threadpool(upload.abort)
        raise
    await run_in_threadpool(mirror.changed, request.app.state.storage)
    return json_response(
        {"sha1": sha1, "size": path.stat().st_size, "status": "stored", "url": f"/blobs/sha1/{sha1}"},
        status=201,
    )
