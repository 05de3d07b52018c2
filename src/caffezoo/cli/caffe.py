"""Commands about Caffe nets: inspect, draw, upgrade."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import JSON_OPTION, QUIET_OPTION, app, flag, parse_input_shapes
from ._output import console, print_json

__all__ = ["PHASE_OPTION", "SKIP_UNKNOWN_OPTION", "draw", "inspect", "upgrade"]


PHASE_OPTION = typer.Option(
    "TEST", "--phase", help="Which layers to keep: TEST (deployment) or TRAIN.", case_sensitive=False
)
SKIP_UNKNOWN_OPTION = flag(
    "--skip-unknown",
    help="Skip parameter blocks the schema does not know (Caffe forks) instead of failing.",
)


@app.command()
def inspect(
    target: str = typer.Argument(..., help="A prototxt file, a model directory or a bundled model name."),
    weights: Path = typer.Option(
        None,
        "--weights",
        "-w",
        help="A .caffemodel to check against the net [default: the model's downloaded weights, if any].",
    ),
    phase: str = PHASE_OPTION,
    inputs: list[str] = typer.Option(
        None, "--input", help="Override an input's shape: NAME=N,C,H,W (repeatable)."
    ),
    skip_unknown: bool = SKIP_UNKNOWN_OPTION,
    json: bool = JSON_OPTION,
) -> None:
    """Show a net layer by layer: type, bottoms -> tops, output shape, parameters, MACs; then totals.

    With weights, name every mismatch between the net and the caffemodel: missing
    or extra layers, blob counts, shapes. Exits 1 when Caffe itself would refuse
    the net or the weights.
    """
    from ..caffe.summary import format_count, format_macs, inspect_net, shape_text
    from ..zoo import locate

    where = locate(target, weights)
    summary = inspect_net(
        where.prototxt,
        where.weights,
        phase=phase.upper(),
        skip_unknown=skip_unknown,
        input_shapes=parse_input_shapes(inputs),
    )
    if json:
        print_json(summary)
    else:
        from rich.markup import escape
        from rich.table import Table

        net = summary.net
        out = console()
        title = f"{net.name or Path(summary.prototxt).stem} ({summary.prototxt}, phase {net.phase})"
        table = Table(title=escape(title), title_justify="left")
        for column in ("layer", "type", "bottoms -> tops", "output shape", "params", "MACs"):
            table.add_column(column, justify="right" if column in ("params", "MACs") else "left")
        for x in net.layers:
            wiring = f"{', '.join(x.bottoms) or '-'} -> {', '.join(x.tops) or '-'}"
            if any(x.in_place):
                wiring += " (in place)"
            table.add_row(
                escape(x.name),
                escape(x.type),
                escape(wiring),
                shape_text(x.top_shapes),
                format_count(x.params),
                format_macs(x.macs),
            )
        out.print(table)
        per = (
            f" ({format_macs(net.macs // summary.batch)} per sample)"
            if net.macs and summary.batch > 1
            else ""
        )
        out.print(
            f"{len(net.layers)} layers, {format_count(net.params)} parameters, "
            f"{format_macs(net.macs)} MACs{per}"
        )
        for step in net.upgrade_steps:
            out.print(f"[dim]upgraded: {escape(step)}[/]")
        for skipped in summary.skipped:
            out.print(f"[yellow]skipped unknown field:[/] {escape(skipped)}")
        if summary.weights:
            out.print(f"weights: {escape(summary.weights)}")
        for p in summary.problems:
            color, label = ("red", "error") if p["fatal"] else ("yellow", "warning")
            out.print(f"[{color}]{label}:[/] layer {escape(repr(p['layer']))}: {escape(p['message'])}")
        if summary.weights and not summary.problems:
            out.print("[green]the weights fit the net[/]")
    if summary.fatal:
        raise typer.Exit(1)


@app.command()
def upgrade(
    source: Path = typer.Argument(..., help="An old prototxt (net or solver) or .caffemodel."),
    target: Path = typer.Argument(..., help="Where to write the upgraded file (never the source)."),
    skip_unknown: bool = SKIP_UNKNOWN_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Upgrade a V0/V1 prototxt or caffemodel to today's format, by Caffe's own rules.

    Like Caffe's upgrade_net_proto_text / upgrade_net_proto_binary: V1 layers
    with enum types become V2 layers, net inputs become an Input layer, and so on.
    Weights are copied byte for byte. The target is written atomically.
    """
    from ..caffe.upgrade import upgrade_file

    result = upgrade_file(source, target, skip_unknown=skip_unknown)
    if quiet:
        return
    from rich.markup import escape

    out = console()
    for step in result.steps:
        out.print(f"upgraded: {escape(step)}")
    for warning in result.warnings:
        out.print(f"[yellow]warning:[/] {escape(warning)}")
    out.print(f"wrote {escape(str(target))}" + ("" if result.changed else " (it was already up to date)"))


@app.command()
def draw(
    target: str = typer.Argument(..., help="A prototxt file, a model directory or a bundled model name."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="The picture to write: .svg, .png, .pdf or .dot."
    ),
    rankdir: str = typer.Option(
        "LR",
        "--rankdir",
        help="Direction of the graph: LR (left to right) or TB (top to bottom); RL and BT work too.",
        case_sensitive=False,
    ),
    phase: str = PHASE_OPTION,
    skip_unknown: bool = SKIP_UNKNOWN_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Draw a net as a graph picture, like Caffe's draw_net.py (needs graphviz's `dot`)."""
    from ..caffe.draw import draw as draw_net
    from ..zoo import locate

    path = draw_net(
        locate(target).prototxt,
        output,
        rankdir=rankdir.upper(),
        phase=phase.upper(),
        skip_unknown=skip_unknown,
    )
    if not quiet:
        from rich.markup import escape

        console().print(f"wrote {escape(str(path))}")
