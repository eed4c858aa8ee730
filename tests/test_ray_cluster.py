"""A real Ray cluster (``ray start --head`` on 127.0.0.1, conftest's ``ray_address``): two runs at once,
stuck items, worker logs, and the cluster's errors."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import batchframe_cli, free_port, only_run_dir, service_factory
from test_cluster import PLAIN_JOB, SHADOWS, TIMEOUT_JOB, failures, summary, two_runs_at_once

from batchframe.backends import BackendError


@pytest.mark.timeout(120)
def test_two_runs_on_one_ray_cluster_each_use_their_own_service_and_modules(
    ray_address: str, make_project: Callable[..., Path]
) -> None:
    # One actor each: the shared Ray has 2 CPUs, and each run's on_worker_start waits for the other's.
    two_runs_at_once(make_project, ["executor=ray", f"scheduler={ray_address}", "concurrency=1"], workers=1)


@pytest.mark.timeout(120)
def test_a_version_mismatch_on_ray_is_a_clear_error(ray_address: str, make_project: Callable[..., Path]) -> None:
    project = make_project({"job.py": PLAIN_JOB})
    fake = dataclasses.replace(service_factory(project / "job.py"), batchframe_version="0.0.1", python_version="3.99")

    async def start() -> None:
        from batchframe.backends.ray import RayBackend

        backend = RayBackend(fake, concurrency=2, address=ray_address, connect_timeout_s=10)
        try:
            await backend.start()
        finally:
            await backend.close()

    with pytest.raises(BackendError) as on_start:
        asyncio.run(start())
    assert "must run this driver's batchframe 0.0.1 on Python 3.99" in str(on_start.value)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_unreachable_ray_address_is_exit_1_with_a_clear_error(
    scheme: str, make_project: Callable[..., Path]
) -> None:
    project = make_project({"job.py": PLAIN_JOB})
    address = f"{scheme}127.0.0.1:{free_port()}"  # nothing listens there
    result = batchframe_cli(
        "exec", "job.py", "-p", "executor=ray", "-p", f"scheduler={address}", cwd=project, timeout=110
    )
    assert result.returncode == 1
    assert f"Could not reach Ray at {address}" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def on_ray(address: str, project: Path, *params: str) -> subprocess.CompletedProcess[str]:
    return batchframe_cli(
        "exec", project / "job.py", "-p", "executor=ray", "-p", f"scheduler={address}", *params,
        cwd=project, timeout=100,
    )  # fmt: skip


@pytest.mark.timeout(120)
def test_a_stuck_item_times_out_its_worker_is_replaced_and_the_run_ends_on_time(
    ray_client_address: str, make_project: Callable[..., Path]
) -> None:
    # Through Ray Client (ray://), as from a laptop to a KubeRay cluster: killing and replacing the actor works there too.
    project = make_project({"job.py": TIMEOUT_JOB.replace("time.sleep(4 if", "time.sleep(600 if")})
    started = time.monotonic()
    result = on_ray(ray_client_address, project, "-p", "item_timeout_sec=1", "-p", "max_retries=0", "-p", "concurrency=2",
                    "-p", "slow_s=0.05", "-p", "stuck=3", "-p", "count=40")  # fmt: skip
    assert time.monotonic() - started < 60  # not the stuck item's 600 s
    assert result.returncode == 3, result.stderr
    records = failures(project)
    assert list(records) == [3]
    assert records[3]["error_type"] == "TimeoutError" and "item_timeout_sec=1" in records[3]["message"]
    assert summary(project)["succeeded"] == 39
    logs = (only_run_dir(project / "batchframe_outputs") / "logs.txt").read_text()
    assert "A timed-out item is still running on a Ray worker: the worker is replaced." in logs


@pytest.mark.timeout(120)
def test_worker_logs_reach_logs_txt_and_a_project_beside_stdlib_named_modules_runs(
    ray_address: str, make_project: Callable[..., Path]
) -> None:
    project = make_project({"job.py": PLAIN_JOB, **SHADOWS})
    result = on_ray(ray_address, project, "-p", "concurrency=16")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    logs = (only_run_dir(project / "batchframe_outputs") / "logs.txt").read_text()
    assert all(f"user.job: item {i} done" in logs for i in range(6))
    assert summary(project)["succeeded"] == 6
    assert f"the cluster at {ray_address}, 2 actors" in logs  # no more actors than the cluster's 2 CPUs


@pytest.mark.timeout(120)
def test_a_service_that_cannot_be_built_on_the_ray_workers_stops_the_run_at_the_start(
    ray_address: str, make_project: Callable[..., Path]
) -> None:
    project = make_project({"job.py": PLAIN_JOB.replace("    def process", "    def on_worker_start(self):\n"
                                                        "        raise RuntimeError('no GPU here')\n\n    def process")})  # fmt: skip
    result = on_ray(ray_address, project)
    assert result.returncode == 1
    assert "A Ray worker could not build the Service: RuntimeError: no GPU here" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    logs = (only_run_dir(project / "batchframe_outputs") / "logs.txt").read_text()
    assert "raise RuntimeError('no GPU here')" in logs  # the worker's traceback


REPLACEMENT_JOB = """
import os
import time
from pathlib import Path
from batchframe import BatchframeParam, Service, Source

class Items(Source[int]):
    def __len__(self):
        return 30

    def __iter__(self):
        return iter(range(30))

class Work(Service[int]):
    def __init__(self, state_dir: BatchframeParam[Path]):
        self.state_dir = state_dir

    def on_worker_start(self):
        if (self.state_dir / "died").exists():
            raise RuntimeError("no GPU left for a new worker")

    def process(self, item):
        time.sleep(0.02)
        if item == 5 and not (self.state_dir / "died").exists():
            (self.state_dir / "died").touch()
            os._exit(1)  # the actor dies; the one that replaces it cannot build the Service
        with open(self.state_dir / "done.txt", "a") as out:
            out.write(f"{item}\\n")
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("concurrency", [2, 1])
def test_a_replacement_that_cannot_build_the_service_leaves_the_run_to_the_others(
    ray_address: str, make_project: Callable[..., Path], concurrency: int
) -> None:
    project = make_project({"job.py": REPLACEMENT_JOB})
    (project / "state").mkdir()
    params = [
        "-p",
        f"state_dir={project / 'state'}",
        "-p",
        "retry_backoff_sec=0.01",
        "-p",
        f"concurrency={concurrency}",
    ]
    result = on_ray(ray_address, project, *params)
    logs = (only_run_dir(project / "batchframe_outputs") / "logs.txt").read_text()
    assert "A new Ray worker could not build the Service (RuntimeError: no GPU left for a new worker)" in logs
    assert 'raise RuntimeError("no GPU left for a new worker")' in logs  # its traceback
    done = sorted(int(line) for line in (project / "state" / "done.txt").read_text().split())
    if concurrency == 2:  # the other actor ran everything
        assert result.returncode == 0, result.stderr
        assert sorted(set(done)) == list(range(30))  # (items of the dead actor's batch may run twice)
    else:  # no actor left: what was not done failed with the reason, for `batchframe retry`
        assert result.returncode == 3, result.stderr
        records = failures(project)
        assert sorted(set(done) | set(records)) == list(range(30))  # nothing lost
        assert records and all("No Ray worker is left" in record["message"] for record in records.values())


def test_ray_errors_are_shown_without_the_colour_codes_ray_writes_into_them() -> None:
    from batchframe.backends.ray import _first_error_line, _last_error_line

    # As Ray words an actor whose class a worker could not import (seen with Ray 2.60).
    died = RuntimeError(
        "The actor died because of an error raised in its creation task, \x1b[36mray::_Worker.__init__()\x1b[39m "
        "(pid=1066, ip=192.0.2.2)\n           ^^^^^^^^\n\n"
        "\x1b[36mray::_Worker.__init__()\x1b[39m (pid=1066)\nModuleNotFoundError: No module named 'batchframe'\n"
    )
    first, last = _first_error_line(died), _last_error_line(died)
    assert "\x1b" not in first + last
    assert first.startswith("RuntimeError: The actor died because of an error raised in its creation task, ray::")
    assert last == "ModuleNotFoundError: No module named 'batchframe'"
    assert _first_error_line(RuntimeError()) == _last_error_line(RuntimeError()) == "RuntimeError"
