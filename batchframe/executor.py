"""The asyncio executor: a bounded read-ahead queue, N workers, retries that hold no worker, a graceful stop.

Per item: take it from the queue -> call ``process`` (under the rate limit and timeout) -> on an
exception, schedule a retry (a timer; no worker waits for it) or record the failure -> count it done.
The executor never reads more than ``queue_size`` items ahead of the workers, so memory stays flat
however long the source is. Completion is an event set by the last item, not a polling loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batchframe.executors import Backend, ItemCall
from batchframe.executors.local import LocalBackend
from batchframe.failures import NOT_PROCESSED, FailedItem
from batchframe.limits import ExecutorSettings, with_limits
from batchframe.retry import RetryPolicy
from batchframe.source import is_async_source, iter_async_source, iter_sync_source, source_length
from batchframe.stats import Outcome, Stats

__all__ = ["Executor", "ExecutorSettings", "Outcome", "Stats"]

if TYPE_CHECKING:
    from batchframe.journal import Journal

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Work:
    index: int
    item: Any
    attempts: int = 0
    task: asyncio.Task[None] | None = None


class Executor:
    """Runs ``service.process`` over every item of ``source``.

    Args:
        source: the user's Source instance.
        service: the user's Service instance.
        settings: concurrency, retry, timeout and rate settings.
        on_failure: called with each item that fails for good, as it fails.
        journal: records each item's outcome (for resume and retry).
        skip: source positions to skip, as sorted half-open ranges (a resumed run's finished items).
        backend: where ``process`` runs (default: this process, asyncio plus threads for a sync process).
    """

    def __init__(
        self,
        source: Any,
        service: Any,
        *,
        settings: ExecutorSettings,
        on_failure: Callable[[FailedItem], None] | None = None,
        journal: Journal | None = None,
        skip: Sequence[tuple[int, int]] = (),
        backend: Backend | None = None,
    ) -> None:
        self.source = source
        self.service = service
        self.settings = settings
        self.policy = RetryPolicy.with_exceptions(settings.retry, _retryable(service))
        self.stats = Stats(total=source_length(source))
        self.failed: list[FailedItem] = []
        self.outcome = Outcome.COMPLETED
        self.fatal_error: BaseException | None = None
        self._on_failure = on_failure
        self._journal = journal
        if journal is not None:
            journal.watch_in_flight(self.in_flight_items)
        self._skip = list(skip)
        self.positions_read = 0
        self._stopping = False
        self._stop_reason = "the run was stopped"
        self._paused = False
        self._cancelled: set[int] = set()
        self._active: dict[int, _Work] = {}
        self._feeding_done = False
        self._outstanding = 0
        self._ready_retries: collections.deque[_Work] = collections.deque()
        self._waiting_retries: dict[int, tuple[asyncio.TimerHandle, _Work]] = {}
        self._queue: asyncio.Queue[_Work | None] | None = None
        self._all_done: asyncio.Event | None = None
        self._running: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._feeder: asyncio.Task[None] | None = None
        self.backend = backend or LocalBackend(service, concurrency=settings.concurrency)

    # ----------------------------------------------------------------------------------- lifecycle

    async def run(self) -> Stats:
        """Process every item; return the final counters. Never raises for a failing item."""
        self._queue = asyncio.Queue(self.settings.read_ahead)
        self._all_done = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()
        self._idle = asyncio.Event()
        call = with_limits(await self.backend.start(), self.settings)
        self.stats.started_at = time.monotonic()
        workers = [asyncio.create_task(self._worker(call)) for _ in range(self.settings.concurrency)]
        self._feeder = asyncio.create_task(self._feed())
        try:
            await self._all_done.wait()
            for _ in workers:
                self._queue.put_nowait(None)
            await asyncio.gather(*workers)
            await self._feeder
        finally:
            self.stats.finished_at = time.monotonic()
            await self.backend.close()
        return self.stats

    def stop(self, reason: str = "the run was stopped", *, force: bool = False) -> None:
        """Stop gracefully: hand out no more items, let in-flight items finish, record the rest as not processed.

        Items still in the source are read and recorded too, so ``persist_failed`` and ``failed.jsonl``
        get every item that was not done. ``force=True`` (a second Ctrl-C or SIGTERM) also cancels the
        in-flight items and stops reading the source.
        """
        if not self._stopping:
            self._stopping = True
            self._stop_reason = reason
            if self.outcome is Outcome.COMPLETED:
                self.outcome = Outcome.STOPPED
            logger.warning("Stopping: %s. In-flight items finish; the rest is recorded as not processed.", reason)
            for handle, work in list(self._waiting_retries.values()):
                handle.cancel()
                self.stats.retrying -= 1
                self._not_processed(work)
            self._waiting_retries.clear()
            while self._ready_retries:
                self._not_processed(self._ready_retries.popleft())
        if force:
            self._cancel_feeder()
            self.cancel_in_flight()
        self.resume()

    def _cancel_feeder(self) -> None:
        feeder = self._feeder
        if feeder is not None and not feeder.done() and feeder is not _current_task():
            feeder.cancel()

    def pause(self) -> None:
        """Hand out no more items; items in flight go on. ``wait_idle()`` returns once they are done."""
        if self._running is not None and not self._stopping:
            self._paused = True
            self._running.clear()
            self._check_idle()

    def resume(self) -> None:
        """Hand out items again after ``pause()``."""
        self._paused = False
        if self._running is not None:
            self._running.set()
        if self._idle is not None:
            self._idle.clear()

    def in_flight_items(self) -> list[tuple[int, int, Any]]:
        """(position, attempts, item) of every item being processed now."""
        return [(work.index, work.attempts, work.item) for work in self._active.values()]

    @property
    def paused(self) -> bool:
        """Whether the executor is paused."""
        return self._paused

    async def wait_idle(self) -> None:
        """Wait until a paused executor has no item in flight."""
        assert self._idle is not None
        await self._idle.wait()

    def cancel_in_flight(self) -> None:
        """Cancel the items being processed; they go back to pending (or are recorded, when stopping)."""
        for index, work in list(self._active.items()):
            self._cancelled.add(index)
            if work.task is not None:
                work.task.cancel()

    def _check_idle(self) -> None:
        if self._paused and self.stats.in_flight == 0 and self._idle is not None:
            self._idle.set()

    # ------------------------------------------------------------------------------------- reading

    async def _feed(self) -> None:
        try:
            if is_async_source(self.source):
                await self._feed_async(iter_async_source(self.source))
            else:
                await self._feed_sync(iter_sync_source(self.source))
        except asyncio.CancelledError:
            pass  # a forced stop cancels the feeder; the item being submitted was recorded by _put_when_room
        except Exception as exc:
            self._fatal(exc)
        finally:
            self._feeding_done = True
            self._check_all_done()

    async def _feed_sync(self, items: Iterator[Any]) -> None:
        skip = self._skip
        for position, item in enumerate(items):
            if skip and self._skipped(position):
                continue
            work = self._enqueue(position, item)
            if work is not None:
                await self._put_when_room(work)

    async def _feed_async(self, items: AsyncIterator[Any]) -> None:
        skip = self._skip
        position = -1
        async for item in items:
            position += 1
            if skip and self._skipped(position):
                continue
            work = self._enqueue(position, item)
            if work is not None:
                await self._put_when_room(work)

    def _skipped(self, position: int) -> bool:
        # Positions arrive in increasing order: drop the ranges behind us, look at the first one.
        skip = self._skip
        while skip and skip[0][1] <= position:
            skip.pop(0)
        if skip and skip[0][0] <= position:
            self.stats.skipped += 1
            self.positions_read = position + 1
            return True
        return False

    def _enqueue(self, position: int, item: Any) -> _Work | None:
        """Queue one item; return it when the queue is full and the caller must wait for room."""
        self.positions_read = position + 1
        work = _Work(position, item)
        self.stats.read += 1
        self._outstanding += 1
        if self._stopping:
            self._not_processed(work)
            return None
        queue = self._queue
        assert queue is not None
        if queue.full():
            return work
        queue.put_nowait(work)
        return None

    async def _put_when_room(self, work: _Work) -> None:
        assert self._queue is not None
        try:
            await self._queue.put(work)
        except asyncio.CancelledError:
            self._not_processed(work)
            raise

    def _fatal(self, exc: BaseException) -> None:
        logger.error("The source raised %s: %s; stopping the run.", type(exc).__name__, exc)
        self.fatal_error = exc
        self.outcome = Outcome.FATAL
        self.stop(f"the source raised {type(exc).__name__}")

    # ---------------------------------------------------------------------------------- processing

    async def _worker(self, call: ItemCall) -> None:
        queue = self._queue
        ready = self._ready_retries
        running = self._running
        task = asyncio.current_task()
        assert queue is not None
        assert running is not None
        assert task is not None
        while True:
            work: _Work | None
            if ready:
                work = ready.popleft()
            elif queue.empty():
                work = await queue.get()
            else:
                work = queue.get_nowait()  # no coroutine when an item is already waiting
            if work is None:
                return
            if not running.is_set():
                await running.wait()
            if self._stopping:
                self._not_processed(work)
                continue
            await self._attempt(work, call, task)

    async def _attempt(self, work: _Work, call: ItemCall, task: asyncio.Task[None]) -> None:
        stats = self.stats
        work.attempts += 1
        stats.in_flight += 1
        work.task = task
        self._active[work.index] = work
        journal = self._journal
        try:
            await call(work.item)
        except asyncio.CancelledError:
            if work.index not in self._cancelled:
                raise
            self._back_to_pending(work, task)
            return
        except Exception as exc:
            self._attempt_over(work)
            self._handle_error(work, exc)
            return
        self._attempt_over(work)
        stats.succeeded += 1
        if journal is not None:
            journal.succeeded(work.index)
        self._finish_one()

    def _attempt_over(self, work: _Work) -> None:
        self.stats.in_flight -= 1
        del self._active[work.index]
        if self._paused:
            self._check_idle()

    def _back_to_pending(self, work: _Work, task: asyncio.Task[None]) -> None:
        """An item cancelled by ``cancel_in_flight``: not an attempt; it waits for its turn again."""
        self._cancelled.discard(work.index)
        if hasattr(task, "uncancel"):  # Python 3.11+: the worker itself goes on
            task.uncancel()
        self._attempt_over(work)
        work.attempts -= 1
        if self._stopping:
            self._not_processed(work, f"{self._stop_reason} (cancelled while in flight)")
        else:
            logger.info("Item %d was cancelled and goes back to pending.", work.index)
            self._ready_retries.appendleft(work)

    # ------------------------------------------------------------------------------ error handling

    def _handle_error(self, work: _Work, exc: Exception) -> None:
        if not self.policy.should_retry(exc, work.attempts):
            self._record_failure(FailedItem.from_exception(work.index, work.item, exc, work.attempts))
        elif self._stopping:
            self._not_processed(work, f"{type(exc).__name__}: {exc}")
        else:
            self._schedule_retry(work, self.policy.delay_s(work.attempts, exc))
            logger.debug("item %d: %s (attempt %d), retrying", work.index, type(exc).__name__, work.attempts)

    def _schedule_retry(self, work: _Work, delay_s: float) -> None:
        self.stats.retrying += 1
        handle = asyncio.get_running_loop().call_later(delay_s, self._retry_ready, work)
        self._waiting_retries[work.index] = (handle, work)

    def _retry_ready(self, work: _Work) -> None:
        del self._waiting_retries[work.index]
        self.stats.retrying -= 1
        queue = self._queue
        assert queue is not None
        # A full queue means every worker is busy and will look at the ready list before the queue.
        if queue.full():
            self._ready_retries.append(work)
        else:
            queue.put_nowait(work)

    def _record_failure(self, failed: FailedItem) -> None:
        if failed.error_type == NOT_PROCESSED:
            self.stats.not_processed += 1
        else:
            self.stats.failed += 1
            logger.debug("item %d failed: %s: %s", failed.index, failed.error_type, failed.message)
        self.stats.failures_by_type[failed.error_type] += 1
        self.failed.append(failed)
        if self._journal is not None:
            self._journal.finished_badly(failed)
        if self._on_failure is not None:
            self._on_failure(failed)
        self._finish_one()

    def _not_processed(self, work: _Work, why: str | None = None) -> None:
        self._record_failure(FailedItem.not_processed(work.index, work.item, work.attempts, why or self._stop_reason))

    def _finish_one(self) -> None:
        self._outstanding -= 1
        if self._outstanding == 0:
            self._check_all_done()

    def _check_all_done(self) -> None:
        if self._feeding_done and self._outstanding == 0 and self._all_done is not None:
            self._all_done.set()


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: called from the pause shell
        return None


def _retryable(service: Any) -> tuple[type[BaseException], ...]:
    configured = getattr(service, "exceptions_to_retry_for", None)
    if configured is None:
        return (TimeoutError, ConnectionError)
    if isinstance(configured, type):
        configured = (configured,)
    return tuple(configured)
