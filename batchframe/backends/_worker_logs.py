"""Where a worker's log records go: the driver's logs.txt.

A ``processes`` worker serves one run: every record of the process goes to the driver
(``forward_logs``). A dask worker or Ray actor process may serve several runs at once: a record goes to the run whose
code the thread that logs it is running (``working_for``), through that run's sink; a record of a
thread the user's code started goes to the only run, when there is one; the engine's own records stay
in the worker's logs.

The level a worker gets from the driver may carry the levels of loggers named in ``log_levels``
(``_log_levels.RunLogLevel``): those loggers get them here too, so ``httpx:DEBUG`` makes httpx's
DEBUG records in the worker and sends them, and ``my_job:WARNING`` makes none of my_job's INFO.
The driver's handlers decide again what each record is shown on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from batchframe.project.log_levels import LogLevels, named_levels
from batchframe.runfolder.logs import ENGINE_LOGGERS

LogSink = Callable[[logging.LogRecord], None]
"""Takes a log record of a run (and sends it to the driver)."""


@dataclass(frozen=True)
class _Route:
    sink: LogSink
    level: int
    loggers: LogLevels
    _known: dict[str, int] = field(default_factory=dict, compare=False)  # logger name -> its level, decided once

    def threshold(self, name: str) -> int:
        """The lowest level of logger ``name`` this run takes."""
        known = self._known.get(name)
        if known is None:
            if len(self._known) >= 4096:
                self._known.clear()
            named = self.loggers.level_of(name)
            known = self._known[name] = int(self.level) if named is None else named
        return known


_routes: dict[str, _Route] = {}
_changing = threading.Lock()  # runs start and stop on several threads
_saved_levels: dict[str, int] = {}  # a named logger's level before the first run that names it was routed
_current = threading.local()  # .key: the run whose code this thread runs now


@contextlib.contextmanager
def working_for(key: str) -> Iterator[None]:
    """Mark this thread as running the code of run ``key`` (its log records go to that run)."""
    previous = getattr(_current, "key", None)
    _current.key = key
    try:
        yield
    finally:
        _current.key = previous


def forward_logs(log_queue: Any, level: int) -> None:
    """Send every log record of this process to ``log_queue`` (anything with ``put_nowait``)."""
    from logging.handlers import QueueHandler

    root = logging.getLogger()
    root.handlers[:] = [QueueHandler(log_queue)]
    root.setLevel(level)
    for name, named in named_levels(level).items():  # this process serves one run, until it exits
        logging.getLogger(name).setLevel(named)


class _RunLogs(logging.Handler):
    """Sends a record to the run whose code the current thread runs (a process may serve several runs).

    A record from a thread of the user's own is the run's when the process serves one run; dask's
    own records are not forwarded.
    """

    def emit(self, record: logging.LogRecord) -> None:
        key = getattr(_current, "key", None)
        if key is None:
            keys = list(_routes)
            if len(keys) != 1 or record.name.startswith(ENGINE_LOGGERS):
                return
            key = keys[0]
        route = _routes.get(key) if key is not None else None
        if route is None or record.levelno < route.threshold(record.name):
            return
        try:
            route.sink(record)
        except Exception:
            self.handleError(record)


_router = _RunLogs()
_root_level: list[int] = []  # the root logger's level before the first run was routed


def route_logs(key: str, sink: LogSink, level: int) -> None:
    """Send the records of run ``key`` at ``level`` and above to ``sink`` (the root logger lets them through)."""
    root = logging.getLogger()
    with _changing:
        if not _routes:
            _root_level[:] = [root.level]
            root.addHandler(_router)
        _routes[key] = _Route(sink, level, named_levels(level))
        _set_root_level(root)
        _set_named_levels()


def unroute_logs(key: str) -> None:
    """Stop sending the records of run ``key``."""
    root = logging.getLogger()
    with _changing:
        if _routes.pop(key, None) is None:
            return
        _set_named_levels()
        if _routes:
            _set_root_level(root)
        else:
            root.removeHandler(_router)
            root.setLevel(_root_level.pop() if _root_level else logging.WARNING)


def _set_root_level(root: logging.Logger) -> None:
    before = _root_level[0] if _root_level else logging.WARNING
    if before != logging.NOTSET:  # NOTSET on the root logger lets everything through already
        root.setLevel(min(before, *(route.level for route in _routes.values())))


def _set_named_levels() -> None:
    """Each logger a routed run names gets the lowest level a run takes from it; the others their own back."""
    named = {name for route in _routes.values() for name in route.loggers}
    wanted = {name: min(route.threshold(name) for route in _routes.values()) for name in named}
    for name in [name for name in _saved_levels if name not in wanted]:
        logging.getLogger(name).setLevel(_saved_levels.pop(name))
    for name, level in wanted.items():
        logger = logging.getLogger(name)
        _saved_levels.setdefault(name, logger.level)
        logger.setLevel(level)
