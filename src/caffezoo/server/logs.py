"""The server's logs: one JSON object a line, each request's line carrying its request id.

>>> uvicorn.run(app, log_config=log_config("info"), access_log=False)   # doctest: +SKIP
{"ts": "2026-12-02T10:00:00.123Z", "level": "info", "logger": "caffezoo.access", "msg": "request",
 "request_id": "3f0c...", "method": "GET", "path": "/gists/abc", "status": 200, "bytes": 12447, "ms": 1.93}

:class:`RequestLog` (plain ASGI middleware) gives each request an id — the
caller's ``X-Request-ID`` when it is well formed (1-128 letters, digits and
``._:-``; a load balancer's id is kept so its log and ours join up), a new one
otherwise — echoes it in the response's ``X-Request-ID`` and writes the
request's line when the answer is sent. Every other line written while the
request runs (an unexpected error, say) carries the same ``request_id``.
Values are JSON-encoded, so a hostile path or header cannot forge a line.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from .splice import SPLICE

__all__ = ["REQUEST_ID_HEADER", "RequestLog", "log_config", "new_request_id", "request_id"]

REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID_RE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
MAX_LOGGED_PATH = 512

request_id: ContextVar[str | None] = ContextVar("caffezoo_request_id", default=None)
access = logging.getLogger("caffezoo.access")


class JsonFormatter(logging.Formatter):
    """A record as one JSON line: time (UTC), level, logger, message, request id, fields."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        out: dict[str, Any] = {
            "ts": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            out["request_id"] = rid
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def log_config(level: str = "info") -> dict[str, Any]:
    """uvicorn's ``log_config``: its own lines and caffezoo's, as JSON on stderr, at ``level``."""
    level = "DEBUG" if level.lower() == "trace" else level.upper()
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"json": handler},
        "loggers": {
            name: {"handlers": ["json"], "level": level, "propagate": False}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "caffezoo")
        },
    }


def new_request_id(incoming: bytes | None) -> str:
    """``incoming`` when it is a well-formed id, else a new random one."""
    if incoming and _REQUEST_ID_RE.fullmatch(incoming):
        return incoming.decode("ascii")
    return uuid.uuid4().hex


class RequestLog:
    """ASGI middleware: a request id for each request, echoed, and one log line when answered."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        incoming = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                incoming = value
                break
        rid = new_request_id(incoming)
        # Not reset at the end: each request runs in a task of its own, whose context ends
        # with it, and the server's handler of unexpected errors (outside this middleware)
        # and uvicorn's line about them still see the id.
        request_id.set(rid)
        started = time.perf_counter()
        seen: dict[str, Any] = {"status": 500, "bytes": 0}
        header = (REQUEST_ID_HEADER, rid.encode("ascii"))
        # The server sends no body to a HEAD (Starlette's GET routes answer it): none is counted.
        counted = scope.get("method") != "HEAD"

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), header]}
            elif message["type"] == "http.response.body" and counted:
                seen["bytes"] += len(message.get("body", b""))
            elif message["type"] == SPLICE:
                await send(message)
                seen["bytes"] += message.get("sent", 0)  # set by the server: a cut body moved less
                return
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as e:
            seen["error"] = type(e).__name__
            raise
        finally:
            if access.isEnabledFor(logging.INFO):
                access.info(
                    "request",
                    extra={
                        "request_id": rid,
                        "fields": {
                            "method": scope.get("method"),
                            "path": scope.get("path", "")[:MAX_LOGGED_PATH],
                            "status": seen["status"],
                            "bytes": seen["bytes"],
                            "ms": round((time.perf_counter() - started) * 1000, 2),
                            "client": (scope.get("client") or ("", 0))[0],
                            **({"error": seen["error"]} if "error" in seen else {}),
                        },
                    },
                )
