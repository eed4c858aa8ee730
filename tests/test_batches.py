"""The Batcher: per-item calls grouped into batches sized by the item time, a bounded window, hold and release."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from batchframe.backends import NotStarted
from batchframe.backends._batches import MAX_BATCH, TARGET_BATCH_S, Batcher, BatchReply, BatchSizer
from batchframe.backends._pickling import loads_each
from batchframe.backends._worker import ItemNotPicklable

T = TypeVar("T")

pytestmark = pytest.mark.timeout(30)


class FakeWorkers:
    """Answers each batch after a moment, as if every item took ``item_s`` on the worker; records the batches."""

    def __init__(self, item_s: float = 1e-5, fail: set[Any] | None = None) -> None:
        self.item_s = item_s
        self.fail = fail or set()
        self.batches: list[list[Any]] = []
        self.out = 0
        self.most_out = 0
        self.gate: asyncio.Event | None = None

    async def send(self, number: int, payload: bytes, count: int) -> BatchReply:
        items = [item for item, _ in loads_each(payload)]  # each item pickled on its own
        assert len(items) == count
        self.batches.append(items)
        self.out += 1
        self.most_out = max(self.most_out, self.out)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0.001)
        finally:
            self.out -= 1
        outcomes = [ValueError(item) if item in self.fail else None for item in items]
        return BatchReply(outcomes, self.item_s * count, count)


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(scenario())


async def outcome(call: Callable[[Any], Awaitable[None]], item: Any) -> BaseException | None:
    try:
        await call(item)
    except BaseException as exc:
        return exc
    return None


def test_batches_start_with_one_item_and_grow_to_the_largest_size_for_quick_items() -> None:
    workers = FakeWorkers(item_s=1e-6)

    async def scenario() -> list[BaseException | None]:
        batcher = Batcher(workers.send, batches_in_flight=2)
        return list(await asyncio.gather(*(outcome(batcher.call, i) for i in range(3000))))

    assert run(scenario) == [None] * 3000
    sizes = [len(batch) for batch in workers.batches]
    assert sizes[:2] == [1, 1]  # a short run or a slow item is never held back behind a big batch
    assert max(sizes) == MAX_BATCH
    assert sizes.index(MAX_BATCH) >= 8  # it grows by doubling at most: 1, 2, 4, ... 256
    assert sorted(item for batch in workers.batches for item in batch) == list(range(3000))


def test_a_batch_holds_about_the_target_time_of_work() -> None:
    workers = FakeWorkers(item_s=0.01)

    async def scenario() -> None:
        batcher = Batcher(workers.send, batches_in_flight=2)
        await asyncio.gather(*(batcher.call(i) for i in range(400)))

    run(scenario)
    assert max(len(batch) for batch in workers.batches) == round(TARGET_BATCH_S / 0.01)


def test_the_sizer_at_most_doubles_and_follows_a_change_of_item_time() -> None:
    sizer = BatchSizer(target_s=0.1, max_size=256)
    seen = [sizer.size]
    for _ in range(6):
        sizer.record(sizer.size, 0.0)
        seen.append(sizer.size)
    assert seen == [1, 2, 4, 8, 16, 32, 64]
    for _ in range(20):
        sizer.record(sizer.size, sizer.size * 0.001)
    assert sizer.size == 100
    for _ in range(20):
        sizer.record(sizer.size, sizer.size * 0.05)  # items became 50x slower
    assert sizer.size == 2


def test_no_more_batches_than_the_window_are_out_at_once() -> None:
    workers = FakeWorkers()

    async def scenario() -> None:
        batcher = Batcher(workers.send, batches_in_flight=3)
        await asyncio.gather(*(batcher.call(i) for i in range(2000)))

    run(scenario)
    assert workers.most_out == 3


def test_each_item_gets_its_own_outcome() -> None:
    workers = FakeWorkers(fail={3, 7})

    async def scenario() -> list[BaseException | None]:
        batcher = Batcher(workers.send, batches_in_flight=1)
        return list(await asyncio.gather(*(outcome(batcher.call, i) for i in range(10))))

    results = run(scenario)
    assert [i for i, r in enumerate(results) if isinstance(r, ValueError)] == [3, 7]
    assert all(r is None for i, r in enumerate(results) if i not in (3, 7))


def test_hold_gives_back_what_was_not_sent_and_release_sends_again() -> None:
    workers = FakeWorkers()

    async def scenario() -> tuple[list[BaseException | None], BaseException | None, BaseException | None]:
        workers.gate = asyncio.Event()
        batcher = Batcher(workers.send, batches_in_flight=1)
        tasks = [asyncio.ensure_future(outcome(batcher.call, i)) for i in range(5)]
        await asyncio.sleep(0.01)  # item 0 is out (a window of one batch); 1-4 wait
        batcher.hold()
        while_held = await outcome(batcher.call, 99)
        workers.gate.set()
        results = list(await asyncio.gather(*tasks))
        batcher.release()
        return results, while_held, await outcome(batcher.call, 5)

    results, while_held, after = run(scenario)
    assert results[0] is None  # the sent batch finished
    assert all(isinstance(r, NotStarted) for r in results[1:])
    assert isinstance(while_held, NotStarted)
    assert after is None
    assert [item for batch in workers.batches for item in batch] == [0, 5]


def test_an_unpicklable_item_fails_alone_and_its_batch_goes_on() -> None:
    workers = FakeWorkers()

    async def scenario() -> list[BaseException | None]:
        batcher = Batcher(workers.send, batches_in_flight=1)
        await batcher.call(0)  # grow the size beyond one
        await asyncio.gather(*(batcher.call(i) for i in range(1, 4)))
        return list(await asyncio.gather(*(outcome(batcher.call, x) for x in (10, threading.Lock(), 11, 12))))

    results = run(scenario)
    assert isinstance(results[1], ItemNotPicklable) and "cannot be sent" in str(results[1])
    assert [results[0], results[2], results[3]] == [None, None, None]
    assert [10, 11, 12] in workers.batches


def test_a_batch_that_cannot_be_sent_fails_each_of_its_items() -> None:
    async def broken(number: int, payload: bytes, count: int) -> BatchReply:
        raise RuntimeError("no worker can start")

    async def scenario() -> list[BaseException | None]:
        batcher = Batcher(broken, batches_in_flight=2)
        return list(await asyncio.gather(*(outcome(batcher.call, i) for i in range(4))))

    results = run(scenario)
    assert all(isinstance(r, RuntimeError) and str(r) == "no worker can start" for r in results)


def test_cancelling_a_sent_item_tells_the_back_end_which_batch() -> None:
    abandoned: list[int] = []
    workers = FakeWorkers()

    async def scenario() -> None:
        workers.gate = asyncio.Event()
        batcher = Batcher(workers.send, batches_in_flight=2, on_abandoned=abandoned.append)
        sent = asyncio.ensure_future(batcher.call(1))
        await asyncio.sleep(0.01)
        sent.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sent
        workers.gate.set()
        await batcher.close()

    run(scenario)
    assert abandoned == [1]
