"""When to try again, and how long to wait first.

>>> retry_after("120")
120.0
>>> 0.25 <= backoff(1) <= 0.5 and 4.0 <= backoff(5) <= 8.0
True
>>> is_retryable_status(503), is_retryable_status(404)
(True, False)
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Longest Retry-After we sit through; a server asking for more is treated as down for now.
MAX_RETRY_AFTER = 120.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0


class Retry(Exception):
    """A transient failure of one attempt: the same source may work if tried again."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class SourceFailed(Exception):
    """This source cannot give us the blob (404, refused credentials, wrong bytes...)."""


def is_retryable_status(status: int) -> bool:
    """Request Timeout, Too Early, Too Many Requests and every server error."""
    return status in (408, 425, 429) or 500 <= status <= 599


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2...): exponential, with jitter.

    Half the delay is fixed and half random ("equal jitter"), so clients that
    failed together do not come back together.
    """
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


def retry_after(value: str | None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (a number or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
