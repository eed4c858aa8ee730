"""One number for one thing: every place that shows a run's counts shows the whole run's, resumed parts included.

summary.json, status.json (what the UI and ``runs`` read), the end-of-run summary and the progress
line agree, and retries and rate-limit refusals are counted in each of them.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from helpers import batchframe_cli, cooling_job, only_run_dir, signal_when_ready

from batchframe.run.progress import describe
from batchframe.runfolder.stats import EarlierParts, Stats

JOB = """
import asyncio, os, pathlib
from batchframe import Service, Source

LEDGER = pathlib.Path(os.environ["LEDGER"])

def note(line):
    with LEDGER.open("a") as out:
        out.write(line + "\\n")

class Numbers(Source[int]):
    def __len__(self):
        return 40
    def __iter__(self):
        return iter(range(40))

class Work(Service[int]):
    exceptions_to_retry_for = {ConnectionError}
    tried = set()

    async def process(self, item):
        await asyncio.sleep(0.01)
        if item % 5 == 1 and item not in Work.tried:   # each such item fails once, then succeeds
            Work.tried.add(item)
            note(f"retry {item}")
            raise ConnectionError("flaky")
        if item % 10 == 7:
            note(f"failed {item}")
            raise ValueError(f"bad item {item}")
        note(f"ok {item}")
"""


def _ledger(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.timeout(90)
def test_after_a_stop_and_a_resume_every_count_is_the_whole_runs(make_project: Any) -> None:
    project = make_project({"job.py": JOB})
    ledger = project / "ledger.txt"
    env = {"LEDGER": str(ledger)}
    args = (
        "exec",
        "job.py",
        "-p",
        "concurrency=1",
        "-p",
        "retry_backoff_sec=0.001",
        "-p",
        "retry_backoff_max_sec=0.001",
    )
    os.environ.update(env)  # signal_when_ready passes this process's environment on
    try:
        code, _, stderr = signal_when_ready(
            *args,
            cwd=project,
            ready=lambda: sum(line.startswith("ok") for line in _ledger(ledger)) >= 15,
            signum=signal.SIGTERM,
        )
    finally:
        for name in env:
            os.environ.pop(name, None)
    assert code == 143, stderr
    run_dir = only_run_dir(project / "batchframe_outputs")
    first = json.loads((run_dir / "summary.json").read_text())
    assert 15 <= first["succeeded"] < 36

    resumed = batchframe_cli("resume", run_dir, cwd=project, **env)
    assert resumed.returncode == 3, resumed.stderr

    raised = sum(line.startswith("retry") for line in _ledger(ledger))
    summary = json.loads((run_dir / "summary.json").read_text())
    retries = summary["retries"]
    # Every item % 5 == 1 raised once per part it ran in; one that raised while the stop was on is
    # recorded as not processed instead of retried.
    assert 8 <= raised - 1 <= retries <= raised
    assert retries == first["retries"] + summary["this_part"]["retries"]
    assert (summary["succeeded"], summary["failed"]) == (36, 4)
    assert summary["failures_by_type"] == {"ValueError": 4}
    assert summary["this_part"]["succeeded"] == 36 - first["succeeded"]

    status = json.loads((run_dir / "status.json").read_text())
    assert (status["succeeded"], status["failed"], status["retries"]) == (36, 4, retries)
    assert status["completed"] == 40
    assert status["failures_by_type"] == {"ValueError": 4}

    printed = resumed.stderr
    assert "batchframe run completed with failures" in printed
    assert _row(printed, "succeeded") == "36" and _row(printed, "failed") == "4"
    assert _row(printed, "retries") == str(retries)
    assert "Run ended: completed (exit code 3): 36 succeeded, 4 failed" in (run_dir / "logs.txt").read_text()

    shown = batchframe_cli("runs", run_dir, cwd=project)
    assert shown.returncode == 0, shown.stderr
    assert (_row(shown.stdout, "done"), _row(shown.stdout, "failed")) == ("36", "4")
    assert _row(shown.stdout, "retries") == str(retries)


def _row(printed: str, label: str) -> str:
    """The value of a row of the printed summary table (``│ succeeded │ 36 │``, or plain columns off a terminal)."""
    for line in printed.splitlines():
        cells = [cell.strip() for cell in line.replace("│", "|").split("|") if cell.strip()]
        if len(cells) == 2 and cells[0] == label:
            return cells[1]
    raise AssertionError(f"no {label!r} row in:\n{printed}")


@pytest.mark.timeout(60)
def test_rate_limit_refusals_and_cool_down_time_are_counted(make_project: Any) -> None:
    project = make_project({"job.py": cooling_job(items=6, refused=2, retry_after_s=0.3)})
    result = batchframe_cli("exec", "job.py", "-p", "concurrency=2", cwd=project)
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(project / "batchframe_outputs")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rate_limited"] == 1 and summary["retries"] == 1
    assert 0.25 <= summary["cooldown_total_s"] <= 0.35
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["rate_limited"], status["retries"]) == (1, 1)
    assert _row(result.stderr, "rate limited").startswith("1 (0.3 s cooling down)")
    shown = batchframe_cli("runs", run_dir, cwd=project)
    assert _row(shown.stdout, "retries") == "1"
    assert _row(shown.stdout, "rate limited") == "1 (0.3 s cooling down)"


def test_the_progress_line_adds_the_earlier_parts() -> None:
    stats = Stats(total=100, succeeded=10, failed=1, skipped=50, retries=2)
    stats.earlier = EarlierParts(succeeded=48, failed=2, failures_by_type={"ValueError": 2}, retries=5)
    stats.failures_by_type["KeyError"] += 1
    line = describe(stats)
    assert line.startswith("61/100 done (61%): 58 succeeded, 3 failed, 0 retrying, 0 in flight, 7 retries;")
    assert stats.whole_failures_by_type == {"ValueError": 2, "KeyError": 1}


def test_overlapping_cool_downs_count_once(make_executor: Any) -> None:
    import asyncio

    from batchframe.retry import RateLimited

    class Api:
        calls: dict[int, int] = {}

        async def process(self, item: int) -> None:
            await asyncio.sleep(0.01)  # items 0 and 1 both in flight when they are refused
            self.calls[item] = self.calls.get(item, 0) + 1
            if self.calls[item] == 1 and item < 2:
                raise RateLimited(0.2)  # two refusals at once: cool-downs of 0.2 s that overlap

    executor = make_executor(list(range(4)), Api(), concurrency=2)
    stats = asyncio.run(executor.run())
    assert stats.rate_limited == 2 and stats.succeeded == 4
    assert 0.19 <= stats.cooldown_total_s < 0.3


def test_the_live_line_shows_the_whole_runs_counts_and_retries_when_they_fit() -> None:
    from batchframe.run.progress import live_line

    stats = Stats(total=5000, succeeded=1200, failed=12, retrying=3, in_flight=8, retries=140, skipped=2000)
    stats.earlier = EarlierParts(succeeded=1950, failed=50, retries=77)
    wide = live_line(stats, width=120).plain
    assert "3,212/5,000" in wide and "3,150 ok" in wide and "62 failed" in wide and "217 retries" in wide
    narrow = live_line(stats, width=80).plain
    assert len(narrow) <= 80 and "3,150 ok" in narrow and "62 failed" in narrow  # retries give way first
    assert "retries" not in live_line(Stats(total=10, succeeded=3), width=200).plain  # never "0 retries"
