"""``exec --dry-run`` and ``exec --limit N`` through the real CLI (and resume/retry of a limited run)."""

from __future__ import annotations

import json
import re
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import batchframe_cli, only_run_dir, read_jsonl, signal_when_ready

# A Source that writes down every position it reads (read.txt) and a Service that writes down every
# item it processes (processed.txt): what the tests check "was not read / processed" against.
SYNC_JOB = """
import asyncio
import os
from pathlib import Path
from batchframe import BatchframeParam, Service, Source

HERE = Path(__file__).parent

def note(name, value):
    fd = os.open(HERE / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{value}\\n".encode())
    os.close(fd)

class Numbers(Source[int]):
    def __init__(self, count: BatchframeParam[int] = 12, fail_at: BatchframeParam[int] = -1,
                 read_sleep: BatchframeParam[float] = 0.0):
        self.count, self.fail_at, self.read_sleep = count, fail_at, read_sleep

    def __len__(self):
        return self.count

    def __iter__(self):
        import time
        for i in range(self.count):
            if i == self.fail_at:
                raise ValueError(f"bad item {i}")
            time.sleep(self.read_sleep)
            note("read.txt", i)
            yield i

    def persist_failed(self, failed):
        note("persisted.txt", len(failed))

class Work(Service[int]):
    def __init__(self, sleep: BatchframeParam[float] = 0.0, fail_every: BatchframeParam[int] = 0):
        self.sleep, self.fail_every = sleep, fail_every

    async def process(self, item):
        await asyncio.sleep(self.sleep)
        if self.fail_every and item % self.fail_every == 0:
            raise ValueError(f"{item} is a multiple of {self.fail_every}")
        note("processed.txt", item)
"""

ASYNC_JOB = SYNC_JOB.replace(
    """    def __iter__(self):
        import time
        for i in range(self.count):
            if i == self.fail_at:
                raise ValueError(f"bad item {i}")
            time.sleep(self.read_sleep)""",
    """    async def __aiter__(self):
        for i in range(self.count):
            if i == self.fail_at:
                raise ValueError(f"bad item {i}")
            await asyncio.sleep(self.read_sleep)""",
)
assert ASYNC_JOB != SYNC_JOB

JOBS = {"sync": SYNC_JOB, "async": ASYNC_JOB}


@pytest.fixture(params=sorted(JOBS))
def job(request: pytest.FixtureRequest, make_project: Callable[..., Path]) -> Path:
    return make_project({"job.py": JOBS[request.param]})


@pytest.fixture
def sync_job(make_project: Callable[..., Path]) -> Path:
    return make_project({"job.py": SYNC_JOB})


def numbers(folder: Path, name: str) -> list[int]:
    path = folder / name
    return [int(x) for x in path.read_text().split()] if path.exists() else []


# ------------------------------------------------------------------------------------------- --dry-run


def test_dry_run_counts_and_shows_the_first_items(job: Path) -> None:
    result = batchframe_cli("exec", "job.py", "--dry-run", cwd=job)
    assert result.returncode == 0, result.stderr
    assert "a run would process 12 items" in result.stdout
    for position in range(5):
        assert f"[{position}] {position}" in result.stdout
    assert "[5]" not in result.stdout  # the first few only
    assert "no run folder was created" in result.stdout
    assert numbers(job, "read.txt") == list(range(12))  # read once, to the end
    assert not (job / "processed.txt").exists()  # process() never called
    assert not (job / "batchframe_outputs").exists()  # no run folder, not even the output folder
    assert not (job / "persisted.txt").exists()


def test_dry_run_with_limit_reads_no_further(job: Path) -> None:
    # The item at position 5 raises: a dry run limited to 3 never gets there.
    result = batchframe_cli("exec", "job.py", "--dry-run", "--limit", "3", "-p", "fail_at=5", cwd=job)
    assert result.returncode == 0, result.stderr
    assert "--limit 3 would process the first 3 items" in result.stdout
    assert numbers(job, "read.txt") == [0, 1, 2]
    short = batchframe_cli("exec", "job.py", "--dry-run", "--limit", "30", cwd=job)
    assert short.returncode == 0, short.stderr
    assert "would process 12 items, all the Source has" in short.stdout


def test_dry_run_with_a_missing_required_parameter_is_a_usage_error(make_project: Callable[..., Path]) -> None:
    folder = make_project(
        {"job.py": SYNC_JOB.replace("count: BatchframeParam[int] = 12", "count: BatchframeParam[int]")}
    )
    result = batchframe_cli("exec", "job.py", "--dry-run", "--no-input", cwd=folder)
    assert result.returncode == 2, result.stderr
    assert "count" in result.stderr
    assert not (folder / "read.txt").exists()
    assert not (folder / "batchframe_outputs").exists()


def test_dry_run_with_a_source_that_raises(job: Path) -> None:
    result = batchframe_cli("exec", "job.py", "--dry-run", "-p", "fail_at=7", cwd=job)
    assert result.returncode == 1, result.stderr
    assert "after 7 items" in result.stderr
    assert "ValueError: bad item 7" in result.stderr
    assert "Traceback (most recent call last)" not in result.stderr  # a panel and the user's frames, no more
    assert "_dry_run.py" not in result.stderr
    assert 'raise ValueError(f"bad item {i}")' in result.stderr  # the user's own frame
    assert not (job / "batchframe_outputs").exists()
    verbose = batchframe_cli("exec", "job.py", "--dry-run", "-p", "fail_at=7", "-vv", cwd=job)
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr


def test_dry_run_bad_parameter_value_is_a_usage_error(sync_job: Path) -> None:
    result = batchframe_cli("exec", "job.py", "--dry-run", "-p", "count=many", cwd=sync_job)
    assert result.returncode == 2
    assert "count" in result.stderr
    assert not (sync_job / "read.txt").exists()


@pytest.mark.timeout(60)
def test_ctrl_c_while_counting_says_how_far_it_got(job: Path) -> None:
    code, stdout, stderr = signal_when_ready(
        "exec", "job.py", "--dry-run", "-p", "count=100000", "-p", "read_sleep=0.01",
        cwd=job, ready=lambda: len(numbers(job, "read.txt")) >= 5, signum=signal.SIGINT,
    )  # fmt: skip
    assert code == 130, stderr
    assert "counted before the interrupt" in stdout
    counted = int(stdout.split(" items counted")[0].split()[-1].replace(",", ""))
    assert 5 <= counted < 100000
    assert "[0] 0" in stdout
    assert "Traceback" not in stderr
    assert not (job / "processed.txt").exists()
    assert not (job / "batchframe_outputs").exists()


def test_dry_run_shows_items_that_are_hard_to_print(make_project: Callable[..., Path]) -> None:
    folder = make_project(
        {
            "job.py": """
            from batchframe import Service, Source

            class Unprintable:
                def __repr__(self):
                    raise RuntimeError("no repr")

            class Many(Source[object]):
                def __iter__(self):
                    nested = []
                    for _ in range(2000):
                        nested = [nested]
                    yield Unprintable()
                    yield "x" * 10_000_000
                    yield nested
                    yield "bad \\udcff name\\nwith a line break"
                    yield None

            class Work(Service[object]):
                def process(self, item):
                    raise AssertionError("a dry run processes nothing")
            """
        }
    )
    result = batchframe_cli("exec", "job.py", "--dry-run", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "a run would process 5 items" in result.stdout
    lines = result.stdout.splitlines()
    item_lines = [line for line in lines if line.startswith("  [")]
    assert len(item_lines) == 5
    assert all(len(line) <= 200 for line in item_lines)  # one line each, cut to the width
    assert "Unprintable" in item_lines[0]
    assert "\\udcff" in item_lines[3] and "\\n" in item_lines[3]
    assert item_lines[4].endswith("None")


# -------------------------------------------------------------------------------------------- --limit


def test_limit_runs_exactly_n_items_and_reads_no_further(job: Path) -> None:
    result = batchframe_cli("exec", "job.py", "--limit", "4", "-p", "count=500", "-p", "fail_at=10", cwd=job)
    assert result.returncode == 0, result.stderr
    assert re.search(r"│ limit +│ +the first 4 items │", result.stderr)  # the summary says the run was limited
    assert sorted(numbers(job, "processed.txt")) == [0, 1, 2, 3]
    assert numbers(job, "read.txt") == [0, 1, 2, 3]  # the read-ahead stops at the limit too
    run_dir = only_run_dir(job / "batchframe_outputs")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["succeeded"], summary["total"], summary["outcome"]) == (4, 4, "completed")
    assert summary["run"]["limit"] == 4
    from batchframe.runfolder.journal import Journal

    journal = Journal.open(run_dir, readonly=True)
    try:
        assert journal.meta()["limit"] == 4
        assert journal.counts()["done"] == 4
    finally:
        journal.close()
    detail = batchframe_cli("runs", run_dir, cwd=job)
    assert detail.returncode == 0, detail.stderr
    assert "the first 4 items (--limit 4" in detail.stdout
    assert "finished already" in batchframe_cli("resume", run_dir, cwd=job).stdout


def test_limit_larger_than_the_source_runs_it_all(sync_job: Path) -> None:
    result = batchframe_cli("exec", "job.py", "--limit", "1000", cwd=sync_job)
    assert result.returncode == 0, result.stderr
    summary = json.loads((only_run_dir(sync_job / "batchframe_outputs") / "summary.json").read_text())
    assert (summary["succeeded"], summary["total"]) == (12, 12)


@pytest.mark.parametrize("value", ["0", "-1"])
def test_limit_below_one_is_a_usage_error(sync_job: Path, value: str) -> None:
    result = batchframe_cli("exec", "job.py", "--limit", value, cwd=sync_job)
    assert result.returncode == 2
    assert "--limit" in result.stderr
    assert f"{value} is not in the range x>=1" in result.stderr  # what the value must be, in typer's words
    assert not (sync_job / "batchframe_outputs").exists()
    assert not (sync_job / "read.txt").exists()


@pytest.mark.timeout(90)
def test_resume_of_a_stopped_limited_run_finishes_only_the_first_n(job: Path) -> None:
    args = ["exec", "job.py", "--limit", "40", "-p", "count=100000", "-p", "sleep=0.05", "-p", "concurrency=2"]
    code, _, stderr = signal_when_ready(
        *args, cwd=job, ready=lambda: len(numbers(job, "processed.txt")) >= 4, signum=signal.SIGTERM
    )
    assert code == 143, stderr
    first_part = numbers(job, "processed.txt")
    assert 4 <= len(first_part) < 40
    # The stop hands the unread rest to persist_failed (the Source has __len__): only up to the limit.
    assert max(numbers(job, "read.txt")) < 40
    run_dir = only_run_dir(job / "batchframe_outputs")
    detail = batchframe_cli("runs", run_dir, cwd=job)
    assert "--limit 40" in detail.stdout
    pending = next(line for line in detail.stdout.splitlines() if "pending" in line)
    assert int(pending.split()[-2]) == 40 - len(first_part)

    resumed = batchframe_cli("resume", run_dir, cwd=job)
    assert resumed.returncode == 0, resumed.stderr
    processed = Counter(numbers(job, "processed.txt"))
    assert sorted(processed) == list(range(40))  # the first 40, no more
    assert set(processed.values()) == {1}  # a graceful stop: none twice
    assert max(numbers(job, "read.txt")) == 39  # the resume did not read past the limit either
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["succeeded"], summary["total"], summary["exit_code"]) == (40, 40, 0)
    assert "finished already" in batchframe_cli("resume", run_dir, cwd=job).stdout


def test_retry_of_a_limited_run_retries_its_failures_only(sync_job: Path) -> None:
    first = batchframe_cli("exec", "job.py", "--limit", "10", "-p", "count=100", "-p", "fail_every=4", cwd=sync_job)
    assert first.returncode == 3, first.stderr
    first_dir = only_run_dir(sync_job / "batchframe_outputs")
    assert sorted(r["item"] for r in read_jsonl(first_dir / "failed.jsonl")) == [0, 4, 8]
    (sync_job / "processed.txt").unlink()
    (sync_job / "read.txt").unlink()
    # The parameters are the run's own (fail_every=4 again): the same three fail again, and nothing else runs.
    retried = batchframe_cli("retry", first_dir, cwd=sync_job)
    assert retried.returncode == 3, retried.stderr
    assert not (sync_job / "processed.txt").exists()
    assert not (sync_job / "read.txt").exists()  # a retry does not read the Source
    new_dir = next(p for p in (sync_job / "batchframe_outputs").iterdir() if p.is_dir() and p != first_dir)
    summary = json.loads((new_dir / "summary.json").read_text())
    assert (summary["total"], summary["failed"]) == (3, 3)


# --------------------------------------------------------------------------------- resume/retry --dry-run


@pytest.mark.parametrize("command", ["resume", "retry"])
def test_resume_and_retry_have_no_dry_run(sync_job: Path, command: str) -> None:
    done = batchframe_cli("exec", "job.py", "--limit", "2", cwd=sync_job)
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(sync_job / "batchframe_outputs")
    before = sorted(p.name for p in (sync_job / "batchframe_outputs").iterdir())
    result = batchframe_cli(command, run_dir, "--dry-run", cwd=sync_job)
    assert result.returncode == 2
    assert f"batchframe {command} has no --dry-run" in result.stderr
    assert f"batchframe runs {run_dir}" in result.stderr
    assert "No such option" not in result.stderr
    assert sorted(p.name for p in (sync_job / "batchframe_outputs").iterdir()) == before
    assert "--dry-run" not in batchframe_cli(command, "--help", cwd=sync_job).stdout  # hidden
