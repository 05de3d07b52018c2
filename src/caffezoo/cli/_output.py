"""What every command prints, written without Typer so that the quick commands need not import it.

``caffezoo validate`` and a re-download run their whole course on these (see :mod:`._quick`);
the Typer commands use the same ones.
"""

from __future__ import annotations

import re
import sys
from typing import Any

__all__ = [
    "console",
    "echo",
    "error_line",
    "human_size",
    "print_json",
    "state",
    "styled",
    "warning_line",
]

state: dict[str, bool] = {"debug": False}

# SGR codes as click writes them, so output is the same to the byte whichever path printed it.
_COLORS = {"red": 31, "green": 32, "yellow": 33}


def styled(text: str, fg: str, *, bold: bool = False) -> str:
    """``text`` in colour ``fg`` (red, green or yellow), e.g. ``styled("ok", "green")``; the caller
    decides whether the stream is a terminal."""
    return f"\x1b[{_COLORS[fg]}m" + ("\x1b[1m" if bold else "") + text + "\x1b[0m"


def echo(text: str = "", *, err: bool = False) -> None:
    """One line on stdout (or stderr), flushed at once, written as click's echo writes it: nothing
    when the stream is closed (None), and UTF-8 (what cannot be encoded as ``?``) when its encoding
    is ASCII (PYTHONIOENCODING=ascii, an ASCII locale), where writing ``é`` would raise."""
    stream = sys.stderr if err else sys.stdout
    if stream is None:
        return
    buffer = getattr(stream, "buffer", None)
    if buffer is not None and _is_ascii(getattr(stream, "encoding", None)):
        stream.flush()
        buffer.write((text + "\n").encode("utf-8", "replace"))
        buffer.flush()
        return
    stream.write(text + "\n")
    stream.flush()


def _is_ascii(encoding: str | None) -> bool:
    import codecs

    try:
        return codecs.lookup(encoding or "ascii").name == "ascii"
    except LookupError:
        return False


def console(stderr: bool = False):
    """A rich Console (imported on first use: printing help does not need it).

    On a terminal, tables fit its width; piped or redirected, rows are printed
    whole (rich would otherwise squeeze them into 80 columns and cut names and
    shapes with an ellipsis), so what a script or a file gets is complete.
    """
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 100_000
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def print_json(data: Any) -> None:
    """Dump ``data`` as indented JSON on stdout, through :func:`caffezoo.jsonable` like every result."""
    import json  # here: `caffezoo --help` and table output do not need it

    from .._json import jsonable

    text = json.dumps(jsonable(data), indent=2, ensure_ascii=False)
    # A file name that is not UTF-8 holds lone surrogates (os.fsdecode): escaped, the document stays
    # valid UTF-8 and json.loads then os.fsencode give the name's bytes back.
    sys.stdout.write(_LONE_SURROGATE.sub(lambda m: f"\\u{ord(m[0]):04x}", text) + "\n")


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _on_stderr(text: str, fg: str, *, bold: bool = False) -> str:
    # Styled by hand: rich would cost start-up time, and click comes only with Typer.
    return styled(text, fg, bold=bold) if sys.stderr.isatty() else text


def error_line(message: str) -> None:
    """One red ``error:`` line per problem on stderr (plain when stderr is not a terminal)."""
    for line in str(message).splitlines() or [""]:
        echo(f"{_on_stderr('error:', 'red', bold=True)} {line}", err=True)


def warning_line(message: str) -> None:
    echo(f"{_on_stderr('warning:', 'yellow')} {message}", err=True)


def human_size(n: float) -> str:
    """``233.0 MiB``: a byte count as people read it."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
