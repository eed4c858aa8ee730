"""``batchframe tune``: a running run's limits changed from outside, on asyncio and on processes.

A user's job pushes rows slowly enough that the test can tune it while it runs; what the run did is
read back from its own files (status.json, logs.txt, the journal through ``batchframe runs``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import batchframe_cli, build_file_tree, only_run_dir, start_batchframe, wait_until

from batchframe.runfolder.live import read_status, send_control

JOB = """
import time
from batchframe import Service, Source

class Rows(Source[int]):
    def __iter__(self):
        return iter(range(400))

    def __len__(self):
        return 400

class Push(Service[int]):
    def process(self, item):
        time.sleep(0.05)
"""


def _start(tmp_path: Path, *params: str) -> tuple[subprocess.Popen[str], Path]:
    build_file_tree(tmp_path, {"job.py": JOB})
    args = [f"-p{p}" if p.startswith("=") else p for p in params]
    process = start_batchframe("exec", "job.py", "-d", "out", *args, cwd=tmp_path)
    out = tmp_path / "out"

    def running() -> bool:
        if not out.exists() or not any(out.iterdir()):
            return False
        status = read_status(only_run_dir(out))
        return status is not None and status.live and status.completed > 0

    wait_until(running, process)
    return process, only_run_dir(out)


def _stop(process: subprocess.Popen[str], run_dir: Path) -> str:
    send_control(run_dir, "stop")
    _, err = process.communicate(timeout=60)
    return err


@pytest.mark.timeout(120)
@pytest.mark.parametrize("executor", ["asyncio", "processes"])
def test_tune_changes_a_running_run_and_says_what_changed(tmp_path: Path, executor: str) -> None:
    process, run_dir = _start(tmp_path, "-p", "concurrency=4", "-p", f"executor={executor}")
    try:
        tuned = batchframe_cli("tune", run_dir, "-p", "max_per_second=20", "-p", "concurrency=2", cwd=tmp_path)
        assert tuned.returncode == 0, tuned.stderr
        assert "max_per_second: none -> 20" in tuned.stdout
        assert "concurrency: 4 -> 2" in tuned.stdout
        status = read_status(run_dir)
        assert status is not None
        assert status.concurrency == 2 and status.limit_per_s == 20
        again = batchframe_cli("tune", run_dir, "-p", "max_per_second=20", cwd=tmp_path)
        assert again.returncode == 0 and "Nothing changed" in again.stdout
    finally:
        err = _stop(process, run_dir)
    assert process.returncode == 130, err  # stopped (the test's stop, not the tune)
    logs = (run_dir / "logs.txt").read_text()
    assert "Limits tuned (concurrency: 4 -> 2; max_per_second: none -> 20)." in logs
    shown = batchframe_cli("runs", run_dir, cwd=tmp_path)
    assert "tuned" in shown.stdout and "max_per_second: none -> 20" in shown.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["limits"]["tuned"] == 1 and summary["limits"]["concurrency"] == 2


@pytest.mark.timeout(120)
def test_a_lower_concurrency_holds_fewer_items_in_flight(tmp_path: Path) -> None:
    process, run_dir = _start(tmp_path, "-p", "concurrency=6")
    try:
        assert batchframe_cli("tune", run_dir, "-p", "concurrency=1", cwd=tmp_path).returncode == 0

        def down_to_one() -> bool:
            status = read_status(run_dir)
            return status is not None and status.in_flight <= 1

        wait_until(down_to_one, process)
        seen = [read_status(run_dir) for _ in range(5)]
        assert all(status is not None and status.in_flight <= 1 for status in seen)
    finally:
        _stop(process, run_dir)


@pytest.mark.timeout(120)
def test_tune_refuses_bad_values_as_p_does(tmp_path: Path) -> None:
    process, run_dir = _start(tmp_path, "-p", "concurrency=3")
    try:
        cases = {
            ("concurrency=0",): "concurrency must be a whole number greater than 0, got 0.",
            ("max_per_second=fast",): "Parameter 'max_per_second' expects float | None, but got 'fast'",
            ("max_retries=2",): "max_retries cannot be changed while a run goes.",
            ("concurrency=9",): "concurrency can be tuned from 1 up to 3, the concurrency this run started with",
            (): "Nothing to tune",
        }
        for params, message in cases.items():
            result = batchframe_cli("tune", run_dir, *[arg for p in params for arg in ("-p", p)], cwd=tmp_path)
            assert result.returncode == 2, (params, result.stdout, result.stderr)
            assert message in " ".join(result.stderr.split()), (params, result.stderr)
            assert "Traceback" not in result.stderr
        status = read_status(run_dir)
        assert status is not None and status.concurrency == 3  # nothing was changed
    finally:
        _stop(process, run_dir)


def test_tune_refuses_a_run_that_is_not_running(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": JOB.replace("range(400)", "range(3)").replace("400", "3")})
    assert batchframe_cli("exec", "job.py", "-d", "out", cwd=tmp_path).returncode == 0
    run_dir = only_run_dir(tmp_path / "out")
    result = batchframe_cli("tune", run_dir, "-p", "max_per_second=5", cwd=tmp_path)
    assert result.returncode == 2
    assert f"The run in {run_dir} is finished: it cannot tune." in " ".join(result.stderr.split())
    missing = batchframe_cli("tune", tmp_path / "nowhere", "-p", "max_per_second=5", cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
