"""The run's log handlers: every record to ``logs.txt``, and to the console.

On a terminal the console handler is rich's (printed above the live progress display); off a
terminal (a file, a pipe, cron, CI) it writes the lines of ``logs.txt`` as they are: one line per
message however long, with its timestamp and level, never padded or wrapped to a width.

Which records each one takes (``_log_levels``): logs.txt every record from INFO (DEBUG with -v); the
console batchframe's and the project's from INFO, other libraries' from WARNING (all with -v); a
logger named in ``log_levels`` its own level in both. The decision is made once per logger name.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from batchframe._text import printable
from batchframe.project.log_levels import EXPECTED, ROOT, LogLevels, RunLogLevel, is_library
from batchframe.runfolder.log_guard import LoggingGuard, RedactSecrets

if TYPE_CHECKING:
    from rich.console import Console, ConsoleRenderable
    from rich.logging import RichHandler

FILE_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"
FILE_ONLY = {"file_only": True}
FAILURES_LOGGER = "batchframe.failures"
"""``extra=`` for records that go to logs.txt but reach the console only with -v (tracebacks, the end line)."""
CONSOLE_FAILURES = 10
"""Per-item failure lines shown on the console; logs.txt gets every one."""


class _PrintableFormatter(logging.Formatter):
    r"""The run's handlers' formatter: a record as text that never drives a terminal (``_text.printable``).

    What user code logs or raises may hold control characters (an ESC that clears the screen): they
    are written out as text (``\x1b[2J``) in logs.txt and on the console alike. It formats every
    record the run's handlers take, those sent by worker processes included.
    """

    _stamp: tuple[int, str] = (-1, "")  # the last second formatted, and its text

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        # strftime once per second, not per record: a run with many failing items logs one line per item.
        if datefmt:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        known, text = self._stamp
        if known != second:
            text = time.strftime(self.default_time_format, self.converter(record.created))
            self._stamp = (second, text)
        return f"{text},{int(record.msecs):03d}"  # logging's default_msec_format


LOG_FORMATS = ("text", "json")
"""``--log-format``: text lines (the default), or one JSON object per line."""


class JsonFormatter(logging.Formatter):
    """``--log-format json``: each record as one JSON object on one line.

    Fields: ``time`` (ISO 8601, local time with its offset), ``level``, ``logger``, ``message``,
    ``run_id`` (the run folder's name); ``item`` and ``attempt`` for a record about one item;
    ``exception`` (the formatted traceback) when the record has one; ``summary`` on the end-of-run record.
    """

    def __init__(self, run_id: str | None) -> None:
        super().__init__()
        self.run_id = run_id

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        fields: dict[str, object] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "run_id": self.run_id,
        }
        for name in ("item", "attempt", "summary"):
            value = getattr(record, name, None)
            if value is not None:
                fields[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            fields["exception"] = record.exc_text
        return json.dumps(fields, ensure_ascii=False, default=str)


def _iso_time(created: float) -> str:
    local = time.localtime(created)
    offset = time.strftime("%z", local)
    millis = int((created - int(created)) * 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', local)}.{millis:03d}{offset[:3]}:{offset[3:]}"


def checked_log_format(log_format: str) -> str:
    """``log_format`` itself, when it is one of ``LOG_FORMATS``.

    Raises:
        UsageError: another value.
    """
    if log_format not in LOG_FORMATS:
        from batchframe.errors import UsageError

        raise UsageError(
            f"Unknown log format {log_format!r}.", hint=f"Use --log-format {' or --log-format '.join(LOG_FORMATS)}."
        )
    return log_format


def item_fields(index: int, attempt: int | None = None) -> dict[str, int]:
    """``extra=`` for a record about one item: ``--log-format json`` gives them fields of their own."""
    return {"item": index} if attempt is None else {"item": index, "attempt": attempt}


class _RunFileHandler(logging.FileHandler):
    """logs.txt: flushed after every record, except per-item failure lines, flushed in groups.

    A run with many failing items would otherwise pay one write system call per item;
    ``flush_run_logs`` (called once per event-loop iteration by the run's records) writes them.
    """

    def _open(self) -> io.TextIOWrapper:
        # Owner-only, like every file of the run folder: the user's log lines may hold anything.
        descriptor = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return open(descriptor, "a", encoding=self.encoding, errors=self.errors)

    run_closing = False
    """Set when the run itself closes it: user code removing the handler (``basicConfig(force=True)``) must not."""

    def close(self) -> None:
        if self.run_closing:
            super().close()

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


_LINE_HEAD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+|Level \d+) +(?P<name>\S+): ")
"""The start of a record's first line in logs.txt (``FILE_FORMAT``); the lines of a traceback have none."""


def console_lines(lines: Iterable[str]) -> tuple[list[str], int]:
    """The lines of logs.txt the console shows by default: libraries' records below WARNING left out.

    A record's continuation lines (a traceback, a message with newlines) go with it.

    Returns:
        The lines kept, and how many records were left out.
    """
    thresholds = _Thresholds(LogLevels(), verbosity=0)
    kept: list[str] = []
    hidden = 0
    keep = True
    for line in lines:
        head = _LINE_HEAD.match(line)
        if head is not None:
            keep = _level_number(head["level"]) >= thresholds.of(head["name"])[1]
            hidden += not keep
        if keep:
            kept.append(line)
    return kept, hidden


def _level_number(text: str) -> int:
    """The level of a level name in logs.txt: ``INFO``, a custom name, or ``Level 5`` (an unknown one is kept)."""
    level = logging.getLevelName(text)
    if isinstance(level, int):
        return level
    number = text.removeprefix("Level ")
    return int(number) if number.isdigit() else logging.CRITICAL


def flush_run_logs() -> None:
    """Write out the failure lines buffered in logs.txt."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _RunFileHandler):
            handler.flush()


ENGINE_LOGGERS = ("distributed", "dask", "tornado", "bokeh", "ray")
"""The distributed engines' own loggers (dask's, its dashboard's web server's, Ray's): logs.txt only, the
console with -v."""


def is_engine_record(record: logging.LogRecord) -> bool:
    """Whether a record is an engine's own (``distributed.scheduler``, ``tornado.application``, ``ray``...)."""
    return record.name.split(".", 1)[0] in ENGINE_LOGGERS


def engine_loggers() -> list[logging.Logger]:
    """The engines' top loggers, and those under them that the engine gave a handler of their own.

    Imported while the root logger has no handler (a project that imports dask itself), distributed
    gives ``distributed``, ``distributed.client``, ``distributed.gc``, ``tornado``... each a handler
    that prints to stderr, and stops them from propagating: their records would bypass logs.txt.
    """
    named = [logging.getLogger(name) for name in ENGINE_LOGGERS]
    manager = logging.Logger.manager
    for name, candidate in list(manager.loggerDict.items()):
        engines = "." in name and name.split(".", 1)[0] in ENGINE_LOGGERS
        if engines and isinstance(candidate, logging.Logger) and candidate.handlers:
            named.append(candidate)
    return named


@contextmanager
def _engine_records_to_the_run() -> Iterator[None]:
    """While a run logs: the engines' loggers lose their own console handlers and propagate to the run's."""
    saved = [(named, list(named.handlers), named.propagate) for named in engine_loggers()]
    for named, handlers, _ in saved:
        named.handlers[:] = [h for h in handlers if type(h) is not logging.StreamHandler]  # stderr; not a file
        named.propagate = True
    try:
        yield
    finally:
        for named, handlers, propagate in saved:
            named.handlers[:] = handlers
            named.propagate = propagate


class _Thresholds:
    """The lowest level logs.txt and the console take from each logger, decided once per logger name.

    A logger named in ``log_levels`` (or below one) has that level in both; any other has the run's
    level (INFO, DEBUG with -v, or what ``root`` is given) in logs.txt, and on the console too unless
    it is a library's: those show from WARNING (unless -v).
    """

    _MOST = 4096  # logger names remembered; a project that makes a logger per item starts again past it

    def __init__(self, levels: LogLevels, verbosity: int) -> None:
        self.levels = levels
        self.base = levels.get(ROOT, console_level(verbosity))
        self.library_console = self.base if verbosity >= 1 else max(self.base, logging.WARNING)
        self.lowest = min([self.base, *levels.values()])
        self._known: dict[str, tuple[int, int]] = {}

    def of(self, name: str) -> tuple[int, int]:
        """``(logs.txt's level, the console's level)`` for logger ``name``."""
        known = self._known.get(name)
        if known is None:
            if len(self._known) >= self._MOST:
                self._known.clear()
            known = self._known[name] = self._decide(name)
        return known

    def _decide(self, name: str) -> tuple[int, int]:
        named = self.levels.level_of(name)
        if named is not None:
            return named, named
        return self.base, self.library_console if is_library(name) else self.base


class _FileFilter(logging.Filter):
    """logs.txt: each logger's records from its level (see ``_Thresholds``)."""

    def __init__(self, thresholds: _Thresholds) -> None:
        super().__init__()
        self.thresholds = thresholds

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.thresholds.of(record.name)[0]


class _ConsoleFilter(logging.Filter):
    """The console's filter: libraries' records below WARNING left out (see ``_Thresholds``).

    Unless -v, also file-only and dask's records, and failure lines past the first few.
    """

    def __init__(self, verbosity: int, thresholds: _Thresholds) -> None:
        super().__init__()
        self.verbose = verbosity >= 1
        self.thresholds = thresholds
        self.failures = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.thresholds.of(record.name)[1]:
            return False
        if getattr(record, "file_only", False) or is_engine_record(record):
            return self.verbose
        if record.name == FAILURES_LOGGER and not self.verbose:
            self.failures += 1
            if self.failures == CONSOLE_FAILURES + 1:
                record.msg, record.args = "More items failed: every one is in logs.txt and failed.jsonl.", ()
                return True
            return self.failures <= CONSOLE_FAILURES
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
        if isinstance(sys.exc_info()[1], (OSError, ValueError)):  # a closed pipe; a stream user code closed
            self.console.quiet = True  # like every other output of the run, from now on
            with contextlib.suppress(SystemExit):  # the shared console's never exits; a plain rich one would
                self.console.on_broken_pipe()
            return
        super().handleError(record)


def _console_handler(console: Console, verbosity: int) -> logging.Handler:
    """On a terminal, rich's handler; off a terminal, plain lines formatted as in logs.txt."""
    if not console.is_terminal:
        plain = _PlainHandler(console)
        plain.setFormatter(_PrintableFormatter(FILE_FORMAT))
        return plain
    rich = _whole_words_handler()(console=console, show_path=verbosity >= 2, rich_tracebacks=verbosity >= 2)
    rich.setFormatter(_PrintableFormatter())
    return rich


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
            if self.rich_tracebacks and record.exc_info:  # -vv: rich draws the exception itself
                record = _printable_traceback(record)
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

        def render_message(self, record: logging.LogRecord, message: str) -> ConsoleRenderable:
            # With -vv rich formats the message of a record with a traceback itself, not through format().
            return super().render_message(record, printable(message))

    return WholeWordsRichHandler


def _printable_traceback(record: logging.LogRecord) -> logging.LogRecord:
    """``record``, or a copy whose traceback is plain printable text when its exception's holds control characters."""
    text = logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]
    safe = printable(text)
    if safe == text:
        return record
    copy = logging.makeLogRecord(record.__dict__)
    copy.exc_info, copy.exc_text = None, safe
    return copy


def console_level(verbosity: int) -> int:
    """INFO by default, DEBUG with -v or more."""
    return logging.DEBUG if verbosity >= 1 else logging.INFO


def run_levels(value: object) -> LogLevels:
    """The ``log_levels`` setting as LogLevels: from ``-p`` (parsed already), or a config's text or mapping.

    Raises:
        ParamError: a value that does not parse, naming the parameter, the value and the expected form.
    """
    if value is None:
        return LogLevels()
    if isinstance(value, LogLevels):
        return value
    try:
        if not isinstance(value, (str, Mapping)):
            raise ValueError(f"expected {EXPECTED}")
        return LogLevels(value)
    except ValueError as exc:
        from batchframe.errors import ParamError

        raise ParamError(
            f"Parameter 'log_levels' is {value!r}: {exc}.",
            hint="Fix log_levels in your configuration, or give it with -p log_levels=httpx:WARNING.",
            param="log_levels",
        ) from None


@contextmanager
def _named_levels(levels: LogLevels) -> Iterator[None]:
    """The loggers named in ``levels`` get their level (their records are made, or not, where they log)."""
    named = [(logging.getLogger(name), level) for name, level in levels.items() if name != ROOT]
    saved = [(logger, logger.level) for logger, _ in named]
    for logger, level in named:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, level in reversed(saved):
            logger.setLevel(level)


@contextmanager
def run_logging(
    log_file: Path | None,
    *,
    verbosity: int = 0,
    console: Console | None = None,
    levels: object = None,
    log_format: str = "text",
    run_id: str | None = None,
) -> Iterator[None]:
    """Send every log record of the run to ``log_file`` and the console; undo it afterwards.

    The file gets INFO and above (DEBUG with -v), the user's own ``logging`` calls and libraries'
    included; the console shows the same but libraries' records only from WARNING (all with -v; see
    ``_console_handler``). ``levels`` is the ``log_levels`` setting: loggers with levels of their own,
    in both. The root logger's level carries them to the back ends' workers (``RunLogLevel``).
    ``log_format="json"`` writes each record as one JSON object (``JsonFormatter``), in both.

    Raises:
        ParamError: ``levels`` is not a valid ``log_levels`` value.
    """
    from batchframe._console import console as shared_console

    named = run_levels(levels)
    thresholds = _Thresholds(named, verbosity)
    root = logging.getLogger()
    handlers: list[logging.Handler] = []
    if log_file is not None:
        file_handler = _RunFileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(JsonFormatter(run_id) if log_format == "json" else _PrintableFormatter(FILE_FORMAT))
        file_handler.addFilter(_FileFilter(thresholds))
        handlers.append(file_handler)
    out = console or shared_console(stderr=True)
    if log_format == "json":  # one object per line, on a terminal too
        console_handler: logging.Handler = _PlainHandler(out)
        console_handler.setFormatter(JsonFormatter(run_id))
    else:
        console_handler = _console_handler(out, verbosity)
    console_handler.addFilter(_ConsoleFilter(verbosity, thresholds))
    handlers.append(console_handler)
    for handler in handlers:
        handler.setLevel(thresholds.lowest)  # the filters decide per logger
        handler.addFilter(RedactSecrets())  # records of worker processes are not made here
    previous_level = root.level
    loggers = LogLevels({name: level for name, level in named.items() if name != ROOT})
    root.setLevel(RunLogLevel(thresholds.base, loggers) if loggers else thresholds.base)
    for handler in handlers:
        root.addHandler(handler)
    logging.captureWarnings(True)
    try:
        with _named_levels(named), _engine_records_to_the_run(), LoggingGuard(root, handlers):
            yield
    finally:
        logging.captureWarnings(False)
        for handler in handlers:
            root.removeHandler(handler)
            if isinstance(handler, _RunFileHandler):
                handler.run_closing = True
            handler.close()
        root.setLevel(previous_level)
