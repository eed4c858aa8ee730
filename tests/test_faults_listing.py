"""One odd run folder never breaks the listing: ``runs``, ``runs RUN_DIR`` and the UI's runs page show the rest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import SIMPLE_PROJECT, batchframe_cli

from batchframe.runfolder.journal import Journal


def _two_runs(make_project: Any, tmp_path: Path) -> tuple[Path, Path]:
    project = make_project({"job.py": SIMPLE_PROJECT})
    out = tmp_path / "out"
    for _ in range(2):
        assert batchframe_cli("exec", "job.py", "-d", out, cwd=project).returncode == 0
    first, second = sorted(out.iterdir())
    return first, second


def _spoil_summary(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["run"] = "x"
    (run_dir / "summary.json").write_text(json.dumps(summary))


def _spoil_journal(run_dir: Path) -> None:
    journal = Journal.open(run_dir)
    try:
        journal.set_meta(started_at="not a time")
    finally:
        journal.close()


def _spoil_status(run_dir: Path) -> None:
    status = json.loads((run_dir / "status.json").read_text())
    status.update(state="running", pid="x", failures_by_type={"E": "many"}, eta_s=float("inf"))
    (run_dir / "status.json").write_text(json.dumps(status))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("spoil", [_spoil_summary, _spoil_journal, _spoil_status])
def test_an_odd_run_is_listed_with_the_others(make_project: Any, tmp_path: Path, spoil: Any) -> None:
    odd, fine = _two_runs(make_project, tmp_path)
    spoil(odd)
    listing = batchframe_cli("runs", "-d", tmp_path / "out", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert odd.name in listing.stdout and fine.name in listing.stdout
    assert "Traceback" not in listing.stdout + listing.stderr
    detail = batchframe_cli("runs", odd, cwd=tmp_path)
    assert detail.returncode == 0, detail.stderr
    assert "Traceback" not in detail.stdout + detail.stderr

    import warnings

    with warnings.catch_warnings():  # as in test_ui_routes: Starlette's TestClient runs on httpx alike
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from starlette.testclient import TestClient

    from batchframe.ui.app import UISettings, create_app

    settings = UISettings(output_dir=tmp_path / "out", project=None, config=None, token="t" * 40, workdir=tmp_path)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8765", follow_redirects=False) as client:
        assert client.get(f"/?token={'t' * 40}").status_code == 303
        page = client.get("/runs")
        assert page.status_code == 200
        assert odd.name in page.text and fine.name in page.text
        assert client.get(f"/runs/{odd.name}").status_code == 200


@pytest.mark.timeout(60)
def test_fifos_named_like_run_files_block_no_reader(make_project: Any, tmp_path: Path) -> None:
    import os

    odd, fine = _two_runs(make_project, tmp_path)
    for name in ("summary.json", "status.json", "logs.txt", "failed.jsonl"):
        (odd / name).unlink(missing_ok=True)
        os.mkfifo(odd / name)
    listing = batchframe_cli("runs", "-d", tmp_path / "out", cwd=tmp_path, timeout=20)
    assert listing.returncode == 0, listing.stderr
    assert odd.name in listing.stdout and fine.name in listing.stdout
    assert "not a regular file" in listing.stdout + listing.stderr
    assert batchframe_cli("runs", odd, cwd=tmp_path, timeout=20).returncode == 0

    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from starlette.testclient import TestClient

    from batchframe.ui.app import UISettings, create_app

    settings = UISettings(output_dir=tmp_path / "out", project=None, config=None, token="t" * 40, workdir=tmp_path)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8765", follow_redirects=False) as client:
        assert client.get(f"/?token={'t' * 40}").status_code == 303
        assert odd.name in client.get("/runs").text
        assert client.get(f"/runs/{odd.name}").status_code == 200


def test_a_killed_run_whose_pid_was_reused_is_not_running(tmp_path: Path) -> None:
    import dataclasses
    import os

    from batchframe.runfolder.live import RunStatus, process_started, read_status

    folder = tmp_path / "2026-01-01T00-00-00"
    folder.mkdir()

    def status(pid_started: str | None) -> str:
        # This test's own PID stands for a PID the system gave to another process since the run was killed.
        written = RunStatus(state="running", pid=os.getpid(), pid_started=pid_started)
        (folder / "status.json").write_text(json.dumps(dataclasses.asdict(written)))
        seen = read_status(folder)
        assert seen is not None
        return seen.state

    mine = process_started(os.getpid())
    assert mine is not None
    assert status(mine) == "running"
    assert status(str(int(mine) - 1)) == "killed"  # same PID, another process
    assert status(None) == "running"  # a status of an older batchframe: the PID alone decides


@pytest.mark.timeout(90)
def test_a_killed_run_whose_pid_another_process_got_is_not_shown_running(make_project: Any, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import warnings

    from helpers import signal_when_ready

    from batchframe.runfolder.live import process_started, read_status

    slow = SIMPLE_PROJECT.replace("self.seen.append(item)", "self.seen.append(item); await asyncio.sleep(5)")
    project = make_project({"job.py": "import asyncio\n" + slow})
    out = tmp_path / "out"

    def running() -> bool:
        folders = list(out.glob("*/status.json")) if out.is_dir() else []
        return bool(folders) and (status := read_status(folders[0].parent)) is not None and status.state == "running"

    code, _, _ = signal_when_ready("exec", "job.py", "-d", str(out), cwd=project, ready=running, signum=signal.SIGKILL)
    assert code == -signal.SIGKILL
    run_dir = next(out.iterdir())
    # The system gives the killed run's PID to another process: here, one this test starts.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        status = json.loads((run_dir / "status.json").read_text())
        assert status["state"] == "running" and status["pid_started"]
        (run_dir / "status.json").write_text(json.dumps({**status, "pid": other.pid}))
        seen = read_status(run_dir)
        assert seen is not None and seen.state == "killed" and not seen.live

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
            from starlette.testclient import TestClient

        from batchframe.ui.app import UISettings, create_app

        settings = UISettings(output_dir=out, project=None, config=None, token="t" * 40, workdir=tmp_path)
        with TestClient(create_app(settings), base_url="http://127.0.0.1:8765", follow_redirects=False) as client:
            assert client.get(f"/?token={'t' * 40}").status_code == 303
            page = client.get(f"/runs/{run_dir.name}").text
            assert "killed" in page and "tone-live" not in page
            assert "tone-live" not in client.get("/runs").text
            # The same status with the other process's own start time: that one is running.
            (run_dir / "status.json").write_text(
                json.dumps({**status, "pid": other.pid, "pid_started": process_started(other.pid)})
            )
            assert "tone-live" in client.get(f"/runs/{run_dir.name}").text
    finally:
        other.kill()
        other.wait()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", ["logs.txt", "failed.jsonl", "summary.json"])
def test_resume_refuses_a_fifo_among_the_run_files_instead_of_waiting_on_it(
    make_project: Any, tmp_path: Path, name: str
) -> None:
    import os
    import signal

    from helpers import signal_when_ready

    project = make_project(
        {"job.py": "import asyncio\n" + SIMPLE_PROJECT.replace("self.seen.append(item)", "await asyncio.sleep(5)")}
    )
    out = tmp_path / "out"
    started = lambda: any(out.glob("*/status.json")) if out.is_dir() else False  # noqa: E731
    signal_when_ready("exec", "job.py", "-d", str(out), cwd=project, ready=started, signum=signal.SIGKILL)
    run_dir = next(out.iterdir())
    (run_dir / name).unlink(missing_ok=True)
    os.mkfifo(run_dir / name)  # a resume would open it to write, and wait for a reader for good
    for command in ("resume", "retry"):
        refused = batchframe_cli(command, run_dir, cwd=project, timeout=30)
        assert refused.returncode == 2, refused.stderr
        assert f"not regular files ({name}" in refused.stderr and "Traceback" not in refused.stderr
