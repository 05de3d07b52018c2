"""``caffezoo download``: fetch, verify and install models' weights."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import JSON_OPTION, QUIET_OPTION, app, flag
from ._output import error_line, human_size, print_json, state

__all__ = ["download"]


def _as_json(outcome) -> dict:
    """One model's line of `--json`: model, ok, error, and the result's fields when it has one."""
    from .._json import jsonable

    out = {"model": outcome.model, "ok": outcome.error is None, "error": None}
    if outcome.error is not None:
        out["error"] = str(outcome.error)
    if outcome.result is not None:
        out.update(jsonable(outcome.result))
    return out


@app.command()
def download(
    models: list[str] = typer.Argument(..., help="Model directories or bundled model names."),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Install the weights at FILE instead of the model directory (one MODEL).",
    ),
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, help="How many models to download at once."),
    verify: bool = flag(
        "--verify",
        help="Re-hash files already there instead of trusting the record of their last check.",
    ),
    symlink: bool = flag("--symlink", help="Install a symbolic link to the cached blob."),
    copy: bool = flag("--copy", help="Install a copy of the cached blob, not a hard link."),
    allow_local: bool = flag(
        "--allow-local",
        help="Let the front matter name file:// URLs (refused by default: a model from a gist "
        "must not read your files). file:// mirrors in CAFFEZOO_MIRRORS are always allowed.",
    ),
    connections: int = typer.Option(
        None,
        "--connections",
        "-c",
        min=1,
        max=64,
        help="Connections per file (default 8): a file of 8 MiB or more comes in pieces, from "
        "every source that takes byte ranges at once.",
    ),
    per_host: int = typer.Option(
        None, "--per-host", min=1, max=64, help="At most N connections to one host (default: -c)."
    ),
    limit_rate: str = typer.Option(
        None, "--limit-rate", metavar="RATE", help="At most RATE bytes a second in all, e.g. 10M or 500k."
    ),
    json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Download the weights named in each MODEL's readme.md; confirm their SHA-1.

    Each file lands at MODEL/<caffemodel> (bundled models: under
    CAFFEZOO_HOME/models/), hard-linked to a verified blob in the cache,
    so weights that several models share are fetched once.

    Sources, in order: the cache; each CAFFEZOO_MIRRORS base, as
    <base>/blobs/sha1/<sha1>; caffemodel_url; the front matter's mirrors.

    A file of 8 MiB or more comes in pieces over -c connections, from every
    source that takes byte ranges at once; a source that sends wrong bytes
    is named. Interrupted downloads resume on the next run; failures are
    retried with backoff. Exit status 0 only when every file is in place and right.
    """
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
            raise typer.Exit(130) from None
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
            typer.echo(f"{o.model}: {what}, sha1 ok: {r.path}")
    for o in failures:
        error_line(f"{o.model}: {o.error}")
    if failures:
        raise typer.Exit(max(getattr(o.error, "exit_code", 1) for o in failures))
