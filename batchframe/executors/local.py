"""The in-process back ends: ``asyncio`` (the default) and ``threads``."""

from __future__ import annotations

import asyncio
import inspect
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from batchframe.executors import ItemCall
from batchframe.executors._worker import call_hook


class LocalBackend:
    """Runs ``process`` in this process: async on the event loop, sync (or everything) in threads.

    Args:
        service: the Service instance.
        concurrency: the thread pool's size.
        all_in_threads: run async ``process`` in the threads too, each thread with its own event loop.
    """

    def __init__(self, service: Any, *, concurrency: int, all_in_threads: bool = False) -> None:
        self.service = service
        self.concurrency = concurrency
        self.all_in_threads = all_in_threads
        self._pool: ThreadPoolExecutor | None = None

    async def start(self) -> ItemCall:
        """Call the Service's worker hook once and return the per-item call."""
        call_hook(self.service, "on_worker_start")
        process = self.service.process
        if inspect.iscoroutinefunction(process) and not self.all_in_threads:
            return process  # type: ignore[no-any-return]
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="batchframe")
        target = _on_thread_loop(process) if inspect.iscoroutinefunction(process) else process
        return _in_thread(target, self._pool)

    async def close(self) -> None:
        """Stop the thread pool (without waiting for abandoned calls) and call the stop hook."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        call_hook(self.service, "on_worker_stop")


def _in_thread(process: Any, pool: ThreadPoolExecutor) -> ItemCall:
    async def call(item: Any) -> Any:
        result = await asyncio.get_running_loop().run_in_executor(pool, process, item)
        if inspect.isawaitable(result):
            return await result
        return result

    return call


def _on_thread_loop(process: Any) -> Any:
    """Run an async ``process`` on an event loop owned by the calling worker thread."""
    local = threading.local()

    def run(item: Any) -> Any:
        loop = getattr(local, "loop", None)
        if loop is None:
            loop = local.loop = asyncio.new_event_loop()
        return loop.run_until_complete(process(item))

    return run
