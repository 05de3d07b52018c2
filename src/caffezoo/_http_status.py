"""What an HTTP status and a few headers (``Retry-After``, lengths, ``Content-Range``) tell a
client, without importing httpx.

>>> is_retryable_status(503), is_retryable_status(404), retry_after("120")
(True, False, 120.0)

:mod:`caffezoo._http` re-exports both; :mod:`caffezoo.fetch.wire` reads plain
``http://`` answers with them, where loading httpx would cost more start-up
time than the download's first piece.
"""

from __future__ import annotations

import re

__all__ = ["header_number", "is_retryable_status", "range_start", "range_total", "retry_after"]


def is_retryable_status(status: int) -> bool:
    """Request Timeout, Too Early, Too Many Requests and every server error."""
    return status in (408, 425, 429) or 500 <= status <= 599


def retry_after(value: str | None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (a number or an HTTP date); None if neither."""
    if not value:
        return None
    value = value.strip()
    seconds = header_number(value)
    if seconds is not None:
        return float(seconds)
    from datetime import UTC, datetime  # only now: email.utils costs 4 ms of start-up
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def header_number(value: str | None) -> int | None:
    """The number a header such as ``Content-Length`` states; None unless it is ASCII digits
    (``str.isdigit`` also takes '²', which ``int`` refuses). ``int`` refuses over 4,300 digits,
    leading zeros too; past 20 the number is more than any file's length, whatever its digits.

    >>> header_number("0" * 5000 + "10"), header_number("9" * 5000) == 10**20, header_number("²")
    (10, True, None)
    """
    if not value or not (value.isascii() and value.isdigit()):
        return None
    digits = value.lstrip("0")
    return int(digits or "0") if len(digits) <= 20 else 10**20


def range_start(value: str | None) -> int | None:
    """The first byte of a ``Content-Range``; None when there is none.

    >>> range_start("bytes 100-199/1000"), range_start("bytes */1000")
    (100, None)
    """
    m = re.match(r"\s*bytes\s+([0-9]+)-[0-9]+/([0-9]+|\*)", value or "")
    return header_number(m.group(1)) if m else None


def range_total(value: str | None) -> int | None:
    """The length of the whole file from a ``Content-Range``; None when it is not given.

    >>> range_total("bytes 100-199/1000"), range_total("bytes */1000"), range_total("bytes 0-9/*")
    (1000, 1000, None)
    """
    m = re.match(r"\s*bytes\s+(?:[0-9]+-[0-9]+|\*)/([0-9]+)", value or "")
    return header_number(m.group(1)) if m else None
