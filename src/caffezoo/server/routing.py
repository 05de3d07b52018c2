"""Routes declared as with FastAPI's ``APIRouter``, served by Starlette's router.

>>> router = Router()
>>> @router.get("/gists/{gist_id}")
... async def get_gist(request: Request, gist_id: str) -> Response: ...
>>> app.router.routes.extend(router.routes)                  # doctest: +SKIP

Every endpoint of the server takes the request and its path parameters (strings)
and reads anything else -- query, headers, body -- itself. FastAPI 0.165's
machinery around such a route (solving its dependencies, matching through each
included router) took about 180 of the 330 us a cached ``GET /gists/{id}``
cost in the process: over half the server's CPU on the Gist API's hottest read,
and the reason its p99 at 32 clients sat at the 25 ms goal's edge
(``benchmarks/cluster.py``). A Starlette ``Route`` calls the endpoint directly.
Like FastAPI, an endpoint defined with ``def`` runs in the thread pool. Unlike
it, a GET route also answers HEAD, as Starlette's routes (and GitHub) do.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["Router"]

Endpoint = Callable[..., Any]


class Router:
    """Routes in the order their paths were first declared: the first that matches answers.
    A path declared for several methods (by several endpoints) is one route, so a 405 names
    every method it takes."""

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self._answers: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}

    def route(self, path: str, methods: list[str]) -> Callable[[Endpoint], Endpoint]:
        """Declare ``fn(request, **path_params)`` as the answer to ``methods`` on ``path``."""

        def declare(fn: Endpoint) -> Endpoint:
            answers = self._answers.setdefault(path, {})
            new_path = not answers
            for method in methods:
                if method in answers:
                    raise ValueError(f"{method} {path} is declared twice")
            answers.update(dict.fromkeys(methods, _call_with_params(fn)))
            route = Route(path, _by_method(answers), methods=list(answers), name=fn.__name__)
            if new_path:
                self.routes.append(route)
            else:
                at = next(i for i, r in enumerate(self.routes) if r.path == path)
                self.routes[at] = route
            return fn

        return declare

    def get(self, path: str) -> Callable[[Endpoint], Endpoint]:
        return self.route(path, ["GET"])

    def post(self, path: str) -> Callable[[Endpoint], Endpoint]:
        return self.route(path, ["POST"])

    def put(self, path: str) -> Callable[[Endpoint], Endpoint]:
        return self.route(path, ["PUT"])

    def patch(self, path: str) -> Callable[[Endpoint], Endpoint]:
        return self.route(path, ["PATCH"])

    def delete(self, path: str) -> Callable[[Endpoint], Endpoint]:
        return self.route(path, ["DELETE"])


def _by_method(
    answers: dict[str, Callable[[Request], Awaitable[Response]]],
) -> Callable[[Request], Awaitable[Response]]:
    """One endpoint for a path's methods; the route lets only those through (else 405), and a
    HEAD through a path whose GET answers it, as Starlette does."""

    async def endpoint(request: Request) -> Response:
        answer = answers.get(request.method) or answers["GET"]  # HEAD, when only GET is declared
        return await answer(request)

    return endpoint


def _call_with_params(fn: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """Starlette's endpoint signature, ``(request)``, for ``fn(request, **path_params)``."""
    if inspect.iscoroutinefunction(fn):

        async def endpoint(request: Request) -> Response:
            return await fn(request, **request.path_params)

    else:  # blocking work: off the event loop, as FastAPI runs a plain ``def``

        async def endpoint(request: Request) -> Response:
            return await run_in_threadpool(fn, request, **request.path_params)

    return endpoint
