"""``batchframe runs``: the table of past runs, and one run's summary, read from their journals."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchframe._execution import FAILED_TO_START
from batchframe.journal import JOURNAL_NAME, Journal, JournalError
from batchframe.summary import SUMMARY_NAME, read_json


@dataclass
class RunInfo:
    """One past run, as its journal tells it."""

    folder: Path
    meta: dict[str, Any]
    counts: dict[str, int]
    failures: dict[str, int]

    @property
    def duration(self) -> str:
        """Start to end (or "running / killed" when there is no end)."""
        start, end = self.meta.get("started_at"), self.meta.get("ended_at")
        if not start or not end:
            return "-"
        seconds = (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
        return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"

    @property
    def pending(self) -> str:
        """Items left to do: from the source's length when known, else "unknown" for an unfinished run."""
        meta, counts = self.meta, self.counts
        if meta.get("outcome") == FAILED_TO_START:
            return "-"
        if meta.get("exit_code") in (0, 3) and meta.get("outcome") == "completed":
            return "0"
        total = meta.get("total")
        if isinstance(total, int):
            return f"{max(total - counts['done'] - counts['failed'], 0):,}"
        return "unknown"

    @property
    def state(self) -> str:
        """The exit code, "failed to start", or "running/killed" for a run that has not ended."""
        if self.meta.get("outcome") == FAILED_TO_START:
            return "failed to start"
        code = self.meta.get("exit_code")
        return "running/killed" if code is None else str(code)


def read_run(folder: Path) -> RunInfo:
    """The journal's view of one run folder.

    Raises:
        JournalError: not a run folder, or an unreadable journal.
    """
    if not (folder / JOURNAL_NAME).exists():
        report = read_json(folder)  # a run with -p journal=false: its summary.json tells
        if report is not None:
            return _from_summary(folder, report)
    journal = Journal.open(folder, readonly=True)
    try:
        return RunInfo(folder, journal.meta(), journal.counts(), journal.failures_by_type())
    finally:
        journal.close()


def _from_summary(folder: Path, report: dict[str, Any]) -> RunInfo:
    meta = {**report.get("run", {}), "outcome": report.get("outcome"), "exit_code": report.get("exit_code")}
    meta.setdefault("total", report.get("total"))
    counts = {
        "done": int(report.get("succeeded") or 0),
        "failed": int(report.get("failed") or 0),
        "not_processed": int(report.get("not_processed") or 0),
        "in_flight": 0,
    }
    return RunInfo(folder, meta, counts, dict(report.get("failures_by_type") or {}))


def list_runs(output_dir: Path) -> tuple[list[RunInfo], list[tuple[Path, str]]]:
    """Every run under ``output_dir``, newest first, and the folders whose journal could not be read."""
    runs, unreadable = [], []
    found = {p.parent for name in (JOURNAL_NAME, SUMMARY_NAME) for p in output_dir.glob(f"*/{name}")}
    folders = sorted(found, reverse=True) if output_dir.is_dir() else []
    for folder in folders:
        try:
            runs.append(read_run(folder))
        except JournalError as exc:
            unreadable.append((folder, exc.message))
    runs.sort(key=lambda run: str(run.meta.get("started_at", "")), reverse=True)
    return runs, unreadable


def show_runs(output_dir: Path) -> None:
    """Print the table of past runs."""
    from rich.table import Table

    from batchframe._console import console

    runs, unreadable = list_runs(output_dir)
    out = console()
    if not runs and not unreadable:
        out.print(f"No runs in {output_dir} yet. Start one with: batchframe exec PATH")
        return
    table = Table(title=f"Runs in {output_dir}", title_justify="left")
    for column in ("started", "duration", "project", "config", "done", "failed", "pending", "exit", "folder"):
        table.add_column(column, justify="right" if column in ("done", "failed", "pending", "exit") else "left")
    for run in runs:
        meta = run.meta
        table.add_row(
            str(meta.get("started_at", "?")).replace("T", " "),
            run.duration,
            Path(str(meta.get("project", "?"))).name + (" (retry)" if meta.get("kind") == "retry" else ""),
            str(meta.get("config") or "-"),
            f"{run.counts['done']:,}",
            f"{run.counts['failed']:,}",
            run.pending,
            run.state,
            run.folder.name,
        )
    out.print(table)
    for folder, why in unreadable:
        out.print(f"[yellow]{folder.name}: {why}[/yellow]")


def show_run(folder: Path) -> None:
    """Print one run's summary: where it came from, its counts, its failures by exception type."""
    from rich.table import Table

    from batchframe._console import console

    run = read_run(folder)
    meta = run.meta
    table = Table(title=f"Run {folder}", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("project", meta.get("project")),
        ("config", meta.get("config") or "-"),
        ("params", " ".join(f"-p {p}" for p in meta.get("params", [])) or "-"),
        ("started", meta.get("started_at")),
        ("ended", meta.get("ended_at") or "- (still running, or killed: batchframe resume can finish it)"),
        ("resumed", ", ".join(meta.get("resumed_at", [])) or "-"),
        ("retry of", meta.get("retry_of") or "-"),
        ("outcome", meta.get("outcome") or "-"),
        ("exit code", run.state),
        ("done", f"{run.counts['done']:,}"),
        ("failed", f"{run.counts['failed']:,}"),
        ("pending", run.pending),
    ]
    for label, value in rows:
        table.add_row(label, str(value))
    out = console()
    out.print(table)
    if run.failures:
        failures = Table(title="Items that did not succeed, by exception type", title_justify="left")
        failures.add_column("exception")
        failures.add_column("items", justify="right")
        for name, count in run.failures.items():
            failures.add_row(name, f"{count:,}")
        out.print(failures)
