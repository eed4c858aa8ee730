"""The same behaviour on every back end: asyncio, threads, processes (2 workers) and dask (a real 2-worker LocalCluster)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import batchframe_cli, build_file_tree, only_run_dir, read_jsonl

BACKENDS = ["asyncio", "threads", "processes", "dask", "ray"]

JOB = """
import os
import time
from pathlib import Path
from batchframe import BatchframeParam, Service, Source

class Items(Source[object]):
    def __init__(self, count: BatchframeParam[int] = 30, odd_item: BatchframeParam[bool] = False):
        self.count = count
        self.odd_item = odd_item

    def __len__(self):
        return self.count

    def __iter__(self):
        for i in range(self.count):
            yield (lambda: i) if self.odd_item and i == 5 else i

class Work(Service[object]):
    exceptions_to_retry_for = (ConnectionError,)

    def __init__(self, state_dir: BatchframeParam[Path], sleep: BatchframeParam[float] = 0.0,
                 die_at: BatchframeParam[int] = -1):
        self.state_dir = state_dir
        self.sleep = sleep
        self.die_at = die_at

    def on_worker_start(self):
        (self.state_dir / f"worker-{os.getpid()}").touch()

    def process(self, item):
        if not (self.state_dir / "fast").exists():  # a test creates it to speed up what is left (a resume)
            time.sleep(self.sleep)
        first_try = self.state_dir / f"tried-{item}"
        if item % 10 == 3 and not first_try.exists():
            first_try.touch()
            raise ConnectionError(f"flaky {item}")
        if item == self.die_at and not first_try.exists():
            first_try.touch()
            os._exit(1)  # the worker process dies mid-item
        if item % 10 == 7:
            raise ValueError(f"{item} is never valid")
        with open(self.state_dir / "done.txt", "a") as out:
            out.write(f"{item}\\n")
"""


@pytest.fixture
def job(tmp_path: Path) -> Path:
    build_file_tree(tmp_path, {"job.py": JOB})
    (tmp_path / "state").mkdir()
    return tmp_path


def done(job: Path) -> list[int]:
    path = job / "state" / "done.txt"
    return sorted(int(x) for x in path.read_text().split()) if path.exists() else []


def exec_args(job: Path, backend: str, *extra: str) -> list[str]:
    # One actor on ray: each is a Python process of its own (~1 s of CPU to start); several actors at
    # once are the subject of test_ray_cluster.py.
    concurrency = 1 if backend == "ray" else 4
    return [
        "exec", "job.py", "-p", f"executor={backend}", "-p", f"state_dir={job / 'state'}",
        "-p", "retry_backoff_sec=0.01", "-p", f"concurrency={concurrency}", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_success_retry_and_permanent_failure(job: Path, backend: str) -> None:
    result = batchframe_cli(*exec_args(job, backend), cwd=job, timeout=120)
    assert result.returncode == 3, result.stderr
    assert done(job) == [i for i in range(30) if i % 10 != 7]  # the ConnectionErrors were retried
    records = read_jsonl(only_run_dir(job / "batchframe_outputs") / "failed.jsonl")
    assert sorted(r["item"] for r in records) == [7, 17, 27]
    assert {(r["error_type"], r["attempts"]) for r in records} == {("ValueError", 1)}
    assert list((job / "state").glob("worker-*"))  # the per-worker hook ran
    if backend in ("processes", "dask"):
        assert all(int(p.name.split("-")[1]) != os.getpid() for p in (job / "state").glob("worker-*"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_stop_persists_everything_and_resume_finishes(job: Path, backend: str) -> None:
    executable = Path(sys.executable).parent / "batchframe"
    process = subprocess.Popen(
        [str(executable), *exec_args(job, backend, "-p", "count=200", "-p", "sleep=0.02")],
        cwd=job,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 90
    while len(done(job)) < 10:
        assert time.monotonic() < deadline and process.poll() is None, "no progress"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=90)
    assert process.returncode == 143, stderr
    run_dir = only_run_dir(job / "batchframe_outputs")
    records = read_jsonl(run_dir / "failed.jsonl")
    not_done = sorted(r["item"] for r in records if r["error_type"] == "NotProcessed")
    failed = sorted(r["item"] for r in records if r["error_type"] == "ValueError")
    read = json.loads((run_dir / "summary.json").read_text())["this_part"]["read"]
    assert sorted(done(job) + not_done + failed) == list(range(read))  # the unread rest waits for resume
    (job / "state" / "fast").touch()  # the items were slow so that the stop came mid-run; the rest need not be
    resumed = batchframe_cli("resume", run_dir, cwd=job, timeout=120)
    assert resumed.returncode == 3, resumed.stderr
    assert done(job) == [i for i in range(200) if i % 10 != 7]


@pytest.mark.parametrize("backend", ["processes", "dask", "ray"])
def test_an_item_that_cannot_be_pickled_fails_and_the_run_goes_on(job: Path, backend: str) -> None:
    result = batchframe_cli(*exec_args(job, backend, "-p", "odd_item=true", "-p", "count=12"), cwd=job, timeout=120)
    assert result.returncode == 3, result.stderr
    records = {r["index"]: r for r in read_jsonl(only_run_dir(job / "batchframe_outputs") / "failed.jsonl")}
    assert records[5]["error_type"] == "ItemNotPicklable"
    assert "cannot be sent to a worker process" in records[5]["message"]
    assert done(job) == [i for i in range(12) if i % 10 != 7 and i != 5]


@pytest.mark.parametrize("backend", ["processes", "dask", "ray"])
def test_a_worker_that_dies_mid_item_loses_nothing(job: Path, backend: str) -> None:
    result = batchframe_cli(*exec_args(job, backend, "-p", "die_at=4", "-p", "count=12"), cwd=job, timeout=180)
    assert result.returncode == 3, result.stderr
    processed = done(job)
    assert 4 in processed  # retried after its worker died
    assert sorted(set(processed)) == [i for i in range(12) if i % 10 != 7]  # nothing lost
    # Items that were in flight on the dying worker (or whose results were still there) may run
    # twice: at most as many as are in flight at once.
    assert len(processed) - len(set(processed)) <= 4


def test_an_unknown_executor_lists_the_valid_ones(job: Path) -> None:
    result = batchframe_cli(*exec_args(job, "gpu"), cwd=job)
    assert result.returncode == 2
    assert all(name in result.stderr for name in ("asyncio", "threads", "processes", "dask", "ray"))


def test_an_unknown_executor_set_in_a_config_class(job: Path) -> None:
    (job / "job.py").write_text(
        JOB + "\nfrom batchframe import Configuration\nclass Conf(Configuration):\n    executor = 'gpu'\n"
    )
    result = batchframe_cli("exec", "job.py", "-p", f"state_dir={job / 'state'}", cwd=job)
    assert result.returncode == 2
    # The config check names the field, the value and the valid executors.
    assert (
        "Conf.executor = 'gpu' (str), expected one of 'asyncio', 'threads', 'processes', 'dask', 'ray'" in result.stderr
    )


def test_a_scheduler_that_does_not_answer(job: Path) -> None:
    started = time.monotonic()
    result = batchframe_cli(
        *exec_args(job, "dask", "-p", "scheduler=tcp://127.0.0.1:9", "-p", "scheduler_timeout_sec=0.5"),
        cwd=job,
        timeout=60,
    )
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    assert "Could not reach the dask scheduler at tcp://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr
    assert done(job) == []


@pytest.mark.parametrize(("backend", "module"), [("dask", "distributed"), ("ray", "ray")])
def test_without_the_extra_installed_the_error_names_it(job: Path, backend: str, module: str) -> None:
    # The CLI in a Python where the engine cannot be imported, as after a plain `pip install batchframe`.
    cli = f"import sys; sys.modules[{module!r}] = None; from batchframe.cli import app; app()"
    result = subprocess.run(
        [sys.executable, "-c", cli, *exec_args(job, backend)],
        cwd=job, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"executor={backend} needs" in result.stderr
    assert f"pip install 'batchframe[{backend}]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert done(job) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_primes_example_on_each_back_end(tmp_path: Path, backend: str) -> None:
    from helpers import EXAMPLES

    args = ["exec", EXAMPLES / "primes.py", "-p", "count=12", "-p", f"executor={backend}", "-d", tmp_path]
    result = batchframe_cli(*args, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads((only_run_dir(tmp_path) / "summary.json").read_text())
    assert summary["succeeded"] == 12
