"""``/blobs/sha1/<sha1>``: weights served from the mirror's store, and owners' uploads.

    curl -r 0-99 http://127.0.0.1:8000/blobs/sha1/9116a64c...         # Range works
    curl -T net.caffemodel -H "Authorization: token $T" http://127.0.0.1:8000/blobs/sha1/9116a64c...

The layout is the one ``caffezoo.fetch`` expects of a mirror, so clients list
this server in ``CAFFEZOO_MIRRORS``. A blob's ETag is its SHA-1: it never
changes, so ``If-Range`` resumes are always safe and caches may keep it for
good. With an S3 store the bytes are streamed from it with the same headers,
or, with ``--blobs-redirect``, a GET is answered by a 302 to a presigned URL
valid for five minutes (the client follows it; its token is not sent there),
or, with ``--blobs-accel PREFIX`` behind nginx, a GET is answered as when
streamed, except that the body is left to nginx: an ``X-Accel-Redirect`` to
``PREFIX`` + a presigned URL's path and query, which nginx's ``internal``
location fetches from the store (see README, "Running a zoo for a community").
An upload is accepted only from the owner of a model whose front matter
names that SHA-1; the bytes are hashed on their way into the store and
committed under their name only when they match.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..errors import ChecksumError
from ..hashes import is_sha1
from .api import json_response
from .auth import require_caller
from .blobstore import BlobStoreError, S3Store
from .errors import ApiError
from .mirror import Mirror
from .routing import Router
from .splice import SPLICE
from .tables import Entry
from .work import stated_length

__all__ = ["MAX_UPLOAD_BYTES", "STORE_RANGE", "accel_prefix", "router"]

log = logging.getLogger("caffezoo.server")


def _store_down(e: BlobStoreError, then: str = "") -> ApiError:
    """A 503 for anyone; the store's own words (its address, the bucket) for the operator's log only."""
    log.warning("blob store: %s", e)
    return ApiError(503, f"the blob store is unavailable{then}")


MAX_UPLOAD_BYTES = 16 * 1024**3
UPLOAD_BATCH = 1024 * 1024
READ_AHEAD = 2  # steps a streamed S3 read may run ahead of the client
STEP_BYTES = 1 << 20  # read per thread hop, in the store's chunks (S3: 120 KiB each)

router = Router()


class BlobResponse(FileResponse):
    # Bigger reads than Starlette's 64 KiB: fewer thread hops and sends per megabyte.
    chunk_size = 1024 * 1024


def _mirror(request: Request) -> Mirror:
    return request.app.state.mirror


IMMUTABLE = "public, max-age=31536000, immutable"
REDIRECT_SECONDS = 300  # lifetime of a presigned URL: long enough to start, too short to share
ACCEL_SECONDS = 60  # nginx fetches an X-Accel-Redirect's URL at once: a minute covers clock skew
# The byte range nginx must ask the store for (none: all of it). The replica decides it (Range,
# If-Range against our ETag); the store, whose ETag differs, never sees the client's headers.
STORE_RANGE = "X-Caffezoo-Store-Range"


def accel_prefix(prefix: str) -> str:
    """``prefix`` of ``--blobs-accel`` as ``/path/``; ValueError naming what is expected.

    >>> accel_prefix("/_s3")
    '/_s3/'
    """
    if not re.fullmatch(r"(/[A-Za-z0-9_~-][A-Za-z0-9_.~-]*)+/?", prefix or ""):
        raise ValueError(
            f"{prefix!r} is not a URL path prefix: expected letters, digits, '_', '-', '.' "
            "in one or more /segments, e.g. /_s3/"
        )
    return prefix.rstrip("/") + "/"


@router.route("/blobs/sha1/{sha1}", methods=["GET", "HEAD"])
async def get_blob(request: Request, sha1: str) -> Response:
    if not is_sha1(sha1):
        raise ApiError(404, "Not Found")
    sha1 = sha1.lower()
    store = _mirror(request).store
    path = store.local_path(sha1)
    if path is not None:
        try:
            st = await run_in_threadpool(os.stat, path)
        except FileNotFoundError:
            raise ApiError(404, f"Not Found: this server has no blob {sha1}") from None
        return BlobResponse(
            path,
            stat_result=st,
            media_type="application/octet-stream",
            headers={"ETag": f'"{sha1}"', "Cache-Control": IMMUTABLE},
        )
    try:
        if request.app.state.blobs_redirect and request.method == "GET":
            # A presigned URL is signed for GET: HEAD is answered here.
            if await _present(store, sha1):
                url = await run_in_threadpool(store.presigned_url, sha1, REDIRECT_SECONDS)
                return Response(status_code=302, headers={"Location": url, "Cache-Control": "no-store"})
            raise ApiError(404, f"Not Found: this server has no blob {sha1}")
        headers = request.headers
        if request.method == "GET" and "range" not in headers and "if-none-match" not in headers:
            if request.app.state.blobs_accel:  # all of it: nginx learns the size from the store
                if await _present(store, sha1):
                    return await _accel(request, store, sha1, _blob_headers(sha1), 200, None)
                raise ApiError(404, f"Not Found: this server has no blob {sha1}")
            # The common download, all of it: one GET to the store, whose answer gives the size.
            spliced = await _spliced(request, store, sha1, _blob_headers(sha1), 200, None)
            if spliced is not None:
                return spliced
            info, chunks = await run_in_threadpool(store.stream, sha1)
            headers = {**_blob_headers(sha1), "Content-Length": str(info.size)}
            return StreamingResponse(_read_ahead(chunks), headers=headers)
        info = await run_in_threadpool(store.stat, sha1)
    except KeyError:
        raise ApiError(404, f"Not Found: this server has no blob {sha1}") from None
    except BlobStoreError as e:
        raise _store_down(e) from None
    if info is None:
        raise ApiError(404, f"Not Found: this server has no blob {sha1}")
    return await _ranged(request, store, info)


async def _present(store, sha1: str) -> bool:
    """Whether the store has the blob. has() may miss a blob another replica stored a moment
    ago, so a miss is checked with the store before a 404."""
    return await run_in_threadpool(store.has, sha1) or await run_in_threadpool(store.stat, sha1) is not None


async def _accel(
    request: Request, store, sha1: str, headers: dict[str, str], status: int, span: tuple[int, int] | None
) -> Response:
    """The answer without its body, which nginx fetches from the store: ``X-Accel-Redirect`` to
    the accel prefix + a presigned URL's path and query, built from the blob's key alone.

    nginx keeps Content-Type and Accept-Ranges of this answer; its ``internal`` location puts
    back the rest (ETag...) from ``$upstream_http_*``; status, Content-Length and Content-Range
    come from the store, asked for ``span`` (``[start, stop)``, None: everything). No
    Cache-Control: nginx would keep it for whatever the store answers, a 404 or a 502 too, and
    caches would hold that error for a year; the location adds it to the store's 200 and 206 only.
    """
    url = await run_in_threadpool(store.presigned_url, sha1, ACCEL_SECONDS, internal=True)
    parts = urlsplit(url)
    out = {k: v for k, v in headers.items() if k not in ("Content-Length", "Content-Range", "Cache-Control")}
    out["X-Accel-Redirect"] = request.app.state.blobs_accel.rstrip("/") + parts.path + "?" + parts.query
    if span is not None:
        out[STORE_RANGE] = f"bytes={span[0]}-{span[1] - 1}"
    return Response(status_code=status, headers=out)


def _blob_headers(sha1: str) -> dict[str, str]:
    return {
        "ETag": f'"{sha1}"',
        "Cache-Control": IMMUTABLE,
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
    }


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """``(start, stop)`` of a single ``bytes=`` range; None to send everything (no range, several
    ranges, bad syntax: RFC 9110 lets a server ignore those); False when it is unsatisfiable."""
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d{0,18})\s*-\s*(\d{0,18})\s*", header)  # 18 digits: any real size
    if not m or m.group(1) == m.group(2) == "":
        return None
    first, last = m.group(1), m.group(2)
    if first == "":  # the last N bytes
        n = int(last)
        return (max(0, size - n), size) if n and size else False
    start = int(first)
    if start >= size:
        return False
    stop = size if last == "" else min(size, int(last) + 1)
    return (start, stop) if stop > start else None


async def _ranged(request: Request, store, info) -> Response:
    """Answer from a remote store as FileResponse answers from a file: Range, If-Range, ETag."""
    etag = f'"{info.sha1}"'
    headers = _blob_headers(info.sha1)
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": IMMUTABLE})
    wanted = _byte_range(request.headers.get("range"), info.size)
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != etag:
        wanted = None  # the client holds another file's bytes: send all of this one
    if wanted is False:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{info.size}"})
    start, stop = wanted or (0, info.size)
    headers["Content-Length"] = str(stop - start)
    status = 200
    if wanted:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{info.size}"
    if request.method == "HEAD" or start == stop:
        return Response(status_code=status, headers=headers)
    if request.app.state.blobs_accel:
        return await _accel(request, store, info.sha1, headers, status, (start, stop) if wanted else None)
    try:  # S3 answers the GET here: a round trip kept off the event loop
        spliced = await _spliced(request, store, info.sha1, headers, status, (start, stop))
        if spliced is not None:
            return spliced
        chunks = await run_in_threadpool(store.get, info.sha1, start, stop)
    except KeyError:
        raise ApiError(404, f"Not Found: this server has no blob {info.sha1}") from None
    except BlobStoreError as e:
        raise _store_down(e) from None
    return StreamingResponse(_read_ahead(chunks), status_code=status, headers=headers)


async def _spliced(
    request: Request, store, sha1: str, headers: dict[str, str], status: int, span: tuple[int, int] | None
) -> Response | None:
    """The answer with its body moved by the kernel from the store's socket to the client's
    (:mod:`.splice`); None when this server or this store cannot, or the store's answer to
    this GET of our own is an error: the bytes are streamed.
    ``span``: ``[start, stop)`` of the blob, None for all of it."""
    if SPLICE not in request.scope.get("extensions", {}) or not isinstance(store, S3Store):
        return None
    start, stop = span or (0, None)
    try:
        got = await run_in_threadpool(store.plain_get, sha1, start, stop)
    except BlobStoreError as e:
        # One GET of our own, unretried: a store's passing error (a 503 SlowDown, a reset) or
        # one only it meets is left to boto3's reads, which retry; a store that is down fails there.
        log.warning("blob store: %s; streaming instead", e)
        return None
    if got is None:
        return None
    sock, length, first = got
    return SplicedResponse(sock, length, first, status, {**headers, "Content-Length": str(length)})


class SplicedResponse(Response):
    """An answer whose body is ``first``, then the rest of ``length`` bytes from ``sock``."""

    def __init__(
        self, sock: socket.socket, length: int, first: bytes, status_code: int, headers: dict[str, str]
    ):
        super().__init__(status_code=status_code, headers=headers)
        self.sock, self.length, self.first = sock, length, first

    async def __call__(self, scope, receive, send) -> None:
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            # A body message first: LargeAnswers holds the head until one comes.
            await send({"type": "http.response.body", "body": self.first, "more_body": True})
            await send({"type": SPLICE, "socket": self.sock, "count": self.length - len(self.first)})
        finally:
            self.sock.close()


async def _read_ahead(chunks: Iterator[bytes], depth: int = READ_AHEAD) -> AsyncIterator[bytes]:
    """``chunks`` read by worker threads up to ``depth`` steps ahead of the client.

    Reading from the store and writing to the client then overlap. A thread is held only
    while one step (:data:`STEP_BYTES` of chunks: one thread hop for many small chunks) is
    read: waiting for a slow client happens on the event loop, so clients that stop reading
    cannot take every worker from the other streams. Memory is bounded by ``depth`` steps
    (and one being read); a client that goes away stops the reader and closes the store's stream.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(depth)
    done = object()
    lock = threading.Lock()  # a step and the final close never run at once (a generator refuses)
    closed = False

    first = True

    def step() -> object:
        nonlocal first
        with lock:
            # The first chunk alone: the answer's head waits for it (LargeAnswers).
            batch, size, limit = [], 0, 1 if first else STEP_BYTES
            first = False
            while not closed and size < limit and (chunk := next(chunks, done)) is not done:
                batch.append(chunk)
                size += len(chunk)
            return batch or done

    def close() -> None:
        nonlocal closed
        with lock:
            closed = True
            close = getattr(chunks, "close", None)
            if close:
                close()

    async def produce() -> None:
        try:
            while (batch := await loop.run_in_executor(None, step)) is not done:
                await queue.put(batch)
            item = done
        except Exception as e:  # handed to the response, which ends the body early
            item = e
        await queue.put(item)

    reader = asyncio.ensure_future(produce())
    try:
        while True:
            item = await queue.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            for chunk in item:
                yield chunk
    finally:
        reader.cancel()
        try:
            loop.run_in_executor(None, close)  # after any step in flight; nobody waits for it
        except RuntimeError:  # the executor is shut down with the server: close here
            close()


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
    length = stated_length(request)
    if length is not None and length > limit:
        raise ApiError(413, f"{length} bytes, but the model says the weights are {limit} bytes")
    try:
        present = await run_in_threadpool(mirror.store.stat, sha1)
    except BlobStoreError as e:
        raise _store_down(e, "; nothing was stored, try again") from None
    if present is not None:
        return json_response({"sha1": sha1, "size": present.size, "status": "present"})
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
        info = await run_in_threadpool(upload.commit)
    except ChecksumError as e:
        raise ApiError(422, str(e)) from None
    except BlobStoreError as e:
        await run_in_threadpool(upload.abort)
        raise _store_down(e, "; nothing was stored, try again") from None
    except BaseException:
        await run_in_threadpool(upload.abort)
        raise
    await run_in_threadpool(mirror.changed, request.app.state.storage)
    return json_response(
        {"sha1": sha1, "size": info.size, "status": "stored", "url": f"/blobs/sha1/{sha1}"},
        status=201,
    )
