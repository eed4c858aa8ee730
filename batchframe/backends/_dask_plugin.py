"""The worker side of the ``dask`` back end: the run's worker plugin, and its log records on their way.

Unpickling a plugin imports this module on the worker; it needs ``distributed`` (the worker has it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from batchframe._text import format_exception
from batchframe.backends._engine_logs import portable
from batchframe.backends._factory import ServiceFactory, python_version
from batchframe.backends._worker import describe, start_service, stop_service

try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # without the extra, DaskBackend.start() explains what to install
    WorkerPlugin = object  # type: ignore[misc,assignment]


class WorkerSetupError(RuntimeError):
    """A worker could not build the run's Service: ``(what happened, traceback)`` (builtin-pickled)."""


def log_topic(key: str) -> str:
    """The dask event topic a run's worker log records travel on."""
    return f"batchframe-logs-{key}"


class ServicePlugin(WorkerPlugin):
    """A dask worker plugin of one run: build its Service when a worker starts (or joins), stop it at the end.

    Args:
        factory: how to build the Service.
        log_level: the driver's log level (records below it are not sent).
        dask_warnings: also send the worker's own dask warnings and errors (a local cluster's workers,
            whose output would otherwise be the driver's console).
    """

    idempotent = False

    def __init__(self, factory: ServiceFactory, log_level: int = logging.INFO, *, dask_warnings: bool = False) -> None:
        self.factory = factory
        self.log_level = log_level
        self.dask_warnings = dask_warnings
        self.name = f"batchframe-{factory.run_key}"
        self._dask_handler: logging.Handler | None = None

    async def setup(self, worker: Any) -> None:
        """Build the run's Service on this worker (off its event loop) and call ``on_worker_start``.

        Raises:
            WorkerSetupError: it could not (what happened, and the traceback).
        """
        sink = _LogEvents(worker, log_topic(self.factory.run_key))
        if self.dask_warnings:
            self._dask_handler = _Forward(sink, logging.WARNING)
            logging.getLogger("distributed").addHandler(self._dask_handler)
        try:
            await asyncio.to_thread(
                start_service,
                self.factory,
                log_level=self.log_level,
                local_dir=worker.local_directory,
                isolate=True,
                log_sink=sink,
            )
        except BaseException as exc:
            frames = getattr(exc, "user_traceback", None) or getattr(exc, "remote_traceback", None)
            frames = frames if isinstance(frames, str) else format_exception(exc)
            where = f"on {worker.address}, Python {python_version()}"
            raise WorkerSetupError(f"{describe(exc)} ({where})", frames) from None

    def teardown(self, worker: Any) -> None:
        """Call the Service's ``on_worker_stop`` and forget the run (at unregistering, or when the worker closes)."""
        stop_service(self.factory.run_key)
        if self._dask_handler is not None:
            logging.getLogger("distributed").removeHandler(self._dask_handler)


class _Forward(logging.Handler):
    """Sends dask's own records of a local cluster's worker to the run, for logs.txt only."""

    def __init__(self, sink: Any, level: int) -> None:
        super().__init__(level)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.file_only = True  # see _logging.FILE_ONLY
            self.sink(record)
        except Exception:
            self.handleError(record)


class _LogEvents:
    """Sends a log record of the run's code to the driver, as a dask event on the run's topic."""

    def __init__(self, worker: Any, topic: str) -> None:
        self.worker = worker
        self.topic = topic

    def __call__(self, record: logging.LogRecord) -> None:
        self.worker.log_event(self.topic, portable(record))
