"""``RateLimited``: the item waits ``retry_after``, and no new item starts anywhere in the run until then."""

from __future__ import annotations

import asyncio
import datetime as dt
import pickle
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import batchframe_cli, cooling_job, only_run_dir, read_jsonl

from batchframe import RateLimited, Service, Source
from batchframe.retry import parse_retry_after

COOLDOWN_S = 0.3


class Numbers(Source[int]):
    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(range(self.count))


class Limited(Service[int]):
    """Item 2's first attempt gets a 429; every attempt's start time is recorded."""

    def __init__(self, *, counts_as_attempt: bool = False, refusals: int = 1) -> None:
        self.starts: list[tuple[float, int]] = []
        self.refused_at: float | None = None
        self.counts_as_attempt = counts_as_attempt
        self.refusals = refusals

    async def process(self, item: int) -> None:
        self.starts.append((time.monotonic(), item))
        await asyncio.sleep(0.01)
        if item == 2 and self.refusals:
            self.refusals -= 1
            self.refused_at = time.monotonic()
            raise RateLimited(COOLDOWN_S, "429 Too Many Requests", counts_as_attempt=self.counts_as_attempt)


def _run(make_executor: Callable[..., object], service: Limited, **retry: object) -> object:
    executor = make_executor(Numbers(40), service, concurrency=4, retry=retry)
    asyncio.run(executor.run())  # type: ignore[attr-defined]
    return executor


@pytest.mark.timeout(30)
def test_no_item_starts_anywhere_until_the_cooldown_ends(make_executor: Callable[..., object]) -> None:
    service = Limited()
    executor = _run(make_executor, service, max_retries=0)  # a refusal is not an attempt: still retried
    refused = service.refused_at
    assert refused is not None
    during = [item for at, item in service.starts if refused < at < refused + COOLDOWN_S - 0.02]
    assert during == []  # without the run-wide cool-down, the other 3 workers keep starting items
    retried = [at for at, item in service.starts if item == 2][1]
    assert retried >= refused + COOLDOWN_S - 0.01
    assert executor.stats.succeeded == 40  # type: ignore[attr-defined]
    assert executor.failed == []  # type: ignore[attr-defined]
    assert executor.stats.cooldown_s == 0  # type: ignore[attr-defined]


def test_a_refusal_counts_as_an_attempt_when_asked(make_executor: Callable[..., object]) -> None:
    service = Limited(counts_as_attempt=True, refusals=5)
    executor = _run(make_executor, service, max_retries=1)
    failed = executor.failed  # type: ignore[attr-defined]
    assert [(f.index, f.error_type, f.attempts) for f in failed] == [(2, "RateLimited", 2)]
    assert executor.stats.succeeded == 39  # type: ignore[attr-defined]


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    now = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.timezone.utc)
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after(2.5) == 2.5
    assert parse_retry_after("Thu, 26 Nov 2026 12:00:45 GMT", now=now) == 45.0
    assert parse_retry_after("Thu, 26 Nov 2026 11:00:00 GMT", now=now) == 0.0  # in the past: retry now
    assert parse_retry_after(None) is None
    with pytest.raises(ValueError, match="number of seconds or an HTTP date"):
        RateLimited("in a bit")
    travelled = pickle.loads(pickle.dumps(RateLimited("12", "slow down", counts_as_attempt=True)))
    assert (travelled.delay_s, str(travelled), travelled.counts_as_attempt) == (12.0, "slow down", True)


JOB = f"""
import asyncio, time
from pathlib import Path
from batchframe import BatchframeParam, RateLimited, Service, Source

class Numbers(Source[int]):
    def __len__(self):
        return 30
    def __iter__(self):
        return iter(range(30))

class Api(Service[int]):
    def __init__(self, log: BatchframeParam[Path]) -> None:
        self.log = log
        self.refused = False
    async def process(self, item):
        with self.log.open("a") as out:
            out.write(f"{{time.monotonic()}} {{item}}\\n")
        await asyncio.sleep(0.01)
        if item == 3 and not self.refused:
            self.refused = True
            with self.log.open("a") as out:
                out.write(f"{{time.monotonic()}} refused\\n")
            raise RateLimited("{COOLDOWN_S}")
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("executor", ["asyncio", "threads"])
def test_the_cooldown_through_the_cli(make_project: Callable[..., Path], tmp_path: Path, executor: str) -> None:
    project = make_project({"job.py": JOB})
    log = tmp_path / "starts.txt"
    done = batchframe_cli(
        "exec", project / "job.py", "-d", tmp_path / "out", "-p", f"log={log}", "-p", f"executor={executor}",
        "-p", "concurrency=2", "-p", "max_retries=0", cwd=project,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Rate limited" in done.stderr
    lines = [line.split() for line in log.read_text().splitlines()]
    refused = next(float(at) for at, what in lines if what == "refused")
    starts = [float(at) for at, what in lines if what != "refused"]
    # On threads, an item handed to a thread just before the driver saw the 429 is in flight: allow 50 ms.
    assert not [at for at in starts if refused + 0.05 < at < refused + COOLDOWN_S - 0.05]
    run_dir = only_run_dir(tmp_path / "out")
    assert not (run_dir / "failed.jsonl").exists() or read_jsonl(run_dir / "failed.jsonl") == []


COOLING_JOB = cooling_job(6, 2, 1)


@pytest.mark.timeout(60)
def test_off_a_terminal_the_progress_says_cooling_down(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project({"job.py": COOLING_JOB})
    # Piped, with the default 5 s between progress lines: a line is logged as soon as the cool-down begins.
    done = batchframe_cli("exec", project / "job.py", "-d", tmp_path / "out", "-p", "concurrency=2", cwd=project)
    assert done.returncode == 0, done.stderr
    cooling = [line for line in done.stderr.splitlines() if "Progress:" in line and "cooling down" in line]
    assert len(cooling) == 1, done.stderr
    assert cooling[0].endswith("; cooling down 1 s")
    logs = (only_run_dir(tmp_path / "out") / "logs.txt").read_text()
    assert "cooling down 1 s" in logs
