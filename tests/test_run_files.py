"""Run folders: owner-only files never written through a symlink, records valid for any item, read back safely."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import batchframe_cli, only_run_dir, read_jsonl

from batchframe.failures import FailedItem

JOB = """
from batchframe import BatchframeParam, Service, Source

class Numbers(Source[int]):
    def __init__(self, count: BatchframeParam[int] = 6) -> None:
        self.count = count
    def __iter__(self):
        return iter(range(self.count))

class Odd(Service[int]):
    async def process(self, item):
        if item % 2:
            raise ValueError(f"{item} is odd")
"""


def _run(make_project: Callable[..., Path], tmp_path: Path) -> tuple[Path, Path]:
    project = make_project({"job.py": JOB})
    done = batchframe_cli("exec", project / "job.py", "-d", tmp_path / "out", cwd=project)
    assert done.returncode == 3, done.stderr
    return project, only_run_dir(tmp_path / "out")


def test_the_run_folder_and_its_records_are_the_owners_alone(make_project: Callable[..., Path], tmp_path: Path) -> None:
    _, run_dir = _run(make_project, tmp_path)
    assert run_dir.stat().st_mode & 0o777 == 0o700
    for name in ("journal.sqlite", "failed.jsonl", "summary.json", "status.json"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o600, name


@pytest.mark.parametrize("command", ["resume", "retry"])
@pytest.mark.parametrize("linked", ["failed.jsonl", "journal.sqlite"])
def test_resume_and_retry_refuse_symlinked_run_files(
    make_project: Callable[..., Path], tmp_path: Path, command: str, linked: str
) -> None:
    project, run_dir = _run(make_project, tmp_path)
    target = tmp_path / f"elsewhere-{linked}"
    (run_dir / linked).rename(target)
    (run_dir / linked).symlink_to(target)
    before = target.read_bytes()
    refused = batchframe_cli(command, run_dir, "--no-input", cwd=project)
    assert refused.returncode == 2, refused.stderr
    assert f"symbolic links ({linked})" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert target.read_bytes() == before  # nothing was written through the link


# ------------------------------------------------------- failed.jsonl: one valid line for any item


class ItemsRaise(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise RuntimeError("items() is broken")


class IterRaises(list):  # type: ignore[type-arg]
    def __iter__(self) -> Iterator[Any]:
        raise RuntimeError("__iter__ is broken")

    def __len__(self) -> int:
        raise RuntimeError("__len__ is broken")


class OddKeys(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        return [([1], "unhashable key"), (object(), "no JSON key")]

    def keys(self) -> Any:
        raise RuntimeError("keys() is broken")


class ReprRaises(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise KeyError("items")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ is broken")


class Weird:
    def __len__(self) -> int:
        raise RuntimeError("__len__ is broken")


@pytest.mark.parametrize(
    "item",
    [ItemsRaise(a=1), IterRaises([1, 2]), OddKeys(x=1), ReprRaises(a=1), Weird(), {"nested": ItemsRaise(b=2)}],
    ids=["items-raises", "iter-raises", "odd-keys", "repr-raises", "len-raises", "nested"],
)
def test_to_json_gives_a_valid_line_whatever_the_items_methods_raise(item: object) -> None:
    record = FailedItem.from_exception(4, item, ValueError("bad"), 2)
    line = json.loads(record.to_json())
    assert (line["index"], line["item"], line["error_type"], line["attempts"]) == (4, None, "ValueError", 2)
    assert isinstance(line["item_repr"], str) and line["item_repr"]


BROKEN_ITEMS = """
from batchframe import Service, Source

class ItemsRaise(dict):
    def items(self):
        raise RuntimeError("items() is broken")

class IterRaises(list):
    def __iter__(self):
        raise RuntimeError("__iter__ is broken")
    def __len__(self):
        raise RuntimeError("__len__ is broken")

class OddKeys(dict):
    def items(self):
        return [([1], "unhashable key"), (object(), "no JSON key")]

class Items(Source[object]):
    def __len__(self):
        return 4
    def __iter__(self):
        return iter([ItemsRaise(a=1), IterRaises([1, 2]), OddKeys(x=1), "fine"])

class Api(Service[object]):
    async def process(self, item):
        if item != "fine":
            raise ValueError("cannot take it")
"""


@pytest.mark.timeout(60)
def test_items_whose_methods_raise_fail_into_failed_jsonl(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project({"job.py": BROKEN_ITEMS})
    result = batchframe_cli("exec", "job.py", "-d", tmp_path / "out", cwd=project)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    records = read_jsonl(only_run_dir(tmp_path / "out") / "failed.jsonl")  # raises on an invalid line
    assert sorted(r["index"] for r in records) == [0, 1, 2]
    assert all(r["error_type"] == "ValueError" and r["message"] == "cannot take it" for r in records)
    assert {r["index"]: r["item_repr"] for r in records}[0] == "{'a': 1}"
