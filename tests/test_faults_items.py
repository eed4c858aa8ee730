"""Issue 22 through the real CLI: Sources that misuse async, items that come back, limits, lost records, config types.

Each run has a hard timeout: a hang fails the test instead of blocking the suite.
"""

from __future__ import annotations

import enum
import json
import os
from pathlib import Path
from typing import Any, Literal, NewType, TypeVar

import pytest
from helpers import batchframe_cli, build_file_tree, only_run_dir, read_jsonl

from batchframe import Secret
from batchframe.project.log_levels import LogLevels


class Color(enum.Enum):
    RED = 1


UserId = NewType("UserId", int)
ItemT = TypeVar("ItemT")

WORK = """
class Work(Service[object]):
    def process(self, item):
        pass
"""

ASYNC_NEXT = (
    """
from batchframe import Service, Source

class Numbers(Source[int]):
    def __init__(self):
        self.n = 0

    async def next(self):
        self.n += 1
        if self.n > 3:
            raise StopIteration
        return self.n
"""
    + WORK
)

ASYNC_ITER = (
    """
from batchframe import Service, Source

class Numbers(Source[int]):
    async def __iter__(self):
        return iter(range(3))
"""
    + WORK
)

ASYNC_GENERATOR_NEXT = (
    """
from batchframe import Service, Source

class Numbers(Source[int]):
    async def next(self):
        yield 1
"""
    + WORK
)

YIELDS_COROUTINES = (
    """
from batchframe import Service, Source

async def fetch(n):
    return n

class Numbers(Source[int]):
    def __iter__(self):
        for n in range(3):
            yield fetch(n)
"""
    + WORK
)

ASYNC_AITER_WITHOUT_YIELD = (
    """
from batchframe import Service, Source

class Numbers(Source[int]):
    async def __aiter__(self):
        return None
"""
    + WORK
)

NEXT_RETURNS_COROUTINES = (
    """
from batchframe import Service, Source

async def fetch(n):
    return n

class Numbers(Source[int]):
    def next(self):
        return fetch(1)
"""
    + WORK
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dry_run", [False, True], ids=["exec", "dry-run"])
@pytest.mark.parametrize(
    ("job", "method"),
    [
        (ASYNC_NEXT, "next() is async def"),
        (ASYNC_ITER, "__iter__() is async def"),
        (ASYNC_GENERATOR_NEXT, "next() is async def"),
        (ASYNC_AITER_WITHOUT_YIELD, "__aiter__() is async def without a yield"),
    ],
    ids=["async-next", "async-iter", "async-generator-next", "async-aiter-coroutine"],
)
def test_a_source_method_written_async_def_is_a_usage_error(
    tmp_path: Path, job: str, method: str, dry_run: bool
) -> None:
    build_file_tree(tmp_path, {"job.py": job})
    result = batchframe_cli(
        "exec", "job.py", "-d", "out", *(["--dry-run"] if dry_run else []), cwd=tmp_path, timeout=30
    )
    assert result.returncode == 2, result.stderr
    assert f"Numbers.{method}" in result.stderr
    assert "async def __aiter__(self)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any((tmp_path / "out").glob("*")), "nothing ran, so no run folder"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dry_run", [False, True], ids=["exec", "dry-run"])
@pytest.mark.parametrize(
    ("job", "method"),
    [(YIELDS_COROUTINES, "__iter__() yielded"), (NEXT_RETURNS_COROUTINES, "next() returned")],
    ids=["iter", "next"],
)
def test_an_awaitable_item_stops_the_run_naming_the_source_method(
    tmp_path: Path, job: str, method: str, dry_run: bool
) -> None:
    build_file_tree(tmp_path, {"job.py": job})
    result = batchframe_cli(
        "exec", "job.py", "-d", "out", *(["--dry-run"] if dry_run else []), cwd=tmp_path, timeout=30
    )
    assert result.returncode == 1, result.stderr
    assert f"Numbers.{method} an awaitable (coroutine)" in result.stderr
    assert "never awaited" not in result.stderr
    if not dry_run:
        report = json.loads((only_run_dir(tmp_path / "out") / "summary.json").read_text())
        assert (report["succeeded"], report["failed"]) == (0, 0)


# ------------------------------------------------------------------ retry: items of the project's classes

ITEM_CLASS = """
from dataclasses import dataclass

@dataclass
class Ticket:
    n: int
"""

RETRY_JOB = """
from pathlib import Path
from batchframe import Service, Source

class Tickets(Source[Ticket]):
    def __iter__(self):
        return (Ticket(n) for n in range(6))

class Work(Service[Ticket]):
    def process(self, item):
        assert isinstance(item, Ticket), type(item)  # the project's own class, not a stand-in
        if item.n % 2 and not Path("fixed").exists():
            raise ValueError(f"ticket {item.n}")
"""


def retried_run(project: Path, path: str) -> tuple[Path, Path]:
    """``exec PATH`` (the odd tickets fail), then ``retry`` once they are fixed: the two run folders."""
    first = batchframe_cli("exec", path, "-d", "out", cwd=project, timeout=60)
    assert first.returncode == 3, first.stderr
    first_dir = only_run_dir(project / "out")
    (project / "fixed").touch()
    retried = batchframe_cli("retry", first_dir, cwd=project, timeout=60)
    assert retried.returncode == 0, retried.stderr
    assert "Traceback" not in retried.stderr
    [retry_dir] = [run for run in (project / "out").iterdir() if run != first_dir]
    return first_dir, retry_dir


@pytest.mark.timeout(120)
def test_retry_brings_back_items_of_a_class_defined_in_a_single_file_project(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": ITEM_CLASS + RETRY_JOB})
    _, retry_dir = retried_run(tmp_path, "job.py")
    assert json.loads((retry_dir / "summary.json").read_text())["succeeded"] == 3


@pytest.mark.timeout(120)
def test_retry_brings_back_items_of_a_class_defined_in_a_package_project(tmp_path: Path) -> None:
    build_file_tree(
        tmp_path,
        {
            "tickets/__init__.py": "",
            "tickets/items.py": ITEM_CLASS,
            "tickets/job.py": "from tickets.items import Ticket\n" + RETRY_JOB,
        },
    )
    _, retry_dir = retried_run(tmp_path, "tickets")
    assert json.loads((retry_dir / "summary.json").read_text())["succeeded"] == 3


@pytest.mark.timeout(120)
def test_retry_of_items_whose_class_is_gone_says_so(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": ITEM_CLASS + RETRY_JOB})
    assert batchframe_cli("exec", "job.py", "-d", "out", cwd=tmp_path, timeout=60).returncode == 3
    first_dir = only_run_dir(tmp_path / "out")
    (tmp_path / "job.py").write_text((ITEM_CLASS + RETRY_JOB).replace("Ticket", "Card"))
    retried = batchframe_cli("retry", first_dir, cwd=tmp_path, timeout=60)
    assert retried.returncode == 2, retried.stderr
    assert "cannot be loaded: AttributeError" in retried.stderr and "Ticket" in retried.stderr
    assert "Traceback" not in retried.stderr
    assert [run.name for run in (tmp_path / "out").iterdir()] == [first_dir.name]  # no run folder for it


SLOW_RETRY_JOB = """
import time
from pathlib import Path
from batchframe import Service, Source

class Numbers(Source[int]):
    def __iter__(self):
        return iter(range(60))

class Work(Service[int]):
    def process(self, item):
        if not Path("fixed").exists():
            raise ValueError(f"item {item}")
        while item >= 10 and not Path("go").exists():  # the retry run is killed while these wait
            time.sleep(0.01)
        with open("processed.txt", "a") as out:
            out.write(f"{item}\\n")
"""


@pytest.mark.timeout(120)
def test_a_killed_retry_run_resumes_after_the_run_it_retries_is_deleted(tmp_path: Path) -> None:
    import shutil
    import signal
    import subprocess
    import sys
    import time

    build_file_tree(tmp_path, {"job.py": SLOW_RETRY_JOB})
    assert batchframe_cli("exec", "job.py", "-d", "out", cwd=tmp_path, timeout=60).returncode == 3
    first_dir = only_run_dir(tmp_path / "out")
    (tmp_path / "fixed").touch()
    processed = tmp_path / "processed.txt"
    retry = subprocess.Popen(
        [str(Path(sys.executable).parent / "batchframe"), "retry", str(first_dir)],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not processed.exists() or len(processed.read_text().split()) < 10:
            assert retry.poll() is None and time.monotonic() < deadline, "the retry run made no progress"
            time.sleep(0.005)
        retry.send_signal(signal.SIGKILL)
        retry.wait(timeout=30)
    finally:
        if retry.poll() is None:
            retry.kill()
            retry.wait()
    [retry_dir] = [run for run in (tmp_path / "out").iterdir() if run != first_dir]
    shutil.rmtree(first_dir)
    (tmp_path / "go").touch()
    listing = batchframe_cli("runs", retry_dir, cwd=tmp_path, timeout=60)
    assert listing.returncode == 0, listing.stderr
    resumed = batchframe_cli("resume", retry_dir, cwd=tmp_path, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert set(map(int, processed.read_text().split())) == set(range(60))  # every pending item came back
    assert json.loads((retry_dir / "summary.json").read_text())["succeeded"] == 60


# ------------------------------------------------------------- items a worker process cannot rebuild

UNREBUILDABLE_JOB = """
from batchframe import Service, Source

def rebuild(n):
    raise ValueError(f"item {n} cannot be rebuilt here")

class Fragile:
    def __init__(self, n):
        self.n = n

    def __reduce__(self):
        return rebuild, (self.n,)

class Items(Source[object]):
    def __iter__(self):
        return (Fragile(n) if n % 7 == 3 else n for n in range(30))

class Work(Service[object]):
    def process(self, item):
        pass
"""


@pytest.mark.timeout(180)
# Not on ray, to keep the suite in its time: the worker side is _worker.run_batch, as on dask (its case here).
@pytest.mark.parametrize("backend", ["processes", "dask"])
def test_an_item_a_worker_cannot_unpickle_fails_alone_with_its_own_error(tmp_path: Path, backend: str) -> None:
    build_file_tree(tmp_path, {"job.py": UNREBUILDABLE_JOB})
    result = batchframe_cli(
        "exec", "job.py", "-p", f"executor={backend}", "-p", "concurrency=2", "-d", "out", cwd=tmp_path, timeout=150
    )
    assert result.returncode == 3, result.stderr
    run_dir = only_run_dir(tmp_path / "out")
    records = {record["index"]: record for record in read_jsonl(run_dir / "failed.jsonl")}
    assert sorted(records) == [3, 10, 17, 24]
    for index, record in records.items():
        assert record["error_type"] == "ValueError", record
        assert f"item {index} cannot be rebuilt here" in record["message"], record
    assert json.loads((run_dir / "summary.json").read_text())["succeeded"] == 26


class _Unrebuildable:
    def __init__(self, n: int) -> None:
        self.n = n

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return _refuse, (self.n,)


def _refuse(n: int) -> None:
    raise ValueError(f"no {n}")


def test_items_pickled_one_by_one_come_back_one_by_one_around_those_that_cannot() -> None:
    from batchframe.backends._pickling import dumps, dumps_each, loads_each

    big = "x" * 300_000  # more than one pickle frame
    items: list[object] = [1, _Unrebuildable(1), big, {"a": [big]}, _Unrebuildable(2), _Unrebuildable(3), (2, None)]
    loaded = list(loads_each(dumps_each([dumps(item) for item in items])))
    assert [item for item, error in loaded if error is None] == [1, big, {"a": [big]}, (2, None)]
    assert [str(error) for _, error in loaded if error is not None] == ["no 1", "no 2", "no 3"]
    assert list(loads_each(dumps_each([]))) == []


# ----------------------------------------------------------------------------- --limit and the unread rest


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dry_run", [False, True], ids=["exec", "dry-run"])
def test_a_limit_too_large_for_the_journal_is_a_usage_error_before_anything_is_created(
    tmp_path: Path, dry_run: bool
) -> None:
    build_file_tree(tmp_path, {"job.py": YIELDS_COROUTINES.replace("yield fetch(n)", "yield n")})
    huge = "99999999999999999999999999999"
    result = batchframe_cli(
        "exec", "job.py", "--limit", huge, "-d", "out", *(["--dry-run"] if dry_run else []), cwd=tmp_path, timeout=30
    )
    assert result.returncode == 2, result.stderr
    assert f"--limit {huge} is out of range" in result.stderr and "9,223,372,036,854,775,807" in result.stderr
    assert not (tmp_path / "out").exists()
    largest = batchframe_cli("exec", "job.py", "--limit", str(2**63 - 1), "-d", "out", cwd=tmp_path, timeout=30)
    assert largest.returncode == 0, largest.stderr


STOPPED_AT_THE_END = """
import asyncio
from pathlib import Path
from batchframe import Service, Source

class Numbers(Source[int]):
    def __iter__(self):
        yield from range(5)

class Work(Service[int]):
    async def process(self, item):
        Path(f"started-{item}").touch()
        await asyncio.sleep(0.3)
"""


@pytest.mark.timeout(60)
def test_a_generator_read_to_its_end_leaves_nothing_unread_when_the_run_is_stopped(tmp_path: Path) -> None:
    import signal

    from helpers import signal_when_ready

    build_file_tree(tmp_path, {"job.py": STOPPED_AT_THE_END})
    code, _, stderr = signal_when_ready(
        "exec",
        "job.py",
        "-d",
        "out",
        cwd=tmp_path,
        ready=lambda: all((tmp_path / f"started-{n}").exists() for n in range(5)),
        signum=signal.SIGTERM,
    )
    assert code == 143, stderr
    assert "not read" not in stderr
    report = json.loads((only_run_dir(tmp_path / "out") / "summary.json").read_text())
    assert report["unread"] == 0 and report["warnings"] == []


# ---------------------------------------------------------------------- records deleted under a run

HALF_WAITS = """
import asyncio
from pathlib import Path
from batchframe import Service, Source

class Numbers(Source[int]):
    def __len__(self):
        return 10

    def __iter__(self):
        yield from range(10)

class Work(Service[int]):
    async def process(self, item):
        while item >= 5 and not Path("go").exists():  # the test deletes a record file meanwhile
            await asyncio.sleep(0.01)
        raise ValueError(f"item {item}")
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("deleted", ["failed.jsonl", "journal.sqlite"])
def test_a_record_file_deleted_during_the_run_is_reported_and_fails_the_run(tmp_path: Path, deleted: str) -> None:
    import subprocess
    import sys
    import time

    build_file_tree(tmp_path, {"job.py": HALF_WAITS})
    run = subprocess.Popen(
        [str(Path(sys.executable).parent / "batchframe"), "exec", "job.py", "-d", "out"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while not list((tmp_path / "out").glob("*/failed.jsonl")):  # the first failures are written
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.005)
        run_dir = only_run_dir(tmp_path / "out")
        (run_dir / deleted).unlink()
        (tmp_path / "go").touch()
        _, stderr = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 1, stderr
    assert f"{deleted} was deleted" in " ".join(stderr.split())  # the console says it (lines may wrap)
    report = json.loads((run_dir / "summary.json").read_text())
    assert report["exit_code"] == 1
    assert any(f"{deleted} was deleted" in problem for problem in report["problems"])


@pytest.mark.timeout(60)
def test_a_run_whose_records_are_intact_reports_no_loss(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": HALF_WAITS.replace("item >= 5", "False")})
    result = batchframe_cli("exec", "job.py", "-d", "out", cwd=tmp_path, timeout=30)
    assert result.returncode == 3, result.stderr
    assert json.loads((only_run_dir(tmp_path / "out") / "summary.json").read_text())["problems"] == []


# ------------------------------------------------------------------------- config values of the wrong type

CONFIG_JOB = """
from batchframe import Service, Source

class Numbers(Source[int]):
    def __iter__(self):
        return iter(range(3))

class Work(Service[int]):
    def process(self, item):
        pass
"""


def config_module(body: str, base: str = "Configuration") -> str:
    header = "from dataclasses import dataclass\nfrom pathlib import Path\n"
    header += "from batchframe import BatchframeParam, Configuration\n\n"
    return header + f"@dataclass\nclass Prod({base}):\n" + "".join(f"    {line}\n" for line in body.splitlines())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dry_run", [False, True], ids=["exec", "dry-run"])
@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("journal = 'false'", "bool"),
        ("max_retries = '2'", "int"),
        ("item_timeout_sec = '30'", "float | None"),
        ("retry_delays_sec = '1,2'", "list[float] | None"),
        ("concurrency = '4'", "int"),
        ("queue_size = 2.5", "int | None"),
        ("retry_backoff_sec = '1'", "float"),
        ("max_per_second = '5'", "float | None"),
        ("retry_delays_sec = [1, 'x']", "list[float] | None"),
        ("max_retries = True", "int"),
        ("max_retries = None", "int"),
        ("executor = 'thread'", "one of 'asyncio'"),
        ("out: BatchframeParam[Path] = 'data'", "Path"),
    ],
)
def test_a_config_class_value_of_the_wrong_type_is_a_config_error(
    tmp_path: Path, assignment: str, expected: str, dry_run: bool
) -> None:
    build_file_tree(tmp_path, {"job.py": CONFIG_JOB, "config/prod.py": config_module(assignment)})
    args = ["exec", "job.py", "-c", "prod", "-d", "out", *(["--dry-run"] if dry_run else [])]
    result = batchframe_cli(*args, cwd=tmp_path, timeout=30)
    assert result.returncode == 2, result.stderr
    name, _, value = assignment.partition(" = ")
    field = name.split(":")[0]
    message = " ".join(result.stderr.split())
    assert "Config error: The configuration Prod sets 1 field to a value of the wrong type" in message
    assert f"Prod.{field} = {value}" in message and f"expected {expected}" in message, message
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(60)
def test_a_wrong_value_set_by_a_base_config_class_names_that_class(tmp_path: Path) -> None:
    base = config_module('max_retries = "2"').replace("class Prod(", "class Base(")
    build_file_tree(tmp_path, {"job.py": CONFIG_JOB, "config/prod.py": base + config_module("concurrency = 2", "Base")})
    result = batchframe_cli("exec", "job.py", "-c", "prod", "--dry-run", cwd=tmp_path, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "The configuration Prod sets 1 field" in result.stderr and "Base.max_retries = '2'" in result.stderr


@pytest.mark.timeout(60)
def test_config_class_values_of_their_type_and_its_documented_forms_run(tmp_path: Path) -> None:
    body = "\n".join(
        [
            "retry_backoff_sec = 1",  # an int is a float
            "retry_delays_sec = [1, 2.5]",
            "journal = False",
            "queue_size = None",
            "log_levels = 'httpx:WARNING'",  # documented: text, parsed later
            "out: BatchframeParam[Path] = Path('data')",
            "region: BatchframeParam[str] = None",  # the user's own field: None is "not set" (implicit Optional)
        ]
    )
    build_file_tree(tmp_path, {"job.py": CONFIG_JOB, "config/prod.py": config_module(body)})
    result = batchframe_cli("exec", "job.py", "-c", "prod", "-d", "out", cwd=tmp_path, timeout=30)
    assert result.returncode == 0, result.stderr
    overridden = batchframe_cli(
        "exec", "job.py", "-c", "prod", "-p", "journal=true", "--dry-run", cwd=tmp_path, timeout=30
    )
    assert overridden.returncode == 0, overridden.stderr


@pytest.mark.parametrize(
    ("annotation", "good", "bad"),
    [
        ("int", [0, 2**70], [True, 1.0, "1"]),
        ("float", [1, 1.5, float("inf")], [False, "1.5", None]),
        ("bool", [True, False], ["false", 0]),
        ("str | None", ["x", None], [b"x", 1]),
        ("list[float]", [[], [1, 2.5]], [(1.0,), ["1"], "1,2"]),
        ("tuple[int, ...]", [(), (1, 2)], [[1], (1, "2")]),
        ("tuple[int, str]", [(1, "a")], [(1, 2), (1,)]),
        ("dict[str, int]", [{}, {"a": 1}], [{"a": "1"}, {1: 1}]),
        ("Literal['a', 1]", ["a", 1], ["b", True, 1.0]),
        ("Color", [Color.RED], ["RED", 1]),
        ("Path", [Path("x")], ["x"]),
        ("Secret", [Secret("s")], ["s"]),
        ("UserId", [3], ["3"]),
        ("ItemT", [object(), "anything"], []),
        ("Any", [None, 1], []),
        ("LogLevels | None", [LogLevels("httpx:INFO"), "httpx:INFO", {"httpx": 20}, None], [20]),
    ],
)
def test_value_matches_its_annotation(annotation: str, good: list[object], bad: list[object]) -> None:
    from batchframe.project.config_values import value_matches

    hint = eval(annotation, {**globals(), "Literal": Literal, "Any": Any})  # the test table's type texts
    assert all(value_matches(hint, value) for value in good), annotation
    assert not any(value_matches(hint, value) for value in bad), annotation
