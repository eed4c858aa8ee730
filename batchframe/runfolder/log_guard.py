"""The run's log records, whatever user code does to ``logging`` while the run goes.

User code may call ``logging.basicConfig(force=True)`` (which removes every handler of the root
logger, the run's included), ``logging.disable(...)``, or ``logging.basicConfig()`` (a console
handler of its own: every line would print twice). None of it may cost a record of logs.txt, and
no timer decides: each check sits where a record is made or refused.

- Every record is made by the run's record factory (``LoggingGuard``): before the record reaches
  any handler, the factory compares the root logger's handlers with those it saw last (one list
  comparison); when they differ, the run's handlers are put back and a console handler of the
  user's is set aside. The factory also blanks secret values out of the record, so a handler of the
  user's never sees one either.
- ``logging.disable()`` stops records before they are made, so no factory sees them: while a run
  goes, logging's manager is a ``_RunManager`` whose ``disable`` stays ``NOTSET`` (the call is said
  once in a warning, and the level from before the run is back afterwards).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from batchframe.secret import has_secrets, redact


class RedactSecrets(logging.Filter):
    """Blanks the run's secret values out of a record (its message and traceback) before any handler writes it.

    The user's own log calls and exception messages may quote a secret parameter's value.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place; never drops it."""
        if not has_secrets():  # per record: no import here, one call
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


class _RunManager(logging.Manager):
    """logging's manager while a run goes: ``disable`` stays NOTSET, so ``logging.disable()`` drops no record.

    Only the class of the one manager changes (its ``__dict__`` keeps the level from before the run).
    """

    refused: Callable[[int], None] | None = None
    """Told the level of each ``logging.disable(level)`` refused (the guard says it once)."""

    @property
    def disable(self) -> int:
        return logging.NOTSET

    @disable.setter
    def disable(self, level: int) -> None:
        refused = _RunManager.refused
        if level and refused is not None:
            refused(level)


_SAID = {
    "force": "A log handler of the run was removed (logging.basicConfig(force=True)?): it is put back.",
    "console": "A console log handler of your code is set aside while the run prints its own (no line twice).",
    "disable": "logging.disable() was called while the run goes: it is undone, the run's log records go on.",
}


class LoggingGuard:
    """Keeps the run's handlers on the root logger and every record redacted, while the run goes (a context manager).

    Args:
        root: the root logger.
        handlers: the run's handlers (logs.txt, the console), on ``root`` already.
    """

    def __init__(self, root: logging.Logger, handlers: list[logging.Handler]) -> None:
        self.root = root
        self.handlers = handlers
        self.set_aside: list[logging.Handler] = []
        self._seen: list[logging.Handler] = []
        self._said: set[str] = set()
        self._lock = threading.Lock()
        self._previous_factory = logging.getLogRecordFactory()
        self._swapped = False

    def __enter__(self) -> LoggingGuard:
        previous, redacting, root = self._previous_factory, RedactSecrets(), self.root

        def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if root.handlers != self._seen:  # handlers compared by identity: one C-level comparison
                self.check()
            redacting.filter(record)
            return record

        manager = logging.Logger.manager
        if type(manager) is logging.Manager:  # not already a run's (a run inside a run's test)
            if manager.disable:
                self._say("disable")
            manager.__class__ = _RunManager
            _RunManager.refused = lambda level: self._say("disable")
            self._swapped = True
            logging.disable(logging.NOTSET)  # clears the loggers' caches of what the old level refused
        logging.setLogRecordFactory(make)
        self.check()
        return self

    def __exit__(self, *exc: object) -> None:
        logging.setLogRecordFactory(self._previous_factory)
        if self._swapped:
            manager = logging.Logger.manager
            manager.__class__ = logging.Manager
            _RunManager.refused = None
            logging.disable(manager.disable)  # the level from before the run, and the caches cleared
        for handler in self.set_aside:
            if handler not in self.root.handlers:
                self.root.addHandler(handler)

    def check(self) -> None:
        """Put the run's handlers back on the root logger, and set a console handler of the user's aside."""
        said = []
        with self._lock:
            root = self.root
            for handler in self.handlers:
                if handler not in root.handlers:
                    root.addHandler(handler)
                    said.append("force")
            for handler in list(root.handlers):
                if handler not in self.handlers and prints_to_the_console(handler):
                    root.removeHandler(handler)
                    self.set_aside.append(handler)
                    said.append("console")
            self._seen = list(root.handlers)
        for key in said:  # after the handlers are right: a warning is a record of its own
            self._say(key)

    def _say(self, key: str) -> None:
        if key not in self._said:
            self._said.add(key)
            logging.getLogger("batchframe.runfolder.logs").warning(_SAID[key])


def prints_to_the_console(handler: logging.Handler) -> bool:
    """A handler writing to stdout or stderr: ``logging.basicConfig()``'s, a ``StreamHandler`` subclass, rich's."""
    if isinstance(handler, logging.StreamHandler):
        stream = handler.stream
    else:
        stream = getattr(getattr(handler, "console", None), "file", None)  # rich's RichHandler
    return stream is not None and stream in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
