"""The ``caffezoo`` command line: thin Typer commands over the library.

Each command parses its arguments, calls one library function and prints the
result. A :class:`~caffezoo.errors.CaffezooError` becomes red ``error:`` lines
on stderr and a non-zero exit (``--debug`` shows the traceback instead).

A command imports only the module that defines it (see :data:`COMMANDS`), and
``caffezoo --help`` prints the text :mod:`._help` keeps, so neither builds the
whole command tree; a test checks both against the full tree.
"""

from __future__ import annotations

import atexit
import importlib
import os
import signal
import sys
from collections.abc import Callable
from functools import partial
from typing import Any, TextIO

__all__ = ["COMMANDS", "MODULES", "app", "load_commands", "main"]

# The command modules, in the order their commands are listed by --help.
MODULES = ("cache", "caffe", "download", "gist", "zoo", "runtime", "serve", "wiki")
# Each top-level command (or group) and the module that registers it.
COMMANDS = {
    "cache": "cache",
    "inspect": "caffe",
    "upgrade": "caffe",
    "draw": "caffe",
    "download": "download",
    "gist": "gist",
    "list": "zoo",
    "show": "zoo",
    "new": "zoo",
    "validate": "zoo",
    "convert": "runtime",
    "run": "runtime",
    "serve": "serve",
    "wiki": "wiki",
}
# The options of the `caffezoo` group itself (none takes a value).
_GLOBAL_OPTIONS = ("--debug",)


def load_commands(modules: tuple[str, ...] = MODULES):
    """Import the command modules (each registers its commands on the app); return the app."""
    for name in modules:
        importlib.import_module(f"{__name__}.{name}")
    from ._app import app

    # Listed in MODULES order whatever order the modules were imported in (stable within one).
    def rank(module: str) -> int:
        short = module.rpartition(".")[2]
        return MODULES.index(short) if short in MODULES else len(MODULES)

    app.registered_commands.sort(key=lambda c: rank(c.callback.__module__ if c.callback else ""))
    app.registered_groups.sort(key=lambda g: rank(COMMANDS.get(g.name or "", "")))
    return app


def _command(args: list[str]) -> str | None:
    """The command the arguments name, if they name one: the first word after the global options."""
    for arg in args:
        if arg not in _GLOBAL_OPTIONS:
            return None if arg.startswith("-") else arg
    return None


def _help_fits() -> bool:
    """True when click would format the help 78 columns wide, as the kept text is (80 or more)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 80  # not a terminal: click falls back to 80 too
    return columns >= 80


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``caffezoo`` console script and ``python -m caffezoo``."""
    if argv is not None:  # called from Python (tests): exits stay exceptions
        return _main(list(argv))
    try:
        _main(sys.argv[1:])
    except SystemExit as e:
        if e.code in (130, 143):  # Ctrl-C or SIGTERM, and the files being written are cleaned up
            _leave_now(e.code)
        raise


def _leave_now(code: int) -> None:
    """End the process at once, past the interpreter's teardown.

    A worker thread may still be inside onnxruntime (or reading from a stalled pipe) when a signal
    ends the command; tearing down the interpreter and onnxruntime's thread pools under that call
    aborted the process ('terminate called without an active exception', status -6). Everything
    that had to be cleaned up was, while the exit unwound; what is left is the exit hooks (atexit:
    the downloads save the bytes their threads wrote since the last save) and flushing the output."""
    atexit._run_exitfuncs()  # os._exit skips them; they print their own errors and go on
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _null_stream(fd: int) -> TextIO:
    """/dev/null as descriptor ``fd`` (1 or 2), closed when the process began.

    Opened plainly it would take the lowest free descriptor, 0 when stdin is closed too, and the
    next file the command opens (a download's lock or part file) would become fd 1 or 2, where C
    libraries and the interpreter's fatal errors write."""
    null = os.open(os.devnull, os.O_WRONLY)
    if null != fd:
        try:
            os.fstat(fd)
        except OSError:  # still free: hold it with /dev/null
            os.dup2(null, fd)
            os.close(null)
            null = fd
    return open(null, "w")  # noqa: SIM115 (for the process's life)


def _main(args: list[str]) -> None:
    for fd, name in ((1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is None:  # started with it closed (`>&-`): what it gets goes nowhere
            setattr(sys, name, _null_stream(fd))
    if args in (["--help"], ["-h"]) and _help_fits():
        from ._help import TOP_LEVEL

        sys.stdout.write(TOP_LEVEL)
        sys.stdout.flush()
        sys.exit(0)
    from ._quick import quick_call

    run = quick_call(args)  # a validate or download of switches and words only: no Typer
    if run is None:
        command = _command(args)
        app = load_commands((COMMANDS[command],) if command in COMMANDS else MODULES)
        run = partial(app, args=args, prog_name="caffezoo")
    from ._output import error_line, state

    previous = _exit_on_sigterm()
    _names_as_bytes()
    try:
        sys.exit(_quiet_pipe(run))
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
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _quiet_pipe(run: Callable[[], int | None]) -> int | None:
    """``run()``; a reader that went away (``caffezoo validate ... | head -1``) ends it with status 1
    and no traceback, as click does for the Typer commands."""
    try:
        try:
            return run()
        finally:
            # What is still buffered (--json's document) is written now, where a reader gone is seen,
            # not by the interpreter's last flush ("Exception ignored ... BrokenPipeError", status 120).
            if sys.stdout is not None:
                sys.stdout.flush()
    except BrokenPipeError:
        # Nothing more can reach that reader; the interpreter's last flush must not complain either.
        # Only the broken stream goes to /dev/null: with stderr gone, what stdout holds (download
        # --json's document) still goes to its file or reader.
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:  # None: closed when the process began (`>&-`)
                    stream.flush()
            except BrokenPipeError:
                os.dup2(devnull, stream.fileno())
        os.close(devnull)
        return 1


def _names_as_bytes() -> None:
    """Print a file name that is not UTF-8 as the bytes it is, as ls does: Python's stdout refuses its
    lone surrogates (os.fsdecode's) under a UTF-8 locale, a traceback in the middle of the results."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)  # not when stdout was replaced (a test's)
    if reconfigure is not None and sys.stdout.errors == "strict":
        reconfigure(errors="surrogateescape")


def _exit_on_sigterm() -> Any:
    """Make SIGTERM (kill, a CI timeout) unwind as an exit with status 143, as Ctrl-C does, so that files
    being written atomically are removed; the default action left their temporary files behind.
    Returns the handler to restore, or None when SIGTERM is someone else's (not the default, or not
    the main thread)."""
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return None

        def terminated(signum: int, frame: object) -> None:
            raise SystemExit(128 + signum)

        return signal.signal(signal.SIGTERM, terminated)
    except ValueError:  # not the main thread
        return None


def __getattr__(name: str):
    if name == "app":  # the whole command tree, e.g. for typer's testing tools
        return load_commands()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
