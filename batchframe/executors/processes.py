"""The ``processes`` back end: a pool of worker processes, each with its own Service, for CPU-bound work."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from logging.handlers import QueueListener
from typing import Any

from batchframe.executors import ItemCall, ProjectRef
from batchframe.executors._worker import WorkerDied, init_worker, pickled, process_payload, teardown_worker

logger = logging.getLogger(__name__)


class ProcessBackend:
    """Sends each item to a worker process; the worker's Service (built there once) processes it.

    Workers are started with ``spawn`` (never ``fork`` a process with an event loop and threads),
    one per core at most. A worker that dies takes its pool down: the pool is replaced and every
    item it was running is retried (``WorkerDied``), so no item is lost.
    """

    def __init__(self, project: ProjectRef, *, concurrency: int) -> None:
        self.project = project
        self.workers = max(1, min(concurrency, os.cpu_count() or 1))
        self._context = multiprocessing.get_context("spawn")
        self._log_queue: Any = None
        self._listener: QueueListener | None = None
        self._pool: ProcessPoolExecutor | None = None

    async def start(self) -> ItemCall:
        """Start the log forwarding and the pool; the workers build their Services as they start."""
        self._log_queue = self._context.Queue()
        root = logging.getLogger()
        self._listener = QueueListener(self._log_queue, *root.handlers, respect_handler_level=True)
        self._listener.start()
        self._pool = self._new_pool()
        logger.info("Running items in %d worker processes.", self.workers)
        return self._call

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.workers,
            mp_context=self._context,
            initializer=_start_worker,
            initargs=(self.project, self._log_queue, logging.getLogger().getEffectiveLevel()),
        )

    async def _call(self, item: Any) -> None:
        payload = pickled(item)
        pool = self._pool
        assert pool is not None
        try:
            await asyncio.get_running_loop().run_in_executor(pool, process_payload, payload)
        except BrokenProcessPool:
            self._replace(pool)
            raise WorkerDied(reason="the worker process running this item died (crashed or was killed)") from None

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if self._pool is broken:  # the first of the pool's items to notice replaces it, once
            logger.warning("A worker process died; starting a new pool. Its items are retried.")
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()

    async def close(self) -> None:
        """Stop the workers (their stop hooks run as they exit) and the log forwarding."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)
        if self._listener is not None:
            self._listener.stop()


def _start_worker(project: ProjectRef, log_queue: Any, log_level: int) -> None:
    from multiprocessing.util import Finalize

    init_worker(project, log_queue, log_level)
    Finalize(None, teardown_worker, exitpriority=10)
