"""What an HTTP status and a ``Retry-After`` header ask of a client, without importing httpx.

>>> is_retryable_status(503), is_retryable_status(404), retry_after("120")
(True, False, 120.0)

:mod:`caffezoo._http` re-exports both; :mod:`caffezoo.fetch.wire` reads plain
``http://`` answers with them, where loading httpx would cost more start-up
time than the download's first piece.
"""

from __future__ import annotations

__all__ = ["is_retryable_status", "retry_after"]


def is_retryable_status(status: int) -> bool:
    """Request Timeout, Too Early, Too Many Requests and every server error."""
    return status in (408, 425, 429) or 500 <= status <= 599


def retry_after(value: str | None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (a number or an HTTP date); None if neither."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # (isdigit alone takes '²', which float refuses)
        return float(value)
    from datetime import UTC, datetime  # only now: email.utils costs 4 ms of start-up
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
