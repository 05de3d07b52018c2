#!/usr/bin/env python3
"""Caffe's ``scripts/download_model_binary.py``, kept working on top of caffezoo.

    scripts/download_model_binary.py <dirname>

``<dirname>`` is a model directory whose ``readme.md`` front matter has
``caffemodel``, ``caffemodel_url`` and ``sha1``; a bundled model's name (or
``models/<name>``, as Caffe's instructions spell it) works too. The argument,
the messages and the exit codes are those of Caffe's script; the work is
``caffezoo.download.download``, so the download is verified while it streams,
resumable, retried, and never leaves a broken file behind. Prefer
``caffezoo download`` for anything new.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

try:
    import caffezoo  # noqa: F401
except ImportError:  # run from a clone without installing: use the sources beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from caffezoo.download import download
from caffezoo.errors import CaffezooError
from caffezoo.schema import require
from caffezoo.zoo import bundled_names, resolve


def valid_dirname(dirname: str):
    """argparse type: the loaded model, or Caffe's error message."""
    target = dirname
    path = Path(dirname)
    if not path.exists() and path.name in bundled_names():
        target = path.name  # `models/bvlc_alexnet` from a checkout of Caffe's instructions
    try:
        model = resolve(target)
        require(model.front_matter, "download", str(model.readme_path))
        return model
    except CaffezooError as e:
        print(f"ERROR: {e}")
        raise argparse.ArgumentTypeError(
            "Must be valid Caffe model directory with a correct readme.md"
        ) from None


class Reporter:
    """Caffe's one-line progress: percent, MB, KB/s, seconds."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.last = 0.0
        self.shown = False

    def __call__(self, event) -> None:
        if event.kind != "bytes":
            return
        now = time.monotonic()
        if now - self.last < 0.1 and event.done != event.total:
            return
        self.last = now
        duration = (now - self.start) or 0.01
        percent = int(event.done * 100 / event.total) if event.total else 0
        sys.stdout.write(
            "\r...%d%%, %d MB, %d KB/s, %d seconds passed"  # noqa: UP031  (the seed script's own format)
            % (percent, event.done / (1024 * 1024), event.done / (1024 * duration), duration)
        )
        sys.stdout.flush()
        self.shown = True


def main() -> int:
    parser = argparse.ArgumentParser(description="Download trained model binary.")
    parser.add_argument("dirname", type=valid_dirname)
    args = parser.parse_args()
    model = args.dirname
    report = Reporter()
    try:
        result = download(model, progress=report)
    except CaffezooError as e:
        if report.shown:
            print()
        print(f"ERROR: {e}")
        print("ERROR: model did not download correctly! Run this again.")
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; run this again to resume")
        return 130
    if report.shown:
        print()
    if result.status == "present":
        print("Model already exists.")
    if result.path.parent != model.path:
        print(f"Weights are in {result.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
