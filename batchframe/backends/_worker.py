"""Code that runs inside worker processes (``processes`` and ``dask``): build the Service once, process items.

Items travel pickled. An item's outcome is None (it succeeded) or the reason it failed, in a form
that always reaches the driver: an ordinary exception that pickles travels as itself (carrying the
worker's traceback as ``remote_traceback``); anything else (``KeyboardInterrupt``, ``SystemExit``,
``GeneratorExit``, a ``CancelledError`` of the user's, an exception that does not survive pickling)
comes back as ``RemoteError`` with its type name, message and traceback. Either way the worker
goes on with the next item, and the driver can always record why an item failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import pickle
import traceback
from typing import TYPE_CHECKING, Any

from batchframe.retry import Retry

if TYPE_CHECKING:
    from batchframe.backends import ProjectRef

logger = logging.getLogger(__name__)

Outcome = Exception | None
"""What became of one item on a worker: None when it succeeded, else why it failed."""

Packed = tuple[bytes, str, str, str]
"""A failure on its way to the driver: the pickled exception, its type name, message and traceback."""

_service: Any = None
_loop: asyncio.AbstractEventLoop | None = None
_OWN_FRAMES = (__file__, os.path.dirname(asyncio.__file__) + os.sep)


class RemoteError(Exception):
    """An exception from a worker that could not be sent back as itself.

    ``str()`` is the original message, ``error_type`` the original type's name (what the driver records).
    """

    def __init__(self, error_type: str, message: str, remote_traceback: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteError, (self.error_type, self.message, self.remote_traceback))


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


def describe(exc: BaseException) -> str:
    """``TypeName: message`` for an exception (the original type for a ``RemoteError``). Never raises."""
    message = _message(exc)
    return f"{_type_name(exc)}: {message}" if message else _type_name(exc)


def init_worker(project: ProjectRef, log_queue: Any = None, log_level: int = logging.INFO) -> None:
    """Build this worker's Service from the project (once per worker process) and call its start hook.

    Args:
        project: how to build the Service.
        log_queue: where this process's log records go (anything with ``put_nowait``), or None to leave
            logging alone (dask sets it up).
        log_level: the driver's log level.
    """
    global _service
    if log_queue is not None:
        _forward_logs(log_queue, log_level)
    from batchframe.container import wire
    from batchframe.run import prepare

    prepared = prepare(project.path, config=project.config, params=list(project.params), warn_hooks=False)
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


def run_item(payload: bytes) -> Outcome:
    """Process one pickled item with this worker's Service. Never raises: returns the item's outcome."""
    try:
        _process(pickle.loads(payload))
    except BaseException as exc:  # KeyboardInterrupt, SystemExit... from user code: this item fails, the worker goes on
        return transportable(exc)
    return None


def _process(item: Any) -> None:
    global _loop
    result = _service.process(item)
    if inspect.isawaitable(result):
        if _loop is None:  # one event loop per worker, for every async process call
            _loop = asyncio.new_event_loop()
        _loop.run_until_complete(_await(result))


async def _await(awaitable: Any) -> Any:
    return await awaitable


def transportable(exc: BaseException) -> Exception:
    """``exc`` in a form that reaches the driver: itself if it is an Exception that pickles, else a RemoteError."""
    text = traceback_text(exc)
    if isinstance(exc, Exception) and _survives_pickling(exc, text):
        return exc
    return RemoteError(_type_name(exc), _message(exc), text)


def pack(outcome: Outcome) -> Packed | None:
    """An outcome for the pipe: the exception pickled, with what to record if the driver cannot unpickle it."""
    if outcome is None:
        return None
    error_type, message = _type_name(outcome), _message(outcome)
    text = getattr(outcome, "remote_traceback", "")
    text = text if isinstance(text, str) else ""
    try:
        data = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # transportable() pickled it once already: a fallback
        data = pickle.dumps(RemoteError(error_type, message, text))
    return (data, error_type, message, text)


def unpack(packed: Packed | None) -> Outcome:
    """The outcome again; a ``RemoteError`` when this process cannot unpickle it (its class is unknown here)."""
    if packed is None:
        return None
    data, error_type, message, text = packed
    try:
        error = pickle.loads(data)
    except BaseException:  # unpickling runs the class's __init__, which may raise anything
        return RemoteError(error_type, message, text)
    return error if isinstance(error, Exception) else RemoteError(error_type, message, text)


def _survives_pickling(exc: Exception, text: str) -> bool:
    with contextlib.suppress(Exception):  # a class that refuses new attributes travels without it
        exc.remote_traceback = text  # type: ignore[attr-defined]  # the driver records the worker's frames
    try:
        pickle.loads(pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL))
    except BaseException:  # unpickling runs the class's __init__, which may raise anything
        return False
    return True


def _type_name(exc: BaseException) -> str:
    return exc.error_type if isinstance(exc, RemoteError) else type(exc).__qualname__


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except BaseException:
        return f"<unprintable {type(exc).__qualname__}>"


def traceback_text(exc: BaseException) -> str:
    """The traceback from the user's code on (this module's and asyncio's frames left out). Never raises."""
    try:
        summary = traceback.TracebackException.from_exception(exc)
        frames = [frame for frame in summary.stack if not frame.filename.startswith(_OWN_FRAMES)]
        summary.stack = traceback.StackSummary.from_list(frames)
        return "".join(summary.format())
    except BaseException:
        return f"{describe(exc)}\n"


def _forward_logs(log_queue: Any, level: int) -> None:
    """Send this worker's log records to the driver, which writes them to logs.txt."""
    from logging.handlers import QueueHandler

    root = logging.getLogger()
    root.handlers[:] = [QueueHandler(log_queue)]
    root.setLevel(level)
