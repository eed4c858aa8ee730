"""The adaptive start rate: it backs off, recovers, never passes a ceiling, and sends no burst after a cool-down.

The controller runs on a fake clock against a simulated API that refuses (429, ``Retry-After: 1``)
whatever passes its capacity in any sliding second, as ``benchmarks/adaptive.py``'s real one does.
"""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import batchframe_cli, build_file_tree, only_run_dir, start_batchframe, wait_until
from test_limits import AutoClock, gaps

from batchframe.run.adaptive import BETA, PLATEAU_SHARE, REGAIN_S, AdaptiveRate, Outcome
from batchframe.run.limits import RateLimit, RateLimiter
from batchframe.runfolder.live import read_status, send_control
from batchframe.runfolder.stats import rate_text


@dataclass
class Simulated:
    starts: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
    rates: list[tuple[float, float | None]] = field(default_factory=list)
    cooldown_ends: list[float] = field(default_factory=list)

    def served_per_s(self, start: float, end: float) -> float:
        served = [at for at in self.starts if start <= at < end and at not in set(self.refused)]
        return len(served) / (end - start)


def simulate(capacity: Callable[[float], float], *, ceiling: float | None, seconds: float) -> Simulated:
    """Items start as the limiter lets them; the API answers at once; a 429 cools the run down for 1 s."""
    clock = AutoClock(now=0.0)
    cooldown_until = 0.0
    control = AdaptiveRate(ceiling, clock=clock)
    limits = [RateLimit.from_rate(ceiling, 1.0)] if ceiling is not None else []
    gate = RateLimiter(
        limits, pace_per_s=control.rate, not_before=lambda: cooldown_until, clock=clock, sleep=clock.sleep
    )
    api: collections.deque[float] = collections.deque()
    seen = Simulated()

    async def run() -> None:
        nonlocal cooldown_until
        while clock.now < seconds:
            await gate.acquire()
            now = clock.now
            seen.starts.append(now)
            changed = control.started()
            while api and api[0] <= now - 1.0:
                api.popleft()
            api.append(now)
            if len(api) > capacity(now):
                seen.refused.append(now)
                if cooldown_until < now + 1.0:
                    cooldown_until = now + 1.0
                    seen.cooldown_ends.append(cooldown_until)
                outcome = Outcome.PUSHBACK
            else:
                outcome = Outcome.OK
            changed = control.finished(now, outcome) or changed
            if changed:
                gate.set_pace(control.rate)
                seen.rates.append((now, control.rate))
            if control.rate is not None and ceiling is not None:
                assert control.rate <= ceiling

    asyncio.run(run())
    return seen


def test_it_backs_off_on_pushback_and_regains_the_rate_along_the_cubic() -> None:
    clock = AutoClock(now=0.0)
    control = AdaptiveRate(100.0, clock=clock)
    assert control.rate == 100.0
    control.started()
    clock.now = 0.5
    assert control.finished(0.4, Outcome.PUSHBACK)
    assert control.rate == pytest.approx(100.0 * BETA)
    assert control.lowered == 1
    assert control.lowest == pytest.approx(100.0 * BETA)
    # Each second in which the run started what the limit allowed, the rate grows back (seen at the
    # first start of the next second).
    rate_at: dict[int, float] = {}
    for second in range(1, 10):
        clock.now = 0.5 + second
        for _ in range(int(control.rate or 0)):
            control.started()
        rate_at[second] = control.rate or 0.0
    assert rate_at[1] == pytest.approx(100.0 * BETA)  # nothing ran at the new rate yet
    assert rate_at[2] > 100.0 * BETA
    assert rate_at[1 + int(REGAIN_S)] == pytest.approx(100.0 * PLATEAU_SHARE, abs=0.5)  # w_max after K seconds
    assert rate_at[6] - rate_at[5] < rate_at[3] - rate_at[2]  # flat near where the API refused before
    assert max(rate_at.values()) <= 100.0  # never above the ceiling


def test_one_overload_one_decrease() -> None:
    clock = AutoClock(now=10.0)
    control = AdaptiveRate(100.0, clock=clock)
    control.finished(9.9, Outcome.PUSHBACK)
    for _ in range(20):  # the other attempts that were in flight come back refused too
        control.finished(9.95, Outcome.PUSHBACK)
    assert control.lowered == 1
    assert control.rate == pytest.approx(100.0 * BETA)
    clock.now = 10.2
    control.finished(10.1, Outcome.PUSHBACK)  # started after the decrease: the API is still over
    assert control.lowered == 2
    assert control.rate == pytest.approx(100.0 * BETA * BETA)


def test_it_does_not_grow_a_limit_the_run_does_not_reach() -> None:
    clock = AutoClock(now=0.0)
    control = AdaptiveRate(1000.0, clock=clock)
    control.finished(0.0, Outcome.PUSHBACK)
    low = control.rate
    for second in range(1, 30):
        clock.now = float(second)
        for _ in range(5):  # the source or the concurrency holds the run at 5/s
            control.started()
    assert control.rate == low


def test_without_a_ceiling_the_first_pushback_starts_from_the_rate_reached() -> None:
    clock = AutoClock(now=0.0)
    control = AdaptiveRate(None, clock=clock)
    assert control.rate is None  # no limit at all until the API says so
    for tick in range(200):
        clock.now = tick / 100  # 100 starts a second for 2 s
        control.started()
    control.finished(clock.now, Outcome.PUSHBACK)
    assert control.rate == pytest.approx(100 * BETA, rel=0.05)


def test_a_rising_share_of_retryable_failures_lowers_the_rate_a_steady_one_does_not() -> None:
    clock = AutoClock(now=0.0)
    control = AdaptiveRate(50.0, clock=clock)
    for second in range(1, 6):  # 10% of calls time out, second after second: the API's normal
        for n in range(50):
            control.finished(clock.now, Outcome.ERROR if n % 10 == 0 else Outcome.OK)
        clock.now = float(second)
        control.started()
    assert control.lowered == 0
    for n in range(50):  # then 40%: overload
        control.finished(clock.now, Outcome.ERROR if n % 10 < 4 else Outcome.OK)
    clock.now = 6.0
    control.started()
    assert control.lowered == 1


def test_a_new_ceiling_cuts_the_rate_at_once_or_lets_it_grow() -> None:
    clock = AutoClock(now=0.0)
    control = AdaptiveRate(100.0, clock=clock)
    control.set_ceiling(20.0)
    assert control.rate == 20.0
    control.set_ceiling(200.0)
    assert control.rate == 20.0  # grows from there, as calls succeed
    for second in range(1, 20):
        clock.now = float(second)
        for _ in range(int(control.rate or 0)):
            control.started()
    assert 20.0 < (control.rate or 0) <= 200.0


def test_a_resumed_run_starts_from_its_last_limit() -> None:
    control = AdaptiveRate(100.0, start=35.0, clock=AutoClock())
    assert control.rate == 35.0
    assert AdaptiveRate(100.0, start=500.0, clock=AutoClock()).rate == 100.0  # never above the ceiling


def test_the_mean_is_weighted_by_time() -> None:
    clock = AutoClock(now=0.0)
    control = AdaptiveRate(100.0, clock=clock)
    clock.now = 3.0
    control.finished(2.9, Outcome.PUSHBACK)  # 100/s for 3 s, then 70/s
    clock.now = 4.0
    assert control.mean == pytest.approx((100 * 3 + 100 * BETA * 1) / 4)


@pytest.mark.timeout(60)
def test_against_an_api_it_finds_the_capacity_with_few_refusals() -> None:
    seen = simulate(lambda now: 50, ceiling=200.0, seconds=60.0)
    assert len(seen.refused) / len(seen.starts) <= 0.05
    assert seen.served_per_s(20.0, 60.0) >= 0.75 * 50  # near the capacity once found
    assert len(seen.cooldown_ends) <= 15  # the limit does not cross the capacity every second or two


@pytest.mark.timeout(60)
def test_it_follows_a_capacity_that_changes() -> None:
    def capacity(now: float) -> float:
        return 100 if now < 10 else 40 if now < 20 else 150

    seen = simulate(capacity, ceiling=300.0, seconds=40.0)
    assert len(seen.refused) / len(seen.starts) <= 0.05
    assert seen.served_per_s(13.0, 20.0) <= 40 * 1.05  # came down to the lower capacity
    assert seen.served_per_s(30.0, 40.0) >= 2 * 40  # and went back up toward the higher one


@pytest.mark.timeout(60)
def test_no_burst_after_a_cooldown() -> None:
    seen = simulate(lambda now: 30, ceiling=100.0, seconds=30.0)
    assert seen.cooldown_ends
    for end in seen.cooldown_ends:
        after = [at for at in seen.starts if end <= at < end + 1.0]
        rate_then = next((rate for at, rate in reversed(seen.rates) if at <= end), None)
        assert rate_then is not None
        assert len(after) <= rate_then + 1  # at the lowered rate, not the pent-up ones at once
        if len(after) > 1:
            assert min(gaps(after)) >= 0.75 / rate_then - 1e-9


# ------------------------------------------------------------------------------------- a user's job

API_JOB = """
import asyncio
import collections
import time

from batchframe import RateLimited, Service, Source


class Rows(Source[int]):
    def __iter__(self):
        return iter(range(ROWS))

    def __len__(self):
        return ROWS


class Push(Service[int]):
    # An API that takes CAPACITY calls in any sliding second and answers 429 (Retry-After) past that.
    def __init__(self):
        self.calls = collections.deque()

    async def process(self, item):
        now = time.monotonic()
        while self.calls and self.calls[0] <= now - 1:
            self.calls.popleft()
        self.calls.append(now)
        if len(self.calls) > CAPACITY:
            raise RateLimited(retry_after="0.3", reason="429 Too Many Requests")
        await asyncio.sleep(0.005)
"""


def _api_job(tmp_path: Path, rows: int, capacity: int) -> None:
    build_file_tree(tmp_path, {"job.py": f"ROWS = {rows}\nCAPACITY = {capacity}\n" + API_JOB})


@pytest.mark.timeout(120)
@pytest.mark.parametrize("executor", ["asyncio", "processes"])
def test_an_adaptive_run_lowers_its_limit_and_reports_it(tmp_path: Path, executor: str) -> None:
    _api_job(tmp_path, rows=300, capacity=60)  # on processes, each worker process is an API of its own
    params = ["-p", "adaptive=true", "-p", "max_per_second=200", "-p", f"executor={executor}"]
    result = batchframe_cli("exec", "job.py", "-d", "out", *params, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(tmp_path / "out")
    summary = json.loads((run_dir / "summary.json").read_text())
    limits = summary["limits"]
    assert summary["succeeded"] == 300 and summary["failed"] == 0  # a 429 is retried, never lost
    assert limits["adaptive"] is True and limits["lowered"] >= 1
    assert limits["lowest_per_second"] < 200 and limits["per_second"] <= 200
    assert limits["lowest_per_second"] <= limits["mean_per_second"] <= 200
    logs = (run_dir / "logs.txt").read_text()
    assert "Adaptive rate limit: 200/s to start (at most 200/s); lowered when the API pushes back." in logs
    assert "Adaptive limit lowered to 160/s (the API pushed back)." in logs  # BETA of 200
    assert "rate limit" in result.stderr and "lowered" in result.stderr  # the end-of-run summary
    status = json.loads((run_dir / "status.json").read_text())
    assert status["adaptive"] is True and status["limit_per_s"] == pytest.approx(limits["per_second"])


@pytest.mark.timeout(120)
def test_a_resumed_adaptive_run_goes_on_from_its_last_limit(tmp_path: Path) -> None:
    _api_job(tmp_path, rows=100_000, capacity=50)
    process = start_batchframe(
        "exec", "job.py", "-d", "out", "-p", "adaptive=true", "-p", "max_per_second=400", cwd=tmp_path
    )
    out = tmp_path / "out"

    def lowered_twice() -> bool:
        runs = list(out.iterdir()) if out.exists() else []
        status = read_status(runs[0]) if runs else None
        return status is not None and status.limit_per_s is not None and status.limit_per_s < 400 * BETA * BETA

    wait_until(lowered_twice, process)
    run_dir = only_run_dir(out)
    send_control(run_dir, "stop")
    process.communicate(timeout=60)
    status = read_status(run_dir)
    assert status is not None and status.limit_per_s is not None
    last = status.limit_per_s
    resumed = start_batchframe("resume", run_dir, cwd=tmp_path)
    wait_until(lambda: "Adaptive rate limit:" in (run_dir / "logs.txt").read_text().split("Resuming")[-1], resumed)
    send_control_when_live(run_dir, resumed)
    resumed.communicate(timeout=60)
    resumed_part = (run_dir / "logs.txt").read_text().split("Resuming")[-1]
    assert f"Adaptive rate limit: {rate_text(last)}, where this run left it (at most 400/s)." in resumed_part


def send_control_when_live(run_dir: Path, process: subprocess.Popen[str]) -> None:
    """Stop the resumed run once its status says it runs (a stop sent earlier would find the old status)."""

    def live() -> bool:
        status = read_status(run_dir)
        return status is not None and status.live and status.pid == process.pid

    wait_until(live, process)
    send_control(run_dir, "stop")


def test_a_capacity_that_fell_far_is_reached_in_one_decrease() -> None:
    clock = AutoClock(now=0.0)
    control = AdaptiveRate(100.0, clock=clock)
    for n in range(40):  # the API admitted 40 calls in the last second...
        clock.now = 2.0 + n * 0.02
        control.finished(clock.now, Outcome.OK)
    clock.now = 2.9
    control.finished(2.85, Outcome.PUSHBACK)  # ...then refused: its capacity is 40/s now, not 80
    assert control.rate == pytest.approx(40 * PLATEAU_SHARE)
    assert control.lowered == 1
