"""What a run writes as each item finishes: the journal, ``failed.jsonl``, ``logs.txt`` and the failed-items spool.

Nothing here keeps an exception or a traceback per failed item in memory: each failure is written
out as it happens (the spool for ``persist_failed`` lives in a temporary file), so a run with a
million failures costs what a run with a million successes costs, plus the writing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchframe.runfolder.failures import NOT_PROCESSED, FailedItem, FailedItems, FailureLog, pickled_item
from batchframe.runfolder.folder import FAILED_NAME
from batchframe.runfolder.journal import file_identity
from batchframe.runfolder.logs import FAILURES_LOGGER, flush_run_logs, item_fields

if TYPE_CHECKING:
    from batchframe.runfolder.journal import Journal

failure_logger = logging.getLogger(FAILURES_LOGGER)
"""One WARNING per item that fails for good (the console shows the first few; logs.txt all of them)."""


class RunRecords:
    """The sinks of one run's item outcomes.

    Args:
        run_dir: the run folder (``failed.jsonl`` goes there), or None to write no file.
        journal: the run's journal, or None (``-p journal=false``).
        keep: also keep every ``FailedItem`` (with its exception) and the succeeded positions in
            memory, for ``batchframe.testing``.
    """

    def __init__(self, run_dir: Path | None, journal: Journal | None, *, keep: bool = False) -> None:
        self.journal = journal
        self.failure_log = FailureLog(run_dir / FAILED_NAME if run_dir is not None else None)
        self.failed_items = FailedItems()
        self.kept_failures: list[FailedItem] | None = [] if keep else None
        self.kept_successes: list[int] | None = [] if keep else None
        self.on_error: Callable[[Exception], None] | None = None
        """Told when a grouped write fails after ``on_failure`` returned (the executor stops the run)."""
        self._flush_scheduled = False
        self._written = 0
        self._failed_file: tuple[int, int] | None = None  # failed.jsonl's identity once it exists

    @property
    def on_success(self) -> Any:
        """The executor's per-success callback (None when nothing needs it: the fast path)."""
        if self.kept_successes is not None:
            kept, journal = self.kept_successes, self.journal

            def both(index: int) -> None:
                kept.append(index)
                if journal is not None:
                    journal.succeeded(index)

            return both
        return self.journal.succeeded if self.journal is not None else None

    def on_failure(self, failed: FailedItem) -> None:
        """Record an item that failed for good or was not processed.

        Raises:
            RecordError: ``failed.jsonl`` or the journal could not be written (after trying both).
        """
        payload = pickled_item(failed.item)
        self.failed_items.append(failed.item, payload)
        if self.kept_failures is not None:
            self.kept_failures.append(failed)
        if failed.error_type != NOT_PROCESSED:
            _log_failure(failed)
        self._written += 1
        error: Exception | None = None
        try:
            if self.journal is not None:
                self.journal.finished_badly(failed, payload)
        except Exception as exc:
            error = exc
        try:
            self.failure_log.write(failed)
        except Exception as exc:
            error = error or exc
        if error is not None:
            raise error
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        # Group writes: failed.jsonl and the failure lines of logs.txt, once per event-loop iteration.
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (after the run): write now
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        try:
            self.flush()
        except Exception as exc:
            if self.on_error is None:
                raise
            self.on_error(exc)

    def flush(self) -> None:
        """Write the buffered ``failed.jsonl`` lines and flush logs.txt.

        Raises:
            RecordError: ``failed.jsonl`` could not be written.
        """
        flush_run_logs()
        self.failure_log.flush()
        self._note_failed_file()

    def _note_failed_file(self) -> None:
        if self._failed_file is None and self._written:  # a stat per flush only until the file exists
            self._failed_file = file_identity(self.failure_log.path)

    def lost(self) -> list[str]:
        """What of the records was deleted or replaced while the run wrote them (``failed.jsonl``, the journal).

        A file deleted under an open handle takes every later write without an error, so a run would
        say its failures are in ``failed.jsonl`` when they are nowhere. Two ``stat`` calls; never raises.
        """
        lost: list[str] = []
        journal_went = self.journal.lost() if self.journal is not None else None
        path = self.failure_log.path
        if path is not None and self._failed_file is not None and file_identity(path) != self._failed_file:
            kept = (
                f"; the journal still has them (batchframe runs {path.parent} lists them)"
                if self.journal is not None and journal_went is None
                else ""
            )
            lost.append(
                f"{path} was deleted or replaced while the run wrote to it: the {self._written:,} "
                f"record(s) of items that did not succeed written there are lost{kept}."
            )
        if self.journal is not None and journal_went is not None:
            lost.append(
                f"The journal {self.journal.path} {journal_went} while the run wrote to it: what it recorded is "
                "lost, so this run cannot be resumed or retried."
            )
        return lost

    def close(self) -> None:
        """Write what is buffered and close ``failed.jsonl`` (the spool stays readable until ``discard()``).

        Raises:
            RecordError: the last lines could not be written.
        """
        flush_run_logs()
        try:
            self.failure_log.close()
        finally:
            self._note_failed_file()

    def discard(self) -> None:
        """Delete the spool."""
        self.failed_items.close()


def _log_failure(failed: FailedItem) -> None:
    """One WARNING line for an item that failed for good.

    Built with ``makeRecord`` rather than ``warning()``: the line needs no caller's file and line,
    and finding them (a stack walk per record) was half of what a failing item cost.
    """
    if not failure_logger.isEnabledFor(logging.WARNING):
        return
    args = (failed.index, failed.attempts, failed.error_type, _first_line(failed.message))
    record = failure_logger.makeRecord(
        FAILURES_LOGGER,
        logging.WARNING,
        __file__,
        0,
        "Item %d failed after %d attempt(s): %s: %s",
        args,
        None,
        extra=item_fields(failed.index, failed.attempts),
    )
    failure_logger.handle(record)


def _first_line(message: str, limit: int = 300) -> str:
    line = message.splitlines()[0] if message else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
