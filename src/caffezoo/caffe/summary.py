"""What ``caffezoo inspect`` reports: layers, shapes, parameters, MACs, weight mismatches.

>>> s = inspect_net("models/bvlc_alexnet/deploy.prototxt")   # doctest: +SKIP
>>> s.net.params, s.net.macs // s.batch                     # doctest: +SKIP
(60965224, 724406816)
>>> s.to_json()["layers"][1]["top_shapes"]                 # doctest: +SKIP
[[10, 96, 55, 55]]

The target is a prototxt file, with the weights to check against it if any
(:func:`caffezoo.zoo.locate` finds both for a MODEL). Nothing here raises for a
net Caffe would reject: the summary carries every problem instead, so a broken
model can still be looked at.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .net import Net, describe_shape, load_net

__all__ = ["Summary", "format_count", "format_macs", "inspect_net", "shape_text"]


@dataclass
class Summary:
    net: Net
    prototxt: str
    weights: str | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)  # {layer, message, fatal}
    skipped: list[str] = field(default_factory=list)  # unknown fields skipped with --skip-unknown

    @property
    def batch(self) -> int:
        """The first input's leading dimension (1 when unknown)."""
        for shape in self.net.inputs.values():
            if shape:
                return shape[0] or 1
        return 1

    @property
    def fatal(self) -> bool:
        return any(p["fatal"] for p in self.problems)

    def to_json(self) -> dict[str, Any]:
        net = self.net
        return {
            "name": net.name,
            "prototxt": self.prototxt,
            "weights": self.weights,
            "phase": net.phase,
            "upgrade_steps": net.upgrade_steps,
            "inputs": {k: list(v) if v is not None else None for k, v in net.inputs.items()},
            "outputs": net.outputs,
            "layers": [
                {
                    "name": x.name,
                    "type": x.type,
                    "bottoms": x.bottoms,
                    "tops": x.tops,
                    "in_place": x.in_place,
                    "line": x.line,
                    "top_shapes": [list(s) if s is not None else None for s in x.top_shapes],
                    "param_shapes": [list(s) for s in x.param_shapes] if x.param_shapes is not None else None,
                    "weights": [list(b.shape) for b in x.blobs] if x.blobs else None,
                    "params": x.params,
                    "macs": x.macs,
                    "problem": x.problem,
                }
                for x in net.layers
            ],
            "totals": {
                "layers": len(net.layers),
                "params": net.params,
                "macs": net.macs,
                "batch": self.batch,
                "macs_per_sample": net.macs // self.batch if net.macs is not None else None,
            },
            "problems": self.problems,
            "skipped_fields": self.skipped,
        }


def inspect_net(
    prototxt: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    *,
    phase: str = "TEST",
    skip_unknown: bool = False,
    input_shapes: dict[str, list[int]] | None = None,
) -> Summary:
    """Load ``prototxt`` like Caffe would and collect what is wrong with it (and with ``weights``)."""
    from .prototxt import load_prototxt

    prototxt = Path(prototxt)
    weights_path = Path(weights) if weights is not None else None
    parsed = load_prototxt(prototxt, skip_unknown=skip_unknown)  # read once: the net and its skipped fields
    net = load_net(parsed, phase=phase, input_shapes=input_shapes, strict=False)
    summary = Summary(
        net,
        str(prototxt),
        str(weights_path) if weights_path else None,
        skipped=[f"{prototxt}:{s}" for s in parsed.skipped],
    )
    for layer in net.layers:
        if layer.problem:
            summary.problems.append({"layer": layer.name, "message": layer.problem, "fatal": True})
    if weights_path is not None:
        from .net import attach_weights

        attach_weights(net, weights_path, strict=False)
        summary.problems.extend(
            {"layer": p.layer, "message": p.message, "fatal": p.fatal} for p in net.weight_problems
        )
    return summary


def format_count(n: int | None) -> str:
    """``60,965,224``; ``?`` when unknown."""
    return "?" if n is None else f"{n:,}"


def format_macs(n: int | None) -> str:
    """``724.4M``, ``1.6G``; ``?`` when unknown."""
    if n is None:
        return "?"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def shape_text(shapes) -> str:
    return ", ".join(describe_shape(s) for s in shapes) if shapes else "-"
