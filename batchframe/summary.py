"""The end-of-run summary: ``summary.json`` in the run folder and a table on the console."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchframe.executor import Executor


def as_dict(
    executor: Executor,
    *,
    exit_code: int,
    problems: Sequence[str] = (),
    warnings: Sequence[str] = (),
    totals: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The summary's content: counts, duration, rate, failures by exception type, outcome, exit code.

    The counts are this run's (or this resumed part's); ``totals`` are the journal's counts for the
    whole run folder, resumed parts included.
    """
    stats = executor.stats
    return {
        "outcome": executor.outcome.value,
        "exit_code": exit_code,
        "total": stats.total,
        "read": stats.read,
        "succeeded": stats.succeeded,
        "failed": stats.failed,
        "not_processed": stats.not_processed,
        "skipped": stats.skipped,
        "duration_s": round(stats.elapsed_s, 3),
        "rate_per_s": round(stats.rate_per_s, 1),
        "failures_by_type": dict(stats.failures_by_type.most_common()),
        "fatal_error": _describe(executor.fatal_error),
        "problems": list(problems),
        "warnings": list(warnings),
        "totals": totals,
    }


def _describe(exc: BaseException | None) -> str | None:
    return None if exc is None else f"{type(exc).__name__}: {exc}"


def write(run_dir: Path, executor: Executor, *, exit_code: int, **extra: Any) -> Path:
    """Write ``summary.json`` and return its path (``extra``: problems, warnings, totals)."""
    path = run_dir / "summary.json"
    path.write_text(json.dumps(as_dict(executor, exit_code=exit_code, **extra), indent=2) + "\n")
    return path


def show(executor: Executor, *, run_dir: Path, exit_code: int, warnings: Sequence[str] = ()) -> None:
    """Print the summary table (on stderr, so stdout stays the user's)."""
    from rich.table import Table

    from batchframe._console import console

    stats = executor.stats
    table = Table(title=f"batchframe run: {executor.outcome.value}", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("succeeded", f"{stats.succeeded:,}")
    table.add_row("failed", f"[red]{stats.failed:,}[/red]" if stats.failed else "0")
    if stats.skipped:
        table.add_row("done before (resumed)", f"{stats.skipped:,}")
    if stats.not_processed:
        table.add_row("not processed", f"[yellow]{stats.not_processed:,}[/yellow]")
    unread = (stats.total or 0) - stats.read - stats.skipped
    if stats.total is not None and unread > 0:
        table.add_row("not read", f"{unread:,}")
    table.add_row("duration", f"{stats.elapsed_s:.2f} s")
    table.add_row("rate", f"{stats.rate_per_s:,.1f} items/s")
    for error_type, count in stats.failures_by_type.most_common():
        table.add_row(f"  {error_type}", f"{count:,}")
    table.add_row("run folder", str(run_dir))
    table.add_row("exit code", str(exit_code))
    out = console(stderr=True)
    out.print(table)
    for warning in warnings:
        out.print(f"[yellow]Warning:[/yellow] {warning}")
