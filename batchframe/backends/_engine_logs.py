"""Log records of a distributed engine's run (dask, Ray) on their way to the driver's logs.txt.

On a worker, a record of the run's code is made ``portable`` (pickled, its message formatted) and
sent to the driver by the engine's own means, where ``receive`` hands it to the handlers. On the
driver, ``EngineLogs`` routes the engine's own loggers (``runfolder.logs.ENGINE_LOGGERS``) to
logs.txt only while the run uses the engine: what matters reaches the console as our own message.
"""

from __future__ import annotations

import logging
import pickle

from batchframe.backends._worker import describe
from batchframe.runfolder.logs import engine_loggers

logger = logging.getLogger(__name__)

_PLAIN_FIELDS = ("name", "levelno", "levelname", "msg", "exc_text", "created", "process", "thread", "threadName")


def portable(record: logging.LogRecord) -> bytes:
    """The record pickled, its message formatted (its arguments may be objects the driver does not have)."""
    copy = logging.makeLogRecord(record.__dict__)
    copy.msg = copy.getMessage()
    copy.args = None
    if copy.exc_info:
        copy.exc_text = copy.exc_text or logging.Formatter().formatException(copy.exc_info)
    copy.exc_info = None
    try:
        return pickle.dumps(copy, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # an extra= attribute that does not pickle
        return pickle.dumps(logging.makeLogRecord({name: getattr(copy, name, None) for name in _PLAIN_FIELDS}))


def receive(data: bytes, engine: str) -> None:
    """Hand a worker's ``portable`` record to this process's handlers: logs.txt and the console."""
    try:
        record: logging.LogRecord = pickle.loads(data)
    except BaseException as exc:
        logger.warning("A log record from a %s worker could not be read: %s", engine, describe(exc))
        return
    dispatch(record)


def dispatch(record: logging.LogRecord) -> None:
    """Give a record to each handler of the root logger whose level takes it."""
    for handler in logging.getLogger().handlers:
        if record.levelno >= handler.level:
            handler.handle(record)


class EngineLogs:
    """While a run uses an engine: the engines' own records on this machine go to logs.txt only."""

    def __init__(self) -> None:
        self._saved: list[tuple[logging.Logger, list[logging.Handler], bool]] = []

    def install(self) -> None:
        """Route the engines' loggers (children with handlers of their own too) through ``_ToLogFile``.

        Call it after the engine is imported: importing it may give its loggers handlers of their own.
        """
        if self._saved:
            return
        relay = _ToLogFile()
        for named in engine_loggers():
            self._saved.append((named, list(named.handlers), named.propagate))
            named.handlers[:] = [relay]
            named.propagate = False

    def restore(self) -> None:
        """Put the loggers back as they were."""
        for named, handlers, propagate in self._saved:
            named.handlers[:] = handlers
            named.propagate = propagate
        self._saved.clear()


class _ToLogFile(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        record.file_only = True  # see runfolder.logs.FILE_ONLY
        dispatch(record)
