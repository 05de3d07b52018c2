"""How much of a stored field a list shows: GitHub's lengths, applied on the way out.

>>> cut("x" * 400, DESCRIPTION_CHARS)[-3:], len(cut("x" * 400, DESCRIPTION_CHARS))
('xx…', 350)
>>> cut(None, NAME_CHARS) is None
True

Writes are checked against the input limits (:mod:`.api`, :mod:`.storage`); rows
written before those limits, or by an import, may be longer. Wherever many
entries are listed (``/``, ``/wiki``, ``/api/models``, ``/gists``, ``/gists/public``)
each field is cut here, so no stored value can make a list page huge; the
model's own page and ``GET /gists/{id}`` show the whole (write-limited) value.
"""

from __future__ import annotations

__all__ = [
    "DESCRIPTION_CHARS",
    "NAME_CHARS",
    "PAGE_TEXT_CHARS",
    "PROBLEM_LINES",
    "TEXT_CHARS",
    "URL_CHARS",
    "cut",
    "cut_lines",
]

NAME_CHARS = 255  # GitHub's file-name limit, and more than any model name needs
DESCRIPTION_CHARS = 350  # GitHub's repository description limit
URL_CHARS = 2048  # longer is not a URL anyone types or a browser keeps
TEXT_CHARS = 1000  # a license, a task, an error message: one line of prose
PROBLEM_LINES = 20
PAGE_TEXT_CHARS = 10_000  # a title or description on a model's own page


def cut(text: str | None, limit: int) -> str | None:
    """``text`` at most ``limit`` characters long, ending in ``…`` when it was cut."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def cut_lines(text: str, lines: int = PROBLEM_LINES, width: int = TEXT_CHARS) -> list[str]:
    """The first ``lines`` non-empty lines of ``text``, each cut to ``width``."""
    out = []
    for line in text[: lines * (width + 2)].splitlines():  # never split a huge text whole
        if line:
            out.append(cut(line, width) or "")
            if len(out) == lines:
                break
    return out
