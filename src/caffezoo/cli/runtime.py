"""Commands that run models: convert (to ONNX), run (classify images)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import JSON_OPTION, QUIET_OPTION, app, console, parse_input_shapes, print_json

__all__ = ["FILL_OPTION", "INPUT_OPTION", "MODEL_ARGUMENT", "WEIGHTS_OPTION", "convert", "run"]


MODEL_ARGUMENT = typer.Argument(
    ..., help="A model directory, a bundled model name, or a deploy .prototxt (then give --weights)."
)
WEIGHTS_OPTION = typer.Option(
    None, "--weights", "-w", help="The .caffemodel; default: the model's downloaded weights."
)
INPUT_OPTION = typer.Option(None, "--input", help="Override an input's shape: NAME=N,C,H,W (repeatable).")
FILL_OPTION = typer.Option(
    False,
    "--fill-missing",
    help="Layers the caffemodel lacks get their constant or "
    "bilinear filler values, as in Caffe (random fillers are refused).",
)


@app.command()
def convert(
    model: str = MODEL_ARGUMENT,
    output: Path = typer.Option(
        None, "--output", "-o", help="The ONNX file to write; default: ./MODEL.onnx."
    ),
    opset: int = typer.Option(17, "--opset", help="ONNX opset to target (13 or newer)."),
    weights: Path = WEIGHTS_OPTION,
    inputs: list[str] = INPUT_OPTION,
    extra: list[str] = typer.Option(None, "--blob", help="Also make this blob a graph output (repeatable)."),
    fixed_batch: bool = typer.Option(
        False, "--fixed-batch", help="Keep the deploy net's batch size instead of a symbolic batch axis."
    ),
    fill_missing: bool = FILL_OPTION,
    json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Convert a Caffe model to ONNX, with Caffe's numbers.

    Every layer becomes ONNX nodes named after it; tensors keep Caffe's blob
    names. Unsupported layers and missing weights are all listed before any work.
    """
    from ..runtime.convert import export

    converted = export(
        model,
        output,
        weights=weights,
        input_shapes=parse_input_shapes(inputs),
        opset=opset,
        outputs=extra or (),
        fill_missing=fill_missing,
        dynamic_batch=not fixed_batch,
    )
    info = converted.summary()
    if json:
        print_json(info)
        return
    if quiet:
        return

    def shape(dims: list) -> str:
        return "x".join("N" if d in (None, "batch") else str(d) for d in dims) or "?"

    out = console()
    out.print(
        f"wrote {info['path']} ({info['bytes'] / 1e6:.1f} MB, opset {info['opset']}, {info['nodes']} nodes, "
        f"{info['parameters']:,} parameters)"
    )
    out.print("inputs: " + ", ".join(f"{k} {shape(v)}" for k, v in info["inputs"].items()))
    out.print("outputs: " + ", ".join(f"{k} {shape(v)}" for k, v in info["outputs"].items()))
    if info["static_reason"]:
        out.print(f"[yellow]fixed batch size:[/] {info['static_reason']}")


@app.command()
def run(
    model: str = typer.Argument(..., help="A model directory or a bundled model name."),
    images: list[Path] = typer.Argument(..., help="Image files (JPEG, PNG, BMP...)."),
    top: int = typer.Option(5, "--top", "-k", help="How many classes to show per image."),
    batch_size: int = typer.Option(
        None, "--batch-size", "-b", help="Images per forward pass; default: 8, or the net's fixed batch."
    ),
    oversample: bool = typer.Option(
        False,
        "--oversample",
        help="Average ten crops (corners, centre, mirrored) instead of the centre crop.",
    ),
    resize: str = typer.Option(
        None,
        "--resize",
        help="Resize images to H[,W] before cropping; default: the mean image's size, else the net's input.",
    ),
    raw_scale: float = typer.Option(
        255.0, "--raw-scale", help="Pixel values are scaled from [0, 1] to this."
    ),
    mean: str = typer.Option(
        None,
        "--mean",
        help="Mean file (.binaryproto, .npy) or per-channel values in the "
        "net's channel order, e.g. 104,117,123 (one value: every channel); default: the "
        "front matter's `mean`.",
    ),
    labels: Path = typer.Option(
        None, "--labels", help="Class names, one per line; default: the front matter's `labels`."
    ),
    output: str = typer.Option(
        None, "--output", help="Which output blob holds the scores; default: the only one."
    ),
    weights: Path = WEIGHTS_OPTION,
    provider: list[str] = typer.Option(
        None,
        "--provider",
        help="onnxruntime execution provider, in order of "
        "preference (repeatable); default: CPUExecutionProvider.",
    ),
    json: bool = JSON_OPTION,
) -> None:
    """Classify images: Caffe-style preprocessing, then the top classes with their scores."""
    from ..runtime.classifier import classify

    size = _resize(resize) if resize else None
    mean_value = _mean(mean) if mean else None
    predictions = classify(
        model,
        images,
        top=top,
        batch_size=batch_size,
        oversample=oversample,
        resize=size,
        raw_scale=raw_scale,
        mean=mean_value,
        labels=labels,
        output=output,
        weights=weights,
        providers=provider or None,
    )
    if json:
        print_json(predictions)
        return
    from rich.markup import escape

    out = console()
    for p in predictions:
        out.print(f"[bold]{escape(p.image)}[/]")
        for s in p.top:
            label = f"  {escape(s.label)}" if s.label else ""
            out.print(f"  {s.score:.4f}  {s.index:>5}{label}")


def _resize(text: str) -> tuple[int, ...]:
    """``H`` (a square) or ``H,W`` (also ``HxW``)."""
    from ..errors import UsageError

    try:
        size = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        size = ()
    if len(size) not in (1, 2):
        raise UsageError(f"--resize {text!r}: expected H or H,W, e.g. 256 or 256,256")
    return size * (3 - len(size))


def _mean(text: str) -> str | list[float]:
    """Per-channel values (one for all channels, or comma-separated), else the path of a mean file."""
    from ..errors import UsageError

    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        if "," in text:
            raise UsageError(
                f"--mean {text!r}: expected per-channel values like 104,117,123, or a mean file"
            ) from None
        return text
