"""Pictures of nets, like Caffe's ``draw_net.py``: layers as boxes, blobs as octagons.

>>> svg = to_svg(load_net("deploy.prototxt"))                       # doctest: +SKIP
>>> draw("deploy.prototxt", "net.png", rankdir="TB", phase="TRAIN")  # doctest: +SKIP

Layout is Graphviz's ``dot`` (Debian package ``graphviz``), the layered
layout Caffe's own script used through pydot: a hand-made layout would be
worse at exactly what matters here (long chains with branches and merges).
:func:`to_dot` needs nothing; :func:`to_svg` and :func:`draw` run ``dot``.

Each layer box shows its name, type, the parameters that shape its output
(kernel, stride, pad, outputs) and its output shape. A layer working in place
gets its own box on the blob's path, so the picture stays a DAG.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..errors import DrawError
from ._files import atomic_open
from .net import Layer, Net, describe_shape, load_net

__all__ = ["FORMATS", "RANKDIRS", "draw", "to_dot", "to_svg"]


RANKDIRS = ("LR", "TB", "RL", "BT")
FORMATS = ("svg", "png", "pdf", "dot")
_COLORS = {
    "Convolution": "#FF5050",
    "Deconvolution": "#FF7777",
    "Pooling": "#FF9900",
    "InnerProduct": "#CC33FF",
    "Concat": "#33AA99",
    "Eltwise": "#33AA99",
    "Input": "#A0C8F0",
    "Data": "#A0C8F0",
    "ImageData": "#A0C8F0",
}
_DEFAULT_COLOR = "#6495ED"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _details(layer: Layer) -> list[str]:
    """The parameters worth reading on the box."""
    p = layer.type_param
    out = []
    if layer.type in ("Convolution", "Deconvolution"):
        out.append(f"{p.num_output} outputs")
        if p.kernel_size or p.HasField("kernel_h"):
            k = [p.kernel_h, p.kernel_w] if p.HasField("kernel_h") else list(p.kernel_size)
            out.append("kernel " + "x".join(map(str, k)))
        if p.stride:
            out.append("stride " + "x".join(map(str, p.stride)))
        if p.pad:
            out.append("pad " + "x".join(map(str, p.pad)))
        if p.group > 1:
            out.append(f"group {p.group}")
    elif layer.type == "Pooling":
        kind = p.DESCRIPTOR.fields_by_name["pool"].enum_type.values_by_number[p.pool].name
        if p.global_pooling:
            out.append(f"{kind} global")
        else:
            out.append(
                f"{kind} {p.kernel_size or p.kernel_h}, stride {p.stride}"
                + (f", pad {p.pad}" if p.pad else "")
            )
    elif layer.type == "InnerProduct":
        out.append(f"{p.num_output} outputs")
    return out


def to_dot(net: Net, rankdir: str = "LR") -> str:
    """The net as Graphviz DOT text."""
    if rankdir not in RANKDIRS:
        raise DrawError(f"rankdir must be one of {', '.join(RANKDIRS)}, not {rankdir!r}")
    lines = [
        f"digraph {_quote(net.name or 'net')} {{",
        f"  rankdir={rankdir};",
        '  node [fontname="Helvetica", fontsize=10];',
        '  edge [color="#555555"];',
    ]
    version: dict[str, int] = {}

    def blob_node(name: str, new: bool = False) -> str:
        if new or name not in version:
            version[name] = version.get(name, -1) + 1
            node = f"blob:{name}:{version[name]}"
            lines.append(
                f'  {_quote(node)} [label={_quote(name)}, shape=octagon, style=filled, fillcolor="#E0E0E0"];'
            )
        return f"blob:{name}:{version[name]}"

    for i, layer in enumerate(net.layers):
        node = f"layer:{i}"
        label = "\n".join(
            [
                layer.name,
                f"({layer.type})",
                *_details(layer),
                *([" / ".join(describe_shape(s) for s in layer.top_shapes)] if layer.top_shapes else []),
            ]
        )
        color = _COLORS.get(layer.type, _DEFAULT_COLOR)
        lines.append(
            f"  {_quote(node)} [label={_quote(label)}, shape=box, style=filled, fillcolor={_quote(color)}];"
        )
        for bottom in layer.bottoms:
            lines.append(f"  {_quote(blob_node(bottom))} -> {_quote(node)};")
        for top in layer.tops:
            lines.append(f"  {_quote(node)} -> {_quote(blob_node(top, new=True))};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot(source: str, fmt: str, timeout: float = 120.0, nice: bool = False) -> bytes:
    exe = shutil.which("dot")
    if exe is None:
        raise DrawError(
            "graphviz's `dot` is not installed (Debian/Ubuntu: apt-get install graphviz; "
            "macOS: brew install graphviz); `-o net.dot` writes the graph without it"
        )
    try:
        # `nice` (it execs dot: the timeout kills dot itself) lets a server's requests go first.
        prefix = ["nice", "-n", "10"] if nice and shutil.which("nice") else []
        done = subprocess.run(
            [*prefix, exe, f"-T{fmt}"], input=source.encode("utf-8"), capture_output=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:  # run() has killed it
        raise DrawError(
            f"graphviz's `dot` took more than {timeout:g} s; the net is too large to draw"
        ) from None
    if done.returncode != 0:
        raise DrawError(f"graphviz's `dot` failed: {done.stderr.decode('utf-8', 'replace').strip()}")
    return done.stdout


def to_svg(
    net: Net | str | os.PathLike[str],
    rankdir: str = "LR",
    phase: str = "TEST",
    timeout: float = 120.0,
    nice: bool = False,
) -> str:
    """The net (or the prototxt at a path) as an SVG document; ``dot`` is killed after ``timeout``
    seconds, and runs at a lower CPU priority with ``nice``."""
    if not isinstance(net, Net):
        net = load_net(net, phase=phase, strict=False)
    return _dot(to_dot(net, rankdir), "svg", timeout, nice).decode("utf-8")


def draw(
    prototxt: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    rankdir: str = "LR",
    phase: str = "TEST",
    skip_unknown: bool = False,
) -> Path:
    """Draw the net at ``prototxt`` into ``output``; the format is its suffix (svg, png, pdf, dot)."""
    out = Path(output)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise DrawError(f"{out}: cannot tell the format from the suffix; use .{', .'.join(FORMATS)}")
    net = load_net(prototxt, phase=phase, skip_unknown=skip_unknown, strict=False)
    source = to_dot(net, rankdir)
    data = source.encode("utf-8") if fmt == "dot" else _dot(source, fmt)
    with atomic_open(out) as f:
        f.write(data)
    return out
