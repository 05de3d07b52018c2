"""The zoo server's application factory.

>>> app = create_app("sqlite:///zoo.db")          # doctest: +SKIP
>>> import uvicorn; uvicorn.run(app, port=8000)    # doctest: +SKIP

Routers are included here (the Gist API now; the web pages add theirs), over
one :class:`~.storage.Storage` kept in ``app.state.storage``.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..config import settings
from . import api
from .errors import ApiError, api_error_handler, http_error_handler, unexpected_error_handler
from .storage import Storage

# What GitHub's API sends on every answer: no sniffing, no active content.
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff")]
API_CSP = (b"content-security-policy", b"default-src 'none'")


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


def create_app(database_url: str | None = None, *, storage: Storage | None = None) -> FastAPI:
    """A FastAPI app over ``storage``, or over a new one at ``database_url``
    (default: ``CAFFEZOO_DATABASE_URL``, else SQLite under ``CAFFEZOO_HOME``)."""
    store = storage or Storage(database_url or settings().server_database_url)
    app = FastAPI(title="caffezoo", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.storage = store
    app.state.gist_cache = api.GistCache()
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
    app.add_middleware(SecurityHeaders)
    app.include_router(api.router)
    return app


def app_from_env() -> FastAPI:
    """For ``uvicorn --factory caffezoo.server.app:app_from_env`` (several workers)."""
    return create_app()
