"""The run's log handlers: every record to ``logs.txt``, and to the console.

On a terminal the console handler is rich's (printed above the live progress display); off a
terminal (a file, a pipe, cron, CI) it writes the lines of ``logs.txt`` as they are: one line per
message however long, with its timestamp and level, never padded or wrapped to a width.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.logging import RichHandler

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

    def _open(self) -> io.TextIOWrapper:
        # Owner-only, like every file of the run folder: the user's log lines may hold anything.
        descriptor = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return open(descriptor, "a", encoding=self.encoding, errors=self.errors)

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


DASK_LOGGERS = ("distributed", "dask", "tornado", "bokeh")
"""dask's loggers (and those of the web server of its dashboard): logs.txt only, the console with -v."""


def is_dask_record(record: logging.LogRecord) -> bool:
    """Whether a record is dask's own (``distributed.scheduler``, ``tornado.application``...)."""
    return record.name.split(".", 1)[0] in DASK_LOGGERS


def dask_loggers() -> list[logging.Logger]:
    """The top loggers of dask, and those under them that distributed gave a handler of their own.

    Imported while the root logger has no handler (a project that imports dask itself), distributed
    gives ``distributed``, ``distributed.client``, ``distributed.gc``, ``tornado``... each a handler
    that prints to stderr, and stops them from propagating: their records would bypass logs.txt.
    """
    named = [logging.getLogger(name) for name in DASK_LOGGERS]
    manager = logging.Logger.manager
    for name, candidate in list(manager.loggerDict.items()):
        dasks = "." in name and name.split(".", 1)[0] in DASK_LOGGERS
        if dasks and isinstance(candidate, logging.Logger) and candidate.handlers:
            named.append(candidate)
    return named


@contextmanager
def _dask_records_to_the_run() -> Iterator[None]:
    """While a run logs: dask's loggers lose their own console handlers and propagate to the run's."""
    saved = [(named, list(named.handlers), named.propagate) for named in dask_loggers()]
    for named, handlers, _ in saved:
        named.handlers[:] = [h for h in handlers if type(h) is not logging.StreamHandler]  # stderr; not a file
        named.propagate = True
    try:
        yield
    finally:
        for named, handlers, propagate in saved:
            named.handlers[:] = handlers
            named.propagate = propagate


class _ConsoleFilter(logging.Filter):
    """Keeps out of the console (unless -v): file-only and dask's records, failure lines past the first few."""

    def __init__(self, verbosity: int) -> None:
        super().__init__()
        self.verbose = verbosity >= 1
        self.failures = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "file_only", False) or is_dask_record(record):
            return self.verbose
        if record.name == FAILURES_LOGGER and not self.verbose:
            self.failures += 1
            if self.failures == CONSOLE_FAILURES + 1:
                record.msg, record.args = "More items failed: every one is in logs.txt and failed.jsonl.", ()
                return True
            return self.failures <= CONSOLE_FAILURES
        return True


class _RedactSecrets(logging.Filter):
    """Blanks the run's secret values out of a record (its message and traceback) before any handler writes it.

    The user's own log calls and exception messages may quote a secret parameter's value.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from batchframe.secret import has_secrets, redact

        if not has_secrets():
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format or a raising __str__: the handler reports it as logging does
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info:
            record.exc_text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_info = None  # the formatted, redacted text is written instead
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class _PlainHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Off a terminal: the console gets logs.txt's lines; it goes quiet once its pipe is closed.

    A closed pipe (``| head``; ``| tee`` and Ctrl-C) must not stop the run, nor make every later
    record print logging's "--- Logging error ---" report.
    """

    def __init__(self, console: Console) -> None:
        super().__init__(console.file)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        if not self.console.quiet:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if isinstance(sys.exc_info()[1], OSError):
            self.console.quiet = True  # like every other output of the run, from now on
            with contextlib.suppress(SystemExit):  # the shared console's never exits; a plain rich one would
                self.console.on_broken_pipe()
            return
        super().handleError(record)


def _console_handler(console: Console, verbosity: int) -> logging.Handler:
    """On a terminal, rich's handler; off a terminal, plain lines formatted as in logs.txt."""
    if not console.is_terminal:
        plain = _PlainHandler(console)
        plain.setFormatter(logging.Formatter(FILE_FORMAT))
        return plain
    return _whole_words_handler()(console=console, show_path=verbosity >= 2, rich_tracebacks=verbosity >= 2)


_LOG_COLUMNS = 29
"""Cells before a message in rich's log lines: ``[11/26/26 10:30:00] WARNING  ``."""


def _whole_words_handler() -> type[RichHandler]:
    from rich.cells import cell_len
    from rich.logging import RichHandler
    from rich.text import Text

    class WholeWordsRichHandler(RichHandler):
        """rich's handler, but a message with a word too long for its column (a path) is one line, not broken.

        rich would fold the word inside the message column: ``Run folder: /a/long/pa`` then
        ``th/2026-...`` on the next line. The line is printed whole instead, for the terminal to fold.
        """

        def emit(self, record: logging.LogRecord) -> None:
            message = self.format(record)
            longest = max((cell_len(word) for word in message.split()), default=0)
            if record.exc_info or longest <= self.console.width - _LOG_COLUMNS:
                super().emit(record)
                return
            when = time.strftime("[%x %X]", time.localtime(record.created))
            level = (record.levelname.ljust(8), f"logging.level.{record.levelname.lower()}")
            try:
                self.console.print(Text.assemble((when, "log.time"), " ", level, " ", message), soft_wrap=True)
            except Exception:
                self.handleError(record)

    return WholeWordsRichHandler


def console_level(verbosity: int) -> int:
    """INFO by default, DEBUG with -v or more."""
    return logging.DEBUG if verbosity >= 1 else logging.INFO


@contextmanager
def run_logging(log_file: Path | None, *, verbosity: int = 0, console: Console | None = None) -> Iterator[None]:
    """Send every log record of the run to ``log_file`` and the console; undo it afterwards.

    The file gets INFO and above (DEBUG with -v), the user's own ``logging`` calls included; the
    console shows the same (see ``_console_handler``).
    """
    from batchframe._console import console as shared_console

    root = logging.getLogger()
    level = console_level(verbosity)
    handlers: list[logging.Handler] = []
    if log_file is not None:
        file_handler = _RunFileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(FILE_FORMAT))
        file_handler.setLevel(level)
        handlers.append(file_handler)
    console_handler = _console_handler(console or shared_console(stderr=True), verbosity)
    console_handler.setLevel(level)
    console_handler.addFilter(_ConsoleFilter(verbosity))
    handlers.append(console_handler)
    for handler in handlers:
        handler.addFilter(_RedactSecrets())
    previous_level = root.level
    root.setLevel(level)
    for handler in handlers:
        root.addHandler(handler)
    logging.captureWarnings(True)
    try:
        with _dask_records_to_the_run():
            yield
    finally:
        logging.captureWarnings(False)
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(previous_level)
