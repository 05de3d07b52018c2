"""The ``caffezoo`` command line: thin Typer commands over the library.

Each command parses its arguments, calls one library function and prints the
result. A :class:`~caffezoo.errors.CaffezooError` becomes red ``error:`` lines
on stderr and a non-zero exit (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import sys

from . import cache as _cache  # noqa: F401
from . import caffe as _caffe  # noqa: F401  (registers commands)
from . import download as _download  # noqa: F401
from . import gist as _gist  # noqa: F401
from . import runtime as _runtime  # noqa: F401
from . import serve as _serve  # noqa: F401
from . import wiki as _wiki  # noqa: F401
from . import zoo as _zoo  # noqa: F401  (registers commands)
from ._app import app, error_line, state

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``caffezoo`` console script and ``python -m caffezoo``."""
    try:
        app(args=argv, prog_name="caffezoo")
    except KeyboardInterrupt:
        if state["debug"]:
            raise
        error_line("interrupted")
        sys.exit(130)
    except Exception as e:
        # errors is imported only now: `caffezoo --help` and commands that succeed do not need it.
        from ..errors import CaffezooError

        if state["debug"] or not isinstance(e, CaffezooError):
            raise
        error_line(str(e))
        sys.exit(e.exit_code)
