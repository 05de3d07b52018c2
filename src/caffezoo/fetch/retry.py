"""How one attempt on a source failed: worth another try, or not.

When to try again and how long to wait (backoff, ``Retry-After``, which
statuses) is the one HTTP layer's policy, :mod:`caffezoo._http`.
"""

from __future__ import annotations

__all__ = ["Retry", "SourceFailed"]


class Retry(Exception):
    """A transient failure of one attempt: the same source may work if tried again.

    ``busy``: the source said it has too much to do (429, 503): it should be asked less.
    """

    def __init__(self, message: str, retry_after: float | None = None, busy: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.busy = busy


class SourceFailed(Exception):
    """This source cannot give us the blob (404, refused credentials, wrong bytes...)."""


class WrongFile(SourceFailed):
    """The source serves another file (another length): the bytes it gave before are suspect too."""


class Unsatisfiable(Exception):
    """A 416: the range asked for is past the end of the file of ``total`` bytes (None: not said)."""

    def __init__(self, message: str, total: int | None):
        super().__init__(message)
        self.total = total
