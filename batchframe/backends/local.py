"""The in-process back ends: ``asyncio`` (the default) and ``threads``.

A timeout on a thread cannot stop the thread: the attempt is abandoned (it fails with
``TimeoutError``) while the call goes on in its thread; the error carries it as ``still_running``
(the driver logs it once, and neither the item's retry nor the end of the run waits for it). The
timeout counts from the moment a thread starts the item, not from when the item joined the pool's
queue (behind a stuck thread, say).

An ``async def process`` under a time limit runs each attempt as a task of its own. At the limit
the task is cancelled and nobody waits for it any longer: an attempt that catches the
``CancelledError`` and goes on runs on in the background (the error's ``still_running`` says so;
the driver logs it once) while its item fails or is retried, and the run ends without it. The
back end keeps a reference to such a task (asyncio would destroy it pending).

Async code of the Service (``process`` and the hooks) runs on one loop: the driver's with
``asyncio``; with ``threads``, the run's ``ServiceLoop``, which the pool's threads wait on.

Each attempt gets a copy of its item (``as_read``), as a worker process gets it pickled: what
``process`` changes in an item never reaches its retry or its failure record.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import datetime
import functools
import inspect
import logging
import pathlib
import pickle
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from batchframe._text import format_exception
from batchframe.backends import BackendError, ItemCall, item_timed_out
from batchframe.backends._loop import Carried, ServiceLoop, carrying, hook_result, uncarried
from batchframe.backends._threads import Threads
from batchframe.backends._worker import describe
from batchframe.runfolder.logs import FILE_ONLY

logger = logging.getLogger(__name__)

IMMUTABLE_TYPES: frozenset[type] = frozenset(
    {
        type(None), bool, int, float, complex, str, bytes, range,
        pathlib.PurePosixPath, pathlib.PureWindowsPath, pathlib.PosixPath, pathlib.WindowsPath,
        datetime.date, datetime.datetime, datetime.time, datetime.timedelta,
    }
)  # fmt: skip
"""Items of these exact types cannot change: ``process`` gets them as they are, with no copy."""

CANCEL_GRACE_S = 0.1
"""How long a timed-out async attempt may take to end once cancelled (a ``finally`` that closes a response)
before the item's failure is reported with the attempt still running."""


class LocalBackend:
    """Runs ``process`` in this process: async on the event loop, sync (or everything) in threads.

    Args:
        service: the Service instance.
        concurrency: the thread pool's size.
        all_in_threads: run every call in the threads (an async ``process`` and async hooks then run
            on ``service_loop``).
        item_timeout_s: time limit of one attempt, or None.
        service_loop: where the Service's async code runs with ``all_in_threads`` (its owner closes it,
            after ``finish``); None: a loop of this back end's own, closed with it.
    """

    def __init__(
        self,
        service: Any,
        *,
        concurrency: int,
        all_in_threads: bool = False,
        item_timeout_s: float | None = None,
        service_loop: ServiceLoop | None = None,
    ) -> None:
        self.service = service
        self.concurrency = concurrency
        self.all_in_threads = all_in_threads
        self.item_timeout_s = item_timeout_s
        self.slots = concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._threads: Threads | None = None  # with a time limit: a thread stuck past it is replaced
        self._own_loop = service_loop is None and all_in_threads
        self.service_loop = (service_loop or ServiceLoop("batchframe-service")) if all_in_threads else None
        self._left_running: set[asyncio.Future[Any]] = set()

    async def start(self) -> ItemCall:
        """Call the Service's worker hook once and return the per-item call.

        Raises:
            BackendError: ``on_worker_start`` raised (the message says what; its traceback is in logs.txt).
        """
        try:
            await self._hook("on_worker_start")
        except Exception as exc:
            raise BackendError(
                f"{type(self.service).__qualname__}.on_worker_start() raised {describe(exc)}",
                hint="Fix on_worker_start (its traceback follows); no item was processed.",
                user_traceback=format_exception(exc),
            ) from None
        return _given_copies(self._item_call())

    def _item_call(self) -> ItemCall:
        """``process`` where it runs (the loop, a thread, the Service's loop), under the time limit if any."""
        process = self.service.process
        timeout_s = self.item_timeout_s
        is_async = inspect.iscoroutinefunction(process)
        if is_async and not self.all_in_threads:
            return process if timeout_s is None else _on_loop_with_timeout(process, timeout_s, self._left_running)
        if is_async and self.service_loop is not None:
            if timeout_s is not None:  # no thread waits: a cancellation at the limit reaches the Service's loop
                on_loop = _on_service_loop_async(process, self.service_loop)
                return _on_loop_with_timeout(on_loop, timeout_s, self._left_running)
            process = _on_service_loop(process, self.service_loop)
        elif self.service_loop is not None:
            process = _awaiting_on(process, self.service_loop)
        target = _carrying(process)
        if timeout_s is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="batchframe")
            return _in_thread(target, self._pool)
        self._threads = Threads(self.concurrency)
        return _in_thread_with_timeout(target, self._threads, timeout_s, self._left_running)

    def hold(self) -> None:
        """Nothing to give back: the driver hands out one item per slot and holds the rest itself."""

    def release(self) -> None:
        """Nothing to do (see ``hold``)."""

    async def close(self) -> None:
        """Stop the thread pool (without waiting for abandoned calls) and call the stop hook."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._threads is not None:
            self._threads.shutdown()
        self._leave_behind()
        try:
            await self._hook("on_worker_stop")
        except Exception as exc:  # as on a worker process: reported, and the run's records stand
            logger.error("%s.on_worker_stop() raised %s", type(self.service).__qualname__, describe(exc))
            logger.error("on_worker_stop traceback:\n%s", format_exception(exc), extra=FILE_ONLY)
        finally:
            if self._own_loop and self.service_loop is not None:
                self.service_loop.close()

    def _leave_behind(self) -> None:
        """Timed-out async attempts that ignored their cancellation stay behind when the loop closes.

        The driver said so once; asyncio need not add "Task was destroyed but it is pending!" at exit.
        """
        for attempt in self._left_running:
            attempt.cancel()  # once more: one that ignored only the first cancellation ends now
            with contextlib.suppress(AttributeError):  # the flag asyncio's own wait_for clears in this case
                attempt._log_destroy_pending = False  # type: ignore[attr-defined]
        self._left_running.clear()

    async def _hook(self, name: str) -> None:
        """Call a worker hook; an ``async def`` one on the loop where ``process`` runs."""
        result = hook_result(self.service, name)
        if not inspect.isawaitable(result):
            return
        if self.service_loop is not None:
            await self.service_loop.run_async(result)
        else:
            uncarried(await carrying(result))


def _given_copies(call: ItemCall) -> ItemCall:
    """``call`` given each item as read: a copy of its own per attempt, unless it cannot change.

    What ``process`` changes in an item then never reaches its retry or its failure record, as with
    ``processes`` and ``dask``, whose workers get the item pickled. A plain function, not a
    coroutine: an item that needs no copy (an int, a str, a path) costs one type lookup.
    """
    immutable = IMMUTABLE_TYPES

    def call_as_read(item: Any) -> Awaitable[Any]:
        return call(item if type(item) in immutable else as_read(item))

    return call_as_read


def as_read(item: Any) -> Any:
    """``item`` itself if it cannot change, else a deep copy (pickled and unpickled, as a worker gets it).

    An item that pickle cannot copy is copied with ``copy.deepcopy`` (a dict holding a lambda); one
    that cannot be copied at all (a lock, an open file, a generator) is given as itself. Never raises.
    """
    kind = type(item)
    if kind in IMMUTABLE_TYPES or (kind in (tuple, frozenset) and all(type(x) in IMMUTABLE_TYPES for x in item)):
        return item
    try:
        return pickle.loads(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:
        pass
    try:
        return copy.deepcopy(item)
    except Exception:
        return item


def _on_loop_with_timeout(
    process: Callable[[Any], Awaitable[Any]], timeout_s: float, left_running: set[asyncio.Future[Any]]
) -> ItemCall:
    async def timed(item: Any) -> Any:
        return await _within(process(item), timeout_s, left_running)

    return timed


async def _within(awaitable: Awaitable[Any], timeout_s: float, left_running: set[asyncio.Future[Any]]) -> Any:
    """Await ``awaitable``, run as a task of its own, for at most ``timeout_s``.

    Raises:
        TimeoutError: ``item_timed_out``, once the task is cancelled; with ``still_running``, the task,
            when it is still running ``CANCEL_GRACE_S`` later (it caught the cancellation): nothing
            waits for it from then on, and ``left_running`` keeps it from being destroyed pending.
        BaseException: what ``awaitable`` raised.
    """
    # carrying: a KeyboardInterrupt or SystemExit leaving a task of its own would stop the event loop.
    attempt = asyncio.ensure_future(carrying(awaitable))
    try:
        await asyncio.wait((attempt,), timeout=timeout_s)
        if attempt.done():
            return uncarried(attempt.result())
        attempt.cancel()
        await asyncio.wait((attempt,), timeout=CANCEL_GRACE_S)
    except asyncio.CancelledError:  # the driver cancelled the item (a forced stop): so is the attempt
        attempt.cancel()
        raise
    finally:
        if not attempt.done():
            left_running.add(attempt)
            attempt.add_done_callback(left_running.discard)
    raise _timed_out(timeout_s, None if attempt.done() else attempt)


def _timed_out(timeout_s: float, still_running: asyncio.Future[Any] | None) -> TimeoutError:
    """``item_timed_out``; with the attempt that goes on, if any, as its ``still_running``."""
    error = item_timed_out(timeout_s)
    if still_running is not None:
        error.still_running = still_running  # type: ignore[attr-defined]
    return error


def _in_thread(process: Any, pool: ThreadPoolExecutor) -> ItemCall:
    # In the caller's context, as asyncio.to_thread: contextvars (an OpenTelemetry span) reach process.
    async def call(item: Any) -> Any:
        run = contextvars.copy_context().run
        return await _awaited(await asyncio.get_running_loop().run_in_executor(pool, run, process, item))

    return call


async def _awaited(result: Any) -> Any:
    """Unwrap what a thread returned: re-raise a carried BaseException; await an awaitable.

    A plain ``def process`` may return an awaitable (a partial of an async function, a forgotten
    ``async``): it is awaited on the loop where the Service's async code runs, on every back end
    (here the driver's, with ``asyncio``; ``_awaiting_on`` with ``threads``; the run's loop in a worker).
    """
    result = uncarried(result)
    return await result if inspect.isawaitable(result) else result


def _carrying(process: Any) -> Any:
    """``process`` for a pool thread: a BaseException (GeneratorExit, SystemExit...) comes back ``Carried``."""

    def run(item: Any) -> Any:
        try:
            return process(item)
        except Exception:
            raise
        except BaseException as exc:
            return Carried(exc)

    return run


def _in_thread_with_timeout(
    process: Any, threads: Threads, timeout_s: float, left_running: set[asyncio.Future[Any]]
) -> ItemCall:
    """``process`` on one of ``threads``, at most ``timeout_s`` from when a thread starts it.

    At the limit the call is abandoned: its thread leaves the pool (another takes its place) and the
    TimeoutError carries the call as ``still_running``; nothing waits for it.
    """

    async def call(item: Any) -> Any:
        loop = asyncio.get_running_loop()
        job = threads.submit(functools.partial(contextvars.copy_context().run, process), item)
        try:
            await job.started  # waiting for a free thread does not count
            started_at = loop.time()
            await asyncio.wait((job.done,), timeout=timeout_s)
        except asyncio.CancelledError:
            threads.abandon(job)  # not started yet: it never will be; started: the thread goes on alone
            raise
        if not job.done.done():
            stuck = threads.abandon(job)
            job.done.add_done_callback(_retrieve)  # its outcome no longer matters; asyncio must not warn
            raise _timed_out(timeout_s, job.done if stuck else None)
        result = uncarried(job.done.result())
        if inspect.isawaitable(result):  # a plain def process returned one: the rest of the time is its
            return await _within(result, max(timeout_s - (loop.time() - started_at), 0.0), left_running)
        return result

    return call


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _awaiting_on(process: Callable[[Any], Any], loop: ServiceLoop) -> Callable[[Any], Any]:
    """A plain ``def process`` for a pool thread of ``threads``: an awaitable it returns runs on ``loop``.

    Where the Service's async code runs (its hooks, a client they opened), as on every back end.
    """

    def run(item: Any) -> Any:
        result = process(item)
        return loop.run(result) if inspect.isawaitable(result) else result

    return run


def _on_service_loop_async(process: Callable[[Any], Awaitable[Any]], loop: ServiceLoop) -> Callable[[Any], Any]:
    """An async ``process`` run on ``loop`` (the ``threads`` back end's) from the driver's loop, no thread waiting.

    Cancelling the returned coroutine cancels the call on ``loop``.
    """

    def run(item: Any) -> Any:
        return loop.run_async(process(item))

    return run


def _on_service_loop(process: Any, loop: ServiceLoop) -> Any:
    """An async ``process`` for a pool thread: the thread waits while ``loop`` runs the call."""

    def run(item: Any) -> Any:
        return loop.run(process(item))

    return run
