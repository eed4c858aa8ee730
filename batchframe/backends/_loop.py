"""Where a Service's async code runs when the driver's event loop is not the place: an event loop of its own thread.

An async resource (an ``httpx.AsyncClient``, a database pool) belongs to the event loop that first
used it. So every async call of one Service instance, ``process`` and the hooks ``on_worker_start``,
``on_worker_stop`` and ``finish`` alike, runs on one loop that lives as long as the Service: the
driver's own loop with the ``asyncio`` back end, a ``ServiceLoop`` with ``threads`` (the pool's
threads wait while the loop runs their coroutines) and in each worker process (one per run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

logger = logging.getLogger(__name__)

CLOSE_WAIT_S = 5.0
"""How long closing waits for the loop's thread: user code that blocks the loop cannot hold the run longer."""


class Carried:
    """A BaseException of user code, returned instead of raised across a loop or thread boundary.

    asyncio lets ``KeyboardInterrupt`` and ``SystemExit`` out of a task through the loop itself,
    which would end the loop's thread and leave the caller waiting forever; and a coroutine that
    awaits a thrown ``GeneratorExit`` dies of "coroutine ignored GeneratorExit". Carried back and
    raised from our own frame, each is an ordinary failure of its item.
    """

    def __init__(self, error: BaseException) -> None:
        self.error = error


def uncarried(result: Any) -> Any:
    """``result`` itself, or the exception it carries raised."""
    if isinstance(result, Carried):
        raise result.error
    return result


async def carrying(awaitable: Awaitable[Any]) -> Any:
    """Await ``awaitable``; any exception it raises is returned as ``Carried``."""
    try:
        return await awaitable
    except BaseException as exc:
        return Carried(exc)


class ServiceLoop:
    """An event loop running on a daemon thread of its own, started on first use.

    Args:
        name: the thread's name.
        context: entered on the loop's thread for the loop's lifetime (e.g. the run a worker's log
            records belong to).
    """

    def __init__(
        self, name: str = "batchframe-loop", *, context: Callable[[], AbstractContextManager[Any]] | None = None
    ):
        self.name = name
        self._context = context or contextlib.nullcontext
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        """Whether the loop's thread runs (it starts at the first call)."""
        return self._loop is not None

    def run(self, awaitable: Awaitable[Any]) -> Any:
        """Run ``awaitable`` on the loop and wait for its result, from any other thread.

        Raises:
            BaseException: what ``awaitable`` raised; or what interrupted the wait (a signal's
                exception), after cancelling ``awaitable``.
        """
        future = asyncio.run_coroutine_threadsafe(carrying(awaitable), self._started())
        try:
            result = future.result()
        except BaseException:  # interrupted while waiting: the coroutine must not go on alone
            future.cancel()
            raise
        return uncarried(result)

    async def run_async(self, awaitable: Awaitable[Any]) -> Any:
        """``run`` for a caller on another event loop: waits without blocking that loop."""
        future = asyncio.run_coroutine_threadsafe(carrying(awaitable), self._started())
        return uncarried(await asyncio.wrap_future(future))

    def close(self) -> None:
        """Cancel what still runs on the loop, stop it and wait a little for its thread. Never raises."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # closed already
            loop.call_soon_threadsafe(loop.stop)
        thread.join(CLOSE_WAIT_S)
        if thread.is_alive():
            logger.warning("The Service's event loop is still blocked by user code; leaving it behind.")

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(target=self._serve, args=(loop, ready), name=self.name, daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def _serve(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        try:
            with self._context():
                loop.call_soon(ready.set)
                loop.run_forever()
                _cancel_remaining(loop)
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks user code left running (as ``asyncio.run`` does), so none is destroyed pending."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        with contextlib.suppress(BaseException):
            loop.run_until_complete(asyncio.wait(tasks, timeout=CLOSE_WAIT_S))


def run_on(loop: asyncio.AbstractEventLoop, awaitable: Awaitable[Any], *, grace_s: float = 1.0) -> Any:
    """Run ``awaitable`` on ``loop`` (not running, this thread's) to its end and return its result.

    Raises:
        BaseException: what ``awaitable`` raised; or what interrupted the loop (a signal handler's
            exception), after cancelling ``awaitable`` and giving it ``grace_s`` to end.
    """
    task = loop.create_task(carrying(awaitable))
    try:
        result = loop.run_until_complete(task)
    except BaseException:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(asyncio.wait({task}, timeout=grace_s))
        raise
    return uncarried(result)


def hook_result(service: Any, name: str) -> Any:
    """Call the Service's optional hook ``name`` (``on_worker_start``...); return what it returned.

    An ``async def`` hook returns an awaitable: the caller runs it on the Service's loop.
    """
    hook = getattr(service, name, None)
    return hook() if callable(hook) else None
