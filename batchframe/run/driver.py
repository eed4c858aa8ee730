"""The driver: a bounded read-ahead line, N workers, retries that hold no worker, a graceful stop.

Per item: take it from the line -> call ``process`` (under the rate limit and timeout) -> on an
exception, schedule a retry (a timer; no worker waits for it) or record the failure -> count it done.
The driver never reads more than ``queue_size`` items ahead of the workers, so memory stays flat
however long the source is. Completion is an event set by the last item, not a polling loop.

The line is a plain deque filled a chunk at a time (``ThreadedReader.take``), not an
``asyncio.Queue``: taking an item is a ``popleft``, and an idle worker is woken only when there is
an item for it. That per-item path is what ``benchmarks/throughput.py`` measures.

The feeder and the workers are supervised: if one of them dies of an error (a bug of ours, or a
record that could not be written), the run stops with that error instead of hanging. A stop costs
O(items in flight): reading stops at once, queued items are recorded as not processed, and
``positions_read`` says where a resume continues.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from batchframe._text import error_type_of, format_exception, safe_attribute, safe_str
from batchframe.backends import Backend, ItemCall, NotStarted
from batchframe.backends.local import LocalBackend
from batchframe.errors import RunError
from batchframe.retry import RateLimited, RetryPolicy, is_retryable
from batchframe.run.limits import DriverSettings
from batchframe.run.reader import ThreadedReader
from batchframe.run.throttle import Throttle

if TYPE_CHECKING:
    from batchframe.run.telemetry import RunTelemetry
from batchframe.runfolder.failures import NOT_PROCESSED, FailedItem
from batchframe.runfolder.logs import FILE_ONLY, item_fields
from batchframe.runfolder.outcome import Outcome
from batchframe.runfolder.report import FIRST_INTERVAL_S, LATENCY_ALL, LATENCY_EVERY
from batchframe.runfolder.stats import Stats
from batchframe.service import retryable_exceptions
from batchframe.source import (
    check_source,
    first_async_items,
    is_async_source,
    iter_async_source,
    iter_sync_source,
    source_length,
)

__all__ = ["Driver", "DriverSettings", "Outcome", "Stats"]

logger = logging.getLogger(__name__)

GROWN_READ_AHEAD = 1024
"""How far the default read-ahead grows, doubling each time the workers wait on a Source that keeps up.

Workers that wait for the reader thread although it had read its whole window ahead mean both the
Source and the items are fast: each refill then costs a hand-over between the threads, and a
longer line makes those rarer (1.2x faster no-op runs). A slow Source, or items slower than the
Source, never trigger it: queue consumers keep their short read-ahead.
"""

SAVE_GROUP_MIN = 256
"""The fewest outcomes the journal commits in one go when items come faster than the loop turns.

A commit costs about what 50-100 no-op items cost: groups of the concurrency (64) made no-op runs
1.5x slower (benchmarks/throughput.py). No item starts while twice a group (at least 512) is in
flight or unsaved: that is what a ``kill -9`` can make ``resume`` run a second time.
"""

OnSuccess = Callable[[int], None]
OnFailure = Callable[[FailedItem], None]


class Saving(Protocol):
    """Where outcomes become durable (the journal). The driver holds new starts while too many are unsaved."""

    @property
    def unsaved(self) -> int:
        """Outcomes handed in and not yet durable."""
        ...

    def group_by(self, items: int) -> None:
        """Make outcomes durable in groups of about ``items``."""
        ...

    async def wait_saved(self, below: int) -> None:
        """Return once fewer than ``below`` outcomes are unsaved."""
        ...


@dataclass(slots=True)
class _Work:
    index: int
    item: Any
    attempts: int = 0
    task: asyncio.Task[None] | None = None


class Driver:
    """Runs ``service.process`` over every item of ``source``.

    Args:
        source: the user's Source instance.
        service: the user's Service instance.
        settings: concurrency, retry, timeout and rate settings.
        on_success: called with each succeeded item's position (the journal).
        on_failure: called with each item that fails for good, or is not processed, as it happens.
            If it raises, the run stops with that error (e.g. ``failed.jsonl`` on a full disk).
        skip: source positions to skip, as sorted half-open ranges (a resumed run's finished items).
        backend: where ``process`` runs (default: this process, asyncio plus threads for a sync process).
        limit: read at most this many items of the source (``exec --limit``), counted by position
            (a resumed run's skipped items count too); None: all of them.
        paced_start: the run follows an earlier one against the same API (a resume, a retry): the
            rate limits start at their steady pace, as if it had been running at full rate until now.
        start_limit: with ``adaptive``, the start rate to begin from (a resumed run's last limit).
        saving: where ``on_success``/``on_failure`` outcomes become durable (the journal). No item
            starts while the unsaved outcomes and the items in flight reach ``2 * max(slots,
            SAVE_GROUP_MIN)``, so a ``kill -9`` repeats at most that many items on resume.

    Raises:
        UsageError: the Service's ``exceptions_to_retry_for`` is not a set of exception classes.
    """

    def __init__(
        self,
        source: Any,
        service: Any,
        *,
        settings: DriverSettings,
        on_success: OnSuccess | None = None,
        on_failure: OnFailure | None = None,
        skip: Sequence[tuple[int, int]] = (),
        backend: Backend | None = None,
        limit: int | None = None,
        paced_start: bool = False,
        start_limit: float | None = None,
        saving: Saving | None = None,
    ) -> None:
        self.source = source
        self.service = service
        self.settings = settings
        check_source(source)  # an async def next() would be "processed" as coroutines forever
        self.policy = RetryPolicy.with_exceptions(settings.retry, retryable_exceptions(service))
        self.limit = limit
        self.paced_start = paced_start
        self.stats = Stats(total=_limited(source_length(source), limit))
        self.outcome = Outcome.COMPLETED
        self.fatal_error: BaseException | None = None
        self.positions_read = 0
        self.reader: ThreadedReader | None = None
        self.unread_iterator: Iterator[Any] | None = None
        self.source_exhausted = False
        """The Source was read to its end (or to the limit): no item of it is left unread."""
        """After a stop: the sync Source's iterator, free to read the unread rest (None: it is not)."""
        self._on_success = on_success
        self._on_failure = on_failure
        self._saving = saving
        self._unsaved_limit = 0  # in flight + unsaved outcomes: set once the slots are known
        self._skip = list(skip)
        self._stopping = False
        self._stop_reason = "the run was stopped"
        self._paused = False
        self._cancelled: set[int] = set()
        self._active: dict[int, _Work] = {}
        self._feeding_done = False
        self._outstanding = 0
        self._ready_retries: collections.deque[_Work] = collections.deque()
        self._waiting_retries: dict[int, tuple[asyncio.TimerHandle, _Work]] = {}
        self._pending: collections.deque[_Work] = collections.deque()  # read ahead, waiting for a worker
        self._idle_workers: collections.deque[asyncio.Future[None]] = collections.deque()
        self._room: asyncio.Future[None] | None = None  # the feeder waits on it while the line is full
        self._workers_done = False
        self._dispatch_due = False
        self._read_ahead = settings.read_ahead
        self._all_done: asyncio.Event | None = None
        self._running: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._feeder: asyncio.Task[None] | None = None
        self._feeder_cancelled = False
        self._shutting_down = False
        self._tasks: list[asyncio.Task[None]] = []
        self._crash: asyncio.Future[BaseException] | None = None  # set by the first driver task that dies of an error
        self._call: ItemCall = _not_started
        self._slots = 0
        self._cap = settings.concurrency  # items in flight at most: the slots, or fewer once tuned down
        self._slot_freed: asyncio.Future[None] | None = None
        self._workers = 0
        self._cooldown_cut = asyncio.Event()
        self._cooldown_end: asyncio.TimerHandle | None = None
        self._closing: asyncio.Future[None] | None = None
        self._waiting_for_start: set[asyncio.Task[Any]] = set()
        self._told_left_running = False
        self._sampler: asyncio.TimerHandle | None = None
        self.telemetry: RunTelemetry | None = None
        """OpenTelemetry, when the run is traced or measured: a span and a duration per attempt (set before ``run``)."""
        self.on_tune: Callable[[list[str]], None] | None = None
        """Told what each ``tune`` changed (the journal records it)."""
        self.throttle = Throttle(
            settings,
            paced_start=paced_start,
            start_limit=start_limit,
            not_before=lambda: self.stats.cooldown_until,  # items waiting for a start wait out a cool-down
            waiting=self._waiting_for_start,
            is_retryable=lambda exc: is_retryable(exc, self.policy.retry_on),
        )
        self.stats.limits = self.throttle.stats
        self.backend = backend or LocalBackend(
            service, concurrency=settings.concurrency, item_timeout_s=settings.item_timeout_s
        )

    # ----------------------------------------------------------------------------------- lifecycle

    async def run(self) -> Stats:
        """Process every item; return the final counters. Never raises for a failing item."""
        self._all_done = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()
        self._idle = asyncio.Event()
        try:
            call = self.throttle.wrap(await self.backend.start())
            self._read_ahead = self._read_ahead_for(self.backend.slots)
            self.stats.started_at = time.monotonic()
            self._crash = asyncio.get_running_loop().create_future()
            # Workers start as items are read (_enqueue): never more than items can be in flight.
            self._call, self._slots = call, self.backend.slots
            self._cap = self._slots
            group = max(self._slots, SAVE_GROUP_MIN)
            self._unsaved_limit = 2 * group  # one group being committed while the next fills
            if self._saving is not None:
                self._saving.group_by(group)
            self._feeder = self._start_task(self._feed())
            self._sample_timeline()
            await self._supervise()
        finally:
            if self._sampler is not None:
                self._sampler.cancel()
            self.stats.finished_at = time.monotonic()
            await self._close_backend()
        return self.stats

    async def _close_backend(self) -> None:
        """Close the back end (its workers' ``on_worker_stop`` run now); a forced stop cuts that short."""
        closing = self._closing = asyncio.ensure_future(self.backend.close())
        try:
            await asyncio.wait({closing})
        finally:
            if not closing.done():  # this task was cancelled: the close must not go on alone
                closing.cancel()
        if closing.cancelled():
            logger.warning("Closing the executor (on_worker_stop) was cut short by a second stop.")
            return
        error = closing.exception()
        if error is not None:
            raise error

    def _read_ahead_for(self, slots: int) -> int:
        """The queue's bound: ``queue_size`` if set; else enough to keep ``slots`` items in flight.

        A back end that batches keeps hundreds of items in flight, and refilling them four at a
        time would cost a loop iteration (and a wake-up of the reader thread) per four items.
        """
        return self.settings.queue_size or max(self.settings.read_ahead, slots // 4)

    async def _supervise(self) -> None:
        """Wait for the last item; if a worker or the feeder dies of an error first, stop with it."""
        assert self._all_done is not None
        assert self._crash is not None
        finished = asyncio.ensure_future(self._all_done.wait())
        waiting: set[asyncio.Future[Any]] = {finished, self._crash}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if self._crash.done():
            finished.cancel()
            await self._crashed(self._crash.result())
            return
        self._workers_done = True  # each idle worker returns
        self._wake_workers()
        for outcome in await asyncio.gather(*self._tasks, return_exceptions=True):
            if isinstance(outcome, BaseException) and self.fatal_error is None:
                logger.error("A driver task failed at the end of the run: %s", safe_str(outcome), exc_info=outcome)
                self.fatal_error, self.outcome = outcome, Outcome.FATAL

    def _start_task(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Start a supervised driver task (the feeder, a worker): if it dies of an error, the run stops with it."""
        task = asyncio.create_task(coroutine)
        task.add_done_callback(self._task_ended)
        self._tasks.append(task)
        return task

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        crash = self._crash
        if task.cancelled() or crash is None or crash.done():
            return
        error = task.exception()
        if error is not None:
            crash.set_result(error)

    async def _crashed(self, error: BaseException) -> None:
        """A driver task died: record what is left as not processed (best effort), end the run with the error."""
        # exc_info is the error itself: no exception is being handled here (True would log "NoneType: None").
        logger.error(
            "The run stopped on an error: %s", safe_str(error), exc_info=None if isinstance(error, RunError) else error
        )
        self.fatal_error = error
        self.outcome = Outcome.FATAL
        self._stopping = True
        self._stop_reason = f"the run stopped on {type(error).__name__}"
        self._shutting_down = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        leftovers = [work for _, work in self._waiting_retries.values()]
        leftovers += [*self._active.values(), *self._ready_retries, *self._drain_pending()]
        self.stats.retrying -= len(self._waiting_retries)
        self._waiting_retries.clear()
        self._active.clear()
        self._ready_retries.clear()
        for work in leftovers:
            try:
                self._not_processed(work)
            except Exception:
                logger.error("Item %d could not be recorded as not processed.", work.index)

    def stop(self, reason: str = "the run was stopped", *, force: bool = False) -> None:
        """Stop gracefully: read no more items, let in-flight items finish, record the read rest as not processed.

        Costs O(items read ahead and in flight): the unread rest of the source stays unread
        (``positions_read`` says where a resume continues). ``force=True`` (a second Ctrl-C or
        SIGTERM) also cancels the in-flight items, which are recorded as not processed.
        """
        if not self._stopping:
            self._stopping = True
            self._stop_reason = reason
            self._cooldown_cut.set()
            self.stats.cooldown_total_s -= self.stats.cooldown_s  # the stop cuts it short
            if self._cooldown_end is not None:
                self._cooldown_end.cancel()
            if self.outcome is Outcome.COMPLETED:
                self.outcome = Outcome.STOPPED
            logger.warning("Stopping: %s. In-flight items finish; the rest is recorded as not processed.", reason)
            self._cancel_feeder()
            self.backend.hold()
            for handle, work in list(self._waiting_retries.values()):
                handle.cancel()
                self.stats.retrying -= 1
                self._not_processed(work)
            self._waiting_retries.clear()
            while self._ready_retries:
                self._not_processed(self._ready_retries.popleft())
            for work in self._drain_pending():
                self._not_processed(work)
            self._give_back_waiting_for_start()
            if self._slot_freed is not None and not self._slot_freed.done():
                self._slot_freed.set_result(None)  # the items waiting for a slot are recorded, not run
            self._slot_freed = None
        if force:
            self.cancel_in_flight()
            if self._closing is not None and not self._closing.done():
                self._closing.cancel()
        self.resume()

    def _drain_pending(self) -> list[_Work]:
        drained = list(self._pending)
        self._pending.clear()
        return drained

    def _cancel_feeder(self) -> None:
        feeder = self._feeder
        if feeder is not None and not feeder.done() and feeder is not _current_task():
            self._feeder_cancelled = True
            feeder.cancel()

    def pause(self) -> None:
        """Hand out no more items; items in flight go on. ``wait_idle()`` returns once they are done."""
        if self._running is not None and not self._stopping:
            self._paused = True
            self._running.clear()
            self.backend.hold()
            self._give_back_waiting_for_start()
            self._check_idle()

    def resume(self) -> None:
        """Hand out items again after ``pause()``."""
        self._paused = False
        if not self._stopping and self._cooldown_end is None:
            self.backend.release()
        if self._running is not None:
            self._running.set()
        if self._idle is not None:
            self._idle.clear()

    def in_flight_items(self) -> list[tuple[int, int, Any]]:
        """(position, attempts, item) of every item being processed now."""
        return [(work.index, work.attempts, work.item) for work in self._active.values()]

    @property
    def read_ahead(self) -> int:
        """How many items the driver reads ahead of the workers now (see ``GROWN_READ_AHEAD``)."""
        return self._read_ahead

    @property
    def paused(self) -> bool:
        """Whether the driver is paused."""
        return self._paused

    @property
    def state(self) -> str:
        """One word for outside readers: running, pausing (items in flight finish), paused or stopping."""
        if self._stopping:
            return "stopping"
        if self._paused:
            return "pausing" if self.stats.in_flight else "paused"
        return "running"

    async def wait_idle(self) -> None:
        """Wait until a paused driver has no item in flight."""
        assert self._idle is not None
        await self._idle.wait()

    def _give_back_waiting_for_start(self) -> None:
        """Items waiting for their start under a rate limit have not started: a pause or a stop takes them back.

        A stop then costs the items that run, not the rate limit's wait for each one still in line.
        """
        for index, work in list(self._active.items()):
            if work.task is not None and work.task in self._waiting_for_start:
                self._cancelled.add(index)
                work.task.cancel()

    def cancel_in_flight(self) -> None:
        """Cancel the items being processed; they go back to pending (or are recorded, when stopping)."""
        for index, work in list(self._active.items()):
            self._cancelled.add(index)
            if work.task is not None:
                work.task.cancel()

    def tune(self, **changes: Any) -> list[str]:
        """Change the run's limits while it goes: ``concurrency``, ``max_per_second``, ``max_per_minute``, ``adaptive``.

        The pause shell's ``self.tune(max_per_second=5)``; ``batchframe tune`` and the web UI end here too.
        ``None`` removes a rate limit. ``concurrency`` goes from 1 up to the run's starting one.

        Returns:
            What changed, one ``name: old -> new`` line each (also logged in logs.txt).

        Raises:
            ParamError: a setting that cannot be tuned, or a value ``-p`` would refuse.
        """
        said = self.throttle.tune(changes)
        self._call = self.throttle.call or self._call
        most = self.throttle.most_concurrency
        if self._slots:
            self._cap = max(1, -(-self._slots * self.throttle.settings.concurrency // most))  # the slots, scaled
        if said and self.on_tune is not None:
            self.on_tune(said)
        self._free_slot()
        return said

    def _free_slot(self) -> None:
        """Wake the workers waiting for a slot under a concurrency tuned down, if one is free now."""
        waiter = self._slot_freed
        if waiter is not None and self.stats.in_flight < self._cap:
            self._slot_freed = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait_for_slot(self) -> None:
        if self._slot_freed is None:
            self._slot_freed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._slot_freed)

    def _check_idle(self) -> None:
        if self._paused and self.stats.in_flight == 0 and self._idle is not None:
            self._idle.set()

    # ------------------------------------------------------------------------------------- reading

    async def _feed(self) -> None:
        try:
            await self._feed_from(self._chunks())
        except asyncio.CancelledError:
            if not self._feeder_cancelled:  # the Source itself raised CancelledError
                self._fatal(asyncio.CancelledError("the source raised CancelledError"))
        except BaseException as exc:  # the Source raised: KeyboardInterrupt and SystemExit too
            self._fatal(exc)
        finally:
            self._feeding_done = True
            self._take_back_read_ahead()
            self._check_all_done()

    def _chunks(self) -> AsyncIterator[list[Any]]:
        # The limit wraps the Source's own iterator, so no reader (the read-ahead thread, the unread
        # rest handed to persist_failed after a stop) ever reads past it.
        limit = self.limit
        if is_async_source(self.source):
            items = iter_async_source(self.source)
            return _one_by_one(items if limit is None else first_async_items(items, limit))
        iterator = iter_sync_source(self.source)
        if limit is not None:
            iterator = itertools.islice(iterator, limit)
        self.reader = ThreadedReader(iterator, window=self._read_ahead)
        self.reader.start()
        return self._taken_from(self.reader)

    async def _taken_from(self, reader: ThreadedReader) -> AsyncIterator[list[Any]]:
        grows = self.settings.queue_size is None  # a queue_size set by hand is a bound
        while True:
            filled = reader.filled
            chunk = await reader.take(self._read_ahead - len(self._pending))
            if not chunk:
                return
            starved = reader.waited and filled and not self._pending and self._idle_workers  # see GROWN_READ_AHEAD
            if grows and starved and self._read_ahead < GROWN_READ_AHEAD:
                self._read_ahead = min(2 * self._read_ahead, GROWN_READ_AHEAD)
                reader.widen(self._read_ahead)
            yield chunk

    async def _feed_from(self, chunks: AsyncIterator[list[Any]]) -> None:
        skip = self._skip
        position = self.positions_read
        async for chunk in chunks:
            for item in chunk:
                if skip and self._skipped(position):
                    position += 1
                    continue
                self.positions_read = position = position + 1
                self._enqueue(position - 1, item)
            self._dispatch_soon()
            if self._stopping:
                return
            if len(self._pending) >= self._read_ahead:
                await self._wait_for_room()
        self.source_exhausted = True

    def _make_room(self) -> None:
        room, self._room = self._room, None
        if room is not None and not room.done():
            room.set_result(None)

    async def _wait_for_room(self) -> None:
        """Wait until the workers have taken half of the line (a chunk's worth: not one item at a time)."""
        while len(self._pending) >= self._read_ahead and not self._stopping:
            self._room = asyncio.get_running_loop().create_future()
            await self._room

    def _take_back_read_ahead(self) -> None:
        """Items the reader thread read but the feeder never took: they were read, so record them."""
        if self.reader is None:
            return
        leftovers, free = self.reader.close()
        self.unread_iterator = self.reader.iterator if free else None
        self.source_exhausted = self.source_exhausted or self.reader.exhausted
        for item in leftovers:
            position = self.positions_read
            self.positions_read += 1
            if self._skip and self._skipped(position):
                continue
            self.stats.read += 1
            self._outstanding += 1
            self._not_processed(_Work(position, item))

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

    def _enqueue(self, position: int, item: Any) -> None:
        """Put one item read in line for a worker (or record it as not processed when stopping)."""
        work = _Work(position, item)
        self.stats.read += 1
        self._outstanding += 1
        if self._stopping:
            self._not_processed(work)
            return
        if self._workers < self._slots:  # one more item read: one more may be in flight
            self._workers += 1
            self._start_task(self._worker())
        self._pending.append(work)

    def _dispatch_soon(self) -> None:
        """Wake one idle worker for the items in line, once the running task gives the loop a turn.

        Deferred and one at a time on purpose: a worker whose ``process`` never waits takes item
        after item without giving the loop a turn, and needs no other worker; waking one worker per
        item put in line would wake dozens that find the line empty. A worker that takes an item
        and leaves more in line calls this again, so while ``process`` does wait, one more worker
        wakes per turn of the loop until every item has one.
        """
        if not self._dispatch_due:
            self._dispatch_due = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_due = False
        if self._pending or self._ready_retries:
            self._wake_workers(1)

    def _wake_workers(self, count: int | None = None) -> None:
        """Wake up to ``count`` idle workers (None: all of them)."""
        idle = self._idle_workers
        count = len(idle) if count is None else count
        while count > 0 and idle:
            waiter = idle.popleft()
            if not waiter.done():  # a worker cancelled while it waited (a crash) is not woken
                waiter.set_result(None)
                count -= 1

    def _fatal(self, exc: BaseException) -> None:
        logger.error("The source raised %s: %s; stopping the run.", type(exc).__name__, safe_str(exc))
        logger.error("The source's traceback:\n%s", format_exception(exc), extra=FILE_ONLY)
        self.fatal_error = exc
        self.outcome = Outcome.FATAL
        self.stop(f"the source raised {type(exc).__name__}")

    # ---------------------------------------------------------------------------------- processing

    async def _worker(self) -> None:  # noqa: C901 - the per-item path stays whole: each call out costs every item
        # The per-item path: what benchmarks/throughput.py measures. Only the rare cases (a pause, a
        # stop, a cool-down, an error) leave it for a method of their own.
        stats = self.stats
        active = self._active
        saving, limit = self._saving, self._unsaved_limit
        latency, started, clock = stats.report.latency, self.throttle.started_at, time.perf_counter
        untimed = 0  # attempts to run before the next one is timed
        traced = self.telemetry
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        while True:
            work = self._take()
            if work is None:
                if self._workers_done:
                    return
                waiter = loop.create_future()
                self._idle_workers.append(waiter)
                await waiter
                continue
            held = self._paused or self._stopping or stats.cooldown_until or stats.in_flight >= self._cap
            if (held or (saving is not None and saving.unsaved + stats.in_flight >= limit)) and not (
                await self._may_start(work)
            ):
                continue
            work.attempts += 1
            stats.in_flight += 1
            work.task = task
            active[work.index] = work
            # Latency: every attempt of the first LATENCY_ALL, then one in LATENCY_EVERY (a clock read and a
            # histogram entry per item would cost the per-item path a fifth of its speed).
            if untimed:
                untimed -= 1
                timed = False
            else:
                timed = True
                untimed = 0 if latency.count < LATENCY_ALL else LATENCY_EVERY - 1
            began = clock() if timed else 0.0
            try:
                if traced is None:
                    await self._call(work.item)  # read each time: a tune may put a limit in the path or take it out
                else:
                    await traced.attempt(self._call, work.item, work.index, work.attempts)
            except BaseException as exc:  # KeyboardInterrupt, SystemExit, GeneratorExit from process: the item fails
                if timed:
                    latency.add(clock() - started.pop(task, began))
                if self._attempt_failed(work, exc, task):
                    raise
                continue
            if timed:  # from its start: a rate limiter in the call says when the item started after its wait
                latency.add(clock() - (started.pop(task, began) if started else began))
            elif started:
                started.pop(task, None)
            self._succeeded(work)

    def _take(self) -> _Work | None:
        """The next item for a worker: a retry that came due first, then the line; None: nothing waits."""
        ready, pending = self._ready_retries, self._pending
        if ready:
            work = ready.popleft()
        elif pending:
            work = pending.popleft()
            if self._room is not None and len(pending) <= self._read_ahead // 2:
                self._make_room()
        else:
            return None
        if self._idle_workers and (pending or ready) and not self._dispatch_due:  # more in line: see _dispatch_soon
            self._dispatch_soon()
        return work

    async def _may_start(self, work: _Work) -> bool:
        """Wait out a cool-down, a pause or the journal; False: the run stopped meanwhile (``work`` is recorded)."""
        assert self._running is not None
        try:
            if self.stats.cooldown_until:
                await self._after_cooldown()
            if not self._running.is_set():
                await self._running.wait()
            while self.stats.in_flight >= self._cap and not self._stopping:
                await self._wait_for_slot()
            saving = self._saving
            while saving is not None and saving.unsaved + self.stats.in_flight >= self._unsaved_limit:
                await saving.wait_saved(self._unsaved_limit - self.stats.in_flight)
        except asyncio.CancelledError:  # the run ends on an error: the supervisor records what is in line
            self._pending.appendleft(work)
            raise
        if self._stopping:
            self._not_processed(work)
            return False
        return True

    def _sample_timeline(self) -> None:
        """The report's timeline: the counts now, and again in one interval (a timer: nothing per item)."""
        stats = self.stats
        timeline = stats.report.timeline
        timeline.sample(stats.succeeded + stats.failed, stats.failed, stats.rate_limited)
        self._sampler = asyncio.get_running_loop().call_later(FIRST_INTERVAL_S, self._sample_timeline)

    def _succeeded(self, work: _Work) -> None:
        self._attempt_over(work)
        self.stats.succeeded += 1
        if work.attempts > 1:
            self.stats.report.finished_after(work.attempts)
        if self._on_success is not None:
            try:
                self._on_success(work.index)
            except Exception as record_error:
                self.records_failed(record_error)
        self._finish_one()

    def _attempt_failed(self, work: _Work, exc: BaseException, task: asyncio.Task[None]) -> bool:
        """An attempt raised: give the item back, retry it or record it. True: re-raise (the run is ending)."""
        if isinstance(exc, NotStarted):
            self._given_back(work)
            return False
        if isinstance(exc, asyncio.CancelledError):
            if work.index in self._cancelled:
                self._cancelled.discard(work.index)
                if hasattr(task, "uncancel"):  # Python 3.11+: the worker itself goes on
                    task.uncancel()
                self._given_back(work, "cancelled while in flight")
                return False
            if self._shutting_down:
                return True  # the supervisor ends the run and records the items in flight itself
            # else: a CancelledError of the user's own, a failure like any other
        self._attempt_over(work)
        self._handle_error(work, exc)
        return False

    def _attempt_over(self, work: _Work) -> None:
        self.stats.in_flight -= 1
        del self._active[work.index]
        if self._slot_freed is not None:
            self._free_slot()
        if self._paused:
            self._check_idle()

    def _given_back(self, work: _Work, how: str | None = None) -> None:
        """An item that was not run (the back end gave it back) or cancelled by ``cancel_in_flight``.

        Not an attempt: it waits for its turn again, or is recorded as not processed when stopping.
        """
        self._attempt_over(work)
        work.attempts -= 1
        if self._stopping:
            self._not_processed(work, f"{self._stop_reason} ({how})" if how else None)
        else:
            if how:  # one line per item only with -v: the supervisor said it once for all
                logger.debug("Item %d was %s and goes back to pending.", work.index, how)
            self._ready_retries.append(work)

    # ------------------------------------------------------------------------------ error handling

    def _handle_error(self, work: _Work, exc: BaseException) -> None:
        still_running = safe_attribute(exc, "still_running")  # a user's exception may have a raising property
        if isinstance(still_running, asyncio.Future) and not still_running.done():
            self._left_running(work.index, still_running)
        if isinstance(exc, RateLimited):
            self.stats.rate_limited += 1
            if not exc.counts_as_attempt:
                work.attempts -= 1  # the API refused the call; the item did not fail (see RateLimited)
        if not self.policy.should_retry(exc, work.attempts):
            self._record_failure(FailedItem.from_exception(work.index, work.item, exc, work.attempts))
        elif self._stopping:
            self._not_processed(work, f"{error_type_of(exc)}: {safe_str(exc)}")
        else:
            delay_s = self.policy.delay_s(max(work.attempts, 1), exc)
            if isinstance(exc, RateLimited):
                self._cool_down(delay_s, exc)
            self._schedule_retry(work, delay_s)
            logger.debug(
                "item %d: %s (attempt %d), retrying",
                work.index,
                type(exc).__name__,
                work.attempts,
                extra=item_fields(work.index, work.attempts),
            )

    def _cool_down(self, delay_s: float, exc: RateLimited) -> None:
        """No item starts anywhere in the run for ``delay_s`` (items already running finish).

        The back end is held too, so the items a batching back end sent ahead come back unstarted.
        """
        now = time.monotonic()
        until = now + delay_s
        stats = self.stats
        if until <= stats.cooldown_until:
            return
        stats.cooldown_total_s += until - max(now, stats.cooldown_until)  # an overlap counts once
        if stats.cooldown_s == 0:
            logger.warning("Rate limited (%s): no new item starts for %.1f s.", safe_str(exc), delay_s)
            self.backend.hold()
        stats.cooldown_until = until
        if self._cooldown_end is not None:
            self._cooldown_end.cancel()
        self._cooldown_end = asyncio.get_running_loop().call_later(delay_s, self._cooldown_over)

    def _cooldown_over(self) -> None:
        self._cooldown_end = None
        if not self._paused and not self._stopping:
            self.backend.release()

    async def _after_cooldown(self) -> None:
        """Wait out the cool-down; a stop cuts it short."""
        stats = self.stats
        while not self._stopping and (left := stats.cooldown_until - time.monotonic()) > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._cooldown_cut.wait(), left)
        if stats.cooldown_until and stats.cooldown_until <= time.monotonic():
            stats.cooldown_until = 0.0

    def _schedule_retry(self, work: _Work, delay_s: float) -> None:
        self.stats.retrying += 1
        self.stats.retries += 1
        handle = asyncio.get_running_loop().call_later(delay_s, self._retry_ready, work)
        self._waiting_retries[work.index] = (handle, work)

    def _left_running(self, index: int, attempt: asyncio.Future[Any]) -> None:
        """A timed-out attempt goes on: say so once per run (then at DEBUG). Nothing waits for it.

        Its retries start without it (on another thread, as another task) and the run ends without it.
        """
        if self._told_left_running:
            logger.debug("Item %d timed out; its attempt goes on in the background.", index)
            return
        self._told_left_running = True
        how = (
            "its async process ignored the cancellation and goes on as a task"
            if isinstance(attempt, asyncio.Task)
            else "its thread is still stuck in process (a thread cannot be stopped)"
        )
        logger.warning(
            "Item %d timed out; %s. Its retries and the end of the run do not wait for it "
            "(other such items are logged at DEBUG).",
            index,
            how,
        )

    def _retry_ready(self, work: _Work) -> None:
        del self._waiting_retries[work.index]
        self.stats.retrying -= 1
        self._ready_retries.append(work)  # workers take retries before the line
        self._dispatch_soon()

    def _record_failure(self, failed: FailedItem) -> None:
        if failed.error_type == NOT_PROCESSED:
            self.stats.not_processed += 1
        else:
            self.stats.failed += 1
        self.stats.failures_by_type[failed.error_type] += 1
        if failed.error_type != NOT_PROCESSED:
            report = self.stats.report
            report.errors.add(failed.error_type, failed.message, failed.index)
            if failed.attempts > 1:
                report.finished_after(failed.attempts)
        try:
            if self._on_failure is not None:
                self._on_failure(failed)
        except Exception as exc:
            self.records_failed(exc)
        finally:
            self._finish_one()

    def records_failed(self, exc: Exception) -> None:
        """Writing a record failed (disk full): stop the run with that error; later records may fail too.

        Called by the driver when a callback raises, and by grouped writers that fail later.
        """
        if self.fatal_error is None:
            logger.error("%s", safe_str(exc))
            self.fatal_error = exc
            self.outcome = Outcome.FATAL
            self.stop("the run's records could not be written")

    def _not_processed(self, work: _Work, why: str | None = None) -> None:
        self._record_failure(FailedItem.not_processed(work.index, work.item, work.attempts, why or self._stop_reason))

    def _finish_one(self) -> None:
        self._outstanding -= 1
        if self._outstanding == 0:
            self._check_all_done()

    def _check_all_done(self) -> None:
        if self._feeding_done and self._outstanding == 0 and self._all_done is not None:
            self._all_done.set()


def _limited(total: int | None, limit: int | None) -> int | None:
    """The run's total: the source's length, capped by the limit; unknown when the length is."""
    return total if total is None or limit is None else min(total, limit)


async def _one_by_one(items: AsyncIterator[Any]) -> AsyncIterator[list[Any]]:
    """An async Source's items as chunks of one: its iterator gives no more than one at a time."""
    async for item in items:
        yield [item]


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: called from the pause shell
        return None


async def _not_started(item: Any) -> Any:
    raise RuntimeError("the driver's run() has not started its back end")
