"""The end-of-run summary: ``summary.json`` in the run folder, a line in ``logs.txt``, a table on the console.

The counts describe the whole run: for a resumed run, every part of it (from the journal); this
part's own counters are under ``this_part``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchframe.runfolder.folder import SUMMARY_NAME, write_json_atomically

SCHEMA_VERSION = 2
"""The version of summary.json's fields (docs/reference/summary.md): 2 added ``limits`` and ``report``."""

if TYPE_CHECKING:
    from rich.text import Text

    from batchframe.runfolder.outcome import Outcome
    from batchframe.runfolder.stats import Stats


def as_dict(
    stats: Stats,
    outcome: Outcome,
    fatal: BaseException | None,
    *,
    exit_code: int,
    problems: Sequence[str] = (),
    warnings: Sequence[str] = (),
    totals: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The summary's content: whole-run counts, this part's counts, duration, rate, failures by type, outcome.

    Args:
        stats: the run's counters.
        outcome: how the run ended.
        fatal: the error that ended it, if one did.
        exit_code: the process's exit code.
        problems: what went wrong around the items (a hook that raised, a record that could not be written).
        warnings: what the user should know (items left unread, a Source longer than it said).
        totals: the journal's counts (exact over every part of a resumed run), or None without a journal.
        meta: the run's record (project, parameters, start), kept under ``run``.
    """
    this_part = {
        "read": stats.read,
        "succeeded": stats.succeeded,
        "failed": stats.failed,
        "not_processed": stats.not_processed,
        "skipped": stats.skipped,
        "failures_by_type": dict(stats.failures_by_type.most_common()),
        "retries": stats.retries,
        "rate_limited": stats.rate_limited,
        "cooldown_total_s": round(stats.cooldown_total_s, 3),
    }
    whole = {
        "succeeded": stats.whole_succeeded,
        "failed": stats.whole_failed,
        "not_processed": stats.not_processed,
        "failures_by_type": stats.whole_failures_by_type,
    }
    if totals is not None:  # the journal: exact even when an earlier part was killed
        whole = {
            "succeeded": totals["done"],
            "failed": totals["failed"],
            "not_processed": totals["not_processed"] + totals["in_flight"],
            "failures_by_type": dict(totals.get("failures_by_type", {})),
        }
    return {
        "schema_version": SCHEMA_VERSION,
        "outcome": outcome.value,
        "exit_code": exit_code,
        "total": stats.total,
        "succeeded": whole["succeeded"],
        "failed": whole["failed"],
        "not_processed": whole["not_processed"],
        "unread": None if totals is None else totals.get("unread"),
        "failures_by_type": whole["failures_by_type"],
        "retries": stats.whole_retries,
        "rate_limited": stats.whole_rate_limited,
        "cooldown_total_s": round(stats.whole_cooldown_total_s, 3),
        "duration_s": round(stats.elapsed_s, 3),
        "rate_per_s": round(stats.rate_per_s, 1),
        "limits": limits_dict(stats),
        "report": report_dict(stats),
        "this_part": this_part,
        "fatal_error": None if fatal is None else f"{type(fatal).__name__}: {_text(fatal)}",
        "problems": list(problems),
        "warnings": list(warnings),
        "run": dict(meta or {}),
    }


def report_dict(stats: Stats) -> dict[str, Any]:
    """What this run (this part of a resumed one) measured: latency, attempts, timeline, top errors."""
    report = stats.report
    finished = stats.succeeded + stats.failed
    return {
        "latency": report.latency.as_dict(),
        "attempts": report.attempts(finished),
        "timeline": report.timeline.as_dict(last=(finished, stats.failed, stats.rate_limited)),
        "top_errors": report.errors.top(),
    }


def limits_dict(stats: Stats) -> dict[str, Any]:
    """The run's limits at its end: concurrency, the start rate limit, and how the adaptive one moved."""
    limits = stats.limits

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "concurrency": limits.concurrency,
        "adaptive": limits.adaptive,
        "per_second": rounded(limits.per_second),
        "lowest_per_second": rounded(limits.lowest),
        "mean_per_second": rounded(limits.mean),
        "lowered": limits.lowered,
        "tuned": limits.tuned,
    }


def _text(exc: BaseException) -> str:
    from batchframe._text import safe_str

    return safe_str(exc)


def write_json(run_dir: Path, report: Mapping[str, Any]) -> Path | None:
    """Write ``summary.json`` (owner-only); a failure to write is logged, never raised."""
    import logging

    path = run_dir / SUMMARY_NAME
    try:
        write_json_atomically(path, report, indent=2)
    except (OSError, ValueError) as exc:
        logging.getLogger(__name__).error("Could not write %s: %s", path, exc)
        return None
    return path


def end_line(report: Mapping[str, Any]) -> str:
    """One line for logs.txt: the outcome and the counts."""
    return (
        f"Run ended: {report['outcome']} (exit code {report['exit_code']}): {report['succeeded']:,} succeeded, "
        f"{report['failed']:,} failed, {report['not_processed']:,} not processed, "
        f"{report.get('retries', 0):,} retries, {report.get('rate_limited', 0):,} rate limited, "
        f"{report['duration_s']:.1f} s."
    )


HEADINGS = {"completed": "completed", "stopped": "stopped", "fatal": "failed"}
"""The summary's heading after "batchframe run ", by outcome (a completed run with failed items says so)."""
_STYLES = {"completed": "bold green", "completed with failures": "bold yellow", "stopped": "bold yellow"}


def heading(report: Mapping[str, Any]) -> str:
    """How the run ended, in words: completed, completed with failures, stopped, or failed (a fatal error)."""
    outcome = str(report.get("outcome"))
    if outcome == "completed" and report.get("failed"):
        return "completed with failures"
    return HEADINGS.get(outcome, outcome)


def show(report: Mapping[str, Any], *, run_dir: Path) -> None:
    """Print the summary on stderr (stdout stays the user's); a closed pipe is ignored.

    The heading names the outcome; the counts are a table; the failed items by exception type are
    a table of their own, apart from the items the run did not finish; the run folder is last, on
    a line of its own, never cut.
    """
    from batchframe._console import print_line

    try:
        _show(report)
        for warning in [*report["problems"], *report["warnings"]]:
            print_line(f"Warning: {warning}", stderr=True, style="yellow", prose=True)
        print_line(f"Run folder: {run_dir}", stderr=True)
    except (OSError, ValueError):  # a closed pipe (| tee, then Ctrl-C), a closed stream: the records are written
        pass


def _show(report: Mapping[str, Any]) -> None:
    from rich.text import Text

    from batchframe._console import Col, print_line, print_table
    from batchframe.runfolder.failures import NOT_PROCESSED

    title = heading(report)
    print_line(Text(f"batchframe run {title}", style=_STYLES.get(title, "bold red")), stderr=True)
    if report.get("fatal_error"):
        print_line(f"Fatal error: {report['fatal_error']}", stderr=True, style="red", prose=True)
    print_table("", (Col(""), Col("", justify="right")), _count_rows(report), stderr=True, header=False)
    failures = [(kind, count) for kind, count in report["failures_by_type"].items() if kind != NOT_PROCESSED]
    if failures:
        columns = (Col("failed with", cut_to=24, wrap=True), Col("items", justify="right"))
        print_table(
            "Failed items by exception type", columns, [[kind, f"{count:,}"] for kind, count in failures], stderr=True
        )


def _count_rows(report: Mapping[str, Any]) -> list[list[str | Text]]:
    from rich.text import Text

    part = report["this_part"]
    rows: list[list[str | Text]] = [
        ["succeeded", f"{report['succeeded']:,}"],
        ["failed", Text(f"{report['failed']:,}", style="red" if report["failed"] else "")],
    ]
    if report["not_processed"]:
        # Not failures: items a stopped (or failed) run read but did not finish. resume runs them.
        rows.append(["not processed", Text(f"{report['not_processed']:,}", style="yellow")])
    if part["skipped"]:
        rows.append(["done before (resumed)", f"{part['skipped']:,}"])
    if report.get("retries"):
        rows.append(["retries", f"{report['retries']:,}"])
    if report.get("rate_limited"):
        cooldown = report.get("cooldown_total_s") or 0
        rows.append(["rate limited", f"{report['rate_limited']:,} ({cooldown:,.1f} s cooling down)"])
    if report["unread"]:
        rows.append(["not read", f"{report['unread']:,}"])
    limit = (report.get("run") or {}).get("limit")
    if limit:
        rows.append(["limit", f"the first {limit:,} items"])
    latency = latency_text((report.get("report") or {}).get("latency"))
    if latency:
        rows.append(["latency", latency])
    rate_limit = _rate_limit_row(report.get("limits"))
    if rate_limit:
        rows.append(["rate limit", rate_limit])
    rows += [
        ["duration", f"{report['duration_s']:.2f} s"],
        ["rate", f"{report['rate_per_s']:,.1f} items/s"],
        ["exit code", str(report["exit_code"])],
    ]
    return rows


def _rate_limit_row(limits: Any) -> str | None:
    """``38/s at the end (lowest 20/s, mean 35/s; lowered 6 times)`` for an adaptive or tuned run."""
    from batchframe.runfolder.stats import rate_text

    if not isinstance(limits, dict) or not (limits.get("adaptive") or limits.get("tuned")):
        return None
    final = limits.get("per_second")
    text = "none at the end" if not isinstance(final, (int, float)) else f"{rate_text(final)} at the end"
    lowest, mean = limits.get("lowest_per_second"), limits.get("mean_per_second")
    if limits.get("adaptive") and isinstance(lowest, (int, float)) and isinstance(mean, (int, float)):
        times = limits.get("lowered", 0)
        text += f" (lowest {rate_text(lowest)}, mean {rate_text(mean)}; lowered {times} time{'s' * (times != 1)})"
    return text


def latency_text(latency: Any) -> str | None:
    """``p50 12 ms, p95 40 ms, max 1.2 s`` from a report's latency, or None when there was no attempt."""
    if not isinstance(latency, dict) or not latency.get("count"):
        return None
    parts = [(name, latency.get(f"{name}_s")) for name in ("p50", "p95", "max")]
    return ", ".join(f"{name} {seconds_text(value)}" for name, value in parts if isinstance(value, (int, float)))


def seconds_text(seconds: float) -> str:
    """A duration as people read it: ``850 us``, ``12 ms``, ``1.2 s``, ``3.5 min``."""
    if seconds < 0.001:
        return f"{seconds * 1_000_000:.3g} us"
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 120:
        return f"{seconds:.3g} s"
    return f"{seconds / 60:.3g} min"
