"""The end-of-run summary: ``summary.json`` in the run folder, a line in ``logs.txt``, a table on the console.

The counts describe the whole run: for a resumed run, every part of it (from the journal); this
part's own counters are under ``this_part``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchframe.driver import Driver

SUMMARY_NAME = "summary.json"


def as_dict(
    executor: Driver,
    *,
    exit_code: int,
    problems: Sequence[str] = (),
    warnings: Sequence[str] = (),
    totals: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The summary's content: whole-run counts, this part's counts, duration, rate, failures by type, outcome."""
    stats = executor.stats
    this_part = {
        "read": stats.read,
        "succeeded": stats.succeeded,
        "failed": stats.failed,
        "not_processed": stats.not_processed,
        "skipped": stats.skipped,
        "failures_by_type": dict(stats.failures_by_type.most_common()),
    }
    whole = this_part
    if totals is not None:
        whole = {
            "succeeded": totals["done"],
            "failed": totals["failed"],
            "not_processed": totals["not_processed"] + totals["in_flight"],
            "failures_by_type": dict(totals.get("failures_by_type", {})),
        }
    fatal = executor.fatal_error
    return {
        "outcome": executor.outcome.value,
        "exit_code": exit_code,
        "total": stats.total,
        "succeeded": whole["succeeded"],
        "failed": whole["failed"],
        "not_processed": whole["not_processed"],
        "unread": None if totals is None else totals.get("unread"),
        "failures_by_type": whole["failures_by_type"],
        "duration_s": round(stats.elapsed_s, 3),
        "rate_per_s": round(stats.rate_per_s, 1),
        "this_part": this_part,
        "fatal_error": None if fatal is None else f"{type(fatal).__name__}: {_text(fatal)}",
        "problems": list(problems),
        "warnings": list(warnings),
        "run": dict(meta or {}),
    }


def _text(exc: BaseException) -> str:
    from batchframe.failures import safe_str

    return safe_str(exc)


def write_json(run_dir: Path, report: Mapping[str, Any]) -> Path | None:
    """Write ``summary.json`` (owner-only); a failure to write is logged, never raised."""
    import logging

    path = run_dir / SUMMARY_NAME
    try:
        text = json.dumps(report, indent=2, default=str, ensure_ascii=True) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
    except (OSError, ValueError) as exc:
        logging.getLogger(__name__).error("Could not write %s: %s", path, exc)
        return None
    return path


def read_json(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's ``summary.json``, or None when it has none (or it is unreadable)."""
    try:
        data = json.loads((run_dir / SUMMARY_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def end_line(report: Mapping[str, Any]) -> str:
    """One line for logs.txt: the outcome and the counts."""
    return (
        f"Run ended: {report['outcome']} (exit code {report['exit_code']}): {report['succeeded']:,} succeeded, "
        f"{report['failed']:,} failed, {report['not_processed']:,} not processed, "
        f"{report['duration_s']:.1f} s."
    )


def show(report: Mapping[str, Any], *, run_dir: Path) -> None:
    """Print the summary table on stderr (stdout stays the user's); a closed pipe is ignored."""
    from rich.markup import escape
    from rich.table import Table

    from batchframe._console import console

    part = report["this_part"]
    table = Table(title=f"batchframe run: {report['outcome']}", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("succeeded", f"{report['succeeded']:,}")
    table.add_row("failed", f"[red]{report['failed']:,}[/red]" if report["failed"] else "0")
    if part["skipped"]:
        table.add_row("done before (resumed)", f"{part['skipped']:,}")
    if report["not_processed"]:
        table.add_row("not processed", f"[yellow]{report['not_processed']:,}[/yellow]")
    if report["unread"]:
        table.add_row("not read", f"{report['unread']:,}")
    table.add_row("duration", f"{report['duration_s']:.2f} s")
    table.add_row("rate", f"{report['rate_per_s']:,.1f} items/s")
    for error_type, count in report["failures_by_type"].items():
        table.add_row(f"  {error_type}", f"{count:,}")
    table.add_row("run folder", str(run_dir))
    table.add_row("exit code", str(report["exit_code"]))
    out = console(stderr=True)
    try:
        out.print(table)
        for warning in [*report["problems"], *report["warnings"]]:
            out.print(f"[yellow]Warning:[/yellow] {escape(warning)}", highlight=False)
    except OSError:  # stderr is a closed pipe (| tee, then Ctrl-C): the records are written already
        pass
