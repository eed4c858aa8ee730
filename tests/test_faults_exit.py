"""The process always exits: user code that blocks the event loop, a Source's blocking finally, a child process.

Each case runs the real CLI under a hard timeout; the job's own ledger says what ran.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import batchframe_cli, only_run_dir, start_batchframe, wait_until

BLOCKING_JOB = """
import asyncio, os, pathlib, time
from batchframe import Service, Source

class Numbers(Source[int]):
    def __len__(self):
        return 6
    def __iter__(self):
        return iter(range(6))

class Work(Service[int]):
    async def process(self, item):
        pathlib.Path(f"started-{item}").touch()
        if item == 2 and not os.environ.get("UNBLOCKED"):
            time.sleep(3600)   # blocks the event loop: an async def that calls blocking code
        await asyncio.sleep(0.01)
        with open("done.txt", "a") as out:
            out.write(f"{item}\\n")
"""


def _start(project: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return start_batchframe(*args, cwd=project, **env)


def _wait_for(path: Path, process: subprocess.Popen[str], timeout_s: float = 30) -> None:
    wait_until(path.exists, process, timeout_s)


def _done(project: Path) -> list[int]:
    path = project / "done.txt"
    return sorted(int(line) for line in path.read_text().split()) if path.exists() else []


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_second_signal_ends_a_run_whose_loop_is_blocked_and_resume_finishes_it(
    make_project: Any, signum: int, code: int
) -> None:
    project = make_project({"job.py": BLOCKING_JOB})
    process = _start(project, "exec", "job.py", "-p", "concurrency=1")
    try:
        _wait_for(project / "started-2", process)
        time.sleep(1.5)  # the loop is blocked for good now
        process.send_signal(signum)
        time.sleep(0.3)
        assert process.poll() is None  # the first signal says what to do
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=10)  # ends at once (the hang guard is generous)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == code, stderr
    assert "Work.process is blocking the event loop" in stderr
    assert "ending now" in stderr
    run_dir = only_run_dir(project / "batchframe_outputs")
    resumed = batchframe_cli("resume", run_dir, cwd=project, UNBLOCKED="1")
    assert resumed.returncode == 0, resumed.stderr
    assert _done(project) == list(range(6))  # nothing lost: the item in flight stayed pending


@pytest.mark.timeout(60)
def test_a_loop_blocked_for_seconds_gets_one_warning_naming_process(make_project: Any) -> None:
    project = make_project(
        {
            "job.py": """
            import time
            from batchframe import Service, Source
            class Numbers(Source[int]):
                def __iter__(self):
                    return iter(range(2))
            class Work(Service[int]):
                async def process(self, item):
                    time.sleep(2.6)
            """
        }
    )
    result = batchframe_cli("exec", "job.py", "-p", "concurrency=1", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("The event loop has been blocked") == 1
    assert "Work.process (an async def) calls blocking code" in result.stderr
    assert "write it as a plain def" in result.stderr


@pytest.mark.timeout(60)
def test_a_source_whose_finally_blocks_does_not_keep_the_process_alive(make_project: Any) -> None:
    project = make_project(
        {
            "job.py": """
            import pathlib, time
            from batchframe import Service, Source
            class Numbers(Source[int]):
                def __iter__(self):
                    try:
                        for number in range(1_000_000):
                            yield number
                    finally:
                        time.sleep(3600)   # cleanup that never ends
            class Work(Service[int]):
                async def process(self, item):
                    if item == 3:
                        pathlib.Path("ready").touch()
                    import asyncio
                    await asyncio.sleep(0.01)
            """
        }
    )
    process = _start(project, "exec", "job.py", "-p", "concurrency=2")
    try:
        _wait_for(project / "ready", process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 143, stderr
    assert "finally" in stderr or "still running" in stderr  # it says what it left behind
    summary = json.loads((only_run_dir(project / "batchframe_outputs") / "summary.json").read_text())
    assert summary["outcome"] == "stopped"


@pytest.mark.timeout(60)
def test_a_non_daemon_child_process_does_not_delay_the_exit(make_project: Any) -> None:
    project = make_project(
        {
            "job.py": """
            import multiprocessing, time
            from batchframe import Service, Source

            def linger():
                time.sleep(40)

            class Numbers(Source[int]):
                def __iter__(self):
                    return iter(range(2))
            class Work(Service[int]):
                def process(self, item):
                    if item == 0:
                        multiprocessing.Process(target=linger, name="lingering-child").start()
            """
        }
    )
    started = time.monotonic()
    result = batchframe_cli("exec", "job.py", cwd=project, timeout=30)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 25  # not the child's 40 s
    assert "lingering-child" in result.stderr  # the warning names it


@pytest.mark.timeout(60)
def test_a_stop_under_an_absurdly_slow_rate_ends_at_once(make_project: Any) -> None:
    project = make_project(
        {
            "job.py": """
            import pathlib
            from batchframe import Service, Source
            class Numbers(Source[int]):
                def __iter__(self):
                    return iter(range(10))
            class Work(Service[int]):
                async def process(self, item):
                    pathlib.Path(f"started-{item}").touch()
            """
        }
    )
    process = _start(project, "exec", "job.py", "-p", "max_per_second=1e-9", "-p", "concurrency=4")
    try:
        _wait_for(project / "started-0", process)  # the first start; the next would come in 31 years
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 143, stderr
    summary = json.loads((only_run_dir(project / "batchframe_outputs") / "summary.json").read_text())
    assert summary["succeeded"] == 1 and summary["not_processed"] >= 3  # the waiting ones, given back
