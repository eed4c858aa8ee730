"""Code that runs inside worker processes (``processes`` and ``dask``): build a run's Service, process items.

A worker serves runs by key (``ServiceFactory.run_key``): ``start_service`` builds a run's Service
(once per run in a process) and calls its ``on_worker_start``; ``stop_service`` calls its
``on_worker_stop`` and forgets it. A dask worker may serve several runs at once, each with its own
Service and its own modules: items are unpickled with the run's modules (``load_items``), so two
projects that both have a ``job.py`` never mix.

Items travel pickled one by one, a batch of them in one payload (``batch_payload``), and are
unpickled one by one here: an item this worker cannot rebuild (its class unknown here, its
``__setstate__`` raising) fails alone, with its own error, and the rest of its batch runs.

An item's outcome is None (it succeeded) or the reason it failed, in a form
that always reaches the driver: an ordinary exception that pickles travels as itself (carrying the
worker's traceback as ``remote_traceback``); anything else (``KeyboardInterrupt``, ``SystemExit``,
``GeneratorExit``, a ``CancelledError`` of the user's, an exception that does not survive pickling)
comes back as ``RemoteError`` with its type name, message and traceback, and whether the Service
retries it (``exceptions_to_retry_for`` is checked here, where the real class is). Either way the
worker goes on with the next item, and the driver can always record why an item failed.

Every async call of a run's Service (``process``, ``on_worker_start``, ``on_worker_stop``) runs on
the run's own ``ServiceLoop`` in this process, so a client opened in one hook serves ``process`` and
closes in the other (a dask worker runs items on several threads at once: they share that loop).

``run_batch`` is the dask task. With ``item_timeout_s`` it runs each item on a helper thread and
waits at most that long from when the item starts; an item that takes longer fails with
``item_timed_out`` and the rest of the batch is not started (``NOT_RUN``). Python cannot stop a
thread: the abandoned call goes on in the background until it returns, and the next item gets a
fresh helper thread.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from batchframe._text import exception_message, format_exception
from batchframe.backends import NOT_STARTED, item_timed_out
from batchframe.backends._factory import build, remove_workdir
from batchframe.backends._loop import ServiceLoop, hook_result
from batchframe.backends._pickling import RunModules, dumps, dumps_each, loads, loads_each
from batchframe.backends._trace_context import Traced, attached
from batchframe.backends._worker_logs import LogSink, forward_logs, route_logs, unroute_logs, working_for
from batchframe.retry import Retry, is_retryable

if TYPE_CHECKING:
    from batchframe.backends._factory import ServiceFactory

logger = logging.getLogger(__name__)

Outcome = Exception | None
"""What became of one item on a worker: None when it succeeded, else why it failed."""

Packed = tuple[bytes, str, str, str, bool]
"""A failure on its way to the driver: the pickled exception, its type name, message, traceback, retryable."""

NOT_RUN: Final = "batchframe:not-run"
"""In ``run_batch``'s outcomes: an item that was not started (an item before it timed out).

``unpack`` turns it into ``backends.NOT_STARTED``: the driver hands the item out again, not as an attempt.
"""


class RemoteError(Exception):
    """An exception from a worker that could not be sent back as itself.

    ``str()`` is the original message, ``error_type`` the original type's name (what the driver
    records); ``retryable`` says whether the Service retries the original exception (the driver's
    retry policy follows it).
    """

    def __init__(self, error_type: str, message: str, remote_traceback: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.remote_traceback = remote_traceback
        self.retryable = retryable

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteError, (self.error_type, self.message, self.remote_traceback, self.retryable))


class ItemNotPicklable(Exception):  # noqa: N818 - names the problem, like pickle's own errors
    """The item cannot be sent to a worker process (it is not picklable)."""


class Unloadable:
    """In ``load_items``' list: an item this worker could not unpickle; ``run_one`` fails it with ``error``."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class WorkerDied(Retry):
    """The worker process running the item died; the item is retried (it counts as an attempt)."""


class RunNotStarted(LookupError):  # noqa: N818 - says what is wrong, like WorkerDied
    """This worker has not built the run's Service (it failed to, say, on a worker that joined later)."""


@dataclass
class _Run:
    key: str
    service: Any
    modules: RunModules
    retry_on: tuple[type[BaseException], ...]
    workdir: Path | None
    loop: ServiceLoop


_runs: dict[str, _Run] = {}
_starting = threading.Lock()
_start_locks: dict[str, threading.Lock] = {}  # one per run: starting it twice at once builds it once
_here = threading.local()  # per thread: .runner (for timeouts)


def call_hook(service: Any, name: str, loop: ServiceLoop) -> None:
    """Call the Service's optional ``on_worker_start`` / ``on_worker_stop`` hook; an ``async def`` one on ``loop``."""
    result = hook_result(service, name)
    if inspect.isawaitable(result):
        loop.run(result)


def batch_payload(items: list[bytes]) -> bytes:
    """A batch for a worker: items pickled one by one (``pickled``), so that each is unpickled on its own."""
    return dumps_each(items)


def pickled(item: Any) -> bytes:
    """The item as bytes for a worker (``batch_payload`` puts a batch of them together).

    Raises:
        ItemNotPicklable: with the reason, so the item fails clearly and the run goes on.
    """
    try:
        return dumps(item)
    except Exception as exc:
        raise ItemNotPicklable(f"the item cannot be sent to a worker process: {type(exc).__name__}: {exc}") from None


def describe(exc: BaseException) -> str:
    """``TypeName: message`` for an exception (the original type for a ``RemoteError``). Never raises."""
    message = _message(exc)
    return f"{_type_name(exc)}: {message}" if message else _type_name(exc)


# ------------------------------------------------------------------------------------------ a run


def start_service(
    factory: ServiceFactory,
    log_queue: Any = None,
    log_level: int = logging.INFO,
    *,
    local_dir: str | None = None,
    isolate: bool = False,
    log_sink: LogSink | None = None,
) -> str:
    """Build the run's Service in this process (once per run key) and call its ``on_worker_start``.

    Args:
        factory: how to build the Service.
        log_queue: where every log record of this process goes (anything with ``put_nowait``: a
            ``processes`` worker, which serves one run), or None.
        log_level: the driver's log level.
        local_dir: where to extract a project that travels with the factory.
        isolate: put ``sys.path``/``sys.modules`` back after building (a process serving several runs).
        log_sink: where the log records of this run's code go (records of threads running its items).

    Returns:
        The run key, for ``load_items``, ``run_one``, ``run_batch`` and ``stop_service``.

    Raises:
        VersionMismatch: this process runs another batchframe or Python than the driver.
        Exception: what loading the project, the Service's constructor or ``on_worker_start`` raised.
    """
    key = factory.run_key
    with _starting:
        lock = _start_locks.setdefault(key, threading.Lock())
    with lock:  # not _starting: another run's slow on_worker_start must not hold this one up
        if key in _runs:
            return key
        if log_queue is not None:
            forward_logs(log_queue, log_level)
        if log_sink is not None:
            route_logs(key, log_sink, log_level)
        try:
            with working_for(key):
                built = build(factory, local_dir=local_dir, isolate=isolate)
                loop = ServiceLoop(f"batchframe-{key}", context=lambda: working_for(key))
                try:
                    call_hook(built.service, "on_worker_start", loop)
                except BaseException as exc:
                    _keep_traceback(exc)  # while the extracted project's files still show its lines
                    loop.close()
                    remove_workdir(built.workdir)
                    raise
        except BaseException:
            unroute_logs(key)
            raise
        _runs[key] = _Run(key, built.service, built.modules, _retryable_types(built.service), built.workdir, loop)
    return key


def stop_service(key: str) -> None:
    """Call the run's ``on_worker_stop`` and forget the run. Never raises: an error of the hook is logged."""
    run = _runs.pop(key, None)
    with _starting:
        _start_locks.pop(key, None)
    if run is None:
        unroute_logs(key)
        return
    with working_for(key):
        try:
            call_hook(run.service, "on_worker_stop", run.loop)
        except BaseException as exc:
            logger.error("on_worker_stop raised %s\n%s", describe(exc), format_exception(exc))
        run.loop.close()
    unroute_logs(key)
    remove_workdir(run.workdir)


def load_items(key: str, payload: bytes) -> list[Any]:
    """Unpickle a batch (``batch_payload``) with the run's own modules (then by import), item by item.

    An item that cannot be unpickled here is an ``Unloadable`` in its place, holding its own error
    (``run_one`` fails that item alone with it).

    Raises:
        RunNotStarted: this process has not built the run's Service.
        Exception: the payload is not a batch (a bug of batchframe's, not an item's).
    """
    return [item if error is None else _unloadable(error) for item, error in loads_each(payload, _run(key).modules)]


def _unloadable(error: BaseException) -> Unloadable:
    with contextlib.suppress(Exception):  # an exception that refuses notes still says what it is
        # add_note() of Python 3.11, by hand on 3.10 too (the failure record shows __notes__)
        notes = [*getattr(error, "__notes__", ()), "(raised while the item was unpickled in a worker process)"]
        setattr(error, "__notes__", notes)  # noqa: B010 - BaseException declares no __notes__ before 3.11
    return Unloadable(error)


def run_one(key: str, item: Any) -> Outcome:
    """Process one item with the run's Service. Never raises: returns the item's outcome."""
    try:
        run = _run(key)
    except RunNotStarted as exc:  # another worker may have it: retried
        return RemoteError(type(exc).__name__, str(exc), "", retryable=True)
    if type(item) is Unloadable:
        return transportable(item.error, key)
    try:
        with working_for(key):
            if type(item) is Traced:
                with attached(item.carrier):
                    _process(run, item.item)
            else:
                _process(run, item)
    except BaseException as exc:  # KeyboardInterrupt, SystemExit... from user code: this item fails, the worker goes on
        return transportable(exc, key)
    return None


def run_batch(key: str, payload: bytes, timeout_s: float | None) -> tuple[float, list[Packed | str | None]]:
    """The dask task: process a pickled list of items.

    Returns:
        The seconds spent running them (what sizes the next batches), and one packed outcome (or
        ``NOT_RUN``) per item.

    Raises:
        RemoteError: the batch cannot be loaded here (the driver fails each of its items with it; it
            retries them when this worker has not built the run's Service).
    """
    try:
        items = load_items(key, payload)
    except BaseException as exc:
        retryable = isinstance(exc, RunNotStarted)
        raise RemoteError(_type_name(exc), _message(exc), format_exception(exc), retryable) from None
    started = time.perf_counter()
    if timeout_s is None:
        done: list[Packed | str | None] = [pack(run_one(key, item), key) for item in items]
        return time.perf_counter() - started, done
    outcomes: list[Packed | str | None] = []
    for item in items:
        finished, outcome = _runner().run(key, item, timeout_s)
        outcomes.append(pack(outcome if finished else item_timed_out(timeout_s), key))
        if not finished:
            break
    return time.perf_counter() - started, outcomes + [NOT_RUN] * (len(items) - len(outcomes))


def _keep_traceback(exc: BaseException) -> None:
    with contextlib.suppress(Exception):  # a class that refuses new attributes goes without
        exc.remote_traceback = format_exception(exc)  # type: ignore[attr-defined]


def _run(key: str) -> _Run:
    run = _runs.get(key)
    if run is None:
        raise RunNotStarted(f"this worker has not built the Service of run {key} (it may have failed to start)")
    return run


def _retryable_types(service: Any) -> tuple[type[BaseException], ...]:
    from batchframe.service import retryable_exceptions

    try:
        return retryable_exceptions(service)
    except Exception:  # the driver reports a bad exceptions_to_retry_for
        return ()


def _process(run: _Run, item: Any) -> None:
    result = run.service.process(item)
    if inspect.isawaitable(result):
        run.loop.run(result)


class _Runner:
    """A helper thread that runs a worker thread's items one at a time, so that thread can stop waiting."""

    def __init__(self) -> None:
        self.abandoned = False
        self._jobs: queue.SimpleQueue[tuple[str, Any, list[Outcome], threading.Event] | None] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="batchframe-item", daemon=True).start()

    def run(self, key: str, item: Any, timeout_s: float) -> tuple[bool, Outcome]:
        """Run the item; ``(False, None)`` if it is still running after ``timeout_s`` (then abandoned)."""
        done, box = threading.Event(), list[Outcome]()
        self._jobs.put((key, item, box, done))
        if done.wait(timeout_s):
            return True, box[0]
        self.abandoned = True
        self._jobs.put(None)  # the thread ends once the abandoned call returns
        return False, None

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            key, item, box, done = job
            box.append(run_one(key, item))
            done.set()


def _runner() -> _Runner:
    runner: _Runner | None = getattr(_here, "runner", None)
    if runner is None or runner.abandoned:
        runner = _here.runner = _Runner()
    return runner


# --------------------------------------------------------------------------------------- outcomes


def transportable(exc: BaseException, key: str | None = None) -> Exception:
    """``exc`` in a form that reaches the driver: itself if it is an Exception that pickles, else a RemoteError.

    With the run's ``key``, its classes pickle even when its modules are not in ``sys.modules``, and
    a RemoteError says whether the run's Service retries ``exc``.
    """
    run = _runs.get(key) if key is not None else None
    text = format_exception(exc)
    if isinstance(exc, Exception) and _survives_pickling(exc, text, run):
        return exc
    return RemoteError(_type_name(exc), _message(exc), text, _retries(exc, run))


def pack(outcome: Outcome, key: str | None = None) -> Packed | None:
    """An outcome for the wire: the exception pickled, with what to record if the driver cannot unpickle it."""
    if outcome is None:
        return None
    run = _runs.get(key) if key is not None else None
    error_type, message = _type_name(outcome), _message(outcome)
    text = getattr(outcome, "remote_traceback", "")
    text = text if isinstance(text, str) else ""
    retryable = _retries(outcome, run)
    try:
        data = dumps(outcome, run.modules if run is not None else None)
    except Exception:  # transportable() pickled it once already: a fallback
        data = dumps(RemoteError(error_type, message, text, retryable))
    return (data, error_type, message, text, retryable)


def unpack(packed: Packed | str | None) -> Outcome:
    """The outcome again (``NOT_STARTED`` for ``NOT_RUN``); a RemoteError when this process cannot unpickle it."""
    if packed is None:
        return None
    if isinstance(packed, str):  # NOT_RUN
        return NOT_STARTED
    data, error_type, message, text, retryable = packed
    try:
        error = loads(data)
    except BaseException:  # unpickling runs the class's __init__, which may raise anything
        return RemoteError(error_type, message, text, retryable)
    return error if isinstance(error, Exception) else RemoteError(error_type, message, text, retryable)


def _retries(exc: BaseException, run: _Run | None) -> bool:
    if isinstance(exc, RemoteError):
        return exc.retryable
    return is_retryable(exc, run.retry_on if run is not None else ())  # an exception group too: all its members


def _survives_pickling(exc: Exception, text: str, run: _Run | None) -> bool:
    with contextlib.suppress(Exception):  # a class that refuses new attributes travels without it
        exc.remote_traceback = text  # type: ignore[attr-defined]  # the driver records the worker's frames
    modules = run.modules if run is not None else None
    try:
        loads(dumps(exc, modules), modules)
    except BaseException:  # unpickling runs the class's __init__, which may raise anything
        return False
    return True


def _type_name(exc: BaseException) -> str:
    return exc.error_type if isinstance(exc, RemoteError) else type(exc).__qualname__


def _message(exc: BaseException) -> str:
    return exception_message(exc)  # its notes too: they travel with the message when the exception cannot
