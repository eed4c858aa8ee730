"""The fault checklist (../shared/FAULTS.md) through the real CLI: every run exits, loses nothing, misreports nothing."""

from __future__ import annotations

import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import batchframe_cli, build_file_tree, only_run_dir, read_jsonl

BATCHFRAME = str(Path(sys.executable).parent / "batchframe")

# Item i triggers fault FAULTS[i]; items 0 and 11 succeed.
FAULT_JOB = """
import asyncio
import math
from batchframe import BatchframeParam, Service, Source

class BadStr(Exception):
    def __str__(self):
        raise RuntimeError("no str for you")

class TwoArgs(Exception):
    def __init__(self, a, b):
        super().__init__(a)
        self.b = b

class BadRepr:
    def __repr__(self):
        raise RuntimeError("no repr for you")

def nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value

class Items(Source[object]):
    def __len__(self):
        return 12

    def __iter__(self):
        yield from range(7)
        yield BadRepr()
        yield "caf\\udcff.txt"
        yield {"x": math.nan}
        yield nested(20000)
        yield 11

RAISES = {1: KeyboardInterrupt, 2: SystemExit, 3: GeneratorExit, 4: asyncio.CancelledError}

class Work(Service[object]):
    def process(self, item):
        if item in RAISES:
            raise RAISES[item]("from process")
        if item == 5:
            raise BadStr()
        if item == 6:
            raise TwoArgs("a", "b")
        if not isinstance(item, int) or item not in (0, 11):
            raise ValueError("a hard item")
"""

EXPECTED_TYPES = {1: "KeyboardInterrupt", 2: "SystemExit", 3: "GeneratorExit", 4: "CancelledError", 5: "BadStr"}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", ["asyncio", "threads", "processes", "dask", "ray"])
def test_user_code_faults_fail_their_item_and_the_run_exits(tmp_path: Path, backend: str) -> None:
    build_file_tree(tmp_path, {"job.py": FAULT_JOB})
    result = batchframe_cli(
        "exec", "job.py", "-p", f"executor={backend}", "-p", "concurrency=2", "-d", "out", cwd=tmp_path, timeout=150
    )
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    run_dir = only_run_dir(tmp_path / "out")
    lines = (run_dir / "failed.jsonl").read_text(encoding="utf-8").splitlines()
    records = {record["index"]: record for record in map(json.loads, lines)}  # every line is valid JSON
    assert sorted(records) == list(range(1, 11))  # exactly once each; 0 and 11 succeeded
    for index, error_type in EXPECTED_TYPES.items():
        assert records[index]["error_type"] == error_type, records[index]
    assert records[5]["message"] == "<unprintable BadStr>"
    assert records[6]["error_type"] in ("TwoArgs", "RemoteError")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["succeeded"], summary["failed"]) == (2, 10)
    assert "Item 5 failed" in (run_dir / "logs.txt").read_text(encoding="utf-8", errors="replace")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("declaration", "expected"),
    [
        ('exceptions_to_retry_for = "ConnectionError"', "'ConnectionError'"),
        ("exceptions_to_retry_for = {ConnectionError()}", "ConnectionError()"),
        ("exceptions_to_retry_for = {int}", "int"),
        ("exceptions_to_retry_for = 42", "42"),
        ("@property\n    def exceptions_to_retry_for(self):\n        raise KeyError('oops')", "raised KeyError"),
    ],
)
def test_bad_exceptions_to_retry_for_is_a_usage_error(tmp_path: Path, declaration: str, expected: str) -> None:
    job = f"""
from batchframe import Service, Source

class Items(Source[int]):
    def __iter__(self):
        yield from range(3)

class Work(Service[int]):
    {declaration}

    async def process(self, item):
        pass
"""
    (tmp_path / "job.py").write_text(job)
    result = batchframe_cli("exec", "job.py", "-d", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "exceptions_to_retry_for" in result.stderr and expected in result.stderr
    assert "Traceback" not in result.stderr


FAILING_MANY = """
from batchframe import Service, Source

class Items(Source[int]):
    def __iter__(self):
        yield from range(5000)

class Work(Service[int]):
    async def process(self, item):
        raise ValueError("x" * 200)
"""


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))


@pytest.mark.timeout(60)
def test_a_full_disk_ends_the_run_with_a_clear_error_and_no_torn_line(tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text(FAILING_MANY)
    result = subprocess.run(
        [BATCHFRAME, "exec", "job.py", "-d", "out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
        stdin=subprocess.DEVNULL,
        preexec_fn=_limit_file_size,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 1, result.stderr
    assert "Could not write" in result.stderr
    assert "Traceback" not in result.stderr
    run_dir = only_run_dir(tmp_path / "out")
    records = read_jsonl(run_dir / "failed.jsonl")  # raises on a torn line
    assert 0 < len(records) < 5000


ENDLESS = """
import asyncio
import itertools
import time
from batchframe import BatchframeParam, Service, Source

class Endless(Source[int]):
    def __init__(self, block_after: BatchframeParam[int] = -1):
        self.block_after = block_after

    def __iter__(self):
        for i in itertools.count():
            if i == self.block_after:
                time.sleep(3600)  # a queue consumer waiting for a message
            yield i

class Work(Service[int]):
    def __init__(self, block_on: BatchframeParam[int] = -1):
        self.block_on = block_on

    def process(self, item):
        if item == self.block_on:
            time.sleep(3600)  # stuck in a thread
        time.sleep(0.005)
"""


def _start(tmp_path: Path, *params: str) -> subprocess.Popen[str]:
    (tmp_path / "job.py").write_text(ENDLESS)
    return _exec_in_background(tmp_path, "concurrency=4", *params)


def _exec_in_background(tmp_path: Path, *params: str) -> subprocess.Popen[str]:
    """``batchframe exec job.py -d out -p ...`` in tmp_path, without a terminal, its output captured."""
    args = [BATCHFRAME, "exec", "job.py", "-d", "out"]
    for param in params:
        args += ["-p", param]
    return subprocess.Popen(
        args, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_a_run(tmp_path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while not list((tmp_path / "out").glob("*/journal.sqlite")):
        assert process.poll() is None and time.monotonic() < deadline, "the run did not start"
        time.sleep(0.05)
    time.sleep(0.5)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("params", [(), ("block_after=30",)], ids=["endless", "blocking-source"])
def test_sigterm_on_an_endless_source_exits_at_once(tmp_path: Path, params: tuple[str, ...]) -> None:
    process = _start(tmp_path, *params)
    try:
        _wait_for_a_run(tmp_path, process)
        process.send_signal(signal.SIGTERM)
        # The source never ends (or blocks for an hour): exiting at all shows the stop did not wait
        # for it; the timeout turns a hang into a failure without timing a healthy run.
        _, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 143, stderr
    run_dir = only_run_dir(tmp_path / "out")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["unread"] is None and summary["outcome"] == "stopped"
    assert "unknown number" in stderr
    failed_jsonl = run_dir / "failed.jsonl"  # absent when nothing was left in the queue
    assert not failed_jsonl.exists() or failed_jsonl.stat().st_size < 100_000  # the rest was not read


@pytest.mark.timeout(60)
def test_a_second_signal_ends_the_run_while_an_item_blocks(tmp_path: Path) -> None:
    process = _start(tmp_path, "block_on=3")
    try:
        _wait_for_a_run(tmp_path, process)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        # Item 3 sleeps for an hour in its thread: exiting at all shows the second signal did not wait.
        _, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 143, stderr
    records = read_jsonl(only_run_dir(tmp_path / "out") / "failed.jsonl")
    assert 3 in [r["item"] for r in records if r["error_type"] == "NotProcessed"]


BLOCKING_SYNC = """
import time
from batchframe import Service, Source

class Items(Source[int]):
    def __iter__(self):
        yield from range(6)

class Work(Service[int]):
    def process(self, item):
        if item == 2:
            time.sleep(3600)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["asyncio", "threads"])
def test_a_timeout_bounds_the_run_even_when_a_thread_stays_blocked(tmp_path: Path, backend: str) -> None:
    (tmp_path / "job.py").write_text(BLOCKING_SYNC)
    started = time.monotonic()
    result = batchframe_cli(
        "exec", "job.py", "-d", "out", "-p", f"executor={backend}", "-p", "item_timeout_sec=0.3",
        "-p", "max_retries=0", cwd=tmp_path, timeout=30,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started < 20
    records = read_jsonl(only_run_dir(tmp_path / "out") / "failed.jsonl")
    assert [(r["item"], r["error_type"]) for r in records] == [(2, "TimeoutError")]


RECORDS_JOB = """
import time
from pathlib import Path
from batchframe import BatchframeParam, Service, Source

class Items(Source[int]):
    def __init__(self, count: BatchframeParam[int] = 200, out: BatchframeParam[Path] = Path("persisted.txt")):
        self.count = count
        self.out = out

    def __len__(self):
        return self.count

    def __iter__(self):
        yield from range(self.count)

    def persist_failed(self, failed):
        with open(self.out, "a") as handle:
            handle.write("".join(f"{item}\\n" for item in failed))

class Work(Service[int]):
    def __init__(self, broken_finish: BatchframeParam[bool] = False, broken_init: BatchframeParam[bool] = False):
        if broken_init:
            raise RuntimeError("cannot connect")
        self.broken_finish = broken_finish

    async def process(self, item):
        if item < 5:
            raise ValueError(f"{item} is bad")
        time.sleep(0.01)
        with open("done.txt", "a") as handle:
            handle.write(f"{item}\\n")

    def finish(self):
        if self.broken_finish:
            raise SystemExit("finish gave up")
"""


def _stop_midway(tmp_path: Path) -> Path:
    build_file_tree(tmp_path, {"job.py": RECORDS_JOB})
    process = _exec_in_background(tmp_path, "concurrency=1")
    deadline = time.monotonic() + 20
    while not (tmp_path / "done.txt").exists() or len((tmp_path / "done.txt").read_text().split()) < 20:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=20)
    assert process.returncode == 143
    return only_run_dir(tmp_path / "out")


@pytest.mark.timeout(90)
def test_stop_hands_the_small_unread_rest_to_persist_failed_and_resume_reports_the_whole_run(tmp_path: Path) -> None:
    run_dir = _stop_midway(tmp_path)
    done = {int(x) for x in (tmp_path / "done.txt").read_text().split()}
    persisted = {int(x) for x in (tmp_path / "persisted.txt").read_text().split()}
    assert done | persisted == set(range(200)) and not done & persisted  # failed, not processed and unread
    refused = batchframe_cli("retry", run_dir, cwd=tmp_path)
    assert refused.returncode == 2 and "batchframe resume" in refused.stderr
    resumed = batchframe_cli("resume", run_dir, cwd=tmp_path)
    assert resumed.returncode == 3, resumed.stderr  # the first part's failures still count
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["succeeded"], summary["failed"]) == (195, 5)
    assert summary["this_part"]["failed"] == 0
    runs = batchframe_cli("runs", "-d", "out", cwd=tmp_path)
    assert run_dir.name in runs.stdout and "195" in runs.stdout


@pytest.mark.timeout(60)
def test_a_run_that_failed_to_start_is_listed_as_such_with_its_error_in_the_logs(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": RECORDS_JOB})
    result = batchframe_cli("exec", "job.py", "-d", "out", "-p", "broken_init=true", cwd=tmp_path)
    assert result.returncode == 1 and "cannot connect" in result.stderr
    run_dir = only_run_dir(tmp_path / "out")
    assert "cannot connect" in (run_dir / "logs.txt").read_text()
    runs = batchframe_cli("runs", "-d", "out", cwd=tmp_path)
    assert "failed to start" in runs.stdout
    detail = batchframe_cli("runs", run_dir, cwd=tmp_path)  # one run: its state in a cell of its own
    assert re.search(r"exit code\s*│\s*failed to start", detail.stdout), detail.stdout
    assert "running or killed" not in detail.stdout  # what a run without an exit code would say
    no_journal = batchframe_cli("exec", "job.py", "-d", "out", "-p", "count=6", "-p", "journal=false", cwd=tmp_path)
    assert no_journal.returncode == 3
    listed = batchframe_cli("runs", "-d", "out", cwd=tmp_path)
    assert len([line for line in listed.stdout.splitlines() if "job.py" in line]) == 2


@pytest.mark.timeout(60)
def test_finish_raising_systemexit_gives_an_outcome_that_says_so(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": RECORDS_JOB})
    result = batchframe_cli("exec", "job.py", "-d", "out", "-p", "count=8", "-p", "broken_finish=true", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    summary = json.loads((only_run_dir(tmp_path / "out") / "summary.json").read_text())
    assert summary["outcome"] == "fatal" and "finish gave up" in summary["fatal_error"]
    assert any("finish() raised SystemExit" in problem for problem in summary["problems"])


@pytest.mark.timeout(60)
def test_output_dir_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": RECORDS_JOB, "taken": "a file"})
    result = batchframe_cli("exec", "job.py", "-d", "taken", cwd=tmp_path)
    assert result.returncode == 2 and "is a file" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.timeout(60)
def test_a_closed_stderr_pipe_does_not_prevent_the_records(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": RECORDS_JOB})
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head` that has exited
    result = subprocess.run(
        [BATCHFRAME, "exec", "job.py", "-d", "out", "-p", "count=20"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=write_end,
        stderr=write_end,
        timeout=50,
    )
    os.close(write_end)
    assert result.returncode == 3
    summary = json.loads((only_run_dir(tmp_path / "out") / "summary.json").read_text())
    assert summary["failed"] == 5 and summary["succeeded"] == 15


SLOW_JOURNAL = """
import time
import batchframe.runfolder.journal
from batchframe import Service, Source

_commit = batchframe.runfolder.journal._Writer._commit

def _slow_commit(self, batches):
    time.sleep(0.01)  # a slow disk
    _commit(self, batches)

batchframe.runfolder.journal._Writer._commit = _slow_commit

class Items(Source[int]):
    def __iter__(self):
        yield from range(1000)

class Work(Service[int]):
    async def process(self, item):
        with open("processed.txt", "a") as handle:
            handle.write(f"{item}\\n")
"""


@pytest.mark.timeout(120)
def test_kill_9_with_a_slow_journal_writer_duplicates_at_most_a_few_items(tmp_path: Path) -> None:
    seed = 20261125
    delay_s = random.Random(seed).uniform(0.2, 0.6)  # replay a failure with the same seed
    (tmp_path / "job.py").write_text(SLOW_JOURNAL)
    process = _exec_in_background(tmp_path, "concurrency=4")
    deadline = time.monotonic() + 20
    while not (tmp_path / "processed.txt").exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(delay_s)
    process.kill()
    process.communicate()  # reap it and close its pipes
    run_dir = only_run_dir(tmp_path / "out")
    resumed = batchframe_cli("resume", run_dir, cwd=tmp_path, timeout=90)
    assert resumed.returncode == 0, resumed.stderr
    seen = [int(x) for x in (tmp_path / "processed.txt").read_text().split()]
    assert set(seen) == set(range(1000)), f"seed {seed}"
    duplicates = len(seen) - 1000
    # The writer's backlog is bounded: a kill loses at most a few loop iterations' completions.
    assert duplicates <= 3 * 4 * 2, f"{duplicates} duplicates (seed {seed})"


UNWANTED_REST = """
import time
from batchframe import Service, Source

class Items(Source[int]):
    def __len__(self):
        return 5000

    def __iter__(self):
        for i in range(5000):
            with open("read.txt", "a") as handle:
                handle.write(f"{i}\\n")
            yield i

class Work(Service[int]):
    def process(self, item):
        time.sleep(0.01)
"""


@pytest.mark.timeout(60)
def test_a_stop_reads_no_further_when_no_persist_failed_would_receive_the_rest(tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text(UNWANTED_REST)
    process = _exec_in_background(tmp_path, "concurrency=2")
    try:
        _wait_for_a_run(tmp_path, process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 143, stderr
    read = len((tmp_path / "read.txt").read_text().split())
    summary = json.loads((only_run_dir(tmp_path / "out") / "summary.json").read_text())
    assert read < 1000 and summary["unread"] > 4000  # the rest stayed unread, for resume
    assert "resume continues" in stderr
