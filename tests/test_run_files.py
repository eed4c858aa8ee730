"""Run folders: owner-only files never written through a symlink, records valid for any item, read back safely."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import batchframe_cli, only_run_dir, read_jsonl

from batchframe.runfolder.failures import FailedItem

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


# ----------------------------------------- summary.json cut short or edited by hand: runs still lists every run

CORRUPTIONS: dict[str, Callable[[dict[str, Any]], bytes | None]] = {
    "truncated": lambda report: json.dumps(report).encode()[:60],
    "not-an-object": lambda report: b"[1, 2, 3]",
    "not-utf-8": lambda report: b'{"outcome": "\xff\xfe"}',
    "wrong-types": lambda report: json.dumps(
        {
            **report,
            "succeeded": "two",
            "outcome": ["completed"],
            "exit_code": "3",
            "failures_by_type": [1, 2],
            "run": {**report["run"], "started_at": 5, "ended_at": "yesterday", "limit": "x", "params": "p"},
        }
    ).encode(),
    "run-not-a-dict": lambda report: json.dumps({**report, "run": [1], "total": True}).encode(),
    "a-folder": lambda report: None,  # summary.json is a folder: it cannot be read at all
}
"""What a hand-edited summary.json can be; each makes the run folder ``2026-01-0NT10-00-00`` in ``corrupt_runs``."""


def corrupt_runs(make_project: Callable[..., Path], output_dir: Path) -> tuple[str, dict[str, str]]:
    """Run a job twice (without and with a journal), and copy the first run once per corruption of its summary.json.

    Returns:
        The name of the run with a journal (its summary.json is cut short too), and corruption -> run name.
    """
    import shutil

    project = make_project({"job.py": JOB})
    for journal in ("false", "true"):
        done = batchframe_cli("exec", "job.py", "-d", output_dir, "-p", f"journal={journal}", cwd=project)
        assert done.returncode == 3, done.stderr
    plain, journaled = sorted(p for p in output_dir.iterdir() if p.is_dir())
    report = json.loads((plain / "summary.json").read_text())
    names = {}
    for number, (kind, corrupt) in enumerate(CORRUPTIONS.items(), start=1):
        folder = output_dir / f"2026-01-0{number}T10-00-00"
        shutil.copytree(plain, folder)
        data = corrupt(report)
        if data is None:
            (folder / "summary.json").unlink()
            (folder / "summary.json").mkdir()
        else:
            (folder / "summary.json").write_bytes(data)
        names[kind] = folder.name
    summary = journaled / "summary.json"
    summary.write_bytes(summary.read_bytes()[:40])
    return journaled.name, names


@pytest.mark.timeout(120)
def test_runs_lists_every_run_whatever_their_summary_json_holds(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    output_dir = tmp_path / "out"
    journaled, names = corrupt_runs(make_project, output_dir)
    listed = batchframe_cli("runs", "-d", output_dir, cwd=tmp_path, COLUMNS="250")
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stdout + listed.stderr
    for name in [journaled, *names.values()]:
        assert name in listed.stdout
    rows = {line.split("│")[1].strip(): line for line in listed.stdout.splitlines() if line.count("│") > 3}
    assert rows[journaled].split("│")[-2].strip() == "3"  # the journal knows: exit 3
    assert f"{journaled}: summary.json unreadable (not valid JSON: cut short or edited); shown from its journal." in (
        listed.stdout
    )
    assert "unreadable (a JSON list, not an object)" in listed.stdout
    assert "summary.json unreadable in part (wrong type for run, total)" in listed.stdout
    cells = [cell.strip() for cell in rows[names["wrong-types"]].split("│")[1:-1]]
    assert cells[-4:] == ["?", "3", "unknown", "unknown"]  # done and exit were of the wrong type; failed was right
    noted = re.search(
        rf"{names['wrong-types']}: summary.json unreadable in part \(wrong type for ([^)]*)\)", listed.stdout
    )
    assert noted and set(noted[1].split(", ")) == {
        "started_at", "limit", "params", "outcome", "exit_code", "succeeded", "failures_by_type"
    }  # fmt: skip
    assert listed.stdout.count("summary.json unreadable") == len(names) + 1


@pytest.mark.timeout(120)
def test_runs_run_dir_of_a_broken_summary_says_so_in_one_paragraph(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    output_dir = tmp_path / "out"
    journaled, names = corrupt_runs(make_project, output_dir)
    shown = batchframe_cli("runs", output_dir / journaled, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"exit code\s*│\s*3\s", shown.stdout)  # the journal's view
    assert (
        "Note: summary.json unreadable (not valid JSON: cut short or edited); shown from its journal." in shown.stdout
    )
    for kind in ("truncated", "not-an-object", "not-utf-8", "a-folder"):
        refused = batchframe_cli("runs", output_dir / names[kind], cwd=tmp_path)
        assert refused.returncode == 2, (kind, refused.stdout, refused.stderr)
        message = " ".join(refused.stderr.split())
        assert "cannot be shown: summary.json unreadable (" in message, kind
        assert "it has no journal.sqlite (it ran with -p journal=false)" in message
        assert "Traceback" not in message and refused.stdout == ""
    for kind in ("wrong-types", "run-not-a-dict"):
        partial = batchframe_cli("runs", output_dir / names[kind], cwd=tmp_path)
        assert partial.returncode == 0, (kind, partial.stderr)
        assert "Note: summary.json unreadable in part (wrong type for" in partial.stdout
        assert "Traceback" not in partial.stdout + partial.stderr


class AttributesRaise(Exception):
    """An exception whose attributes batchframe looks at all raise when read."""

    @property
    def error_type(self) -> str:
        raise RuntimeError("error_type is broken")

    @property
    def remote_traceback(self) -> str:
        raise RuntimeError("remote_traceback is broken")

    @property
    def retryable(self) -> bool:
        raise RuntimeError("retryable is broken")


def test_an_exception_whose_attributes_raise_is_recorded() -> None:
    try:
        raise AttributesRaise("nasty")
    except AttributesRaise as exc:
        record = FailedItem.from_exception(0, "item", exc, 1)
    assert record.error_type == "AttributesRaise" and record.message == "nasty"
    assert "AttributesRaise: nasty" in record.traceback
    assert json.loads(record.to_json())["error_type"] == "AttributesRaise"


NASTY_EXCEPTION = """
from batchframe import Service, Source

class Nasty(Exception):
    @property
    def error_type(self):
        raise RuntimeError("error_type is broken")
    @property
    def remote_traceback(self):
        raise RuntimeError("remote_traceback is broken")
    @property
    def retryable(self):
        raise RuntimeError("retryable is broken")

class Items(Source[int]):
    def __len__(self):
        return 2
    def __iter__(self):
        return iter(range(2))

class Api(Service[int]):
    async def process(self, item):
        if item == 1:
            raise Nasty("nasty")
"""


@pytest.mark.timeout(60)
def test_an_exception_whose_attributes_raise_fails_its_item_not_the_run(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    project = make_project({"job.py": NASTY_EXCEPTION})
    result = batchframe_cli("exec", "job.py", "-d", tmp_path / "out", cwd=project)
    assert result.returncode == 3, result.stdout + result.stderr
    [record] = read_jsonl(only_run_dir(tmp_path / "out") / "failed.jsonl")
    assert (record["index"], record["error_type"], record["message"], record["attempts"]) == (1, "Nasty", "nasty", 1)


@pytest.mark.timeout(60)
def test_a_journal_edited_by_hand_is_a_line_under_the_table_not_a_traceback(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    import sqlite3

    _, run_dir = _run(make_project, tmp_path)
    with sqlite3.connect(run_dir / "journal.sqlite") as db:
        db.execute("UPDATE meta SET value = '{' WHERE key = 'outcome'")
    db.close()
    listed = batchframe_cli("runs", "-d", tmp_path / "out", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert f"{run_dir.name}: {run_dir / 'journal.sqlite'} cannot be read (JSONDecodeError" in " ".join(
        listed.stdout.split()
    )
    shown = batchframe_cli("runs", run_dir, cwd=tmp_path)
    assert shown.returncode == 2 and "cannot be read" in shown.stderr and "Traceback" not in shown.stderr
