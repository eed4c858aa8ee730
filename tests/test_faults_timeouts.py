"""Issue 22 through the real CLI: timeouts that user code resists, huge settings, misused ``process``, mutated items.

Every run here must exit on its own (a hard pytest timeout turns a hang into a failure), with the
documented exit code and every item either done or in ``failed.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import batchframe_cli, build_file_tree, only_run_dir, read_jsonl

FAST_RETRIES = ("-p", "retry_backoff_sec=0.01", "-p", "retry_backoff_max_sec=0.02")


def _exec(tmp_path: Path, job: str, *params: str, timeout: float = 60) -> tuple[int, str, Path | None]:
    """``batchframe exec job.py -d out -p PARAM...``: its exit code, stderr and run folder (None: none made)."""
    build_file_tree(tmp_path, {"job.py": job})
    args: list[str] = []
    for param in params:
        args += ["-p", param]
    result = batchframe_cli("exec", "job.py", "-d", "out", *args, *FAST_RETRIES, cwd=tmp_path, timeout=timeout)
    out = tmp_path / "out"
    run_dir = only_run_dir(out) if out.is_dir() and any(out.iterdir()) else None
    return result.returncode, result.stderr, run_dir


# ------------------------------------------------------------------- point 2: CancelledError swallowed

SWALLOWS_CANCEL = """
import asyncio
from batchframe import Service, Source

class Items(Source[int]):
    def __len__(self):
        return 6

    def __iter__(self):
        return iter(range(6))

class Work(Service[int]):
    async def process(self, item):
        if item == 2:
            for _ in range(1000):
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    pass  # goes on regardless
        if item == 3:
            await asyncio.sleep(10)  # times out too, but ends when cancelled
"""


@pytest.mark.timeout(60)
def test_an_async_process_that_swallows_its_cancellation_fails_at_its_timeout(tmp_path: Path) -> None:
    code, stderr, run_dir = _exec(tmp_path, SWALLOWS_CANCEL, "item_timeout_sec=0.2", timeout=50)
    assert code == 3, stderr
    assert run_dir is not None
    records = read_jsonl(run_dir / "failed.jsonl")
    assert sorted((r["item"], r["error_type"], r["attempts"]) for r in records) == [
        (2, "TimeoutError", 4),
        (3, "TimeoutError", 4),
    ]
    logs = (run_dir / "logs.txt").read_text(encoding="utf-8")
    warnings = [line for line in logs.splitlines() if "ignored the cancellation" in line]
    assert len(warnings) == 1 and "Item 2 timed out" in warnings[0], warnings  # once, item 3 never
    assert "destroyed but it is pending" not in stderr
    assert "Traceback" not in stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["succeeded"], summary["failed"]) == (4, 2)


# -------------------------------------------------------------- point 3: a plain def process stuck for good

STUCK_THREAD = """
import time
from pathlib import Path
from typing import Any
from batchframe import Service, Source

class Items(Source[int]):
    def __len__(self):
        return 6

    def __iter__(self):
        return iter(range(6))

class Work(Service[int]):
    def process(self, item):
        if item == 2:
            time.sleep(3600)  # every attempt: stuck for good
        if item == 4 and not Path("item4.first").exists():
            Path("item4.first").touch()
            time.sleep(3600)  # its first attempt only: the retry must not wait for it
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["asyncio", "threads"])
def test_a_stuck_thread_neither_holds_its_retries_nor_uses_up_the_pool(tmp_path: Path, backend: str) -> None:
    # One thread (concurrency=1): each timed-out attempt leaves a thread stuck behind, and still the
    # retries of both items and the other items run, and the run ends at its own pace.
    code, stderr, run_dir = _exec(
        tmp_path, STUCK_THREAD, f"executor={backend}", "concurrency=1", "item_timeout_sec=0.3", timeout=50
    )
    assert code == 3, stderr
    assert run_dir is not None
    records = read_jsonl(run_dir / "failed.jsonl")
    assert [(r["item"], r["error_type"], r["attempts"]) for r in records] == [(2, "TimeoutError", 4)]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["succeeded"], summary["failed"]) == (5, 1)  # item 4 succeeded on its retry
    logs = (run_dir / "logs.txt").read_text(encoding="utf-8")
    stuck = [line for line in logs.splitlines() if "still stuck" in line]
    assert len(stuck) == 1 and "Item 2 timed out" in stuck[0], stuck  # once (items run in order here)
    assert "Traceback" not in stderr


# ----------------------------------------------------------------------- point 10: huge concurrency

COUNT_20 = """
from batchframe import Service, Source

class Items(Source[int]):
    def __len__(self):
        return 20

    def __iter__(self):
        return iter(range(20))

class Work(Service[int]):
    async def process(self, item):
        pass
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("param", "maximum"), [("concurrency=1000000", "10,000"), ("queue_size=10000000", "1,000,000")]
)
def test_a_setting_above_its_maximum_is_a_usage_error(tmp_path: Path, param: str, maximum: str) -> None:
    code, stderr, run_dir = _exec(tmp_path, COUNT_20, param)
    assert code == 2, stderr
    name, value = param.split("=")
    assert name in stderr and f"{int(value):,}" in stderr and maximum in stderr, stderr
    assert "Traceback" not in stderr
    assert run_dir is None  # refused before a run folder was made


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["asyncio", "threads"])
def test_the_largest_concurrency_runs_a_short_source(tmp_path: Path, backend: str) -> None:
    code, stderr, run_dir = _exec(tmp_path, COUNT_20, "concurrency=10000", f"executor={backend}")
    assert code == 0, stderr
    assert run_dir is not None
    assert json.loads((run_dir / "summary.json").read_text())["succeeded"] == 20


def test_the_driver_starts_no_more_workers_than_items_read(make_executor: Any) -> None:
    import asyncio

    class Work:
        async def process(self, item: int) -> None:
            pass

    executor = make_executor(range(3), Work(), concurrency=10_000)
    stats = asyncio.run(executor.run())
    assert stats.succeeded == 3
    assert len(executor._tasks) == 1 + 3  # the feeder and one worker per item


# ------------------------------------------------------------ point 14: process misused (yield, no async)

GENERATOR_PROCESS = """
from batchframe import Service, Source

class Items(Source[int]):
    def __iter__(self):
        return iter(range(3))

class Work(Service[int]):
    {definition} process(self, item):
        yield item
        raise ValueError("never runs")
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["asyncio", "threads", "processes", "dask", "ray"])
@pytest.mark.parametrize(("definition", "kind"), [("def", "a generator"), ("async def", "an async generator")])
def test_a_generator_process_is_a_usage_error(tmp_path: Path, backend: str, definition: str, kind: str) -> None:
    job = GENERATOR_PROCESS.replace("{definition}", definition)
    code, stderr, run_dir = _exec(tmp_path, job, f"executor={backend}")
    assert code == 2, stderr
    assert f"Work.process is {kind}" in stderr and "without yield" in stderr, stderr
    assert "Traceback" not in stderr
    assert run_dir is None


RETURNS_A_COROUTINE = """
import asyncio
from batchframe import Service, Source

class Items(Source[int]):
    def __iter__(self):
        return iter(range(3))

class Work(Service[int]):
    async def on_worker_start(self):
        self.loop = asyncio.get_running_loop()  # where the Service's async code runs (a client's loop)

    def process(self, item):  # the async forgotten: it returns a coroutine
        return self.work(item)

    async def work(self, item):
        if asyncio.get_running_loop() is not self.loop:
            raise RuntimeError("awaited on another loop than the Service's")
        await asyncio.sleep(0)
        if item == 1:
            raise ValueError("bad one")
"""


@pytest.mark.timeout(180)
# Not on ray, to keep the suite in its time: the worker side is _worker.run_batch, as on dask (its case here).
@pytest.mark.parametrize("backend", ["asyncio", "threads", "processes", "dask"])
def test_a_coroutine_returned_by_a_plain_process_is_awaited_on_the_services_loop(tmp_path: Path, backend: str) -> None:
    code, stderr, run_dir = _exec(tmp_path, RETURNS_A_COROUTINE, f"executor={backend}", "concurrency=2", timeout=150)
    assert code == 3, stderr
    assert run_dir is not None
    records = read_jsonl(run_dir / "failed.jsonl")
    assert [(r["item"], r["error_type"], r["message"]) for r in records] == [(1, "ValueError", "bad one")]
    assert json.loads((run_dir / "summary.json").read_text())["succeeded"] == 2


# ------------------------------------------------------------------ point 16: items changed by process

MUTATES_ITS_ITEM = """
from batchframe import Service, Source

class Items(Source[dict]):
    def __iter__(self):
        return iter([{"n": n, "tags": []} for n in range(3)])

class Work(Service[dict]):
    exceptions_to_retry_for = {ValueError}

    {definition} process(self, item):
        if "touched" in item or item["tags"]:
            raise RuntimeError(f"got the item as its last attempt left it: {item!r}")
        item["touched"] = True
        item["tags"].append("seen")
        if item["n"] == 1:
            raise ValueError("retry me")
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("backend", "definition"),
    [
        ("asyncio", "async def"),
        ("asyncio", "def"),
        ("threads", "async def"),
        ("threads", "def"),
        ("processes", "def"),
        ("dask", "def"),
    ],
)
def test_an_item_changed_by_process_is_retried_and_recorded_as_read(
    tmp_path: Path, backend: str, definition: str
) -> None:
    job = MUTATES_ITS_ITEM.replace("{definition}", definition)
    code, stderr, run_dir = _exec(tmp_path, job, f"executor={backend}", timeout=150)
    assert code == 3, stderr
    assert run_dir is not None
    records = read_jsonl(run_dir / "failed.jsonl")
    assert [(r["item"], r["error_type"], r["attempts"]) for r in records] == [({"n": 1, "tags": []}, "ValueError", 4)]


def test_as_read_copies_only_what_can_change() -> None:
    import threading

    from batchframe.backends.local import as_read

    for value in (3, "text", b"raw", None, 2.5, Path("a/b"), (1, "x"), frozenset({1, 2})):
        assert as_read(value) is value
    nested = {"a": [1, {"b": [2]}], "t": ([],)}
    copied = as_read(nested)
    assert copied == nested and copied is not nested and copied["a"][1] is not nested["a"][1]
    assert copied["t"][0] is not nested["t"][0]  # a tuple holding a list is copied too
    with_lambda = {"f": lambda: 1, "l": [1]}  # pickle refuses it: deepcopy
    assert as_read(with_lambda)["l"] is not with_lambda["l"]
    lock = threading.Lock()
    assert as_read(lock) is lock  # cannot be copied: given as itself
