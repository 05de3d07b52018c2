"""Commands that run models: convert (to ONNX), run (classify, detect, segment, embed images)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._app import JSON_OPTION, QUIET_OPTION, app, flag, parse_input_shapes
from ._output import console, error_line, print_json

__all__ = ["FILL_OPTION", "INPUT_OPTION", "MODEL_ARGUMENT", "WEIGHTS_OPTION", "convert", "run"]


MODEL_ARGUMENT = typer.Argument(
    ..., help="A model directory, a bundled model name, or a deploy .prototxt (then give --weights)."
)
WEIGHTS_OPTION = typer.Option(
    None, "--weights", "-w", help="The .caffemodel; default: the model's downloaded weights."
)
INPUT_OPTION = typer.Option(None, "--input", help="Override an input's shape: NAME=N,C,H,W (repeatable).")
FILL_OPTION = flag(
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
    fixed_batch: bool = flag(
        "--fixed-batch", help="Keep the deploy net's batch size instead of a symbolic batch axis."
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
    images: list[Path] = typer.Argument(..., help="Image files (JPEG, PNG, BMP...) or folders of them."),
    task: str = typer.Option(
        None,
        "--task",
        help="classify, detect, segment, caption or embed; default: the front matter's `task`, "
        "else what the net's outputs are.",
    ),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="detect/segment: the picture to write (.png; a folder for several images); "
        "embed: the .npy file of features.",
    ),
    blob: str = typer.Option(
        None,
        "--blob",
        help="The blob to read: embed's features (required), or the scores/score map/detections "
        "instead of the net's output.",
    ),
    threshold: float = typer.Option(
        0.5, "--threshold", help="detect: keep boxes scoring at least this (0 to 1)."
    ),
    top: int = typer.Option(5, "--top", "-k", help="classify: how many classes to show per image."),
    max_words: int = typer.Option(20, "--max-words", help="caption: the longest sentence to make."),
    batch_size: int = typer.Option(
        None, "--batch-size", "-b", help="Images per forward pass; default: 8, or the net's fixed batch."
    ),
    oversample: bool = flag(
        "--oversample",
        help="classify: average ten crops (corners, centre, mirrored) instead of the centre crop.",
    ),
    resize: str = typer.Option(
        None,
        "--resize",
        help="classify/embed: resize images to H[,W] before cropping; default: the mean image's "
        "size, else the net's input.",
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
    weights: Path = WEIGHTS_OPTION,
    provider: list[str] = typer.Option(
        None,
        "--provider",
        help="onnxruntime execution provider, in order of "
        "preference (repeatable); default: CPUExecutionProvider.",
    ),
    json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Run a model on images for its task: classes, boxes, class maps or features.

    A folder stands for the images in it; all go through one session in batches. Results are printed
    as each batch is done; an image that cannot be read gets one error line and the others are run
    (the exit status is then 1).
    """
    from ..runtime.tasks import Failed, image_files, item_lines, run

    size = _resize(resize) if resize else None
    mean_value = _mean(mean) if mean else None
    paths = image_files(images)
    out = console()

    def each(item: Any) -> None:
        if isinstance(item, Failed):
            error_line(item.error)  # it names the file
        elif not (json or quiet):
            for line in item_lines(item):
                out.print(line)

    with _ImageProgress(len(paths), quiet or json) as progress:
        result = run(
            model,
            paths,
            task=task,
            output=output,
            blob=blob,
            threshold=threshold,
            top=top,
            max_words=max_words,
            batch_size=batch_size,
            oversample=oversample,
            resize=size,
            raw_scale=raw_scale,
            mean=mean_value,
            labels=labels,
            weights=weights,
            providers=provider or None,
            progress=progress,
            keep_going=True,
            each=each,
        )
    if json:
        # classify keeps its long-standing shape: a list of {image, top} (or {image, error})
        print_json(result.items if result.task == "classify" else result)
    if result.failed:
        if len(paths) > 1:  # one image: its own line said it all
            error_line(f"{len(result.failed)} of {len(paths)} images could not be read")
        raise typer.Exit(1)


class _ImageProgress:
    """A progress bar over images on a terminal's stderr, for more than one batch's worth; else nothing."""

    def __init__(self, total: int, quiet: bool):
        import sys

        self.total = total
        self.live = not quiet and total > 1 and sys.stderr.isatty()
        self._bar: Any = None

    def __enter__(self) -> _ImageProgress:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self._bar = Progress(
                "images",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console(stderr=True),
            )
            self._bar.start()
            self._task = self._bar.add_task("images", total=self.total)
        return self

    def __call__(self, done: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, done)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


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
