"""The rate limit: exact windows, no bursts, fractional rates, a resumed run, FIFO waiters, cancellation."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import batchframe_cli

from batchframe.run.limits import DriverSettings, RateLimit, RateLimiter
from batchframe.run.throttle import Throttle

# ------------------------------------------------------------------------------------------ fake clocks


class AutoClock:
    """A fake clock whose sleep moves time on at once, by the delay plus a (seeded) lateness."""

    def __init__(self, now: float = 1000.0, lateness: Callable[[], float] = lambda: 0.0) -> None:
        self.now = now
        self.lateness = lateness

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay_s: float) -> None:
        self.now += max(delay_s, 0.0) + self.lateness()


class ManualClock:
    """A fake clock that moves only when the test calls ``advance``; sleepers wake when their time comes."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay_s: float) -> None:
        wake = asyncio.get_running_loop().create_future()
        self.sleepers.append((self.now + delay_s, wake))
        await wake

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for at, wake in list(self.sleepers):
            if at <= self.now:
                self.sleepers.remove((at, wake))
                if not wake.done():
                    wake.set_result(None)
        await settle()


async def settle() -> None:
    for _ in range(20):  # let every task that can run, run
        await asyncio.sleep(0)


def limiter(clock: AutoClock | ManualClock, *limits: RateLimit, paced_start: bool = False) -> RateLimiter:
    return RateLimiter(limits, paced_start=paced_start, clock=clock, sleep=clock.sleep)


def starts_of(gate: RateLimiter, clock: AutoClock, arrivals: list[float]) -> list[float]:
    """Items arrive at these times (each waits for the one before it to start): their start times."""

    async def run() -> list[float]:
        starts = []
        for arrival in arrivals:
            clock.now = max(clock.now, arrival)
            await gate.acquire()
            starts.append(clock.now)
        return starts

    return asyncio.run(run())


def assert_windows_hold(starts: list[float], limit: RateLimit) -> None:
    """No window (t - window_s, t] holds more than ``limit.starts`` starts (the limiter's own float test)."""
    capacity = limit.starts
    for i in range(len(starts) - capacity):
        assert starts[i] <= starts[i + capacity] - limit.window_s, (i, starts[i], starts[i + capacity])


def assert_paced(starts: list[float], gate: RateLimiter) -> None:
    """A start and the m-th after it are at least m spacings minus the catch-up apart: no burst."""
    for i in range(len(starts)):
        for m in range(1, min(len(starts) - i, 25)):
            assert starts[i + m] - starts[i] >= m * gate.spacing_s - gate.catch_up_s - 1e-9, (i, m)


def gaps(starts: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(starts)]


def busy_arrivals(seed: int, items: int, idle_s: float) -> list[float]:
    """Mostly items waiting already (a busy run), now and then an idle gap (a pause, a cool-down)."""
    rng = random.Random(seed)
    at, arrivals = 1000.0, []
    for _ in range(items):
        if rng.random() < 0.05:
            at += rng.uniform(0, idle_s)
        arrivals.append(at)
    return arrivals


def late(seed: int) -> Callable[[], float]:
    """The event loop's timer lateness: mostly 0-3 ms, sometimes 50 ms (a busy loop)."""
    rng = random.Random(seed)
    return lambda: rng.choice([rng.uniform(0, 0.003)] * 19 + [0.05])


# -------------------------------------------------------------------------------------------- the rule

PER_SECOND_10 = RateLimit.from_rate(10, 1.0)
PER_MINUTE_120 = RateLimit.from_rate(120, 60.0)


def test_a_rate_is_a_whole_number_of_starts_per_window() -> None:
    assert RateLimit.from_rate(10, 1.0) == RateLimit(10, 1.0)
    assert RateLimit.from_rate(2.5, 1.0) == RateLimit(2, 1.0)  # 3 in a second would be more than 2.5
    assert RateLimit.from_rate(0.5, 1.0) == RateLimit(1, 2.0)  # one start every 2 s
    assert RateLimit.from_rate(0.5, 60.0) == RateLimit(1, 120.0)
    assert DriverSettings(rate_per_s=2.5, rate_per_minute=90).rate_limits == (RateLimit(2, 1.0), RateLimit(90, 60.0))
    assert DriverSettings().rate_limits == ()
    with pytest.raises(ValueError, match="1 start or more"):
        RateLimit(0, 1.0)


def test_no_rate_leaves_the_call_itself() -> None:
    async def call(item: int) -> int:
        return item

    assert Throttle(DriverSettings()).wrap(call) is call
    assert Throttle(DriverSettings(rate_per_s=5)).wrap(call) is not call
    assert Throttle(DriverSettings(adaptive=True)).wrap(call) is not call


def test_the_limited_call_returns_and_raises_what_the_call_does() -> None:
    async def call(item: int) -> int:
        if item < 0:
            raise ValueError(item)
        return item * 2

    limited = Throttle(DriverSettings(rate_per_s=1000)).wrap(call)

    async def run() -> list[int]:
        with pytest.raises(ValueError):
            await limited(-1)
        return [await limited(item) for item in range(3)]

    assert asyncio.run(run()) == [0, 2, 4]


@pytest.mark.parametrize(
    "limits",
    [
        (PER_SECOND_10,),
        (RateLimit.from_rate(95, 1.0),),
        (RateLimit.from_rate(2.5, 1.0),),
        (RateLimit.from_rate(0.5, 1.0),),
        (PER_SECOND_10, PER_MINUTE_120),
        (RateLimit.from_rate(1000, 1.0), PER_MINUTE_120),
    ],
    ids=["10/s", "95/s", "2.5/s", "0.5/s", "10/s+120/min", "1000/s+120/min"],
)
@pytest.mark.parametrize("seed", range(4))
def test_no_window_ever_holds_more_than_its_capacity(limits: tuple[RateLimit, ...], seed: int) -> None:
    clock = AutoClock(lateness=late(seed))
    gate = limiter(clock, *limits)
    longest = max(limit.window_s for limit in limits)
    starts = starts_of(gate, clock, busy_arrivals(seed, 400, 2 * longest))
    for limit in limits:
        assert_windows_hold(starts, limit)
    assert_paced(starts, gate)


def test_a_busy_run_starts_at_the_full_rate_from_its_first_second() -> None:
    clock = AutoClock()
    starts = starts_of(limiter(clock, PER_SECOND_10), clock, [1000.0] * 31)
    assert starts[0] == 1000.0
    assert starts[10] - starts[0] == pytest.approx(1.0)  # the 11th start waits for the first to leave the window
    assert starts[30] - starts[0] == pytest.approx(3.0)  # 10 in every second, not fewer


def test_timer_lateness_does_not_add_up_to_a_lower_rate() -> None:
    clock = AutoClock(lateness=lambda: 0.002)  # every sleep ends 2 ms late
    starts = starts_of(limiter(clock, RateLimit.from_rate(95, 1.0)), clock, [1000.0] * 951)
    # Late by 2 ms a start, it would take 950 * (1/95 + 0.002) = 11.9 s; at most one lateness a window.
    assert starts[-1] - starts[0] <= 10 * 1.003


def test_both_windows_hold_together_at_the_pace_of_the_slower() -> None:
    clock = AutoClock()
    gate = limiter(clock, PER_SECOND_10, PER_MINUTE_120)
    starts = starts_of(gate, clock, [1000.0] * 241)
    assert gate.spacing_s == 0.5  # 120 a minute is one start every 0.5 s: 10/s never binds
    assert_windows_hold(starts, PER_SECOND_10)
    assert_windows_hold(starts, PER_MINUTE_120)
    assert starts[120] - starts[0] == pytest.approx(60.0)
    assert starts[240] - starts[0] == pytest.approx(120.0)


def test_fractional_rates() -> None:
    clock = AutoClock()
    starts = starts_of(limiter(clock, RateLimit.from_rate(2.5, 1.0)), clock, [1000.0] * 9)
    assert_windows_hold(starts, RateLimit(2, 1.0))
    assert starts[8] - starts[0] == pytest.approx(4.0)  # 2 a second
    clock = AutoClock()
    starts = starts_of(limiter(clock, RateLimit.from_rate(0.5, 1.0)), clock, [1000.0] * 4)
    assert gaps(starts) == [2.0, 2.0, 2.0]  # one every 2 s


def test_after_an_idle_gap_the_run_does_not_burst() -> None:
    clock = AutoClock()
    gate = limiter(clock, PER_SECOND_10)
    starts = starts_of(gate, clock, [1000.0] * 5 + [1010.0] * 15)  # a 10 s pause (or cool-down)
    after = starts[5:]
    assert after[0] == 1010.0
    assert min(gaps(after)) >= 0.1 - gate.catch_up_s
    assert_windows_hold(starts, PER_SECOND_10)


def test_no_start_before_the_cooldown_ends() -> None:
    async def run() -> list[float]:
        clock = ManualClock()
        cooldown_until = 0.0
        gate = RateLimiter([PER_SECOND_10], not_before=lambda: cooldown_until, clock=clock, sleep=clock.sleep)
        starts: list[float] = []

        async def item() -> None:
            await gate.acquire()
            starts.append(clock.now)

        tasks = [asyncio.create_task(item()) for _ in range(4)]
        await settle()
        cooldown_until = clock.now + 0.2  # a 429 while the next start sleeps its pace
        for _ in range(40):
            await clock.advance(0.01)
        await asyncio.gather(*tasks)
        return [round(at - 1000.0, 3) for at in starts]

    starts = asyncio.run(run())
    assert starts[0] == 0.0
    assert 0.2 <= starts[1] <= 0.21  # woke at its pace (0.075), saw the cool-down, slept on
    assert min(gaps(starts)[1:]) >= 0.075  # then the pace again, no burst


# ------------------------------------------------------------------------------------------ a resumed run


def test_a_resumed_run_starts_at_the_steady_pace() -> None:
    clock = AutoClock()
    gate = limiter(clock, PER_SECOND_10, paced_start=True)
    starts = starts_of(gate, clock, [1000.0] * 21)
    assert starts[0] == pytest.approx(1000.0 + gate.spacing_s + gate.catch_up_s)  # not at once
    assert min(gaps(starts)) >= 0.1 - gate.catch_up_s - 1e-9  # never a burst
    assert starts[20] - starts[0] <= 2.0 + gate.catch_up_s + 1e-9  # then the full rate


@pytest.mark.parametrize("limits", [(PER_SECOND_10,), (RateLimit.from_rate(95, 1.0),), (PER_SECOND_10, PER_MINUTE_120)])
@pytest.mark.parametrize("seed", range(6))
def test_no_window_straddling_a_stop_and_a_resume_holds_more(limits: tuple[RateLimit, ...], seed: int) -> None:
    rng = random.Random(seed)
    clock = AutoClock(lateness=late(seed))
    longest = max(limit.window_s for limit in limits)
    before = starts_of(limiter(clock, *limits), clock, busy_arrivals(seed, rng.randrange(5, 300), longest))
    # Killed right after its last start, or a little later; the new process's clock reads the same time.
    resumed_at = before[-1] + rng.choice([0.0, 0.0, rng.uniform(0, 0.5)])
    clock = AutoClock(now=resumed_at, lateness=late(seed + 100))
    gate = limiter(clock, *limits, paced_start=True)
    after = starts_of(gate, clock, [resumed_at] * 150)
    for limit in limits:
        assert_windows_hold(before + after, limit)
    assert_paced(before + after, gate)


def test_a_resumed_run_with_a_huge_capacity_stores_no_past() -> None:
    clock = AutoClock()
    gate = limiter(clock, RateLimit(10**9, 60.0), paced_start=True)
    starts = starts_of(gate, clock, [1000.0] * 3)
    assert starts[0] == pytest.approx(1000.0 + gate.spacing_s + gate.catch_up_s)
    assert starts[2] - starts[0] < 0.01


# ------------------------------------------------------------------------------------ waiters in line


def test_waiters_start_first_come_first_served() -> None:
    async def run() -> list[int]:
        clock = ManualClock()
        gate = limiter(clock, RateLimit(1, 1.0))
        order: list[int] = []

        async def item(n: int) -> None:
            await gate.acquire()
            order.append(n)

        tasks = []
        for n in range(5):
            tasks.append(asyncio.create_task(item(n)))
            await settle()
        for _ in range(5):
            await clock.advance(1.0)
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(run()) == [0, 1, 2, 3, 4]


def test_a_cancelled_waiter_takes_no_start_and_the_line_goes_on() -> None:
    async def run() -> dict[str, float]:
        clock = ManualClock()
        gate = limiter(clock, RateLimit(1, 1.0))
        started: dict[str, float] = {}

        async def item(name: str) -> None:
            await gate.acquire()
            started[name] = clock.now

        tasks = {}
        for name in "abcde":
            tasks[name] = asyncio.create_task(item(name))
            await settle()
        assert list(started) == ["a"]  # b sleeps first in line; c, d and e wait behind it
        tasks["b"].cancel()  # the first in line, asleep
        tasks["d"].cancel()  # one behind others
        await settle()
        await clock.advance(1.0)
        assert started == {"a": 1000.0, "c": 1001.0}  # c took the start b left, on time
        await clock.advance(1.0)
        assert started["e"] == 1002.0
        results = await asyncio.gather(*tasks.values(), return_exceptions=True)
        assert [type(r).__name__ for r in results] == [
            "NoneType",
            "CancelledError",
            "NoneType",
            "CancelledError",
            "NoneType",
        ]
        return started

    assert asyncio.run(run()) == {"a": 1000.0, "c": 1001.0, "e": 1002.0}


def test_a_waiter_cancelled_just_as_its_turn_comes_wakes_the_next() -> None:
    async def run() -> dict[str, float]:
        clock = ManualClock()
        gate = limiter(clock, RateLimit(1, 1.0))
        started: dict[str, float] = {}
        tasks: dict[str, asyncio.Task[None]] = {}

        async def item(name: str) -> None:
            await gate.acquire()
            started[name] = clock.now
            if name == "b":
                tasks["c"].cancel()  # c's turn is set already, and c has not run yet

        for name in "abcd":
            tasks[name] = asyncio.create_task(item(name))
            await settle()
        for _ in range(3):
            await clock.advance(1.0)
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        assert tasks["c"].cancelled()
        return started

    assert asyncio.run(run()) == {"a": 1000.0, "b": 1001.0, "d": 1002.0}


# ------------------------------------------------------------------------------------ through the CLI

STARTS_JOB = """
import asyncio
import os
import time
from pathlib import Path
from batchframe import BatchframeParam, RateLimited, Service, Source

class Numbers(Source[int]):
    def __init__(self, count: BatchframeParam[int] = 25):
        self.count = count
    def __len__(self):
        return self.count
    def __iter__(self):
        return iter(range(self.count))

class Api(Service[int]):
    def __init__(self, log: BatchframeParam[Path], refuse: BatchframeParam[int] = -1):
        self.fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self.refuse = refuse
    async def process(self, item):
        os.write(self.fd, f"{time.monotonic()!r} {item}\\n".encode())
        await asyncio.sleep(0.005)
        if item == self.refuse:
            self.refuse = -1
            raise RateLimited(0.3)
"""

SLACK_S = 0.05  # between the limiter's start and the job's time.monotonic(): scheduling, the GIL


def run_and_read_starts(make_project: Callable[..., Path], tmp_path: Path, *params: str) -> list[float]:
    project = make_project({"job.py": STARTS_JOB})
    log = tmp_path / "starts.txt"
    args = ["-p", f"log={log}", "-p", "concurrency=4"]
    for param in params:
        args += ["-p", param]
    done = batchframe_cli("exec", project / "job.py", "-d", tmp_path / "out", *args, cwd=project)
    assert done.returncode == 0, done.stderr
    return sorted(float(line.split()[0]) for line in log.read_text().splitlines())


def assert_at_most(starts: list[float], capacity: int, window_s: float) -> None:
    for i in range(len(starts) - capacity):
        assert starts[i + capacity] - starts[i] >= window_s - SLACK_S, (i, starts[i : i + capacity + 1])


@pytest.mark.timeout(60)
def test_max_per_second_through_the_cli(make_project: Callable[..., Path], tmp_path: Path) -> None:
    starts = run_and_read_starts(make_project, tmp_path, "max_per_second=10")
    assert len(starts) == 25
    assert_at_most(starts, 10, 1.0)  # no one-second window holds more than 10 starts, the first one included
    assert len([at for at in starts if at < starts[0] + 1.0 - SLACK_S]) <= 10
    assert starts[-1] - starts[0] >= 2.0 - SLACK_S  # the 21st start waits for the 11th to leave its window


@pytest.mark.timeout(60)
def test_both_windows_through_the_cli(make_project: Callable[..., Path], tmp_path: Path) -> None:
    starts = run_and_read_starts(make_project, tmp_path, "count=6", "max_per_second=10", "max_per_minute=120")
    assert len(starts) == 6
    # 120 a minute: one start every 0.5 s (a quarter of it may be caught up after a late start).
    assert min(gaps(starts)) >= 0.375 - SLACK_S
    assert starts[-1] - starts[0] >= 5 * 0.5 - 0.125 - SLACK_S


@pytest.mark.timeout(60)
def test_the_windows_hold_after_a_cooldown(make_project: Callable[..., Path], tmp_path: Path) -> None:
    starts = run_and_read_starts(make_project, tmp_path, "max_per_second=10", "refuse=3", "max_retries=0")
    assert len(starts) == 26  # item 3 twice
    assert_at_most(starts, 10, 1.0)
    assert min(gaps(starts)) >= 0.075 - SLACK_S  # no burst after the cool-down


@pytest.mark.timeout(60)
def test_the_windows_hold_across_a_stop_and_a_resume(make_project: Callable[..., Path], tmp_path: Path) -> None:
    import signal

    from helpers import only_run_dir, signal_when_ready

    project = make_project({"job.py": STARTS_JOB})
    log = tmp_path / "starts.txt"
    # One start per 2 s: a window longer than a resume takes to start, so it straddles the two parts.
    params = ["-p", f"log={log}", "-p", "concurrency=4", "-p", "count=4", "-p", "max_per_second=0.5"]
    code, _, stderr = signal_when_ready(
        "exec", "job.py", "-d", str(tmp_path / "out"), *params,
        cwd=project,
        ready=lambda: log.exists() and len(log.read_text().splitlines()) >= 2,
        signum=signal.SIGTERM,
    )  # fmt: skip
    assert code == 143, stderr
    resumed = batchframe_cli("resume", only_run_dir(tmp_path / "out"), cwd=project)  # at once
    assert resumed.returncode == 0, resumed.stderr
    starts = sorted(float(line.split()[0]) for line in log.read_text().splitlines())
    assert len(starts) == 4
    assert_at_most(starts, 1, 2.0)  # the resumed part's first start too waits for the window


@pytest.mark.timeout(60)
def test_a_stop_does_not_wait_for_the_items_waiting_for_their_start(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    import json
    import signal

    from helpers import only_run_dir, signal_when_ready

    project = make_project({"job.py": STARTS_JOB})
    log = tmp_path / "starts.txt"
    # One start every 10 s: three items wait in line when the stop comes; waiting out their starts
    # would take 30 s. They have not started: the stop takes them back at once.
    params = ["-p", f"log={log}", "-p", "concurrency=4", "-p", "count=8", "-p", "max_per_minute=6"]
    code, _, stderr = signal_when_ready(
        "exec", "job.py", "-d", str(tmp_path / "out"), *params,
        cwd=project, ready=lambda: log.exists() and log.read_text().strip() != "", signum=signal.SIGTERM,
        timeout=15,
    )  # fmt: skip
    assert code == 143, stderr
    assert len(log.read_text().splitlines()) == 1
    summary = json.loads((only_run_dir(tmp_path / "out") / "summary.json").read_text())
    assert summary["succeeded"] == 1 and summary["not_processed"] >= 3
