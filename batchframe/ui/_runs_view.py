"""What the UI shows of a run folder, read from its files on every request (the server keeps nothing).

A run's state comes from ``status.json`` while it is live (fresh twice a second), then from
``summary.json`` and the journal once it ended. The functions here only read files and cost what is
on screen: the log's tail is read from the end of ``logs.txt``; failures are read from the start of
``failed.jsonl`` until each exception type has its first items, within a byte budget.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchframe.run.progress import cooldown_text
from batchframe.runfolder.files import open_regular
from batchframe.runfolder.folder import FAILED_NAME, JOURNAL_NAME, LOG_NAME, STATUS_NAME, SUMMARY_NAME
from batchframe.runfolder.history import RunInfo, list_runs, read_run, read_summary, summary_view
from batchframe.runfolder.journal import JournalError
from batchframe.runfolder.live import RunStatus, read_status
from batchframe.runfolder.outcome import FAILED_TO_START, finished_every_item, outcome_label
from batchframe.runfolder.stats import rate_text
from batchframe.ui._report_view import ReportView, report_view

LOG_LINES = 60
LOG_BYTES = 64 * 1024
ITEMS_PER_TYPE = 20
FAILED_SCAN_BYTES = 8 * 1024 * 1024
_TEXT_CHARS = 300
_TRACEBACK_CHARS = 4000


# ------------------------------------------------------------------------------------- run folders


def run_folder(output_dir: Path, name: str) -> Path | None:
    """``output_dir/name`` when it is a run folder directly inside ``output_dir``, else None.

    Rejects anything that could reach elsewhere: separators, ``.``/``..``, and a symlink (or any
    path) that resolves outside ``output_dir``.
    """
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        return None
    folder = output_dir / name
    try:
        inside = folder.resolve(strict=True).parent == output_dir.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    if not inside or not folder.is_dir():
        return None
    markers = (JOURNAL_NAME, SUMMARY_NAME, STATUS_NAME)
    return folder if any((folder / marker).is_file() for marker in markers) else None


def folder_names(output_dir: Path) -> set[str]:
    """The names of the folders in ``output_dir`` now (to tell a new run folder from the old ones)."""
    try:
        return {entry.name for entry in os.scandir(output_dir) if entry.is_dir(follow_symlinks=False)}
    except OSError:
        return set()


def listing_signature(output_dir: Path) -> str:
    """A short digest that changes when a run folder appears or goes, or a run's status or summary changes.

    Costs two ``stat`` calls per folder, so the runs table can be polled without re-reading every
    journal when nothing happened. (Not the journal's own time: reading a journal writes to it.)
    """
    digest = hashlib.sha256()
    for name in sorted(folder_names(output_dir)):
        digest.update(name.encode("utf-8", "surrogateescape"))
        for record in (STATUS_NAME, SUMMARY_NAME):
            with contextlib.suppress(OSError):
                stat = os.stat(output_dir / name / record)
                digest.update(f"{record}:{stat.st_mtime_ns}:{stat.st_size};".encode())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------------ outcome


_OUTCOME_TONES = {"completed": "ok", "completed with failures": "warn", "stopped": "warn", "failed": "bad"}


def tone(*, live: bool, raw_state: str, outcome: str | None, failed: int | None) -> str:
    """The colour class of a run's state (``tone-<name>`` in the stylesheet): ``ok`` (green) only for success.

    ``ok`` is a run that completed with no failed item; ``warn`` one that completed with failures or
    was stopped; ``bad`` one that failed or was killed; ``live`` and ``paused`` a run going on;
    ``unknown`` one whose end is not known (killed, or its records unreadable).

    Args:
        live: the run's process is there and has not finished.
        raw_state: the state word of its status ("running", "paused", "killed"...), or "".
        outcome: how it ended (``outcome_label``), or None.
        failed: its failed items, or None when not known.
    """
    if live:
        return "paused" if raw_state in ("pausing", "paused") else "live"
    if raw_state == "killed":
        return "bad"
    if outcome == "completed" and failed != 0:  # exit 0 with failures (or none known) is no success
        return "warn" if failed else "unknown"
    return _OUTCOME_TONES.get(outcome or "", "unknown")


@dataclass(frozen=True)
class Progress:
    """The run's counters and state word, whichever record they come from.

    Attributes:
        state: "running", "pausing", "paused", "stopping", "finished: <outcome>", "killed", or
            "running or killed" for a run that writes no status (an older batchframe's).
        live: the run's process is there and it has not finished.
        completed: the N of "N / TOTAL".
        total: the number of items, when the Source has a length.
        cooldown_s: seconds left of a run-wide ``RateLimited`` cool-down (0: none).
        retries, rate_limited, cooldown_total_s: the whole run's retries, ``RateLimited`` refusals and
            seconds cooling down (None: not known, a run of an older batchframe).
    """

    state: str
    live: bool
    completed: int
    total: int | None
    succeeded: int
    failed: int
    not_processed: int = 0
    retrying: int = 0
    in_flight: int = 0
    rate_per_s: float | None = None
    eta_s: float | None = None
    elapsed_s: float | None = None
    raw_state: str = ""
    cooldown_s: float = 0.0
    outcome: str | None = None
    retries: int | None = None
    rate_limited: int | None = None
    cooldown_total_s: float | None = None
    concurrency: int | None = None
    limit_per_s: float | None = None
    adaptive: bool = False

    @property
    def limit(self) -> str:
        """The start rate limit now, as the live line shows it: ``38/s (adaptive)``; ``none``; "" when not known."""
        if self.concurrency is None:
            return ""
        shown = "none" if self.limit_per_s is None else rate_text(self.limit_per_s)
        return f"{shown} (adaptive)" if self.adaptive else shown

    @property
    def tone(self) -> str:
        """The colour class of its state (see ``tone``): green only for a run that completed with no failure."""
        return tone(live=self.live, raw_state=self.raw_state, outcome=self.outcome, failed=self.failed)

    @property
    def cooldown(self) -> str:
        """``cooling down 12 s`` while a live run holds every new start for a rate limit, else ``""``."""
        return cooldown_text(self.cooldown_s) if self.live else ""

    @property
    def count(self) -> str:
        """The count as "N / TOTAL" ("N / ?" when the total is unknown)."""
        total = "?" if self.total is None else f"{self.total:,}"
        return f"{self.completed:,} / {total}"

    @property
    def percent(self) -> int | None:
        """Done so far, in percent, when the total is known."""
        if not self.total:
            return None
        return min(100, round(100 * self.completed / self.total))


def progress(status: RunStatus | None, info: RunInfo | None) -> Progress:
    """The run's progress: from its status, else (a run of an older batchframe) its journal or summary."""
    if status is not None and (status.live or status.state == "killed" or status.exit_code is not None):
        return _from_status(status)
    meta, counts = (info.meta, info.counts) if info is not None else ({}, {})
    label = outcome_label(meta.get("outcome"), meta.get("exit_code"))
    done, failed = counts.get("done", 0), counts.get("failed", 0)
    total = meta.get("total")
    return Progress(
        state=f"finished: {label}" if label else "running or killed",
        live=False,
        completed=done + failed,
        total=total if isinstance(total, int) else None,
        succeeded=done,
        failed=failed,
        not_processed=counts.get("not_processed", 0),
        outcome=label,
    )


def _from_status(status: RunStatus) -> Progress:
    label = None if status.live or status.state == "killed" else outcome_label(status.outcome, status.exit_code)
    if status.live or status.state == "killed":
        state = status.state
    else:
        label = label or "failed"
        state = f"finished: {label}"
    return Progress(
        state=state,
        live=status.live,
        completed=status.completed,
        total=status.total,
        succeeded=status.succeeded,
        failed=status.failed,
        not_processed=status.not_processed,
        retrying=status.retrying,
        in_flight=status.in_flight,
        rate_per_s=status.rate_per_s,
        eta_s=status.eta_s,
        elapsed_s=status.elapsed_s,
        raw_state=status.state,
        cooldown_s=_cooldown_left(status),
        outcome=label,
        retries=status.retries,
        rate_limited=status.rate_limited,
        cooldown_total_s=status.cooldown_total_s,
        concurrency=status.concurrency,
        limit_per_s=status.limit_per_s,
        adaptive=bool(status.adaptive),
    )


def _cooldown_left(status: RunStatus) -> float:
    """The cool-down's seconds left now: counted down from when the status was written (twice a second)."""
    if not status.cooldown_s:
        return 0.0
    return max(status.cooldown_s - max(time.time() - status.updated_at, 0.0), 0.0)


# --------------------------------------------------------------------------------------- a run page


@dataclass(frozen=True)
class Actions:
    """The buttons that apply to a run now."""

    pause: bool = False
    resume: bool = False
    stop: bool = False
    resume_run: bool = False
    retry: bool = False


def actions(prog: Progress, info: RunInfo | None) -> Actions:
    """Pause/Resume/Stop for a live run; Resume (the run) and Retry failed items for one that ended.

    Mirrors what ``batchframe resume`` and ``batchframe retry`` accept: retry needs a run that
    finished every item (exit 0 or 3) with some failures; resume needs one that did not.
    """
    if prog.live:
        paused = prog.raw_state in ("pausing", "paused")
        stopping = prog.raw_state == "stopping"
        return Actions(pause=not paused and not stopping, resume=paused, stop=not stopping)
    if info is None or not (info.folder / JOURNAL_NAME).is_file():
        return Actions()  # a run without a journal (-p journal=false) can be neither resumed nor retried
    meta, counts = info.meta, info.counts
    finished_all = finished_every_item(meta, counts)
    return Actions(resume_run=not finished_all, retry=finished_all and counts.get("failed", 0) > 0)


@dataclass(frozen=True)
class RunPage:
    """Everything the run page shows."""

    name: str
    folder: Path
    meta: dict[str, Any]
    progress: Progress
    actions: Actions
    error: str | None
    failures_by_type: dict[str, int]
    note: str = ""
    report: ReportView | None = None
    downloads: tuple[str, ...] = ()
    """The run's files a user may download here (failed.jsonl, logs.txt, summary.json), those that exist."""


DOWNLOADS = (FAILED_NAME, LOG_NAME, SUMMARY_NAME)
"""The files of a run folder the page links to for download; no other name is served."""


def read_page(folder: Path) -> RunPage:
    """Read one run folder for its page (blocking: call it from a worker thread).

    A summary.json that cannot be read (or only in part) is noted on the page, never an error.
    """
    status = read_status(folder)
    summary, _ = read_summary(folder)
    info = read_info(folder)
    prog = progress(status, info)
    return RunPage(
        report=report_view(summary),
        name=folder.name,
        folder=folder,
        meta=dict(info.meta) if info is not None else summary_view(summary)[0] if summary is not None else {},
        progress=prog,
        actions=actions(prog, info),
        error=_error(summary, info),
        failures_by_type=failure_counts(status, info),
        note=info.note if info is not None else "",
        downloads=tuple(name for name in DOWNLOADS if (folder / name).is_file()),
    )


def read_info(folder: Path) -> RunInfo | None:
    """The journal's (or summary's) view of the run, or None when neither can be read."""
    try:
        return read_run(folder)
    except JournalError:
        return None


def read_live(folder: Path) -> tuple[Progress, dict[str, int]] | None:
    """The progress and failure counts of a run from its status alone (cheap: for the live stream).

    Returns None when the run is not live, so the caller reads the whole page once more at the end.
    """
    status = read_status(folder)
    if status is None or not status.live:
        return None
    return _from_status(status), dict(status.failures_by_type)


def _error(summary: Mapping[str, Any] | None, info: RunInfo | None) -> str | None:
    for record in (summary or {}, info.meta if info is not None else {}):
        text = record.get("fatal_error") or record.get("error")
        if isinstance(text, str) and text:
            return text
    return None


def failure_counts(status: RunStatus | None, info: RunInfo | None) -> dict[str, int]:
    """Items that did not succeed, by exception type: from the status while it is fresher than the journal."""
    if status is not None and (status.live or status.state == "killed"):
        return dict(status.failures_by_type)
    return dict(info.failures) if info is not None else {}


# ------------------------------------------------------------------------------------ logs, failures


def log_tail(folder: Path, *, lines: int = LOG_LINES, max_bytes: int = LOG_BYTES) -> str:
    """The last ``lines`` lines of the run's ``logs.txt``, reading at most ``max_bytes`` from its end."""
    try:
        with open_regular(folder / LOG_NAME) as log:
            size = log.seek(0, os.SEEK_END)
            start = max(0, size - max_bytes)
            log.seek(start)
            data = log.read(max_bytes)
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    kept = text.splitlines()
    if start > 0 and kept:
        kept = kept[1:]  # the first line was cut by the byte budget
    return "\n".join(kept[-lines:])


@dataclass(frozen=True)
class FailedRow:
    """One failed item as the page shows it (texts cut to a readable length)."""

    index: int | None
    item: str
    message: str
    attempts: int | None
    traceback: str


@dataclass(frozen=True)
class FailureGroup:
    """The items that failed with one exception type: the first few, and how many more."""

    error_type: str
    count: int
    items: tuple[FailedRow, ...]

    @property
    def more(self) -> int:
        """Items of this type not listed."""
        return max(self.count - len(self.items), 0)


def failure_groups(
    folder: Path,
    counts: Mapping[str, int],
    *,
    per_type: int = ITEMS_PER_TYPE,
    max_bytes: int = FAILED_SCAN_BYTES,
) -> list[FailureGroup]:
    """Failures grouped by exception type (most frequent first), each with its first ``per_type`` items.

    ``counts`` are the totals by type from the run's records; ``failed.jsonl`` is read from its start
    until every type has its items or ``max_bytes`` were read, so a million failures cost one budget.
    """
    rows: dict[str, list[FailedRow]] = {}
    seen: dict[str, int] = {}
    wanted = {name for name, count in counts.items() if count > 0}
    with contextlib.suppress(OSError), open_regular(folder / FAILED_NAME) as lines:
        read = 0
        for raw in lines:
            read += len(raw)
            record = _record(raw)
            if record is not None:
                kind = str(record.get("error_type") or "Exception")
                seen[kind] = seen.get(kind, 0) + 1
                if len(rows.setdefault(kind, [])) < per_type:
                    rows[kind].append(_row(record))
            full = {kind for kind, found in rows.items() if len(found) >= per_type}
            if read >= max_bytes or (wanted and wanted <= full):
                break
    totals = {**seen, **{name: count for name, count in counts.items() if count > 0}}
    groups = [
        FailureGroup(name, max(count, len(rows.get(name, []))), tuple(rows.get(name, [])))
        for name, count in totals.items()
    ]
    return sorted(groups, key=lambda group: (-group.count, group.error_type))


def _record(raw: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(raw)
    except ValueError:  # a line being written right now
        return None
    return record if isinstance(record, dict) else None


def _row(record: Mapping[str, Any]) -> FailedRow:
    item = record.get("item_repr")
    if item is None:
        try:
            item = json.dumps(record.get("item"), ensure_ascii=False)
        except (TypeError, ValueError):
            item = repr(record.get("item"))
    index, attempts = record.get("index"), record.get("attempts")
    return FailedRow(
        index=index if isinstance(index, int) else None,
        item=_cut(str(item), _TEXT_CHARS),
        message=_cut(str(record.get("message") or ""), _TEXT_CHARS),
        attempts=attempts if isinstance(attempts, int) else None,
        traceback=_cut(str(record.get("traceback") or ""), _TRACEBACK_CHARS),
    )


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -------------------------------------------------------------------------------------- runs table


@dataclass(frozen=True)
class RunRow:
    """One row of the runs table (the columns of ``batchframe runs``, and the state in words).

    Attributes:
        name: the run folder's name (its start time): the row's link to the run page.
        project_path: the project as the run recorded it (the cell shows its file name, this in full).
        tone: the colour class of the state (see ``tone``).
        note: what of the run's records could not be read, or empty.
    """

    name: str
    duration: str
    project: str
    project_path: str
    config: str
    done: str
    failed: str
    pending: str
    state: str
    exit: str
    live: bool
    tone: str = "unknown"
    note: str = ""


OUTCOME_FILTERS: dict[str, tuple[str, ...]] = {
    "running": ("live", "paused"),
    "succeeded": ("ok",),
    "with failures or stopped": ("warn",),
    "failed or killed": ("bad",),
}
"""The runs table's filters (``/runs?outcome=...``), by the tones of the states each shows."""


def run_rows(output_dir: Path, outcome: str | None = None) -> tuple[list[RunRow], list[tuple[str, str]]]:
    """The runs under ``output_dir``, newest first, and the folders that could not be read (name, why).

    A live run's counters come from its status (fresher than its journal).

    Args:
        output_dir: the folder of run folders.
        outcome: one of ``OUTCOME_FILTERS`` to list only those runs (the unreadable folders then too
            are left out); None or an unknown word: every run.
    """
    runs, unreadable = list_runs(output_dir)
    rows = [_row_of(run) for run in runs]
    tones = OUTCOME_FILTERS.get(outcome or "")
    if tones is None:
        return rows, [(folder.name, why) for folder, why in unreadable]
    return [row for row in rows if row.tone in tones], []


def _row_of(run: RunInfo) -> RunRow:
    meta = run.meta
    status = read_status(run.folder)
    prog = _from_status(status) if status is not None else None
    done, failed, pending = run.count("done"), run.count("failed"), run.pending
    # How it ended: the journal's exit code, else what its last status said (the journal's can be unreadable).
    label = outcome_label(meta.get("outcome"), meta.get("exit_code")) or (prog.outcome if prog is not None else None)
    failed_count: int | None = run.counts.get("failed")
    live = prog is not None and prog.live
    if prog is not None and prog.live:
        state = prog.state
        done, failed = f"{prog.succeeded:,}", f"{prog.failed:,}"
        pending = "unknown" if prog.total is None else f"{max(prog.total - prog.completed, 0):,}"
        failed_count = prog.failed
    elif meta.get("outcome") == FAILED_TO_START:
        state = run.state  # the runs table's word for it (outcome.state_word)
    elif label is not None:
        state = label  # "completed with failures": the column says it is the state; the run page says "finished: ..."
    else:  # no exit code in the journal: killed (status says so), or an older batchframe's run
        state = prog.state if prog is not None else run.state
    raw_state = prog.raw_state if prog is not None and label is None else ""
    project = str(meta.get("project") or "?")
    return RunRow(
        name=run.folder.name,
        duration=run.duration,
        project=Path(project).name + (" (retry)" if meta.get("kind") == "retry" else ""),
        project_path=project,
        config=str(meta.get("config") or "-"),
        done=done,
        failed=failed,
        pending=pending,
        state=state,
        exit="-" if meta.get("exit_code") is None else str(meta.get("exit_code")),
        live=live,
        tone=tone(live=live, raw_state=raw_state, outcome=label, failed=failed_count),
        note=run.note,
    )
