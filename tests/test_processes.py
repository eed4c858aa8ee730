"""The processes back end: timeouts and cancellation kill the worker, faults in user code never hang a run."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from helpers import batchframe_cli, build_file_tree, only_run_dir, read_jsonl, service_factory

from batchframe.backends import NotStarted
from batchframe.backends._worker import RemoteError, WorkerDied, pack, transportable, unpack
from batchframe.backends.processes import ProcessBackend, WorkerStartError

T = TypeVar("T")

JOB = """
import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from batchframe import BatchframeParam, Service, Source

log = logging.getLogger("user.code")

class Unprintable(Exception):
    def __str__(self):
        raise ValueError("no text for you")

class UnprintableExit(SystemExit):
    def __str__(self):
        raise ValueError("no text for you")

class TwoArgs(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")

class HoldsALock(Exception):
    def __init__(self):
        super().__init__("holds a lock")
        self.lock = threading.Lock()

FAULTS = {
    "KeyboardInterrupt": KeyboardInterrupt,
    "SystemExit": lambda: SystemExit(3),
    "GeneratorExit": GeneratorExit,
    "CancelledError": asyncio.CancelledError,
    "Unprintable": Unprintable,
    "UnprintableExit": UnprintableExit,
    "TwoArgs": lambda: TwoArgs(1, 2),
    "HoldsALock": HoldsALock,
}

class Items(Source[int]):
    def __init__(self, count: BatchframeParam[int] = 10):
        self.count = count

    def __len__(self):
        return self.count

    def __iter__(self):
        return iter(range(self.count))

class Work(Service[int]):
    def __init__(self, state_dir: BatchframeParam[Path], block: BatchframeParam[int] = -1,
                 block_s: BatchframeParam[float] = 1e6, faults: BatchframeParam[bool] = False,
                 use_async: BatchframeParam[bool] = False, broken_start: BatchframeParam[bool] = False,
                 in_subprocess: BatchframeParam[bool] = False, die_once: BatchframeParam[int] = -1):
        self.state_dir = state_dir
        self.block = block
        self.block_s = block_s
        self.faults = faults
        self.use_async = use_async
        self.broken_start = broken_start
        self.in_subprocess = in_subprocess
        self.die_once = die_once

    def on_worker_start(self):
        if self.broken_start:
            raise RuntimeError("no GPU here")
        (self.state_dir / f"worker-{os.getpid()}").touch()

    def on_worker_stop(self):
        (self.state_dir / f"stopped-{os.getpid()}").touch()

    def process(self, item):
        if self.use_async:
            return self.process_async(item)
        self.run(item)

    async def process_async(self, item):
        loop = id(asyncio.get_running_loop())
        with open(self.state_dir / "loops.txt", "a") as out:
            out.write(f"{os.getpid()} {loop}\\n")
        self.run(item)

    def run(self, item):
        log.info("processing %s", item)
        with open(self.state_dir / f"started-{item}", "a") as out:
            out.write(f"{os.getpid()}\\n")
        if item == self.block and self.in_subprocess:
            child = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({self.block_s})"])
            (self.state_dir / "child").write_text(str(child.pid))
            child.wait()
        elif item == self.block:
            time.sleep(self.block_s)
        names = list(FAULTS)
        if self.faults and 1 <= item <= len(names):
            raise FAULTS[names[item - 1]]()
        if item == 9999:
            os._exit(1)
        if item == self.die_once and not (self.state_dir / "died").exists():
            (self.state_dir / "died").touch()
            os._exit(1)
        with open(self.state_dir / "done.txt", "a") as out:
            out.write(f"{item}\\n")
"""

FAULT_NAMES = [
    "KeyboardInterrupt",
    "SystemExit",
    "GeneratorExit",
    "CancelledError",
    "Unprintable",
    "UnprintableExit",
    "TwoArgs",
    "HoldsALock",
]


@pytest.fixture
def job(tmp_path: Path) -> Path:
    build_file_tree(tmp_path, {"job.py": JOB})
    (tmp_path / "state").mkdir()
    return tmp_path


def done(job: Path) -> list[int]:
    path = job / "state" / "done.txt"
    return sorted(int(x) for x in path.read_text().split()) if path.exists() else []


def cli(job: Path, *extra: str, timeout: float = 60) -> Any:
    args = ["exec", "job.py", "-p", "executor=processes", "-p", "concurrency=2", "-p", f"state_dir={job / 'state'}"]
    return batchframe_cli(*args, "-p", "retry_backoff_sec=0.01", *extra, cwd=job, timeout=timeout)


def failures(job: Path) -> dict[int, dict[str, Any]]:
    return {r["item"]: r for r in read_jsonl(only_run_dir(job / "batchframe_outputs") / "failed.jsonl")}


def with_backend(
    job: Path,
    scenario: Callable[[Any], Awaitable[T]],
    *params: str,
    concurrency: int = 2,
    timeout_s: float | None = None,
) -> T:
    """Run ``scenario(call)`` against a started ProcessBackend on the job; the backend is closed after."""
    project = service_factory(job / "job.py", f"state_dir={job / 'state'}", *params)

    async def main() -> T:
        backend = ProcessBackend(project, concurrency=concurrency, item_timeout_s=timeout_s)
        call = await backend.start()
        try:
            return await scenario(call)
        finally:
            await backend.close()

    return asyncio.run(main())


async def outcome(call: Any, item: Any) -> BaseException | None:
    """The item's outcome, handing it out again while the back end gives it back unrun (as the driver does)."""
    while True:
        try:
            await call(item)
        except NotStarted:
            continue
        except BaseException as exc:
            return exc
        return None


async def started(job: Path, item: int) -> int:
    """The pid of the worker once it has started ``item``."""
    for _ in range(1000):
        if pids := started_by(job, item):
            return pids[0]
        await asyncio.sleep(0.01)
    raise AssertionError(f"item {item} never started")


def started_by(job: Path, item: int) -> list[int]:
    """The pids of the workers that started ``item``, one per attempt."""
    path = job / "state" / f"started-{item}"
    text = path.read_text() if path.exists() else ""
    return [int(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def pids(job: Path, prefix: str) -> set[int]:
    return {int(p.name.split("-")[1]) for p in (job / "state").glob(f"{prefix}-*")}


def running(pid: int) -> bool:
    """Whether the process runs (a zombie, killed but not yet reaped, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def eventually_gone(pid: int) -> bool:
    for _ in range(500):
        if not running(pid):
            return True
        time.sleep(0.01)
    return False


# ------------------------------------------------------------------------------------ the real CLI


@pytest.mark.timeout(60)
def test_an_item_that_blocks_forever_times_out_and_the_run_ends(job: Path) -> None:
    started_at = time.monotonic()
    result = cli(job, "-p", "block=4", "-p", "item_timeout_sec=0.5", "-p", "max_retries=1")
    assert time.monotonic() - started_at < 45  # the item blocks for 11 days
    assert result.returncode == 3, result.stderr
    records = failures(job)
    assert list(records) == [4]
    assert (records[4]["error_type"], records[4]["attempts"]) == ("TimeoutError", 2)
    assert done(job) == [i for i in range(10) if i != 4]
    killed = set(started_by(job, 4))
    assert len(killed) == 2 and not any(running(pid) for pid in killed)  # each attempt on its own worker
    assert pids(job, "stopped") == pids(job, "worker") - killed  # the others ran their stop hook
    logs = (only_run_dir(job / "batchframe_outputs") / "logs.txt").read_text()
    assert "processing 9" in logs  # the workers' log records reach logs.txt


@pytest.mark.timeout(60)
def test_items_queued_behind_a_stuck_worker_do_not_time_out(job: Path) -> None:
    result = cli(
        job, "-p", "count=21", "-p", "block=0", "-p", "block_s=1.5", "-p", "item_timeout_sec=1", "-p", "max_retries=0"
    )
    assert result.returncode == 3, result.stderr
    records = failures(job)
    assert list(records) == [0]
    assert records[0]["error_type"] == "TimeoutError"
    assert done(job) == list(range(1, 21))


@pytest.mark.timeout(90)
@pytest.mark.parametrize("use_async", [False, True])
def test_every_kind_of_exception_from_process_is_recorded_and_the_run_goes_on(job: Path, use_async: bool) -> None:
    result = cli(job, "-p", "count=12", "-p", "faults=true", "-p", f"use_async={use_async}", "-p", "max_retries=0")
    assert result.returncode == 3, result.stderr
    records = failures(job)
    assert {item: r["error_type"] for item, r in records.items()} == dict(enumerate(FAULT_NAMES, start=1))
    assert records[5]["message"] == "<unprintable Unprintable>"
    assert records[6]["message"] == "<unprintable UnprintableExit>"
    assert records[7]["message"] == "1 and 2"
    assert "raise FAULTS[names[item - 1]]()" in records[7]["traceback"]  # the worker's frames
    assert all(r["attempts"] == 1 for r in records.values())
    assert done(job) == [0, 9, 10, 11]
    if use_async:  # one event loop per worker process
        pairs = {tuple(line.split()) for line in (job / "state" / "loops.txt").read_text().splitlines()}
        assert len(pairs) == len({pid for pid, _ in pairs})


@pytest.mark.timeout(60)
def test_a_worker_that_cannot_build_the_service_fails_the_items_without_hanging(job: Path) -> None:
    result = cli(job, "-p", "count=5", "-p", "broken_start=true")
    assert result.returncode in (1, 3), result.stderr
    assert done(job) == []
    logs = (only_run_dir(job / "batchframe_outputs") / "logs.txt").read_text()
    assert "no GPU here" in logs and "on_worker_start" in logs  # the traceback


@pytest.mark.timeout(60)
def test_a_project_that_shadows_the_standard_library_still_runs_in_workers(job: Path) -> None:
    for name in ("json", "numbers", "queue", "random", "selectors", "struct"):
        (job / f"{name}.py").write_text(f"raise RuntimeError('the project shadows {name}')\n")
    result = cli(job, "-p", "count=4")
    assert result.returncode == 0, result.stderr
    assert done(job) == [0, 1, 2, 3]


# ----------------------------------------------------------------------------- the back end itself


@pytest.mark.timeout(60)
def test_a_timed_out_item_has_its_worker_killed(job: Path) -> None:
    async def scenario(call: Any) -> None:
        task = asyncio.ensure_future(outcome(call, 3))
        pid = await started(job, 3)
        error = await task
        assert isinstance(error, TimeoutError) and "item_timeout_sec=0.5" in str(error)
        assert eventually_gone(pid)
        assert await outcome(call, 5) is None  # a fresh worker takes over

    with_backend(job, scenario, "block=3", concurrency=1, timeout_s=0.5)
    assert done(job) == [5]


@pytest.mark.timeout(60)
def test_killing_a_worker_kills_the_subprocess_its_item_started(job: Path) -> None:
    async def scenario(call: Any) -> BaseException | None:
        return await outcome(call, 3)

    error = with_backend(job, scenario, "block=3", "in_subprocess=true", concurrency=1, timeout_s=1.0)
    assert isinstance(error, TimeoutError)
    assert eventually_gone(int((job / "state" / "child").read_text()))


@pytest.mark.timeout(60)
def test_the_timeout_counts_from_when_a_worker_receives_the_item(job: Path) -> None:
    async def scenario(call: Any) -> list[BaseException | None]:
        return list(await asyncio.gather(*(outcome(call, i) for i in range(6))))  # one worker: 1-5 wait behind 0

    results = with_backend(job, scenario, "block=0", "block_s=1.5", concurrency=1, timeout_s=1.0)
    assert isinstance(results[0], TimeoutError)
    assert results[1:] == [None] * 5
    assert done(job) == [1, 2, 3, 4, 5]


@pytest.mark.timeout(60)
def test_a_cancelled_item_returns_at_once_and_its_worker_is_killed(job: Path) -> None:
    async def scenario(call: Any) -> None:
        blocked = asyncio.ensure_future(call(3))
        other = asyncio.ensure_future(call(4))
        pid = await started(job, 3)
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(blocked, 5)  # it blocks for 11 days in its worker
        assert eventually_gone(pid)
        await other  # the other worker's item was not affected
        assert await outcome(call, 5) is None

    with_backend(job, scenario, "block=3")
    assert done(job) == [4, 5]


@pytest.mark.timeout(60)
def test_a_worker_that_dies_fails_only_its_item(job: Path) -> None:
    async def scenario(call: Any) -> list[BaseException | None]:
        return list(await asyncio.gather(*(outcome(call, i) for i in (1, 9999, 2, 3))))

    results = with_backend(job, scenario)
    assert isinstance(results[1], WorkerDied)
    assert results[0] is None and results[2:] == [None, None]
    assert done(job) == [1, 2, 3]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", FAULT_NAMES)
def test_each_exception_comes_back_with_its_type_name(job: Path, name: str) -> None:
    item = FAULT_NAMES.index(name) + 1
    error = with_backend(job, lambda call: outcome(call, item), "faults=true")
    assert isinstance(error, Exception)  # never a KeyboardInterrupt or SystemExit in the driver
    type_name = error.error_type if isinstance(error, RemoteError) else type(error).__name__
    assert type_name == name
    assert "raise FAULTS[names[item - 1]]()" in error.remote_traceback  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
def test_an_item_the_worker_cannot_unpickle_fails_alone(job: Path) -> None:
    async def scenario(call: Any) -> tuple[BaseException | None, BaseException | None]:
        return await outcome(call, Local()), await outcome(call, 1)

    error, fine = with_backend(job, scenario, concurrency=1)
    assert isinstance(error, ModuleNotFoundError) and fine is None


@pytest.mark.timeout(60)
def test_a_worker_that_cannot_start_fails_every_call_with_the_reason(job: Path) -> None:
    async def scenario(call: Any) -> list[BaseException | None]:
        return list(await asyncio.gather(*(outcome(call, i) for i in range(4))))

    errors = with_backend(job, scenario, "broken_start=true")
    assert all(isinstance(e, WorkerStartError) for e in errors), errors
    assert "A worker process could not start: RuntimeError: no GPU here" in str(errors[0])


@pytest.mark.timeout(60)
def test_close_kills_an_item_that_never_ends_and_stops_the_others(job: Path) -> None:
    project = service_factory(job / "job.py", f"state_dir={job / 'state'}", "block=3")

    async def main() -> BaseException | None:
        backend = ProcessBackend(project, concurrency=2)
        call = await backend.start()
        blocked = asyncio.ensure_future(outcome(call, 3))
        await call(1)
        pid = await started(job, 3)
        await asyncio.wait_for(backend.close(), 10)
        assert not running(pid)
        return await blocked

    assert isinstance(asyncio.run(main()), WorkerDied)
    assert len(list((job / "state").glob("stopped-*"))) == 1  # the idle worker ran its stop hook


@pytest.mark.timeout(60)
def test_worker_log_records_reach_the_drivers_handlers(job: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with_backend(job, lambda call: call(7), concurrency=1)
    assert any(r.name == "user.code" and r.getMessage() == "processing 7" for r in caplog.records)
    assert any(r.name == "user.code" and r.process != os.getpid() for r in caplog.records)


class Local:
    """Only this test module knows this class: a worker cannot unpickle it."""


# ----------------------------------------------------------------------------------- transportable


class _NeedsTwo(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(a + b)


class _HoldsALock(Exception):
    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


class _BadStr(KeyboardInterrupt):
    def __str__(self) -> str:
        raise RuntimeError


@pytest.mark.parametrize(
    ("exc", "error_type", "message"),
    [
        (KeyboardInterrupt(), "KeyboardInterrupt", ""),
        (SystemExit(2), "SystemExit", "2"),
        (_BadStr(), "_BadStr", "<unprintable _BadStr>"),
        (_HoldsALock(), "_HoldsALock", "holds a lock"),
    ],
)
def test_what_cannot_travel_as_itself_becomes_a_remote_error(exc: BaseException, error_type: str, message: str) -> None:
    error = transportable(exc)
    assert isinstance(error, RemoteError)
    assert (error.error_type, str(error)) == (error_type, message)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.error_type, str(copy), copy.remote_traceback) == (error_type, message, error.remote_traceback)


def test_an_exception_whose_init_needs_two_args_reaches_the_driver() -> None:
    # As a RemoteError; or as itself where tblib (installed by distributed) pickles exceptions without __init__.
    copy = unpack(pack(transportable(_NeedsTwo(1, 2))))
    assert isinstance(copy, (_NeedsTwo, RemoteError)) and str(copy) == "3"


def test_an_exception_the_driver_cannot_unpickle_arrives_as_a_remote_error() -> None:
    data, _, message, text, retryable = pack(ValueError("bad item"))  # type: ignore[misc]
    unknown_here = data.replace(b"ValueError", b"ValueErrox")
    copy = unpack((unknown_here, "ValueError", message, text, retryable))
    assert isinstance(copy, RemoteError) and (copy.error_type, str(copy)) == ("ValueError", "bad item")


def test_an_ordinary_exception_travels_as_itself_with_its_traceback() -> None:
    try:
        raise ValueError("bad item")
    except ValueError as exc:
        error = transportable(exc)
    assert type(error) is ValueError and str(error) == "bad item"
    assert 'raise ValueError("bad item")' in error.remote_traceback  # type: ignore[attr-defined]


@pytest.mark.timeout(90)
def test_a_worker_killed_mid_batch_loses_no_item_and_runs_none_twice(job: Path) -> None:
    # 400 quick items travel in batches of dozens; the worker dies in the middle of one of them.
    result = cli(job, "-p", "count=400", "-p", "die_once=250")
    assert result.returncode == 0, result.stderr
    assert done(job) == list(range(400))  # none lost, none done twice
    starts = {item: len((job / "state" / f"started-{item}").read_text().split()) for item in range(400)}
    assert starts[250] == 2  # the item that was running when its worker died is retried
    assert {item for item, count in starts.items() if count != 1} == {250}  # the batch's other items ran once
    summary = json.loads((only_run_dir(job / "batchframe_outputs") / "summary.json").read_text())
    assert summary["succeeded"] == 400 and summary["failed"] == 0


@pytest.mark.timeout(90)
def test_a_pause_lets_only_the_sent_batches_finish_and_resume_goes_on(job: Path) -> None:
    from batchframe.run.driver import Driver, DriverSettings

    project = service_factory(job / "job.py", f"state_dir={job / 'state'}", "block=-1")
    settings = DriverSettings(concurrency=2)
    observed: dict[str, Any] = {}

    async def main() -> None:
        backend = ProcessBackend(project, concurrency=2)
        driver = Driver(range(3000), object(), settings=settings, backend=backend)
        run = asyncio.ensure_future(driver.run())
        while driver.stats.succeeded < 300:
            await asyncio.sleep(0.005)
        driver.pause()
        await asyncio.wait_for(driver.wait_idle(), 10)  # only the batches already sent finish
        observed["at_pause"] = driver.stats.succeeded
        await asyncio.sleep(0.3)
        observed["later"] = driver.stats.succeeded
        observed["in_flight"] = driver.stats.in_flight
        driver.resume()
        stats = await asyncio.wait_for(run, 60)
        observed["final"] = stats.succeeded

    asyncio.run(main())
    assert observed["later"] == observed["at_pause"] < 3000  # paused: the count stays still
    assert observed["in_flight"] == 0
    assert observed["final"] == 3000
    assert done(job) == list(range(3000))  # each item once: those given back were never run


@pytest.mark.timeout(90)
def test_a_stop_records_the_items_not_sent_as_not_processed(job: Path) -> None:
    from batchframe.run.driver import Driver, DriverSettings

    project = service_factory(job / "job.py", f"state_dir={job / 'state'}")
    failed: list[Any] = []

    async def main() -> Any:
        backend = ProcessBackend(project, concurrency=2)
        driver = Driver(
            range(100_000),
            object(),
            settings=DriverSettings(concurrency=2),
            backend=backend,
            on_failure=failed.append,
        )
        run = asyncio.ensure_future(driver.run())
        while driver.stats.succeeded < 300:
            await asyncio.sleep(0.005)
        driver.stop()
        return await asyncio.wait_for(run, 30), driver.positions_read

    stats, read = asyncio.run(main())
    assert stats.succeeded + stats.not_processed == stats.read == read < 100_000  # reading stopped at once
    assert len(done(job)) == stats.succeeded
    assert all(f.error_type == "NotProcessed" and f.attempts == 0 for f in failed)
    assert {f.index for f in failed}.isdisjoint(done(job))
