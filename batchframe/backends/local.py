"""The in-process back ends: ``asyncio`` (the default) and ``threads``.

A timeout on a thread cannot stop the thread: the attempt is abandoned (it fails with
``TimeoutError``) while the call goes on in its thread. The error carries ``still_running``, so the
driver starts the item's retry only after the abandoned attempt has returned: two attempts of one
item never overlap. The timeout counts from the moment a thread starts the item, not from when the
item joined the pool's queue (behind a stuck thread, say).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from batchframe.backends import ItemCall, item_timed_out
from batchframe.backends._worker import call_hook


class LocalBackend:
    """Runs ``process`` in this process: async on the event loop, sync (or everything) in threads.

    Args:
        service: the Service instance.
        concurrency: the thread pool's size.
        all_in_threads: run async ``process`` in the threads too, each thread with its own event loop.
        item_timeout_s: time limit of one attempt, or None.
    """

    def __init__(
        self, service: Any, *, concurrency: int, all_in_threads: bool = False, item_timeout_s: float | None = None
    ) -> None:
        self.service = service
        self.concurrency = concurrency
        self.all_in_threads = all_in_threads
        self.item_timeout_s = item_timeout_s
        self.slots = concurrency
        self._pool: ThreadPoolExecutor | None = None

    async def start(self) -> ItemCall:
        """Call the Service's worker hook once and return the per-item call."""
        call_hook(self.service, "on_worker_start")
        process = self.service.process
        timeout_s = self.item_timeout_s
        if inspect.iscoroutinefunction(process) and not self.all_in_threads:
            return process if timeout_s is None else _on_loop_with_timeout(process, timeout_s)
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="batchframe")
        target = _carrying(_on_thread_loop(process) if inspect.iscoroutinefunction(process) else process)
        if timeout_s is None:
            return _in_thread(target, self._pool)
        return _in_thread_with_timeout(target, self._pool, timeout_s)

    def hold(self) -> None:
        """Nothing to give back: the driver hands out one item per slot and holds the rest itself."""

    def release(self) -> None:
        """Nothing to do (see ``hold``)."""

    async def close(self) -> None:
        """Stop the thread pool (without waiting for abandoned calls) and call the stop hook."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        call_hook(self.service, "on_worker_stop")


def _on_loop_with_timeout(process: Any, timeout_s: float) -> ItemCall:
    async def timed(item: Any) -> Any:
        try:
            return await asyncio.wait_for(process(item), timeout_s)
        except asyncio.TimeoutError:
            # On Python 3.10 asyncio's TimeoutError is not the builtin one users list as retryable.
            raise item_timed_out(timeout_s) from None

    return timed


def _in_thread(process: Any, pool: ThreadPoolExecutor) -> ItemCall:
    async def call(item: Any) -> Any:
        return await _awaited(await asyncio.get_running_loop().run_in_executor(pool, process, item))

    return call


async def _awaited(result: Any) -> Any:
    """Unwrap what a thread returned: re-raise a carried BaseException; await an awaitable.

    A plain ``def process`` may return an awaitable (a partial of an async function).
    """
    if isinstance(result, _Carried):
        raise result.error
    return await result if inspect.isawaitable(result) else result


class _Carried:
    """A BaseException (GeneratorExit, SystemExit...) raised in a thread, returned rather than raised.

    asyncio would *throw* it into the awaiting coroutine, and a coroutine that goes on after a thrown
    GeneratorExit dies of "coroutine ignored GeneratorExit"; raised from our own frame it is an
    ordinary failure of its item.
    """

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _carrying(process: Any) -> Any:
    def run(item: Any) -> Any:
        try:
            return process(item)
        except Exception:
            raise
        except BaseException as exc:
            return _Carried(exc)

    return run


def _in_thread_with_timeout(process: Any, pool: ThreadPoolExecutor, timeout_s: float) -> ItemCall:
    async def call(item: Any) -> Any:
        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()

        def run() -> Any:
            loop.call_soon_threadsafe(_set_done, started)
            return process(item)

        attempt = loop.run_in_executor(pool, run)
        try:
            await asyncio.shield(started)  # waiting for a free thread does not count
            return await _awaited(await asyncio.wait_for(asyncio.shield(attempt), timeout_s))
        except asyncio.TimeoutError:
            attempt.add_done_callback(_retrieve)  # its outcome no longer matters; asyncio must not warn
            error = item_timed_out(timeout_s)
            error.still_running = attempt  # type: ignore[attr-defined]
            raise error from None
        except asyncio.CancelledError:
            attempt.cancel()  # not started yet: it never will be; started: the thread goes on alone
            raise

    return call


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _on_thread_loop(process: Any) -> Any:
    """Run an async ``process`` on an event loop owned by the calling worker thread."""
    local = threading.local()

    def run(item: Any) -> Any:
        loop = getattr(local, "loop", None)
        if loop is None:
            loop = local.loop = asyncio.new_event_loop()
        return loop.run_until_complete(process(item))

    return run
