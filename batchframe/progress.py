"""Progress while a run goes: a rich live display on a terminal, a log line every few seconds elsewhere.

Both read the executor's counters on their own clock (a few times a second, or every few seconds),
never per item, so progress costs the hot path nothing.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

    from batchframe.stats import Stats

logger = logging.getLogger(__name__)

REFRESH_PER_S = 4
LOG_INTERVAL_S = 5.0


class ProgressDisplay(Protocol):
    """What the supervisor needs of a progress display."""

    def __enter__(self) -> Any: ...
    def __exit__(self, *exc: object) -> None: ...
    def suspend(self) -> None:
        """Stop drawing (the pause shell takes the terminal)."""

    def resume(self) -> None:
        """Draw again."""


def describe(stats: Stats) -> str:
    """One line: done/total, percentage, failed, retrying, in flight, rate, ETA."""
    total = f"/{stats.total:,}" if stats.total is not None else ""
    percent = f" ({100 * stats.completed / stats.total:.0f}%)" if stats.total else ""
    eta = _eta(stats)
    return (
        f"{stats.completed:,}{total} done{percent}: {stats.succeeded:,} succeeded, {stats.failed:,} failed, "
        f"{stats.retrying:,} retrying, {stats.in_flight:,} in flight; {stats.rate_per_s:,.1f} items/s"
        + (f", ETA {eta}" if eta else "")
    )


def _eta(stats: Stats) -> str:
    seconds = stats.eta_s
    if seconds is None:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class LogProgress:
    """Off a terminal: log the progress line every ``interval_s`` seconds from a background thread."""

    def __init__(self, stats: Stats, *, interval_s: float = LOG_INTERVAL_S) -> None:
        self.stats = stats
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LogProgress:
        self._thread = threading.Thread(target=self._loop, name="batchframe-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            logger.info("Progress: %s", describe(self.stats))

    def suspend(self) -> None:
        """Nothing to hide: log lines do not fight the shell for the screen."""

    def resume(self) -> None:
        """Nothing to redraw."""


class LiveProgress:
    """On a terminal: a rich progress bar with the run's counters, redrawn a few times a second."""

    def __init__(self, stats: Stats, console: Console, *, refresh_per_s: float = REFRESH_PER_S) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.stats = stats
        self._task: TaskID | None = None  # rich may draw before add_task: _sync waits for it
        outer = self

        class _StatsProgress(Progress):
            def get_renderables(self) -> Any:
                outer._sync()  # read the counters at draw time, not per item
                return super().get_renderables()

        # Without a total (a Source with no __len__) there is no percentage and no ETA to show.
        known_total = stats.total is not None
        columns = [
            SpinnerColumn(),
            TextColumn("[bold]batchframe"),
            BarColumn(),
            MofNCompleteColumn() if known_total else TextColumn("{task.completed:,} done"),
            *([TaskProgressColumn()] if known_total else []),
            TextColumn("{task.fields[counts]}"),
            TextColumn("[cyan]{task.fields[rate]}"),
            TimeElapsedColumn(),
            *([TextColumn("ETA"), TimeRemainingColumn()] if known_total else []),
        ]
        self._progress = _StatsProgress(
            *columns,
            console=console,
            refresh_per_second=refresh_per_s,
            transient=False,
        )
        self._task = self._progress.add_task("run", total=stats.total, counts="", rate="")

    def _sync(self) -> None:
        if self._task is None:
            return
        stats = self.stats
        counts = (
            f"[green]{stats.succeeded:,} ok[/] [red]{stats.failed:,} failed[/] "
            f"[yellow]{stats.retrying:,} retrying[/] {stats.in_flight:,} in flight"
        )
        self._progress.update(
            self._task, completed=stats.completed, total=stats.total, counts=counts, rate=f"{stats.rate_per_s:,.0f}/s"
        )

    def __enter__(self) -> LiveProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sync()
        self._progress.stop()

    def suspend(self) -> None:
        """Stop the live display so the pause shell owns the terminal."""
        self._progress.stop()

    def resume(self) -> None:
        """Start drawing again after the shell."""
        self._progress.start()


def make_progress(stats: Stats, *, console: Console, live: bool, interval_s: float = LOG_INTERVAL_S) -> ProgressDisplay:
    """A live display when ``live`` (a terminal), else periodic log lines."""
    if live:
        return LiveProgress(stats, console)
    return LogProgress(stats, interval_s=interval_s)
