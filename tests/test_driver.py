from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import pytest

from batchframe import ParamError, Retry, Service, Source
from batchframe.run.driver import GROWN_READ_AHEAD, SAVE_GROUP_MIN, Driver, DriverSettings, Outcome
from batchframe.runfolder.failures import NOT_PROCESSED


class ListSource(Source[int]):
    def __init__(self, items) -> None:
        self.items = list(items)
        self.it = iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def next(self) -> int:
        return next(self.it)


class Recorder(Service[int]):
    """Async service: records calls and the highest number of concurrent calls."""

    def __init__(self, fail=None, delay: float = 0.0) -> None:
        self.fail = fail or (lambda item, attempt: None)
        self.delay = delay
        self.calls: Counter[int] = Counter()
        self.order: list[int] = []
        self.active = 0
        self.max_active = 0

    async def process(self, item: int) -> None:
        self.calls[item] += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.delay)
            error = self.fail(item, self.calls[item])
            if error is not None:
                raise error
            self.order.append(item)
        finally:
            self.active -= 1


def run(executor):
    return asyncio.run(executor.run())


def test_every_item_is_processed_once_with_bounded_concurrency(make_executor) -> None:
    service = Recorder(delay=0.001)
    executor = make_executor(ListSource(range(50)), service, concurrency=3)
    stats = run(executor)
    assert sorted(service.order) == list(range(50))
    assert set(service.calls.values()) == {1}
    assert service.max_active == 3
    assert (stats.succeeded, stats.failed, stats.read, stats.total) == (50, 0, 50, 50)
    assert executor.outcome is Outcome.COMPLETED


def test_every_worker_gets_an_item_when_process_waits(make_executor) -> None:
    # Idle workers are woken one per turn of the loop (not all at once): all 64 still end up busy.
    service = Recorder(delay=0.01)
    stats = run(make_executor(ListSource(range(256)), service, concurrency=64))
    assert service.max_active == 64
    assert stats.succeeded == 256


def test_retries_that_come_due_together_run_together(make_executor) -> None:
    service = Recorder(delay=0.01, fail=lambda item, attempt: Retry(delay_s=0.02) if attempt == 1 else None)
    stats = run(make_executor(ListSource(range(16)), service, concurrency=16))
    assert stats.succeeded == 16
    assert set(service.calls.values()) == {2}
    assert service.max_active == 16  # the second attempts ran side by side, not one worker after another


def test_sync_process_runs_in_worker_threads(make_executor) -> None:
    threads: set[str] = set()
    lock = threading.Lock()
    active = [0, 0]

    class SyncService(Service[int]):
        def process(self, item: int) -> None:
            import time

            with lock:
                active[0] += 1
                active[1] = max(active[1], active[0])
                threads.add(threading.current_thread().name)
            time.sleep(0.005)
            with lock:
                active[0] -= 1

    stats = run(make_executor(ListSource(range(12)), SyncService(), concurrency=4))
    assert stats.succeeded == 12
    assert threading.main_thread().name not in threads
    assert active[1] > 1  # several items really ran at once


def test_failures_are_counted_exactly_and_recorded(make_executor) -> None:
    service = Recorder(fail=lambda item, attempt: ValueError(f"bad {item}") if item % 3 == 0 else None)
    executor = make_executor(ListSource(range(30)), service, concurrency=5)
    stats = run(executor)
    assert stats.failed == 10 and stats.succeeded == 20
    assert sorted(f.item for f in executor.failed) == list(range(0, 30, 3))
    assert all(f.error_type == "ValueError" and f.attempts == 1 for f in executor.failed)
    assert stats.failures_by_type == Counter({"ValueError": 10})


def test_retryable_errors_are_retried_then_succeed(make_executor) -> None:
    service = Recorder(fail=lambda item, attempt: ConnectionError("flaky") if attempt <= 2 else None)
    stats = run(make_executor(ListSource(range(10)), service, concurrency=4, retry={"max_retries": 3}))
    assert stats.succeeded == 10 and stats.failed == 0 and stats.retrying == 0
    assert set(service.calls.values()) == {3}


def test_retries_run_out_after_max_retries(make_executor) -> None:
    service = Recorder(fail=lambda item, attempt: TimeoutError("slow"))
    executor = make_executor(ListSource(range(4)), service, retry={"max_retries": 2})
    stats = run(executor)
    assert stats.failed == 4
    assert {f.attempts for f in executor.failed} == {3}
    assert set(service.calls.values()) == {3}


def test_max_retries_zero_fails_at_once(make_executor) -> None:
    service = Recorder(fail=lambda item, attempt: ConnectionError("down"))
    executor = make_executor(ListSource(range(3)), service, retry={"max_retries": 0})
    run(executor)
    assert {f.attempts for f in executor.failed} == {1}


def test_non_retryable_errors_fail_at_once(make_executor) -> None:
    service = Recorder(fail=lambda item, attempt: KeyError(item))
    executor = make_executor(ListSource(range(3)), service, retry={"max_retries": 5})
    run(executor)
    assert set(service.calls.values()) == {1}
    assert executor.stats.failed == 3


def test_retry_matching_uses_isinstance_and_the_service_attribute(make_executor) -> None:
    class Throttled(ConnectionRefusedError):
        pass

    class Custom(Recorder):
        @property
        def exceptions_to_retry_for(self):
            return {ConnectionError, LookupError}

    service = Custom(fail=lambda item, attempt: (Throttled() if item else IndexError()) if attempt == 1 else None)
    stats = run(make_executor(ListSource(range(2)), service))
    assert stats.succeeded == 2
    assert service.calls == Counter({0: 2, 1: 2})


def test_a_waiting_retry_does_not_hold_a_worker(make_executor) -> None:
    service = Recorder(fail=lambda item, attempt: Retry(delay_s=0.05) if item == 0 and attempt == 1 else None)
    stats = run(make_executor(ListSource(range(6)), service, concurrency=1))
    assert stats.succeeded == 6
    assert service.order[-1] == 0  # the one worker went on with 1..5 while item 0 waited
    assert service.order[:-1] == [1, 2, 3, 4, 5]


def test_item_timeout_raises_timeout_error_in_the_item(make_executor) -> None:
    service = Recorder(delay=5)
    executor = make_executor(ListSource(range(2)), service, item_timeout_s=0.01, retry={"max_retries": 0})
    run(executor)
    assert [f.error_type for f in executor.failed] == ["TimeoutError", "TimeoutError"]
    assert "item_timeout_sec" in executor.failed[0].message


@pytest.mark.parametrize(
    ("limits", "items"),
    [
        ({"rate_per_s": 10}, 6),  # one start every 0.1 s
        ({"rate_per_minute": 600}, 6),  # the same pace from the per-minute window
        ({"rate_per_s": 1000, "rate_per_minute": 600}, 6),  # the per-second window alone would be instant
    ],
)
def test_each_rate_window_holds_the_run_back(make_executor, limits: dict[str, int], items: int) -> None:
    # Starts are paced evenly (no burst): six starts at 10/s take at least half a second, where
    # unlimited they take a few milliseconds.
    started = time.monotonic()
    stats = run(make_executor(ListSource(range(items)), Recorder(), **limits))
    assert stats.succeeded == items
    assert time.monotonic() - started >= 0.45


def test_generator_and_async_generator_sources(make_executor) -> None:
    class Gen(Source[int]):
        def __iter__(self):
            yield from range(7)

    class AGen(Source[int]):
        async def __aiter__(self):
            for i in range(5):
                await asyncio.sleep(0)
                yield i

    for source, count in ((Gen(), 7), (AGen(), 5)):
        service = Recorder()
        stats = run(make_executor(source, service))
        assert sorted(service.order) == list(range(count))
        assert stats.total is None


def test_a_source_that_raises_midway_is_fatal_and_keeps_what_was_done(make_executor) -> None:
    class Breaks(Source[int]):
        def __iter__(self):
            yield from range(5)
            raise OSError("disk gone")

    service = Recorder()
    executor = make_executor(Breaks(), service, concurrency=2)
    stats = run(executor)
    assert executor.outcome is Outcome.FATAL
    assert isinstance(executor.fatal_error, OSError)
    assert stats.read == 5
    assert stats.done == 5
    assert stats.failed == 0
    assert {f.error_type for f in executor.failed} <= {NOT_PROCESSED}
    assert sorted(service.order + [f.item for f in executor.failed]) == list(range(5))


def test_stop_records_every_item_read_and_reads_no_further(make_executor) -> None:
    service = Recorder(delay=0.01, fail=lambda item, attempt: Retry(delay_s=10) if item == 1 else None)
    executor = make_executor(ListSource(range(100)), service, concurrency=2, queue_size=10)

    async def main():
        task = asyncio.create_task(executor.run())
        while service.calls.total() < 6:
            await asyncio.sleep(0.001)
        executor.stop("test stop")
        return await task

    stats = asyncio.run(main())
    assert executor.outcome is Outcome.STOPPED
    not_processed = [f for f in executor.failed if f.error_type == NOT_PROCESSED]
    assert any(f.item == 1 for f in not_processed)  # the item that was waiting for its retry
    # A stop costs O(read-ahead): the source is not read to its end; what was read is all accounted for.
    assert stats.read <= 6 + 2 * 10 + 2
    assert executor.positions_read == stats.read
    assert sorted(service.order + [f.item for f in not_processed]) == list(range(stats.read))
    assert stats.not_processed == len(not_processed) and stats.failed == 0
    assert all(f.message == "test stop" for f in not_processed)


def test_forced_stop_cancels_in_flight_items_and_records_them(make_executor) -> None:
    service = Recorder(delay=10)
    executor = make_executor(ListSource(range(10)), service, concurrency=3)

    async def main():
        task = asyncio.create_task(executor.run())
        while executor.stats.in_flight < 3:
            await asyncio.sleep(0.001)
        executor.stop("first signal")
        executor.stop("second signal", force=True)
        return await task

    stats = asyncio.run(main())
    assert stats.succeeded == 0
    assert stats.not_processed == stats.read
    cancelled = [f for f in executor.failed if "cancelled while in flight" in f.message]
    assert len(cancelled) == 3


def test_pause_lets_in_flight_finish_and_resume_goes_on(make_executor) -> None:
    service = Recorder(delay=0.01)
    executor = make_executor(ListSource(range(40)), service, concurrency=4)

    async def main():
        task = asyncio.create_task(executor.run())
        while service.calls.total() < 4:
            await asyncio.sleep(0.001)
        executor.pause()
        await executor.wait_idle()
        assert executor.stats.in_flight == 0
        frozen = service.calls.total()
        await asyncio.sleep(0.05)
        assert service.calls.total() == frozen  # nothing handed out while paused
        executor.resume()
        return await task

    stats = asyncio.run(main())
    assert stats.succeeded == 40
    assert set(service.calls.values()) == {1}


def test_cancelled_in_flight_items_go_back_to_pending(make_executor) -> None:
    slow_once = {0, 1}

    class Slow(Recorder):
        async def process(self, item: int) -> None:
            if item in slow_once:
                slow_once.discard(item)
                self.calls[item] += 1
                await asyncio.sleep(10)
            await super().process(item)

    service = Slow()
    executor = make_executor(ListSource(range(6)), service, concurrency=2)

    async def main():
        task = asyncio.create_task(executor.run())
        while executor.stats.in_flight < 2:
            await asyncio.sleep(0.001)
        executor.pause()
        executor.cancel_in_flight()
        await executor.wait_idle()
        executor.resume()
        return await task

    stats = asyncio.run(main())
    assert stats.succeeded == 6 and stats.failed == 0
    assert sorted(service.order) == list(range(6))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("concurrency", 0),
        ("concurrency", -2),
        ("queue_size", 0),
        ("item_timeout_s", 0),
        ("rate_per_s", -1.0),
        ("rate_per_minute", 0),
    ],
)
def test_invalid_settings_name_the_config_field(field, value) -> None:
    with pytest.raises(ParamError) as info:
        DriverSettings(**{field: value})
    config_names = {
        "item_timeout_s": "item_timeout_sec",
        "rate_per_s": "max_per_second",
        "rate_per_minute": "max_per_minute",
    }
    config_name = config_names.get(field, field)
    assert config_name in str(info.value)
    assert info.value.exit_code == 2


class SlowJournal:
    """A journal whose commits are late: each ``wait_saved`` commits everything, one loop turn later."""

    def __init__(self) -> None:
        self.handed = self.saved = 0
        self.group = 0
        self.waits = 0
        self.most_at_risk = 0  # outcomes unsaved + items in flight, at the worst moment
        self.driver: Driver | None = None

    @property
    def unsaved(self) -> int:
        return self.handed - self.saved

    def group_by(self, items: int) -> None:
        self.group = items

    def succeeded(self, index: int) -> None:
        self.handed += 1
        assert self.driver is not None
        self.most_at_risk = max(self.most_at_risk, self.unsaved + self.driver.stats.in_flight)

    async def wait_saved(self, below: int) -> None:
        self.waits += 1
        await asyncio.sleep(0)
        self.saved = self.handed


def test_no_item_starts_while_two_groups_are_unsaved_or_in_flight() -> None:
    # What a kill -9 can make resume repeat is bounded: the driver waits for the journal instead.
    journal = SlowJournal()
    driver = Driver(
        ListSource(range(3000)),
        Recorder(),
        settings=DriverSettings(concurrency=8),
        on_success=journal.succeeded,
        saving=journal,
    )
    journal.driver = driver
    stats = run(driver)
    assert stats.succeeded == 3000
    assert journal.group == SAVE_GROUP_MIN  # 8 slots: the floor
    assert journal.waits >= 3000 // (2 * SAVE_GROUP_MIN)  # nothing else ever commits here
    assert journal.most_at_risk <= 2 * SAVE_GROUP_MIN


class NoOp(Service[int]):
    async def process(self, item: int) -> None:
        pass


def test_the_read_ahead_grows_only_for_a_fast_source_and_fast_items(make_executor) -> None:
    fast = make_executor(ListSource(range(50_000)), NoOp(), concurrency=8)
    assert run(fast).succeeded == 50_000
    assert 16 < fast.read_ahead <= GROWN_READ_AHEAD  # the workers kept waiting for a source that kept up

    slow_items = make_executor(ListSource(range(200)), Recorder(delay=0.005), concurrency=8)
    assert run(slow_items).succeeded == 200
    assert slow_items.read_ahead == 16  # 2 x concurrency: the items were the bottleneck

    bounded = make_executor(ListSource(range(50_000)), NoOp(), concurrency=8, queue_size=16)
    assert run(bounded).succeeded == 50_000
    assert bounded.read_ahead == 16  # a queue_size set by hand is a bound
