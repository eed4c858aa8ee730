"""Batches and pipelining for the back ends whose workers are other processes (``processes``, ``dask``).

The driver calls ``process`` one item at a time and keeps per-item semantics (retries, the journal,
progress, pause, stop). Sending each item on its own to another process would pay one round trip
per item and leave the worker idle during it, so a ``Batcher`` sits between the two:

- items that arrive in the same event-loop iteration go out together in one payload, each pickled
  on its own (a worker that cannot rebuild one fails that item alone, not its batch);
- a batch holds about ``TARGET_BATCH_S`` of work, measured from the workers' own timing: the first
  batches hold one item (a short run or slow items are never held back), and the size at most
  doubles from one batch to the next;
- a few batches per worker are in flight at once (pipelining), so a worker starts its next batch
  while the outcomes of the last one travel back; the window bounds memory;
- each item still gets its own outcome: a failed item is retried alone by the driver.

``hold()`` gives the items that were not sent yet back to the driver as ``NotStarted`` (a pause or a
stop lets only the sent batches finish, a fraction of a second of work); ``release()`` sends again.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from batchframe.backends import MAX_BATCH, NOT_STARTED, NotStarted, _trace_context
from batchframe.backends._worker import ItemNotPicklable, batch_payload, pickled

TARGET_BATCH_S = 0.1
"""How much work one batch holds (time on the worker), once the item time is known."""

WINDOW = 2
"""Batches in flight per worker: one running, one waiting beside it."""


@dataclass(frozen=True, slots=True)
class BatchReply:
    """What a worker answers for one batch.

    Attributes:
        outcomes: one per item, in order: None (it succeeded), the exception it failed with, or
            ``NOT_STARTED``; or None when every item succeeded.
        busy_s: how long the worker spent on the items it ran.
        ran: how many items it ran (the rest were not started).
    """

    outcomes: list[Exception | None] | None
    busy_s: float
    ran: int


SendBatch = Callable[[int, bytes, int], Awaitable[BatchReply]]
"""Sends a batch (its number, its items pickled (``batch_payload``), how many) to a worker; returns its reply."""


class BatchSizer:
    """The size of the next batch, from the measured time per item (an exponential moving average)."""

    def __init__(self, *, target_s: float = TARGET_BATCH_S, max_size: int = MAX_BATCH) -> None:
        self.target_s = target_s
        self.max_size = max_size
        self.size = 1
        self.item_s: float | None = None

    def record(self, ran: int, busy_s: float) -> None:
        """A worker ran ``ran`` items in ``busy_s`` seconds."""
        if ran <= 0:
            return
        per_item = busy_s / ran
        self.item_s = per_item if self.item_s is None else 0.7 * self.item_s + 0.3 * per_item
        wanted = self.target_s / self.item_s if self.item_s > 0 else self.max_size
        self.size = max(1, min(self.max_size, 2 * self.size, math.floor(wanted)))


class _Pending:
    __slots__ = ("future", "item")

    def __init__(self, item: Any, future: asyncio.Future[Exception | None]) -> None:
        self.item = item
        self.future = future


class Batcher:
    """Turns per-item calls into batches, with at most ``batches_in_flight`` batches out at once.

    Made on the event loop it serves (in a back end's ``start()``).

    Args:
        send: sends one batch and returns its reply (the back end picks the worker).
        batches_in_flight: how many batches may be out at once (workers x ``WINDOW``).
        on_abandoned: called when the driver cancels an item whose batch was sent (its worker must
            stop running it); given the batch's number.
    """

    def __init__(
        self,
        send: SendBatch,
        *,
        batches_in_flight: int,
        on_abandoned: Callable[[int], None] | None = None,
        sizer: BatchSizer | None = None,
    ) -> None:
        self._send = send
        self._capacity = max(1, batches_in_flight)
        self._on_abandoned = on_abandoned
        self.sizer = sizer or BatchSizer()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._sent: dict[asyncio.Future[Exception | None], int] = {}  # an item's future -> its batch number
        self._out = 0
        self._batches = 0
        self._held = False
        self._dispatch_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()  # release() may come from the pause shell, off the loop

    @property
    def slots(self) -> int:
        """How many items the driver should keep in flight to fill every batch of the window and the next ones."""
        return (self._capacity + self._capacity // WINDOW) * self.sizer.max_size

    async def call(self, item: Any) -> None:
        """Process one item in some batch; raise what it failed with (``NotStarted``: it was given back)."""
        if self._held:  # a pause or a stop began: the driver keeps the item
            raise NotStarted("the back end is holding items")
        future: asyncio.Future[Exception | None] = self._loop.create_future()
        if _trace_context.carrier is not None:  # a traced run: the worker runs the item in its attempt's trace
            item = _trace_context.with_context(item)
        entry = _Pending(item, future)
        self._pending.append(entry)
        self._schedule_dispatch()
        try:
            outcome = await future
        except asyncio.CancelledError:
            self._cancelled(entry)
            raise
        if outcome is not None:
            raise outcome

    def hold(self) -> None:
        """Send nothing more; give every item not sent yet back as ``NotStarted``."""
        self._held = True
        while self._pending:
            entry = self._pending.popleft()
            if not entry.future.done():
                entry.future.set_result(NOT_STARTED)

    def release(self) -> None:
        """Send again after ``hold()``."""
        self._held = False
        self._schedule_dispatch()

    async def close(self) -> None:
        """Give back what was not sent and wait for the batches still out (their workers are gone by now)."""
        self.hold()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _schedule_dispatch(self) -> None:
        # Once per loop iteration: the items the driver hands over in one iteration share a batch.
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            self._loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        while self._pending and self._out < self._capacity and not self._held:
            entries = self._take(self._size_now())
            if entries:
                self._start(entries)

    def _size_now(self) -> int:
        # Spread what is waiting over the free places in the window, so no worker idles behind another.
        free = self._capacity - self._out
        return max(1, min(self.sizer.size, math.ceil(len(self._pending) / free)))

    def _take(self, size: int) -> list[_Pending]:
        entries: list[_Pending] = []
        pending = self._pending
        while pending and len(entries) < size:
            entry = pending.popleft()
            if not entry.future.done():  # cancelled while waiting
                entries.append(entry)
        return entries

    def _start(self, entries: list[_Pending]) -> None:
        entries, payload = _pickled_batch(entries)
        if not entries:
            return
        self._out += 1
        self._batches += 1
        number = self._batches
        for entry in entries:
            self._sent[entry.future] = number
        task = self._loop.create_task(self._run(number, entries, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, number: int, entries: list[_Pending], payload: bytes) -> None:
        try:
            reply = await self._send(number, payload, len(entries))
        except BaseException as exc:  # the batch as a whole failed (a worker that cannot start): so does each item
            error = exc if isinstance(exc, Exception) else NotStarted(f"the batch was interrupted ({exc!r})")
            reply = BatchReply([error] * len(entries), 0.0, 0)
        finally:
            self._out -= 1
        self.sizer.record(reply.ran, reply.busy_s)
        outcomes = reply.outcomes
        for position, entry in enumerate(entries):
            self._sent.pop(entry.future, None)
            if not entry.future.done():
                entry.future.set_result(None if outcomes is None else outcomes[position])
        self._schedule_dispatch()

    def _cancelled(self, entry: _Pending) -> None:
        number = self._sent.pop(entry.future, None)
        if number is not None and self._on_abandoned is not None:
            self._on_abandoned(number)


class BatchingBackend:
    """``hold``/``release`` for a back end that sends its items through a ``Batcher`` (made in its ``start()``)."""

    _batcher: Batcher | None = None

    def hold(self) -> None:
        """Send no more batches; give back the items not sent yet."""
        if self._batcher is not None:
            self._batcher.hold()

    def release(self) -> None:
        """Send batches again."""
        if self._batcher is not None:
            self._batcher.release()


def _pickled_batch(entries: list[_Pending]) -> tuple[list[_Pending], bytes]:
    """The items pickled one by one into one payload; one that cannot be pickled fails alone (``ItemNotPicklable``).

    Pickled one by one, each is unpickled on its own by the worker: one it cannot rebuild fails alone.
    """
    sendable: list[_Pending] = []
    payloads: list[bytes] = []
    for entry in entries:
        try:
            payloads.append(pickled(entry.item))
        except ItemNotPicklable as exc:
            entry.future.set_result(exc)
        else:
            sendable.append(entry)
    return sendable, batch_payload(payloads)
