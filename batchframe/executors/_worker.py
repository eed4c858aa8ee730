"""Code that runs inside worker processes (``processes`` and ``dask``): build the Service once, process items.

Items travel pickled; an exception that cannot be pickled comes back as ``RemoteError`` with its
type, message and traceback, so the driver can always record why an item failed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import pickle
import traceback
from typing import TYPE_CHECKING, Any

from batchframe.retry import Retry

if TYPE_CHECKING:
    from batchframe.executors import ProjectRef

logger = logging.getLogger(__name__)

_service: Any = None
_loop: asyncio.AbstractEventLoop | None = None


class RemoteError(Exception):
    """An exception from a worker that could not be sent back as itself."""

    def __init__(self, error_type: str, message: str, remote_traceback: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteError, (self.error_type, str(self), self.remote_traceback))


class ItemNotPicklable(Exception):  # noqa: N818 - names the problem, like pickle's own errors
    """The item cannot be sent to a worker process (it is not picklable)."""


class WorkerDied(Retry):
    """The worker process running the item died; the item is retried (it counts as an attempt)."""


def call_hook(service: Any, name: str) -> None:
    """Call the Service's optional ``on_worker_start`` / ``on_worker_stop`` hook."""
    hook = getattr(service, name, None)
    if callable(hook):
        hook()


def pickled(item: Any) -> bytes:
    """The item as bytes for a worker.

    Raises:
        ItemNotPicklable: with the reason, so the item fails clearly and the run goes on.
    """
    try:
        return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise ItemNotPicklable(f"the item cannot be sent to a worker process: {type(exc).__name__}: {exc}") from None


def init_worker(project: ProjectRef, log_queue: Any = None, log_level: int = logging.INFO) -> None:
    """Build this worker's Service from the project (once per worker process) and call its start hook."""
    global _service
    if log_queue is not None:
        _forward_logs(log_queue, log_level)
    from batchframe.container import wire
    from batchframe.run import prepare

    prepared = prepare(project.path, config=project.config, params=list(project.params))
    wired = wire(
        source_cls=prepared.project.source_cls,
        service_cls=prepared.project.service_cls,
        config=prepared.config,
        injectables=prepared.project.injectables,
        param_values=prepared.values,
        static_values=project.statics,
    )
    _service = wired.service
    call_hook(_service, "on_worker_start")


def teardown_worker() -> None:
    """Call the Service's stop hook in this worker (at the worker's exit)."""
    if _service is not None:
        call_hook(_service, "on_worker_stop")


def process_payload(payload: bytes) -> None:
    """Process one pickled item with this worker's Service."""
    global _loop
    item = pickle.loads(payload)
    try:
        result = _service.process(item)
        if inspect.isawaitable(result):
            if _loop is None:
                _loop = asyncio.new_event_loop()
            _loop.run_until_complete(_await(result))
    except Exception as exc:
        raise _transportable(exc) from None


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _transportable(exc: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return RemoteError(type(exc).__qualname__, str(exc), text)
    return exc


def _forward_logs(log_queue: Any, level: int) -> None:
    """Send this worker's log records to the driver, which writes them to logs.txt."""
    from logging.handlers import QueueHandler

    root = logging.getLogger()
    root.handlers[:] = [QueueHandler(log_queue)]
    root.setLevel(level)
