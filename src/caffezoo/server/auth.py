"""Who is calling: ``Authorization: Bearer TOKEN`` or ``token TOKEN``, as GitHub accepts both.

Tokens are made by ``caffezoo serve token create USER`` (:meth:`Storage.create_token`)
and checked against their stored SHA-256; the token itself is never stored or logged.
A request without the header is anonymous (it may read); a header that does not
name a valid token is a 401, even for a read, as on GitHub.
"""

from __future__ import annotations

from fastapi import Request

from .errors import ApiError
from .storage import Storage

__all__ = ["caller", "require_caller"]

SCHEMES = ("bearer", "token")


def caller(request: Request) -> str | None:
    """The login of the caller, None when anonymous; :class:`ApiError` 401 on a bad token."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() not in SCHEMES or not token:
        raise ApiError(401, "Bad credentials")
    storage: Storage = request.app.state.storage
    login = storage.user_for_token(token)
    if login is None:
        raise ApiError(401, "Bad credentials")
    return login


def require_caller(request: Request) -> str:
    """The caller's login; 401 ``Requires authentication`` when anonymous."""
    login = caller(request)
    if login is None:
        raise ApiError(401, "Requires authentication")
    return login
