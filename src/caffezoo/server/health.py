"""Health endpoints for a load balancer or an orchestrator: no auth, cheap, never cached.

    GET /healthz  -> 200 {"status": "ok"}                       the process answers
    GET /readyz   -> 200 {"status": "ready", "checks": {"database": "ok", "blobs": "ok"}}
                  -> 503 {"status": "unready", "checks": {"database": "unreachable", "blobs": "ok"}}

Readiness runs each of ``app.state.ready_checks`` — ``(name, function)`` pairs;
a function raises when its dependency is not there — in the thread pool, each
bounded by :data:`CHECK_TIMEOUT`. The answer names the failing dependency but
not the driver's words (they may hold host names); those go to the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from .api import json_response
from .routing import Router

__all__ = ["blob_check", "health_app", "router"]

CHECK_TIMEOUT = 3.0  # seconds per dependency: a load balancer's probe must not hang
NO_STORE = {"Cache-Control": "no-store"}

log = logging.getLogger("caffezoo.server.health")
router = Router()


@router.get("/healthz")
async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"}, headers=NO_STORE)


async def _check(name: str, fn: Callable[[], object]) -> str:
    try:
        await asyncio.wait_for(run_in_threadpool(fn), CHECK_TIMEOUT)
        return "ok"
    except TimeoutError:
        log.warning("readiness: %s did not answer within %s s", name, CHECK_TIMEOUT)
        return "timeout"
    except Exception as e:
        log.warning("readiness: %s unreachable: %s", name, str(e).strip().split("\n")[0] or type(e).__name__)
        return "unreachable"


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    checks = getattr(request.app.state, "ready_checks", [])
    results = dict(zip([n for n, _ in checks], await asyncio.gather(*(_check(n, f) for n, f in checks))))
    ready = all(v == "ok" for v in results.values())
    return json_response(
        {"status": "ready" if ready else "unready", "checks": results}, 200 if ready else 503, NO_STORE
    )


def blob_check(store) -> Callable[[], object]:
    """A readiness check of a blob store: one ``stat`` (S3: a HEAD; a 404 is an answer)."""
    return lambda: store.stat("0" * 40)


def health_app(storage, blob_store=None) -> FastAPI:
    """Only the health endpoints, over ``storage`` (and ``blob_store``): what
    ``caffezoo serve --role worker`` listens with."""
    from .app import SecurityHeaders, new_app
    from .logs import RequestLog

    app = new_app("caffezoo worker")
    app.state.storage = storage
    app.state.ready_checks = [("database", storage.ping)]
    if blob_store is not None:
        app.state.ready_checks.append(("blobs", blob_check(blob_store)))
    app.router.routes.extend(router.routes)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestLog)
    return app
