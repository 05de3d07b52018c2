"""The zoo server's application factory.

>>> app = create_app("sqlite:///zoo.db")          # doctest: +SKIP
>>> import uvicorn; uvicorn.run(app, port=8000)    # doctest: +SKIP

Routers are included here (the Gist API now; the web pages add theirs), over
one :class:`~.storage.Storage` kept in ``app.state.storage``.
"""

from __future__ import annotations

import gc
import re
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..config import settings
from . import api, blobs, health, pages
from .blobstore import open_store
from .caches import ByteCache
from .errors import (
    ApiError,
    api_error_handler,
    client_gone_handler,
    http_error_handler,
    unexpected_error_handler,
)
from .health import blob_check
from .logs import RequestLog
from .mirror import Mirror
from .pictures import Pictures
from .storage import Storage
from .work import AnswerBudget, Busy, Lane, LargeAnswers, Limits, busy_response

__all__ = ["SecurityHeaders", "app_from_env", "check_base_url", "create_app", "new_app"]

# On every answer: no sniffing, no framing, no referrer leaks, no powerful features.
# Pages add their own script-free CSP; everything else gets GitHub's API one.
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
]
API_CSP = (b"content-security-policy", b"default-src 'none'")
# Try-it's threads run this much lower than the event loop: see benchmarks/web.py's try-it part.
TRY_NICE = 10


class SecurityHeaders:
    """Plain ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [h for h in SECURITY_HEADERS if h[0] not in names]
                if API_CSP[0] not in names:
                    headers.append(API_CSP)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _http_error(request: Request, exc: Exception):
    """A browser asking for a page that is not there gets a page; API clients get JSON."""
    if getattr(exc, "status_code", None) == 404 and "text/html" in request.headers.get("accept", ""):
        return pages.not_found_page(f"Nothing lives at {request.url.path}.")
    return await http_error_handler(request, exc)


async def _busy(request: Request, exc: Exception):
    assert isinstance(exc, Busy)
    return busy_response(request, exc)


@asynccontextmanager
async def _lifespan(app: FastAPI):
    # Everything made while starting (modules, routes, the ORM, protobuf's descriptors: most
    # of the heap) lives as long as the process: out of the collector's sight, a full
    # collection under load scans what requests made since instead. It stalled the event loop
    # 70-160 ms, once or twice per 5 s of GET /gists at 32 clients: that was the p99 (gc
    # callbacks in a replica under wrk; frozen, 4-16 ms). Collect first: a frozen object is never
    # freed, and start-up leaves garbage (seeding, the blob store's check, a first link-check round).
    gc.collect()
    gc.freeze()
    yield
    # Leaving: end this replica's lease on cached gist states, or writers wait for it to expire.
    await run_in_threadpool(app.state.storage.stop_listening)


_URL_UNSAFE = re.compile(r"[\x00-\x20\x7f\"<>\\^`{|}?#]")  # would break a header, a link or the path


def check_base_url(url: str) -> str:
    """``url`` without its trailing slash (scheme in lower case), if it is an http(s) URL
    with a host, maybe a port and a path, and nothing else: no credentials, query or
    fragment, and no character that would break a ``Link`` header or an HTML attribute.

    >>> check_base_url("HTTPS://zoo.example.org/zoo/")
    'https://zoo.example.org/zoo'
    """
    from urllib.parse import urlsplit

    wrong = ValueError(f"the base URL must look like https://zoo.example.org[:port][/path], not {url!r}")
    if _URL_UNSAFE.search(url):
        raise wrong
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError when out of range or not a number
    except ValueError:
        raise wrong from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise wrong
    return f"{scheme}://{parts.netloc}{parts.path}".rstrip("/")


def new_app(title: str, lifespan: Any = None) -> FastAPI:
    """A FastAPI app as each of caffezoo's servers starts from: GitHub-shaped errors, no
    generated docs, and no trailing-slash redirects (Starlette's 307 for ``/gists/`` points at
    the request's ``Host``, which links never come from).

    >>> app = new_app("caffezoo worker")
    """
    app = FastAPI(
        title=title,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
        redirect_slashes=False,
    )
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(ClientDisconnect, client_gone_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
    return app


def create_app(
    database_url: str | None = None,
    *,
    storage: Storage | None = None,
    blobs_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    blobs_url: str | None = None,
    blobs_redirect: bool = False,
    blobs_accel: str | None = None,
    base_url: str | None = None,
    limits: Limits | None = None,
) -> FastAPI:
    """A FastAPI app over ``storage``, or over a new one at ``database_url``
    (default: ``CAFFEZOO_DATABASE_URL``, else SQLite under ``CAFFEZOO_HOME``).

    ``blobs_dir`` is the weights store (default ``CAFFEZOO_HOME/server-blobs``), or
    ``blobs_url`` (``s3://BUCKET/PREFIX`` or a directory, see :func:`.blobstore.open_store`);
    ``blobs_redirect`` answers blob GETs from S3 with a 302 to a presigned URL;
    ``blobs_accel`` (a path prefix, ``/_s3/``) leaves their bodies to nginx: ``X-Accel-Redirect``;
    ``cache_dir`` keeps drawn network pictures (default under the cache dir).
    ``base_url`` is the public URL that links in pages and API answers start with
    (default: the address the server listens on, never the request's ``Host``);
    ``limits`` bounds the render and drawing work and the memory caches.
    """
    s = settings()
    limits = limits or Limits()
    store = storage or Storage(database_url or s.server_database_url)
    app = new_app("caffezoo", lifespan=_lifespan)
    app.state.storage = store
    app.state.base_url = check_base_url(base_url) if base_url else None
    app.state.limits = limits
    app.state.cache = cache = ByteCache(limits.cache_bytes)  # one byte budget for every kind below
    app.state.gist_cache = cache.part("gist")
    app.state.page_cache = cache.part(
        "page"
    )  # rendered pages and query results, keyed with the catalog's generation
    app.state.file_cache = cache.part("file")
    app.state.render_lane = Lane(
        "render", workers=limits.render_workers, queue=limits.render_queue, deadline=limits.render_deadline
    )
    app.state.mirror = Mirror(open_store(blobs_url or blobs_dir or s.server_blobs_dir))
    app.state.blobs_redirect = blobs_redirect
    app.state.blobs_accel = blobs.accel_prefix(blobs_accel) if blobs_accel else None
    app.state.pictures = Pictures(
        Path(cache_dir) if cache_dir else s.cache_dir / "server" / "svg",
        cache.part("svg"),
        lane=Lane(
            "draw",
            workers=limits.draw_workers,
            queue=limits.draw_queue,
            deadline=2 * limits.draw_timeout + 5,
        ),
        timeout=limits.draw_timeout,
        max_layers=limits.draw_max_layers,
    )
    app.state.tryit = app.state.try_lane = app.state.try_pictures = None
    if limits.try_it:
        from .tryit import ResultPictures, TryIt

        app.state.tryit = TryIt(store, app.state.mirror, limits, s.cache_dir / "server" / "try")
        app.state.try_pictures = ResultPictures(store)
        app.state.try_pictures.purge()
        app.state.try_uploads = AnswerBudget(
            limits.try_upload_bytes, send_deadline=limits.try_upload_deadline
        )
        app.state.try_lane = Lane(
            "try",
            workers=limits.try_workers,
            queue=limits.try_queue,
            deadline=limits.try_deadline,
            nice=TRY_NICE,
        )
    app.add_exception_handler(Busy, _busy)
    # What /readyz asks: (name, function raising when that dependency is not there).
    app.state.ready_checks = [("database", store.ping), ("blobs", blob_check(app.state.mirror.store))]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # a 404 page for browsers
    # Innermost of the three: a 503 it answers still gets the security headers and the log line.
    app.state.large_answers = AnswerBudget(limits.inflight_bytes, send_deadline=limits.send_deadline)
    app.state.api_bodies = AnswerBudget(limits.body_bytes, send_deadline=limits.body_deadline)
    app.add_middleware(LargeAnswers, budget=app.state.large_answers)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestLog)  # outermost: its id is on every answer, its time covers all
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    routers = [health.router, api.router, blobs.router]
    if limits.try_it:
        from .tryit import router as try_router

        routers.append(try_router)
    routers.append(pages.router)  # last: it ends with the catch-all /{user}/{id}
    for router in routers:  # the first route that matches answers (see .routing)
        app.router.routes.extend(router.routes)
    return app


def app_from_env() -> FastAPI:
    """For ``uvicorn --factory caffezoo.server.app:app_from_env`` (several workers)."""
    import json
    import os

    from .run import tune_server_process

    tune_server_process()  # a spawned worker inherits nothing `run` set in its parent
    limits = os.environ.get("CAFFEZOO_SERVER_LIMITS")
    return create_app(
        blobs_url=os.environ.get("CAFFEZOO_SERVER_BLOBS") or None,
        blobs_redirect=os.environ.get("CAFFEZOO_SERVER_BLOBS_REDIRECT") == "1",
        blobs_accel=os.environ.get("CAFFEZOO_SERVER_BLOBS_ACCEL") or None,
        base_url=os.environ.get("CAFFEZOO_BASE_URL") or None,
        limits=Limits(**json.loads(limits)) if limits else None,
    )
