"""``batchframe runs``: the table of past runs, and one run's summary, read from their journals."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchframe._console import Col, print_line, print_table
from batchframe.runfolder.failures import NOT_PROCESSED
from batchframe.runfolder.files import read_regular_text
from batchframe.runfolder.folder import JOURNAL_NAME, SUMMARY_NAME
from batchframe.runfolder.journal import Journal, JournalError
from batchframe.runfolder.live import read_status
from batchframe.runfolder.outcome import COMPLETED, EXIT_FAILED_ITEMS, EXIT_OK, FAILED_TO_START, state_word
from batchframe.runfolder.stats import rate_text
from batchframe.runfolder.summary import latency_text

SUMMARY_UNREADABLE = "summary.json unreadable"
"""The note on a run whose summary.json cannot be read (truncated, not an object, edited by hand)."""

_META_TYPES: dict[str, type | tuple[type, ...]] = {
    "started_at": str,
    "ended_at": str,
    "outcome": str,
    "exit_code": int,
    "total": int,
    "limit": int,
    "kind": str,
    "project": str,
    "config": str,
    "retry_of": str,
    "error": str,
    "fatal_error": str,
    "params": list,
    "resumed_at": list,
    "secrets": dict,
}
"""The type of each run record field that readers use; a value of another type is dropped (unknown)."""

_COUNT_NAMES = {"done": "succeeded", "failed": "failed", "not_processed": "not_processed"}
"""RunInfo's counts, by the summary.json field each is read from."""

_RUN_FOLDER_NAME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d)-(\d\d)-(\d\d)")
"""A run folder's name is its start time (``folder.RUN_DIR_FORMAT``, with a ``-2`` suffix when taken)."""


@dataclass
class RunInfo:
    """One past run, as its journal (or, without one, its summary.json) tells it.

    Attributes:
        folder: the run folder.
        meta: the run's record (start, end, outcome, project...); a field of the wrong type is absent.
        counts: ``done``, ``failed``, ``not_processed``, ``in_flight``; a count that is not known is absent.
        failures: failed items by exception type.
        note: what could not be read, e.g. "summary.json unreadable (...)"; empty when all was read.
        from_journal: whether the journal was read (else summary.json, or nothing but the folder's name).
    """

    folder: Path
    meta: dict[str, Any]
    counts: dict[str, int]
    failures: dict[str, int]
    note: str = ""
    from_journal: bool = True

    def count(self, name: str) -> str:
        """A count for a table: ``1,234``, or ``?`` when it is not known."""
        value = self.counts.get(name)
        return "?" if value is None else f"{value:,}"

    @property
    def duration(self) -> str:
        """Start to end (or "-" when there is no end, or a time is not a valid one)."""
        start, end = self.meta.get("started_at"), self.meta.get("ended_at")
        if not start or not end:
            return "-"
        try:
            seconds = (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
        except (TypeError, ValueError):  # a time edited by hand, or one aware and one naive
            return "-"
        return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"

    @property
    def pending(self) -> str:
        """Items left to do: from the source's length when known, else "unknown" for an unfinished run."""
        meta, counts = self.meta, self.counts
        if meta.get("outcome") == FAILED_TO_START:
            return "-"
        if meta.get("exit_code") in (EXIT_OK, EXIT_FAILED_ITEMS) and meta.get("outcome") == COMPLETED:
            return "0"
        if "done" not in counts or "failed" not in counts:
            return "unknown"
        total = meta.get("total")
        if isinstance(total, int):
            return f"{max(total - counts['done'] - counts['failed'], 0):,}"
        limit = _limit(meta)
        if limit is not None:  # a limited run of a Source without __len__: the limit bounds it
            return f"at most {max(limit - counts['done'] - counts['failed'], 0):,}"
        return "unknown"

    @property
    def state(self) -> str:
        """The exit code, "failed to start", "running or killed" for a run that has not ended, or "unknown".

        Words apart, not "running/killed": at 80 columns the table's exit column wraps them rather
        than take the room of another column. "unknown": no journal, and its summary.json does not say.
        """
        return state_word(self.meta, from_journal=self.from_journal)


def read_run(folder: Path) -> RunInfo:
    """The journal's view of one run folder; without a journal, its summary.json's.

    A summary.json that cannot be read, or has fields of the wrong type, is noted (``RunInfo.note``)
    and what can be known is kept: the journal's view, else the summary's fields of the right type,
    else the start time in the folder's name.

    Raises:
        JournalError: not a run folder, or an unreadable journal.
    """
    report, problem = read_summary(folder)
    if folder.is_dir() and not (folder / JOURNAL_NAME).exists():  # -p journal=false: summary.json tells
        if report is not None:
            return _from_summary(folder, report)
        if problem:
            return RunInfo(folder, _meta_from_name(folder), {}, {}, note=problem, from_journal=False)
    journal = Journal.open(folder, readonly=True)
    try:
        meta, counts, failures = journal.meta(), journal.counts(), journal.failures_by_type()
    except (ValueError, TypeError, sqlite3.Error) as exc:  # a value that is not JSON: a journal edited by hand
        raise JournalError(
            f"{journal.path} cannot be read ({type(exc).__name__}: {exc}).",
            hint="Nothing was changed. The run's failed.jsonl and logs.txt are still there to recover from.",
        ) from None
    finally:
        journal.close()
    clean, wrong = _checked_meta(meta)
    notes = [problem] if problem else []
    if report is not None:
        notes.extend(summary_view(report)[3])
    if wrong:
        notes.append(f"journal: wrong type for {', '.join(wrong)}")
    return RunInfo(folder, clean, _checked_counts(counts), _checked_failures(failures), note="; ".join(notes))


def read_summary(folder: Path) -> tuple[dict[str, Any] | None, str]:
    """A run folder's summary.json, and why it could not be read.

    Returns:
        ``(report, "")`` for a JSON object; ``(None, "")`` when there is no summary.json;
        ``(None, "summary.json unreadable (why)")`` when it is cut short, not JSON, not an object,
        or cannot be opened.
    """
    try:
        text = read_regular_text(folder / SUMMARY_NAME)
    except (FileNotFoundError, NotADirectoryError):
        return None, ""
    except (OSError, ValueError) as exc:  # no permission, a folder; bytes that are not UTF-8
        why = getattr(exc, "strerror", None) or "not UTF-8 text"
        return None, f"{SUMMARY_UNREADABLE} ({str(why).lower()})"
    try:
        report = json.loads(text)
    except (ValueError, RecursionError):
        return None, f"{SUMMARY_UNREADABLE} (not valid JSON: cut short or edited)"
    if not isinstance(report, dict):
        return None, f"{SUMMARY_UNREADABLE} (a JSON {type(report).__name__}, not an object)"
    return report, ""


def _from_summary(folder: Path, report: dict[str, Any]) -> RunInfo:
    meta, counts, failures, notes = summary_view(report)
    return RunInfo(folder, meta, {**counts, "in_flight": 0}, failures, note="; ".join(notes), from_journal=False)


def summary_view(report: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int], dict[str, int], list[str]]:
    """A summary.json object read field by field: the record, counts and failures of the right type, and notes.

    Returns:
        The run's record, its counts (those of the wrong type left out), its failures by type, and
        a note naming the fields of the wrong type (none when all are right).
    """
    run = report.get("run")
    wrong = [] if run is None or isinstance(run, dict) else ["run"]
    fields = {**(run if isinstance(run, dict) else {}), "outcome": report.get("outcome")}
    fields["exit_code"] = report.get("exit_code")
    fields.setdefault("total", report.get("total"))
    meta, wrong_meta = _checked_meta(fields)
    counts = {name: report.get(field) for name, field in _COUNT_NAMES.items()}
    good_counts = _checked_counts(counts)
    wrong += wrong_meta + [field for name, field in _COUNT_NAMES.items() if _known_but_wrong(counts[name])]
    failures = report.get("failures_by_type")
    good_failures = _checked_failures(failures)
    if failures is not None and good_failures != failures:
        wrong.append("failures_by_type")
    notes = [f"{SUMMARY_UNREADABLE} in part (wrong type for {', '.join(wrong)})"] if wrong else []
    return meta, good_counts, good_failures, notes


def _known_but_wrong(value: object) -> bool:
    return value is not None and not _is_count(value)


def _checked_meta(meta: object) -> tuple[dict[str, Any], list[str]]:
    """The record without the fields of the wrong type (and without None), and the names of those dropped."""
    if not isinstance(meta, dict):
        return {}, ["meta"]
    clean: dict[str, Any] = {}
    wrong: list[str] = []
    for key, value in meta.items():
        if not isinstance(key, str) or value is None:
            continue
        expected = _META_TYPES.get(key)
        if expected is not None and (not isinstance(value, expected) or isinstance(value, bool)):
            wrong.append(key)
            continue
        clean[key] = value
    return clean, wrong


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _checked_counts(counts: object) -> dict[str, int]:
    """The counts that are whole numbers, zero or more; the others are left out (unknown)."""
    if not isinstance(counts, dict):
        return {}
    return {name: value for name, value in counts.items() if isinstance(name, str) and _is_count(value)}


def _checked_failures(failures: object) -> dict[str, int]:
    """Failures by exception type, keeping the entries that are a name and a count."""
    if not isinstance(failures, dict):
        return {}
    return {name: value for name, value in failures.items() if isinstance(name, str) and _is_count(value)}


def _meta_from_name(folder: Path) -> dict[str, Any]:
    """What a run folder's name tells: its start time (``2026-11-25T10-30-00`` is 10:30:00)."""
    match = _RUN_FOLDER_NAME.match(folder.name)
    return {"started_at": f"{match[1]}:{match[2]}:{match[3]}"} if match else {}


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
    for run in runs:
        if run.note:
            print_line(f"{run.folder.name}: {run.note}{_shown_from(run)}", style="yellow")
    for folder, why in unreadable:
        print_line(f"{folder.name}: {why}", style="yellow")


def _shown_from(run: RunInfo) -> str:
    """Where a noted run's row comes from, for the line under the table."""
    if run.from_journal:
        return "; shown from its journal."
    return "; shown from the rest of it." if run.counts else "; its folder name is all that is known."


def _run_row(run: RunInfo) -> list[str]:
    meta = run.meta
    return [
        run.folder.name,
        run.duration,
        Path(str(meta.get("project") or "?")).name + (" (retry)" if meta.get("kind") == "retry" else ""),
        str(meta.get("config") or "-"),
        run.count("done"),
        run.count("failed"),
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
    if not run.from_journal and not run.counts:
        raise JournalError(
            f"The run in {folder} cannot be shown: {run.note}, and it has no {JOURNAL_NAME} "
            "(it ran with -p journal=false) to tell instead.",
            hint="Its logs.txt and failed.jsonl, when there, are still readable; batchframe runs lists the other runs.",
        )
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
    _show_top_errors(folder)
    if run.note:
        print_line(f"Note: {run.note}{_shown_from(run)}", style="yellow")


def _run_fields(run: RunInfo) -> list[list[str]]:
    meta, counts = run.meta, run.counts
    ended = meta.get("ended_at") or (
        "- (still running, or killed: batchframe resume can finish it)"
        if run.from_journal and meta.get("outcome") != FAILED_TO_START and meta.get("exit_code") is None
        else "-"
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
        ["done", run.count("done")],
        ["failed", run.count("failed")],
    ]
    unfinished = counts.get("not_processed", 0) + counts.get("in_flight", 0)
    if unfinished:
        fields.append(["not processed", f"{unfinished:,}"])
    fields.append(["pending", run.pending])
    return fields + _activity_fields(run.folder) + _tune_fields(meta) + _report_fields(run.folder)


def _report_of(folder: Path) -> dict[str, Any]:
    """summary.json's ``report`` (schema 2 and later), or {} when there is none."""
    summary, _ = read_summary(folder)
    report = summary.get("report") if summary is not None else None
    return report if isinstance(report, dict) else {}


def _report_fields(folder: Path) -> list[list[str]]:
    """Latency, attempts per item and the rate over time, from summary.json's report."""
    report = _report_of(folder)
    fields = []
    latency = latency_text(report.get("latency"))
    if latency:
        fields.append(["latency", latency])
    attempts = report.get("attempts")
    if isinstance(attempts, dict) and len(attempts) > 1:
        fields.append(["attempts", ", ".join(f"{count:,} x {tries}" for tries, count in attempts.items())])
    timeline = report.get("timeline")
    if isinstance(timeline, dict) and isinstance(timeline.get("rate_per_s"), list) and timeline["rate_per_s"]:
        rates = [rate for rate in timeline["rate_per_s"] if isinstance(rate, (int, float))]
        if rates:
            fields.append(["rate over time", f"{sparkline(rates)} (peak {max(rates):,.0f}/s)"])
    return fields


_BARS = " ▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 40) -> str:
    """``values`` as a line of block characters, at most ``width`` wide (neighbours averaged)."""
    if len(values) > width:
        step = len(values) / width
        values = [
            sum(values[int(i * step) : max(int((i + 1) * step), int(i * step) + 1)])
            / max(int((i + 1) * step) - int(i * step), 1)
            for i in range(width)
        ]
    top = max(values) or 1.0
    return "".join(_BARS[min(len(_BARS) - 1, round(value / top * (len(_BARS) - 1)))] for value in values)


def _show_top_errors(folder: Path) -> None:
    """The report's top errors: type, message pattern, count, one example item."""
    top = _report_of(folder).get("top_errors")
    if not isinstance(top, list):
        return
    rows = [
        [
            str(error.get("type")),
            str(error.get("pattern")),
            f"{error.get('count', 0):,}",
            str(error.get("example_index")),
        ]
        for error in top
        if isinstance(error, dict)
    ]
    if rows:
        columns = (
            Col("exception", cut_to=20, wrap=True),
            Col("message", cut_to=None, wrap=True),
            Col("items", justify="right"),
            Col("e.g. item", justify="right"),
        )
        print_table("Top errors", columns, rows)


def _tune_fields(meta: dict[str, Any]) -> list[list[str]]:
    """One row per ``batchframe tune`` (or shell or UI tune) of the run: when, and what changed."""
    tunes = meta.get("tunes")
    rows = []
    for tune in tunes if isinstance(tunes, list) else []:
        if isinstance(tune, dict) and isinstance(tune.get("changes"), list):
            when = _time(tune.get("at")).rpartition(" ")[2]
            rows.append(["tuned", f"{when} " + "; ".join(map(str, tune["changes"]))])
    return rows


def _activity_fields(folder: Path) -> list[list[str]]:
    """Retries and rate-limit refusals, from the run's last status (the whole run's, as its counts)."""
    status = read_status(folder)
    if status is None or status.retries is None:  # no status, or an older batchframe's: not known
        return []
    fields = [["retries", f"{status.retries:,}"]]
    if status.rate_limited:
        cooldown_s = status.cooldown_total_s or 0.0
        fields.append(["rate limited", f"{status.rate_limited:,} ({cooldown_s:,.1f} s cooling down)"])
    if status.adaptive:
        last = "none" if status.limit_per_s is None else rate_text(status.limit_per_s)
        fields.append(["rate limit", f"adaptive, {last} {'now' if status.live else 'at the end'}"])
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
