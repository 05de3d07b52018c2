"""What the ``caffezoo serve`` commands call: run uvicorn, make tokens."""

from __future__ import annotations

import os

from ..config import settings
from ..errors import UsageError
from .storage import Invalid, Storage


def _url(url: str | None) -> str:
    return url or settings().server_database_url


def create_token(user: str, url: str | None = None) -> str:
    """A new token for ``user`` (created if new) in the server's database."""
    store = Storage(_url(url))
    try:
        return store.create_token(user)
    except Invalid as e:
        raise UsageError(str(e)) from None
    finally:
        store.close()


def run(host: str = "127.0.0.1", port: int = 8000, database_url: str | None = None, workers: int = 1,
        log_level: str = "info") -> None:
    """Serve until interrupted, with uvicorn's fastest loop and parser when installed."""
    import uvicorn

    from .app import create_app

    url = _url(database_url)
    options = dict(host=host, port=port, log_level=log_level, proxy_headers=False)
    try:
        import uvloop  # noqa: F401

        options["loop"] = "uvloop"
    except ImportError:
        pass
    try:
        import httptools  # noqa: F401

        options["http"] = "httptools"
    except ImportError:
        pass
    if workers > 1:
        os.environ["CAFFEZOO_DATABASE_URL"] = url  # the workers build their app from the environment
        Storage(url).close()  # create the tables once, before the workers race to
        uvicorn.run("caffezoo.server.app:app_from_env", factory=True, workers=workers, **options)
    else:
        uvicorn.run(create_app(url), **options)
