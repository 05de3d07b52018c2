"""GitHub-shaped error responses: ``{"message", "documentation_url", "errors"?, "status"}``."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from ..gist.rules import error

__all__ = [
    "ApiError",
    "api_error_handler",
    "client_gone_handler",
    "error_response",
    "http_error_handler",
    "unexpected_error_handler",
    "validation",
]

DOCS_URL = "https://docs.github.com/rest/gists/gists"


class ApiError(Exception):
    """An error answer; ``errors`` is GitHub's validation list (``resource, field, code, message``)."""

    def __init__(
        self,
        status: int,
        message: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.errors, self.headers = status, message, errors, headers


def validation(field: str, code: str, message: str, resource: str = "Gist") -> ApiError:
    return ApiError(422, "Validation Failed", [error(field, code, message, resource)])


def error_response(
    status: int,
    message: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"message": message, "documentation_url": DOCS_URL, "status": str(status)}
    if errors:
        body["errors"] = errors
    # ASCII: a message quoting the caller's input (a lone surrogate) must not fail to encode.
    content = json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    return Response(content, status_code=status, headers=headers, media_type="application/json")


async def api_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.errors, exc.headers)


async def http_error_handler(_request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    names = {404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request"}
    message = names.get(status) or str(getattr(exc, "detail", "")) or "Error"
    return error_response(status, message, headers=getattr(exc, "headers", None))


async def unexpected_error_handler(_request: Request, _exc: Exception) -> Response:
    # A bug: answer like GitHub does, without leaking details; uvicorn logs the traceback.
    # This answer is made outside the request log's and the security headers' middleware
    # (Starlette's outermost): it names the request and carries the headers itself.
    from .app import API_CSP, SECURITY_HEADERS
    from .logs import request_id

    headers = {k.decode(): v.decode() for k, v in [*SECURITY_HEADERS, API_CSP]}
    if rid := request_id.get():
        headers["X-Request-ID"] = rid
    return error_response(500, "Server Error", headers=headers)


async def client_gone_handler(_request: Request, _exc: Exception) -> Response:
    """A client that closed its connection while sending a body: not a bug, so no traceback.
    Nobody reads the answer; 499 (as nginx logs it) is what the request log records."""
    return Response(status_code=499)
