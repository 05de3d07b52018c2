"""Showing transfers: a rich progress bar per item on a terminal, plain lines elsewhere.

Library calls report :class:`caffezoo.fetch.Event`\\ s; :class:`Display` turns
them into bars (bytes, speed, time left) when stderr is a terminal, or into a
warning line for the events that matter (retries, failed sources, waits)
when it is not. ``--quiet`` shows neither.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from ._output import console, warning_line


class Display:
    """Use as a context manager; ``callback(name)`` gives the progress callback of one item."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.live = not quiet and sys.stderr.isatty()
        self._bars: Any = None
        self._tasks: dict[str, Any] = {}
        self._said: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> Display:
        if self.live:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._bars = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[note]}"),
                console=console(stderr=True),
                transient=False,
            )
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop drawing (idempotent)."""
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    def message(self, name: str, text: str) -> None:
        """A warning about ``name``, above the bars or as a line of its own."""
        if self.quiet:
            return
        if self._bars is not None:
            from rich.markup import escape

            self._bars.console.print(f"[yellow]warning:[/] {escape(name)}: {escape(text)}")
        else:
            warning_line(f"{name}: {text}")

    def callback(self, name: str):
        """The progress callback for ``name`` (``None`` when quiet)."""
        if self.quiet:
            return None
        if self._bars is not None:
            with self._lock:
                self._tasks[name] = self._bars.add_task(name, total=None, note="")

        def on_event(event) -> None:
            kind = event.kind
            if kind in ("retry", "fail", "warning") or (kind == "wait" and (name, kind) not in self._said):
                self._said.add((name, kind))
                text = (
                    event.message if kind != "fail" else f"{event.source}: {event.message}; not asked again"
                )
                self.message(name, text)
            if self._bars is None:
                return
            task = self._tasks[name]
            note = {"check": "checking", "wait": "waiting for another process", "start": ""}.get(kind)
            fields: dict[str, Any] = {} if note is None else {"note": note}
            if kind in ("bytes", "check", "wait", "start"):
                self._bars.update(task, completed=event.done, total=event.total, **fields)

        return on_event

    def finish(self, name: str, note: str, size: int | None = None) -> None:
        """Mark ``name`` done: a full bar when its size is known, and a last word."""
        if self._bars is not None and name in self._tasks:
            task = self._tasks[name]
            if size is None:
                size = self._bars.tasks[task].completed
            self._bars.update(task, note=note, total=size, completed=size)
