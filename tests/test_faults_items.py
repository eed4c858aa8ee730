"""Issue 22 through the real CLI: Sources that misuse async, items that come back, limits, lost records, config types.

Each run has a hard timeout: a hang fails the test instead of blocking the suite.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import batchframe_cli, build_file_tree, only_run_dir

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
