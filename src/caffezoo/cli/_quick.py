"""The commands that run without Typer, and the parser that lets them.

Importing Typer (with the click it carries) is most of the start-up time of ``caffezoo validate``
and of a re-download that finds the weights in place. When a command line holds nothing but a
quick command's switches and arguments (``caffezoo validate --json DIR``), :func:`quick_call`
parses it here; anything else (an option with a value, ``--help``, a typo) goes to Typer, which
parses it and says what is wrong. Both paths run the same bodies below: the Typer commands in
:mod:`.zoo` and :mod:`.download` declare the options and help, and call them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ._output import echo, error_line, human_size, print_json, state, styled

__all__ = ["QUICK", "download_weights", "quick_call", "validate_models"]


def validate_models(
    directories: list[str], *, json: bool = False, quiet: bool = False, strict: bool = False
) -> int:
    """The body of ``caffezoo validate``; returns the exit status."""
    from ..validate import has_errors
    from ..validate import validate_model as run

    results = {str(d): run(d) for d in directories}
    problems = [p for ps in results.values() for p in ps]
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    if json:
        print_json(
            [
                {
                    "directory": d,
                    "ok": not has_errors(ps),
                    "problems": [
                        {"path": p.path, "line": p.line, "severity": p.severity, "message": p.message}
                        for p in ps
                    ],
                }
                for d, ps in results.items()
            ]
        )
    else:
        color = sys.stdout.isatty()
        for p in problems:
            if quiet and p.severity != "error":
                continue
            where = f"{p.path}:{p.line}" if p.line else p.path
            severity = (
                styled(p.severity, "red" if p.severity == "error" else "yellow") if color else p.severity
            )
            echo(f"{where}: {severity}: {p.message}")
        if not quiet:
            n = len(directories)
            verdict = "ok" if not errors else "failed"
            if color:
                verdict = styled(verdict, "green" if not errors else "red")
            echo(
                f"{verdict}: {errors} error{'s' * (errors != 1)}, {warnings} "
                f"warning{'s' * (warnings != 1)} in {n} director{'ies' if n != 1 else 'y'}"
            )
    return 1 if errors or (strict and warnings) else 0


def _as_json(outcome) -> dict:
    """One model's line of `--json`: model, ok, error, and the result's fields when it has one."""
    from .._json import jsonable

    out = {"model": outcome.model, "ok": outcome.error is None, "error": None}
    if outcome.error is not None:
        out["error"] = str(outcome.error)
    if outcome.result is not None:
        out.update(jsonable(outcome.result))
    return out


def download_weights(
    models: list[str],
    *,
    output: Path | None = None,
    jobs: int = 4,
    verify: bool = False,
    symlink: bool = False,
    copy: bool = False,
    allow_local: bool = False,
    connections: int | None = None,
    per_host: int | None = None,
    limit_rate: str | None = None,
    json: bool = False,
    quiet: bool = False,
) -> int:
    """The body of ``caffezoo download``; returns the exit status."""
    from ..errors import CaffezooError, UsageError

    if output is not None and len(models) != 1:
        raise UsageError("--output takes exactly one MODEL")
    if symlink and copy:
        raise UsageError("--symlink and --copy exclude each other")
    how = "symlink" if symlink else "copy" if copy else "link"
    rate = None
    if limit_rate is not None:
        from ..fetch.limits import RateLimit, parse_rate

        rate = RateLimit(parse_rate(limit_rate))  # one limit for every model together

    from ..download import download_many
    from ._progress import Display

    with Display(quiet=quiet) as display:
        try:
            outcomes = download_many(
                models,
                jobs=jobs,
                progress=display.callback,
                verify=verify,
                how=how,
                output=output,
                allow_local=allow_local,
                connections=connections,
                per_host=per_host,
                limit_rate=rate,
            )
        except KeyboardInterrupt:
            display.close()
            error_line("interrupted; the bytes received are kept and the next run resumes from them")
            return 130
        for o in outcomes:
            r = o.result
            if r is None:
                display.finish(o.model, "[red]failed[/]")
            else:
                display.finish(o.model, f"[green]{r.status}[/]", r.size)

    failures = [o for o in outcomes if o.error is not None]
    for o in failures:
        if not isinstance(o.error, CaffezooError) or state["debug"]:
            raise o.error  # a bug: let it show its traceback
    if json:
        print_json([_as_json(o) for o in outcomes])
    elif not quiet:
        # Plain lines, no markup: rich would cost a re-download most of its start-up time.
        for o in outcomes:
            r = o.result
            if r is None:
                continue
            more = len(r.sources) - 1
            also = f" and {more} more source{'s' * (more > 1)}" if more > 0 else ""
            what = {
                "present": "already there",
                "cached": "installed from the cache",
                "downloaded": f"downloaded {human_size(r.size)} from {r.source}{also}",
            }[r.status]
            echo(f"{o.model}: {what}, sha1 ok: {r.path}")
    for o in failures:
        error_line(f"{o.model}: {o.error}")
    return max((getattr(o.error, "exit_code", 1) for o in failures), default=0)


@dataclass(frozen=True)
class Quick:
    """A command that may run without Typer: its body, the parameter its words go to, its switches."""

    run: Callable[..., int]
    arguments: str
    switches: dict[str, str]  # each switch (every spelling) and the parameter it turns on


# Kept equal to the Typer commands' switches by tests/test_cli.py.
QUICK = {
    "validate": Quick(
        validate_models,
        "directories",
        {"--json": "json", "--quiet": "quiet", "-q": "quiet", "--strict": "strict"},
    ),
    "download": Quick(
        download_weights,
        "models",
        {
            "--verify": "verify",
            "--symlink": "symlink",
            "--copy": "copy",
            "--allow-local": "allow_local",
            "--json": "json",
            "--quiet": "quiet",
            "-q": "quiet",
        },
    ),
}


def quick_call(args: list[str]) -> Callable[[], int] | None:
    """The body to run for ``args`` (what follows ``caffezoo``), or None when Typer must parse them.

    ``quick_call(["validate", "-q", "models/x"])`` is ``validate_models(["models/x"], quiet=True)``.
    """
    debug = False
    from . import _GLOBAL_OPTIONS  # --debug, the group's one option, which takes no value

    while args and args[0] in _GLOBAL_OPTIONS:
        debug, args = True, args[1:]
    quick = QUICK.get(args[0]) if args else None
    if quick is None:
        return None
    words: list[str] = []
    on: dict[str, Any] = {}
    for arg in args[1:]:
        if arg in quick.switches:
            on[quick.switches[arg]] = True
        elif arg.startswith("-"):
            return None  # an option with a value, --help, `--`, `-` or a typo: Typer's to parse
        else:
            words.append(arg)
    if not words:
        return None  # Typer says which argument is missing
    state["debug"] = debug
    return partial(_as_typer_ends_it, partial(quick.run, words, **on))


def _as_typer_ends_it(run: Callable[[], int]) -> int:
    """``run()``, ending a Ctrl-C as Typer ends it for the same command parsed by Typer: status 130,
    nothing printed, --debug or not (``caffezoo validate`` before it had a quick path)."""
    try:
        return run()
    except KeyboardInterrupt:
        return 130
