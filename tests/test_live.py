"""status.json and control.json: a run seen and steered from outside, through real ``batchframe exec`` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import batchframe_cli, cooling_job, only_run_dir

from batchframe.errors import UsageError
from batchframe.runfolder.live import CONTROL_NAME, STATUS_NAME, RunNotLiveError, RunStatus, read_status, send_control

SLOW_JOB = """
import asyncio, time
from batchframe import BatchframeParam, Service, Source

class Numbers(Source[int]):
    def __init__(self, count: BatchframeParam[int] = 400) -> None:
        self.count = count
    def __len__(self):
        return self.count
    def __iter__(self):
        return iter(range(self.count))

class Slow(Service[int]):
    def __init__(self, delay: BatchframeParam[float] = 0.02, blocking: BatchframeParam[bool] = False) -> None:
        self.delay = delay
        self.blocking = blocking
    async def process(self, item):
        if self.blocking:
            time.sleep(self.delay)  # blocks the event loop on purpose
        else:
            await asyncio.sleep(self.delay)
"""


def _start(project: Path, out: Path, *params: str, **env: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "batchframe", "exec", str(project / "job.py"), "-d", str(out), "--no-input"]
    defaults = () if any(p.startswith("concurrency=") for p in params) else ("concurrency=2",)
    for param in (*defaults, *params):
        command += ["-p", param]
    return subprocess.Popen(
        command,
        cwd=project,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1", **env},
    )


def _wait_for(condition: Callable[[], RunStatus | None], what: str, timeout_s: float = 20) -> RunStatus:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = condition()
        if status is not None:
            return status
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _run_dir(out: Path) -> Path:
    def found() -> RunStatus | None:
        folders = [p for p in out.iterdir() if (p / STATUS_NAME).exists()] if out.exists() else []
        return read_status(folders[0]) if folders else None

    _wait_for(found, "the run to write its status")
    return only_run_dir(out)


def _where(run_dir: Path, predicate: Callable[[RunStatus], bool]) -> Callable[[], RunStatus | None]:
    def check() -> RunStatus | None:
        status = read_status(run_dir)
        return status if status is not None and predicate(status) else None

    return check


def _state(run_dir: Path, state: str) -> Callable[[], RunStatus | None]:
    return _where(run_dir, lambda status: status.state == state)


@pytest.mark.timeout(60)
def test_pause_resume_and_stop_reach_a_running_run(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project({"job.py": SLOW_JOB})
    out = tmp_path / "out"
    process = _start(project, out, "count=2000", "delay=0.02", BATCHFRAME_LAUNCH_ID="abc123")
    try:
        run_dir = _run_dir(out)
        running = _wait_for(_state(run_dir, "running"), "running")
        assert running.pid == process.pid
        assert running.launch_id == "abc123"
        assert running.total == 2000
        assert running.live

        send_control(run_dir, "pause")
        paused = _wait_for(_state(run_dir, "paused"), "paused")
        assert paused.in_flight == 0
        # Paused: no item starts, so the count stays still, over a status written (it still is) 0.8 s later or more.
        still = _wait_for(_where(run_dir, lambda s: s.updated_at >= paused.updated_at + 0.8), "a later status")
        assert still.state == "paused"
        assert still.completed == paused.completed

        send_control(run_dir, "resume")
        _wait_for(
            _where(run_dir, lambda s: s.state == "running" and s.completed > paused.completed),
            "the count to move again",
        )

        send_control(run_dir, "stop")
        process.wait(timeout=20)
    finally:
        process.kill()
    _, stderr = process.communicate()
    assert process.returncode == 130, stderr
    final = read_status(run_dir)
    assert final is not None
    assert (final.state, final.outcome, final.exit_code) == ("finished", "stopped", 130)
    assert not final.live
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["outcome"] == "stopped"
    assert summary["succeeded"] == final.succeeded < 2000
    assert "stopped from the web UI" in (run_dir / "logs.txt").read_text()
    with pytest.raises(RunNotLiveError, match="is finished"):
        send_control(run_dir, "pause")


@pytest.mark.timeout(60)
def test_a_killed_run_reads_as_killed_and_takes_no_command(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project({"job.py": SLOW_JOB})
    out = tmp_path / "out"
    process = _start(project, out, "count=2000")
    run_dir = _run_dir(out)
    _wait_for(_state(run_dir, "running"), "running")
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=10)
    status = read_status(run_dir)
    assert status is not None
    assert status.state == "killed"
    assert not status.live
    with pytest.raises(RunNotLiveError, match="is killed") as raised:
        send_control(run_dir, "stop")
    assert f"batchframe resume {run_dir}" in (raised.value.hint or "")


@pytest.mark.timeout(60)
def test_a_process_that_blocks_the_loop_does_not_freeze_the_status(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    project = make_project({"job.py": SLOW_JOB})
    out = tmp_path / "out"
    # Each item blocks the event loop for 1.5 s: a status written from the loop would go stale.
    process = _start(project, out, "count=3", "delay=1.5", "blocking=true", "concurrency=1")
    try:
        run_dir = _run_dir(out)
        first = _wait_for(_state(run_dir, "running"), "running")
        later = _wait_for(
            _where(run_dir, lambda s: s.updated_at > first.updated_at + 0.7),
            "a fresher status while the loop is blocked",
        )
        assert later.completed < 3
        send_control(run_dir, "stop")  # taken once the blocked item lets the loop run
        assert process.wait(timeout=20) == 130
    finally:
        process.kill()
        process.communicate()


@pytest.mark.timeout(60)
def test_a_command_left_from_an_earlier_part_is_not_replayed(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project({"job.py": SLOW_JOB})
    out = tmp_path / "out"
    process = _start(project, out, "count=60", "delay=0.05")
    try:
        run_dir = _run_dir(out)
        _wait_for(_state(run_dir, "running"), "running")
        send_control(run_dir, "stop")  # the first part takes it and stops
        assert process.wait(timeout=20) == 130
    finally:
        process.kill()
        process.communicate()
    # The stop stays in control.json: the resumed part must not take it as its own and stop too.
    assert json.loads((run_dir / CONTROL_NAME).read_text())["command"] == "stop"
    resumed = batchframe_cli("resume", run_dir, "--no-input", cwd=project)
    assert resumed.returncode == 0, resumed.stderr
    status = read_status(run_dir)
    assert status is not None
    assert (status.state, status.outcome, status.completed) == ("finished", "completed", 60)


def test_status_files_are_owner_only_and_unreadable_ones_are_ignored(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    project = make_project({"job.py": SLOW_JOB})
    out = tmp_path / "out"
    done = batchframe_cli("exec", project / "job.py", "-d", out, "-p", "count=5", "-p", "delay=0", cwd=project)
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(out)
    assert (run_dir / STATUS_NAME).stat().st_mode & 0o777 == 0o600
    status = read_status(run_dir)
    assert status is not None
    assert (status.state, status.completed, status.total, status.exit_code) == ("finished", 5, 5, 0)

    (run_dir / STATUS_NAME).write_text("{not json")
    assert read_status(run_dir) is None
    assert read_status(tmp_path / "nowhere") is None
    with pytest.raises(RunNotLiveError, match="has no status"):
        send_control(run_dir, "pause")
    with pytest.raises(UsageError, match="Unknown run command"):
        send_control(run_dir, "explode")  # type: ignore[arg-type]


COOLING_JOB = cooling_job(10, 3, 2)


@pytest.mark.timeout(60)
def test_the_status_shows_a_rate_limit_cooldown(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project({"job.py": COOLING_JOB})
    out = tmp_path / "out"
    process = _start(project, out)
    try:
        run_dir = _run_dir(out)
        cooling = _wait_for(_where(run_dir, lambda s: s.cooldown_s > 0), "a status during the cool-down")
        assert cooling.state == "running" and 0 < cooling.cooldown_s <= 2
        assert cooling.completed < 10  # no item starts until it ends
        later = _wait_for(_where(run_dir, lambda s: 0 < s.cooldown_s < cooling.cooldown_s), "the seconds to go down")
        assert later.completed - cooling.completed <= 1  # only the other item in flight may finish meanwhile
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()
        process.communicate()
    final = read_status(run_dir)
    assert final is not None
    assert (final.state, final.completed, final.cooldown_s) == ("finished", 10, 0.0)
    assert json.loads((run_dir / STATUS_NAME).read_text())["cooldown_s"] == 0.0
