"""``batchframe runs``: the table of past runs, and one run's summary, read from their journals."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchframe._console import Col, print_line, print_table
from batchframe._execution import FAILED_TO_START
from batchframe.failures import NOT_PROCESSED
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
        limit = _limit(meta)
        if limit is not None:  # a limited run of a Source without __len__: the limit bounds it
            return f"at most {max(limit - counts['done'] - counts['failed'], 0):,}"
        return "unknown"

    @property
    def state(self) -> str:
        """The exit code, "failed to start", or "running or killed" for a run that has not ended.

        Words apart, not "running/killed": at 80 columns the table's exit column wraps them rather
        than take the room of another column.
        """
        if self.meta.get("outcome") == FAILED_TO_START:
            return "failed to start"
        code = self.meta.get("exit_code")
        return "running or killed" if code is None else str(code)


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


_UNFINISHED_TYPES = (NOT_PROCESSED, "InFlight")
"""Entries of ``failures_by_type`` that are not failures: items a stopped (or killed) run did not finish."""

_RUNS_COLUMNS = (
    # The run folder is what resume, retry and `runs RUN_DIR` take: never cut. Its name is the start time.
    Col("run folder"),
    Col("duration", drop=4),
    Col("project", cut_to=12, drop=1),
    Col("config", cut_to=10, drop=3),
    Col("done", justify="right"),
    Col("failed", justify="right"),
    Col("pending", justify="right", drop=2),
    Col("exit", justify="right", cut_to=7, wrap=True),
)


def show_runs(output_dir: Path) -> None:
    """Print the table of past runs, fitted to the console: the run folder always in full."""
    runs, unreadable = list_runs(output_dir)
    if not runs and not unreadable:
        print_line(f"No runs in {output_dir} yet. Start one with: batchframe exec PATH")
        return
    print_table(f"Runs in {output_dir}", _RUNS_COLUMNS, [_run_row(run) for run in runs])
    if runs:
        print_line(f"One run in detail: batchframe runs {runs[0].folder}", style="dim")
    for folder, why in unreadable:
        print_line(f"{folder.name}: {why}", style="yellow")


def _run_row(run: RunInfo) -> list[str]:
    meta = run.meta
    return [
        run.folder.name,
        run.duration,
        Path(str(meta.get("project") or "?")).name + (" (retry)" if meta.get("kind") == "retry" else ""),
        str(meta.get("config") or "-"),
        f"{run.counts['done']:,}",
        f"{run.counts['failed']:,}",
        run.pending,
        run.state,
    ]


def show_run(folder: Path) -> None:
    """Print one run's summary: where it came from, its counts, its failures by exception type.

    Paths (the run folder, the project, the run it retried) go on lines of their own, whole; the
    rest is a table.
    """
    from rich.text import Text

    run = read_run(folder)
    meta = run.meta
    paths = [("Run folder", folder), ("Project", meta.get("project")), ("Retry of", meta.get("retry_of"))]
    for label, path in paths:
        if path:
            print_line(Text.assemble((f"{label}: ", "bold"), str(path)))
    print_table("", (Col("", cut_to=None), Col("", cut_to=20, wrap=True)), _run_fields(run), header=False)
    failures = {name: count for name, count in run.failures.items() if name not in _UNFINISHED_TYPES}
    if failures:
        columns = (Col("exception", cut_to=24, wrap=True), Col("items", justify="right"))
        rows = [[name, f"{count:,}"] for name, count in failures.items()]
        print_table("Failed items, by exception type", columns, rows)


def _run_fields(run: RunInfo) -> list[list[str]]:
    meta, counts = run.meta, run.counts
    ended = meta.get("ended_at") or (
        "-"
        if meta.get("outcome") == FAILED_TO_START
        else "- (still running, or killed: batchframe resume can finish it)"
    )
    limit = _limit(meta)
    fields = [
        ["config", _text(meta.get("config"))],
        ["params", " ".join(f"-p {p}" for p in meta.get("params") or []) or "-"],
        *([["limit", f"the first {limit:,} items (--limit {limit}; resume keeps it)"]] if limit else []),
        ["started", _time(meta.get("started_at"))],
        ["ended", _time(ended)],
        ["resumed", ", ".join(_time(t) for t in meta.get("resumed_at") or []) or "-"],
        ["outcome", _text(meta.get("outcome")).replace("_", " ")],  # failed_to_start: "failed to start"
        ["exit code", run.state],
        ["done", f"{counts['done']:,}"],
        ["failed", f"{counts['failed']:,}"],
    ]
    unfinished = counts.get("not_processed", 0) + counts.get("in_flight", 0)
    if unfinished:
        fields.append(["not processed", f"{unfinished:,}"])
    fields.append(["pending", run.pending])
    return fields


def _limit(meta: dict[str, Any]) -> int | None:
    """The run's ``--limit N``, or None (not limited, or not a number: a journal edited by hand)."""
    limit = meta.get("limit")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else None


def _text(value: object) -> str:
    """A value from the journal, with "-" for one it does not have (never "None")."""
    return "-" if value is None or value == "" else str(value)


def _time(value: object) -> str:
    """An ISO time as ``2026-11-25 10:30:00``."""
    return _text(value).replace("T", " ", 1)
