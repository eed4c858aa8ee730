"""The run's log handlers: every record to ``logs.txt``, and to the console through rich."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

FILE_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"
FILE_ONLY = {"file_only": True}
FAILURES_LOGGER = "batchframe.failures"
"""``extra=`` for records that go to logs.txt but reach the console only with -v (tracebacks, the end line)."""
CONSOLE_FAILURES = 10
"""Per-item failure lines shown on the console; logs.txt gets every one."""


class _RunFileHandler(logging.FileHandler):
    """logs.txt: flushed after every record, except per-item failure lines, flushed in groups.

    A run with many failing items would otherwise pay one write system call per item;
    ``flush_run_logs`` (called once per event-loop iteration by the run's records) writes them.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != FAILURES_LOGGER or self.stream is None:
            super().emit(record)
            return
        try:
            self.stream.write(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def flush_run_logs() -> None:
    """Write out the failure lines buffered in logs.txt."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _RunFileHandler):
            handler.flush()


class _ConsoleFilter(logging.Filter):
    """Keeps the console readable: file-only records (unless -v) and failure lines past the first few stay out."""

    def __init__(self, verbosity: int) -> None:
        super().__init__()
        self.verbose = verbosity >= 1
        self.failures = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "file_only", False):
            return self.verbose
        if record.name == FAILURES_LOGGER and not self.verbose:
            self.failures += 1
            if self.failures == CONSOLE_FAILURES + 1:
                record.msg, record.args = "More items failed: every one is in logs.txt and failed.jsonl.", ()
                return True
            return self.failures <= CONSOLE_FAILURES
        return True


def console_level(verbosity: int) -> int:
    """INFO by default, DEBUG with -v or more."""
    return logging.DEBUG if verbosity >= 1 else logging.INFO


@contextmanager
def run_logging(log_file: Path | None, *, verbosity: int = 0, console: Console | None = None) -> Iterator[None]:
    """Send every log record of the run to ``log_file`` and the console; undo it afterwards.

    The file gets INFO and above (DEBUG with -v), the user's own ``logging`` calls included; the
    console shows the same through rich's handler, printed above the live progress display.
    """
    from rich.logging import RichHandler

    from batchframe._console import console as shared_console

    root = logging.getLogger()
    level = console_level(verbosity)
    handlers: list[logging.Handler] = []
    if log_file is not None:
        file_handler = _RunFileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(FILE_FORMAT))
        file_handler.setLevel(level)
        handlers.append(file_handler)
    rich_handler = RichHandler(
        console=console or shared_console(stderr=True), show_path=verbosity >= 2, rich_tracebacks=verbosity >= 2
    )
    rich_handler.setLevel(level)
    rich_handler.addFilter(_ConsoleFilter(verbosity))
    handlers.append(rich_handler)
    previous_level = root.level
    root.setLevel(level)
    for handler in handlers:
        root.addHandler(handler)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(previous_level)
