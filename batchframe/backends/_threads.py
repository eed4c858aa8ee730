"""A pool of threads for calls under a time limit: a thread whose call is abandoned leaves the pool.

Python cannot stop a thread. A ``ThreadPoolExecutor`` keeps a thread stuck in a timed-out call as one
of its workers, so a few stuck calls use up the pool and every later call (the item's own retry
among them) waits behind them for ever. Here a call the caller gives up on (``abandon``) takes its
thread out of the pool: a new thread takes its place at once, and the old one ends when (if ever)
its call returns. The threads are daemons: the process never waits for a stuck one at exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

_QUEUED, _RUNNING, _DONE, _DROPPED = range(4)


class Job:
    """One call of the pool, made on the event loop that waits for it.

    Attributes:
        started: set when a thread starts the call (waiting for a free thread does not count).
        done: the call's result, or the exception it raised (set on the loop).
    """

    __slots__ = ("_call", "_item", "_loop", "_state", "done", "started")

    def __init__(self, call: Callable[[Any], Any], item: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._call = call
        self._item = item
        self._loop = loop
        self._state = _QUEUED  # guarded by the pool's lock
        self.started: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[Any] = loop.create_future()

    def run(self) -> None:
        """Run the call on this thread and hand its outcome to the loop."""
        self._tell(_set_result, self.started, None)
        try:
            result = self._call(self._item)
        except BaseException as exc:  # the loop re-raises it where the caller awaits
            self._tell(_set_exception, self.done, exc)
        else:
            self._tell(_set_result, self.done, result)

    def _tell(
        self, setter: Callable[[asyncio.Future[Any], Any], None], future: asyncio.Future[Any], value: Any
    ) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over, nobody waits
            self._loop.call_soon_threadsafe(setter, future, value)


class Threads:
    """At most ``size`` threads taking calls from one queue, started as calls need them.

    Args:
        size: how many threads may run calls at once (abandoned calls not counted).
        name: the threads' name prefix.
    """

    def __init__(self, size: int, name: str = "batchframe-timed") -> None:
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = threading.Semaphore(0)  # one count per thread waiting for a job
        self._serving = 0  # threads of the pool (not those left with an abandoned call)
        self._closed = False
        self._count = 0

    def submit(self, call: Callable[[Any], Any], item: Any) -> Job:
        """Queue ``call(item)``; a thread starts it as soon as one is free. Call on the event loop."""
        job = Job(call, item, asyncio.get_running_loop())
        self._jobs.put(job)
        if not self._idle.acquire(blocking=False):
            with self._lock:
                if self._serving < self._size:
                    self._start_thread()
        return job

    def abandon(self, job: Job) -> bool:
        """Give up on ``job``: not started, it never will be; running, its thread leaves the pool.

        Returns:
            Whether the call is still running (on a thread that is no longer the pool's).
        """
        with self._lock:
            running = job._state == _RUNNING
            if job._state != _DONE:
                job._state = _DROPPED
            if not running:
                return False
            self._serving -= 1
            if not self._closed:
                self._start_thread()  # its place: calls queued behind the stuck one go on
            return True

    def shutdown(self) -> None:
        """Start no more calls (queued ones are dropped); idle threads end. Returns at once."""
        with self._lock:
            self._closed = True
            serving = self._serving
        for _ in range(serving):
            self._jobs.put(None)

    def _start_thread(self) -> None:  # with the lock held
        self._serving += 1
        self._count += 1
        threading.Thread(target=self._serve, name=f"{self._name}-{self._count}", daemon=True).start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            with self._lock:
                runs = job._state == _QUEUED and not self._closed
                if runs:
                    job._state = _RUNNING
            if runs:
                job.run()
                with self._lock:
                    abandoned, job._state = job._state == _DROPPED, _DONE
                if abandoned:
                    return  # this thread left the pool when its call was abandoned; another took its place
            self._idle.release()


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
