"""A real dask cluster (a scheduler and two 2-thread workers without the project's files), and worker isolation.

The workers start in an empty folder with no PYTHONPATH: a run must bring its project with it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from helpers import batchframe_cli, build_file_tree, only_run_dir, read_jsonl, service_factory, start_batchframe

from batchframe.backends import NOT_STARTED, BackendError
from batchframe.backends._factory import VersionMismatch, archive_project, batchframe_version
from batchframe.backends._worker import (
    NOT_RUN,
    batch_payload,
    load_items,
    pack,
    pickled,
    run_batch,
    run_one,
    start_service,
    stop_service,
    unpack,
)
from batchframe.backends.dask import DaskBackend
from batchframe.errors import ParamError

pytestmark = pytest.mark.timeout(90)

BIN = Path(sys.executable).parent


@dataclasses.dataclass
class Cluster:
    address: str
    worker_logs: list[Path]


def _spawn(args: list[str], *, cwd: Path, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_for(what: str, ready: Callable[[], bool], logs: list[Path], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            text = "\n".join(
                f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in logs if log.exists()
            )
            raise AssertionError(f"{what} not ready within {timeout_s:g} s\n{text}")
        time.sleep(0.05)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """``dask scheduler`` and two ``dask worker --nthreads 2``, started in an empty folder; killed at the end."""
    root = tmp_path_factory.mktemp("cluster")
    empty = root / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    scheduler_file = root / "scheduler.json"
    processes: list[subprocess.Popen[bytes]] = []
    logs = [root / "scheduler.log", root / "worker-1.log", root / "worker-2.log"]
    try:
        processes.append(
            _spawn(
                [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                 "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)],
                cwd=empty, log=logs[0], env=env,
            )
        )  # fmt: skip
        _wait_for("the scheduler", lambda: scheduler_file.exists() and scheduler_file.stat().st_size > 0, logs)
        _wait_for("the scheduler file", lambda: "address" in scheduler_file.read_text(), logs)
        address = json.loads(scheduler_file.read_text())["address"]
        for n, log in enumerate(logs[1:], start=1):
            processes.append(
                _spawn(
                    [str(BIN / "dask"), "worker", address, "--nthreads", "2", "--name", f"w{n}", "--no-dashboard",
                     "--local-directory", str(root / f"scratch-{n}")],
                    cwd=empty, log=log, env=env,
                )
            )  # fmt: skip
        _wait_for("the workers", lambda: all("Registered to" in log.read_text() for log in logs[1:]), logs)
        yield Cluster(address, logs[1:])
    finally:
        _stop(processes)


def on_cluster(cluster: Cluster, project: Path, *params: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return batchframe_cli(
        "exec", project, "-p", "executor=dask", "-p", f"scheduler={cluster.address}", *params, cwd=cwd, timeout=60
    )


def summary(project: Path) -> dict[str, Any]:
    return json.loads((only_run_dir(project / "batchframe_outputs") / "summary.json").read_text())


def failures(project: Path) -> dict[int, dict[str, Any]]:
    return {r["item"]: r for r in read_jsonl(only_run_dir(project / "batchframe_outputs") / "failed.jsonl")}


# ------------------------------------------------------------------------ two runs on one cluster

SOURCE_A = """
from dataclasses import dataclass
from batchframe import BatchframeParam, Source

@dataclass
class Item:
    n: int

    def value(self):
        return str(self.n * 2)

class Items(Source[Item]):
    def __init__(self, count: BatchframeParam[int] = 12):
        self.count = count

    def __len__(self):
        return self.count

    def __iter__(self):
        return (Item(i) for i in range(self.count))
"""

SOURCE_B = """
from dataclasses import dataclass
from batchframe import BatchframeParam, Source

@dataclass
class Item:
    label: str

    def value(self):
        return "B" + self.label

class Items(Source[Item]):
    def __init__(self, count: BatchframeParam[int] = 12):
        self.count = count

    def __len__(self):
        return self.count

    def __iter__(self):
        return (Item(str(i)) for i in range(self.count))
"""

JOB = """
import os
import time
from pathlib import Path
from batchframe import BatchframeParam, Service
from source import Item, Items

class {name}(Service[Item]):
    def __init__(self, state_dir: BatchframeParam[Path], peer: BatchframeParam[Path]):
        self.state_dir = state_dir
        self.peer = peer

    def on_worker_start(self):
        (self.state_dir / f"file-{{os.getpid()}}").write_text(__file__)
        (self.state_dir / "started").touch()
        deadline = time.monotonic() + 30
        while not (self.peer / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.02)  # both runs are installed on the workers before either processes an item

    def on_worker_stop(self):
        (self.state_dir / f"stopped-{{os.getpid()}}").touch()

    def process(self, item):
        assert type(item) is Item, f"{{type(item)}} is not this project's Item"
        time.sleep(0.02)
        with open(self.state_dir / "out.txt", "a") as out:
            out.write(item.value() + "\\n")
"""


def test_two_runs_on_one_cluster_each_use_their_own_service_and_modules(
    cluster: Cluster, make_project: Callable[..., Path]
) -> None:
    two_runs_at_once(make_project, ["executor=dask", f"scheduler={cluster.address}", "concurrency=4"], workers=2)


def two_runs_at_once(make_project: Callable[..., Path], params: list[str], *, workers: int) -> None:
    """Run two projects at once on one cluster (``-p`` values ``params``), both with a ``job.py`` and a
    ``source.py`` of their own, and check each used its own Service and modules on its ``workers``."""
    a = make_project({"job.py": JOB.format(name="Double"), "source.py": SOURCE_A}, name="a")
    b = make_project({"job.py": JOB.format(name="Letter"), "source.py": SOURCE_B}, name="b")
    for project in (a, b):
        (project / "state").mkdir()
    runs = [
        start_batchframe(
            "exec", project / "job.py", *(arg for value in params for arg in ("-p", value)), "-p",
            f"state_dir={project / 'state'}",
            "-p", f"peer={other / 'state'}", cwd=project,
        )
        for project, other in ((a, b), (b, a))
    ]  # fmt: skip
    results = [run.communicate(timeout=90) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    assert sorted((a / "state" / "out.txt").read_text().split()) == sorted(str(i * 2) for i in range(12))
    assert sorted((b / "state" / "out.txt").read_text().split()) == sorted(f"B{i}" for i in range(12))
    assert summary(a)["succeeded"] == summary(b)["succeeded"] == 12
    for project in (a, b):  # the workers imported the copy of the project sent with the run
        files = [p.read_text() for p in (project / "state").glob("file-*")]
        assert len(files) == workers and all(not f.startswith(str(project)) and "batchframe-" in f for f in files)
        assert len(list((project / "state").glob("stopped-*"))) == workers  # each worker's on_worker_stop ran


# --------------------------------------------------------------------------- async, threads, timeouts

ASYNC_JOB = """
import asyncio
import os
import threading
from pathlib import Path
from batchframe import BatchframeParam, Service, Source

class Items(Source[int]):
    def __len__(self):
        return 24

    def __iter__(self):
        return iter(range(24))

class Work(Service[int]):
    def __init__(self, state_dir: BatchframeParam[Path]):
        self.state_dir = state_dir

    async def process(self, item):
        await asyncio.sleep(0)
        await asyncio.sleep(0.02)
        line = f"{os.getpid()} {threading.get_ident()} {id(asyncio.get_running_loop())}\\n"
        with open(self.state_dir / "loops.txt", "a") as out:
            out.write(line)
"""


def test_an_async_process_runs_on_multi_threaded_workers(cluster: Cluster, make_project: Callable[..., Path]) -> None:
    project = make_project({"job.py": ASYNC_JOB})
    (project / "state").mkdir()
    result = on_cluster(cluster, project, "-p", f"state_dir={project / 'state'}", "-p", "concurrency=8", cwd=project)
    assert result.returncode == 0, result.stderr
    assert summary(project)["succeeded"] == 24
    rows = [tuple(line.split()) for line in (project / "state" / "loops.txt").read_text().splitlines()]
    loops = {(pid, thread): {loop for p, t, loop in rows if (p, t) == (pid, thread)} for pid, thread, _ in rows}
    assert len(loops) >= 2  # several worker threads ran items
    assert all(len(ids) == 1 for ids in loops.values())  # one event loop per thread, kept


def test_async_process_on_several_threads_of_one_worker_process(make_project: Callable[..., Path]) -> None:
    project = make_project({"job.py": ASYNC_JOB})
    (project / "state").mkdir()
    key = start_service(service_factory(project / "job.py", f"state_dir={project / 'state'}"))
    try:
        with ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(lambda item: run_one(key, item), range(24)))
    finally:
        stop_service(key)
    assert outcomes == [None] * 24


TIMEOUT_JOB = """
import time
from batchframe import BatchframeParam, Service, Source

class Items(Source[int]):
    def __init__(self, count: BatchframeParam[int] = 16):
        self.count = count

    def __len__(self):
        return self.count

    def __iter__(self):
        return iter(range(self.count))

class Work(Service[int]):
    def __init__(self, slow_s: BatchframeParam[float] = 0.4, stuck: BatchframeParam[int] = 0):
        self.slow_s = slow_s
        self.stuck = stuck

    def process(self, item):
        time.sleep(4 if item == self.stuck else self.slow_s)
"""


def test_the_item_timeout_on_dask_counts_from_when_the_item_starts(
    cluster: Cluster, make_project: Callable[..., Path]
) -> None:
    project = make_project({"job.py": TIMEOUT_JOB})
    params = ["-p", "item_timeout_sec=1", "-p", "max_retries=0", "-p", "concurrency=16"]
    result = on_cluster(cluster, project, *params, cwd=project)
    assert result.returncode == 3, result.stderr
    records = failures(project)
    assert list(records) == [0]  # items queued 1 s and more behind the others did not time out
    assert records[0]["error_type"] == "TimeoutError" and "item_timeout_sec=1" in records[0]["message"]
    assert summary(project)["succeeded"] == 15


def test_a_timed_out_item_leaves_the_rest_of_its_batch_not_started(make_project: Callable[..., Path]) -> None:
    project = make_project({"job.py": TIMEOUT_JOB})
    key = start_service(service_factory(project / "job.py", "slow_s=0", "stuck=1"))
    try:
        busy_s, outcomes = run_batch(key, batch_of([0, 1, 2, 3]), 0.2)
    finally:
        stop_service(key)
    assert outcomes[0] is None
    assert isinstance(unpack(outcomes[1]), TimeoutError)  # type: ignore[arg-type]
    assert outcomes[2:] == [NOT_RUN, NOT_RUN]
    assert busy_s >= 0.2
    assert unpack(NOT_RUN) is NOT_STARTED


# ------------------------------------------------------------------------ projects, values, versions

PLAIN_JOB = """
import logging
from batchframe import Service, Source

class Items(Source[int]):
    def __len__(self):
        return 6

    def __iter__(self):
        return iter(range(6))

class Work(Service[int]):
    def process(self, item):
        logging.getLogger("user.job").warning("item %s done", item)
"""

SHADOWS = {f"{name}.py": f"raise RuntimeError('the project shadows {name}')\n" for name in ("numbers", "json", "queue")}


@pytest.mark.parametrize("where", ["processes", "dask-local", "dask-cluster"])
def test_a_project_beside_stdlib_named_modules_runs(
    where: str, cluster: Cluster, make_project: Callable[..., Path]
) -> None:
    project = make_project({"job.py": PLAIN_JOB, **SHADOWS})
    if where == "dask-cluster":
        result = on_cluster(cluster, project / "job.py", cwd=project)
    else:
        executor = "dask" if where == "dask-local" else where
        result = batchframe_cli("exec", project / "job.py", "-p", f"executor={executor}", cwd=project, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert summary(project)["succeeded"] == 6


def test_worker_logs_reach_logs_txt_and_dask_chatter_stays_off_the_console(
    cluster: Cluster, make_project: Callable[..., Path]
) -> None:
    project = make_project({"job.py": PLAIN_JOB})
    result = on_cluster(cluster, project / "job.py", cwd=project)
    assert result.returncode == 0, result.stderr
    logs = (only_run_dir(project / "batchframe_outputs") / "logs.txt").read_text()
    assert all(f"user.job: item {i} done" in logs for i in range(6))
    assert "distributed." not in result.stderr and "distributed." not in result.stdout
    assert "4 worker threads" in logs  # two workers, two threads each


def test_a_service_that_cannot_be_built_on_the_workers_stops_the_run_at_the_start(
    cluster: Cluster, make_project: Callable[..., Path]
) -> None:
    project = make_project({"job.py": PLAIN_JOB.replace("    def process", "    def on_worker_start(self):\n"
                                                        "        raise RuntimeError('no GPU here')\n\n    def process")})  # fmt: skip
    result = on_cluster(cluster, project / "job.py", cwd=project)
    assert result.returncode == 1
    assert "A dask worker could not build the Service: RuntimeError: no GPU here" in result.stderr
    assert "Traceback" not in result.stderr
    logs = (only_run_dir(project / "batchframe_outputs") / "logs.txt").read_text()
    assert "raise RuntimeError('no GPU here')" in logs  # the worker's traceback


def test_a_local_clusters_chatter_goes_to_logs_txt_only(make_project: Callable[..., Path]) -> None:
    project = make_project({"job.py": PLAIN_JOB})
    result = batchframe_cli("exec", project / "job.py", "-p", "executor=dask", cwd=project, timeout=60)
    assert result.returncode == 0, result.stderr
    logs = (only_run_dir(project / "batchframe_outputs") / "logs.txt").read_text()
    assert "distributed.scheduler" in logs and "user.job: item 5 done" in logs
    assert "distributed" not in result.stderr and "Nanny" not in result.stderr
    assert "Dask cluster ready" in result.stderr


def test_a_local_cluster_that_cannot_start_names_the_cause(make_project: Callable[..., Path]) -> None:
    project = make_project({"job.py": PLAIN_JOB})
    result = batchframe_cli(
        "exec", project / "job.py", "-p", "executor=dask", cwd=project, timeout=60,
        DASK_DISTRIBUTED__WORKER__PRELOAD='["no_such_preload_module"]',
    )  # fmt: skip
    assert result.returncode == 1
    assert "Could not start a local dask cluster" in result.stderr
    assert "No module named 'no_such_preload_module'" in result.stderr
    assert "Traceback" not in result.stderr


VALUES_JOB = """
import enum
from pathlib import Path
from batchframe import BatchframeParam, Service, Source

class Color(enum.Enum):
    red = 1
    blue = 2

class Items(Source[int]):
    def __len__(self):
        return 2

    def __iter__(self):
        return iter(range(2))

class Work(Service[int]):
    def __init__(self, state_dir: BatchframeParam[Path], color: BatchframeParam[Color] = Color.red,
                 tags: BatchframeParam[list[str]] = ["a,b", "c"]):
        self.state_dir = state_dir
        self.color = color
        self.tags = tags

    def on_worker_start(self):
        (self.state_dir / "values.txt").write_text(repr((self.color, self.tags)))

    def process(self, item):
        pass
"""


@pytest.mark.parametrize("where", ["processes", "dask-cluster"])
def test_workers_get_the_resolved_values_not_their_text(
    where: str, cluster: Cluster, make_project: Callable[..., Path]
) -> None:
    project = make_project({"job.py": VALUES_JOB})
    (project / "state").mkdir()
    params = ["-p", f"state_dir={project / 'state'}", "-p", "color=blue"]
    if where == "processes":
        result = batchframe_cli("exec", project, *params, "-p", "executor=processes", cwd=project, timeout=60)
    else:
        result = on_cluster(cluster, project, *params, cwd=project)
    assert result.returncode == 0, result.stderr
    assert (project / "state" / "values.txt").read_text() == "(<Color.blue: 2>, ['a,b', 'c'])"


def test_a_value_that_cannot_be_pickled_is_a_clear_error(make_project: Callable[..., Path]) -> None:
    project = make_project({"job.py": VALUES_JOB.replace('["a,b", "c"]', "[threading.Lock()]").replace(
        "import enum", "import enum\nimport threading")})  # fmt: skip
    with pytest.raises(ParamError, match=r"The value of tags \(list\) cannot be sent to worker processes"):
        service_factory(project, f"state_dir={project}")


def test_a_version_mismatch_is_a_clear_error(cluster: Cluster, make_project: Callable[..., Path]) -> None:
    project = make_project({"job.py": PLAIN_JOB})
    fake = dataclasses.replace(service_factory(project / "job.py"), batchframe_version="0.0.1", python_version="3.99")
    with pytest.raises(VersionMismatch) as in_worker:
        start_service(fake)
    assert f"A worker runs batchframe {batchframe_version()}" in str(in_worker.value)
    assert "the driver runs batchframe 0.0.1 on Python 3.99" in str(in_worker.value)

    async def start() -> None:
        backend = DaskBackend(fake, concurrency=2, scheduler=cluster.address, connect_timeout_s=10)
        try:
            await backend.start()
        finally:
            await backend.close()

    with pytest.raises(BackendError) as on_cluster_start:
        asyncio.run(start())
    message = str(on_cluster_start.value)
    assert "must run this driver's batchframe 0.0.1 on Python 3.99" in message
    assert f"runs batchframe {batchframe_version()} on Python {sys.version_info[0]}.{sys.version_info[1]}" in message
    assert "tcp://127.0.0.1:" in message


def test_the_project_sent_to_workers_leaves_out_clutter_and_is_capped(make_project: Callable[..., Path]) -> None:
    project = build_file_tree(
        make_project({"job.py": PLAIN_JOB, "data/rows.csv": "a,b\n"}),
        {".git/config": "", ".venv/x.py": "", "__pycache__/job.pyc": "", "batchframe_outputs/old/logs.txt": ""},
    )
    with zipfile.ZipFile(__import__("io").BytesIO(archive_project(project))) as zipped:
        assert sorted(zipped.namelist()) == ["proj/data/rows.csv", "proj/job.py"]
    (project / "big.bin").write_bytes(b"x" * 5000)
    with pytest.raises(BackendError, match=r"holds more than .* big\.bin"):
        archive_project(project, max_bytes=4000)


# ------------------------------------------------------------------------------ failures from workers

FAILING_JOB = """
import threading
from pathlib import Path
from batchframe import BatchframeParam, Service, Source

class Unpicklable(Exception):
    def __init__(self, item):
        super().__init__(f"item {item} is bad")
        self.lock = threading.Lock()

def check(item, state_dir):
    tries = state_dir / f"tries-{item}"
    count = int(tries.read_text()) if tries.exists() else 0
    tries.write_text(str(count + 1))
    if item == 1 or count < 2:  # item 1 always fails; the others fail twice, then succeed
        raise Unpicklable(item)

class Items(Source[int]):
    def __len__(self):
        return 3

    def __iter__(self):
        return iter(range(3))

class Work(Service[int]):
    exceptions_to_retry_for = {Unpicklable}

    def __init__(self, state_dir: BatchframeParam[Path]):
        self.state_dir = state_dir

    def process(self, item):
        check(item, self.state_dir)
"""


@pytest.fixture(scope="module", params=["processes", "dask", "ray"])
def failed_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose items raise an exception that cannot be pickled (once per back end, for several tests)."""
    where: str = request.param
    project = build_file_tree(tmp_path_factory.mktemp(f"failing-{where}"), {"job.py": FAILING_JOB})
    (project / "state").mkdir()
    params = ["-p", f"state_dir={project / 'state'}", "-p", "retry_backoff_sec=0.01", "-p", "max_retries=3"]
    if where == "dask":
        result = on_cluster(request.getfixturevalue("cluster"), project, *params, cwd=project)
    else:
        if where == "ray":  # the test process's Ray cluster (conftest)
            params += ["-p", f"scheduler={request.getfixturevalue('ray_cluster')[0]}"]
        result = batchframe_cli("exec", project, "-p", f"executor={where}", *params, cwd=project, timeout=90)
    assert result.returncode == 3, result.stderr
    return project


def test_an_exception_that_cannot_be_pickled_keeps_its_type_and_is_retried(failed_run: Path) -> None:
    records = failures(failed_run)
    assert list(records) == [1]
    record = records[1]
    assert (record["error_type"], record["message"], record["attempts"]) == ("Unpicklable", "item 1 is bad", 4)
    assert summary(failed_run)["failures_by_type"] == {"Unpicklable": 1}
    assert summary(failed_run)["succeeded"] == 2  # retried: each failed twice, then succeeded


def test_a_remote_failure_keeps_the_users_frames(failed_run: Path) -> None:
    trace = failures(failed_run)[1]["traceback"]
    assert "in process" in trace and "check(item, self.state_dir)" in trace
    assert "in check" in trace and "raise Unpicklable(item)" in trace
    assert trace.rstrip().endswith("Unpicklable: item 1 is bad") and "batchframe/backends" not in trace


def test_run_one_returns_failures_and_never_raises(make_project: Callable[..., Path]) -> None:
    project = make_project({"job.py": FAILING_JOB})
    (project / "state").mkdir()
    key = start_service(service_factory(project, f"state_dir={project / 'state'}"))
    try:
        errors = [run_one(key, 1) for _ in range(2)]
        other_thread: list[Any] = []
        thread = threading.Thread(target=lambda: other_thread.append(run_one("no-such-run", 1)))
        thread.start()
        thread.join()
    finally:
        stop_service(key)
    assert all(getattr(e, "error_type", None) == "Unpicklable" and e.retryable for e in errors)  # type: ignore[union-attr]
    assert getattr(other_thread[0], "error_type", None) == "RunNotStarted" and other_thread[0].retryable


ISOLATED_JOB = """
from dataclasses import dataclass
from batchframe import Service, Source

@dataclass
class Item:
    n: int

class Oops(Exception):
    pass

class Items(Source[Item]):
    def __iter__(self):
        return iter([Item(1)])

class Work(Service[Item]):
    def process(self, item):
        raise Oops(f"{type(item).__module__}.{type(item).__qualname__} {item.n}")
"""


def test_a_worker_uses_its_runs_own_modules_and_the_driver_gets_its_classes_back(
    make_project: Callable[..., Path],
) -> None:
    import importlib

    project = make_project({"job.py": ISOLATED_JOB})
    factory = service_factory(project / "job.py")  # loads the project here, as the driver does
    driver_job = importlib.import_module(f"{factory.package}.job")
    key = start_service(factory, isolate=True)  # a second copy of the project, then sys.modules as it was
    try:
        [item] = load_items(key, batch_of([driver_job.Item(7)]))
        assert type(item).__qualname__ == "Item" and type(item) is not driver_job.Item  # the run's own class
        outcome = run_one(key, item)
        _, [gone] = run_batch(key, unknown_here(), None)  # an item of a module this worker does not have
        packed = pack(outcome, key)
    finally:
        stop_service(key)
    assert "gone_module" in str(unpack(gone))  # type: ignore[arg-type]  # it fails alone, with its own error
    error = unpack(packed)
    assert type(error) is driver_job.Oops  # pickled under the driver's name, found by import here
    assert str(error) == f"{factory.package}.job.Item 7"


def unknown_here() -> bytes:
    """A pickled batch whose item's module cannot be imported here."""
    import types

    module = types.ModuleType("gone_module")
    exec("class Gone:\n    pass\n", module.__dict__)
    sys.modules["gone_module"] = module
    try:
        return batch_of([module.Gone()])
    finally:
        del sys.modules["gone_module"]


def batch_of(items: list[object]) -> bytes:
    """A batch as the driver sends it: each item pickled on its own."""
    return batch_payload([pickled(item) for item in items])
