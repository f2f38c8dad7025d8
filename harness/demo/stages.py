"""Staged console output for `hilt demo run`: progress bars in a terminal, one line per step elsewhere.

In a terminal (rich's `Console.is_terminal`) every running step is a live row (spinner, bar when
the step has a size, elapsed time) and a finished step leaves one line above them. When output is
a pipe or a file (CI logs, `make demo > log`) nothing is redrawn: a long step prints one line when
it starts and one when it ends, each stamped with the time since the run began. Steps may run in
threads side by side (the emulated board's image builds while the local board is measured).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


def _fmt(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


class Step:
    """One step in flight: update its text or size while it runs, say how it ended."""

    def __init__(self, log: StageLog, what: str, total: float | None) -> None:
        self.log, self.what, self.total = log, what, total
        self.start = time.monotonic()
        self.detail = ""
        self.status = "done"
        self._task: TaskID | None = None
        if log.progress is not None:
            self._task = log.progress.add_task(escape(what), total=total)
        elif total is not None or log.announce_starts:
            log.line(f"{escape(what)} ...")

    def update(
        self, text: str | None = None, *, advance: float = 0.0, completed: float | None = None
    ) -> None:
        """New description text (terminal only: no line per update in a log) and/or progress."""
        if self.log.progress is None or self._task is None:
            return
        kwargs: dict = {"advance": advance}
        if text is not None:
            kwargs["description"] = escape(f"{self.what}: {text}")
        if completed is not None:
            kwargs["completed"] = completed
        self.log.progress.update(self._task, **kwargs)

    def done(self, detail: str = "") -> None:
        self.detail, self.status = detail, "done"

    def cached(self, detail: str = "") -> None:
        self.detail, self.status = detail, "cached"

    def skipped(self, detail: str = "") -> None:
        self.detail, self.status = detail, "skipped"

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.start

    def _finish(self, failed: BaseException | None) -> None:
        if self.log.progress is not None and self._task is not None:
            self.log.progress.remove_task(self._task)
        if failed is not None:
            why = escape(str(failed))
            self.log.line(f"{escape(self.what)} — [red]failed[/red]: {why} ({_fmt(self.seconds)})")
            return
        tag = {"done": "[green]done[/green]", "cached": "[cyan]cached[/cyan]",
               "skipped": "[yellow]skipped[/yellow]"}  # fmt: skip
        detail = f": {escape(self.detail)}" if self.detail else ""
        self.log.line(f"{escape(self.what)} — {tag[self.status]}{detail} ({_fmt(self.seconds)})")


class StageLog:
    """The run's clock and its output; use as a context manager around the whole run."""

    def __init__(self, console: Console, *, announce_starts: bool = True) -> None:
        self.console = console
        self.t0 = time.monotonic()
        self.live = console.is_terminal
        self.announce_starts = announce_starts
        self.progress: Progress | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> StageLog:
        if self.live:
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def line(self, text: str, *, markup: bool = True) -> None:
        """One line stamped with the time since the run began (never redrawn)."""
        stamp = f"[{self.elapsed:6.1f} s]"
        with self._lock:
            self.console.print(f"[dim]{stamp}[/dim] {text}" if markup else f"{stamp} {text}", highlight=False,
                               markup=markup, soft_wrap=True)  # fmt: skip

    def headline(self, text: str) -> None:
        """A result line (bold in a terminal): the lines a reader is waiting for."""
        self.line(f"[bold]{text}[/bold]")

    @contextmanager
    def step(self, what: str, total: float | None = None) -> Iterator[Step]:
        step = Step(self, what, total)
        try:
            yield step
        except BaseException as exc:
            step._finish(exc)
            raise
        step._finish(None)
