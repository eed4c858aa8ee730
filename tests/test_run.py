from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from helpers import SIMPLE_PROJECT, only_run_dir, read_jsonl

from batchframe import ParamError, RunError, UsageError
from batchframe.run.commands import run_project
from batchframe.runfolder.folder import create_run_dir

FAILING_PROJECT = """
import logging
from batchframe import BatchframeParam, Service, Source

RESULTS = {}

class Things(Source[object]):
    def __init__(self, count: BatchframeParam[int] = 6, persist_raises: BatchframeParam[bool] = False):
        self.items = [{"n": i} if i % 2 else object() for i in range(count)]
        self.persist_raises = persist_raises

    def __iter__(self):
        yield from self.items

    def persist_failed(self, failed):
        RESULTS["persisted"] = failed
        if self.persist_raises:
            raise RuntimeError("database is down")

class Picky(Service[object]):
    def __init__(self, finish_raises: BatchframeParam[bool] = False):
        self.finish_raises = finish_raises
        self.finished = 0

    def process(self, item):
        if isinstance(item, dict) and item["n"] == 3:
            raise ValueError("three is not allowed")
        if not isinstance(item, dict):
            raise TypeError("not a dict")

    def finish(self):
        self.finished += 1
        RESULTS["finished"] = self.finished
        if self.finish_raises:
            raise OSError("could not flush")
"""


def test_a_run_writes_logs_summary_and_failures(make_project, tmp_path: Path) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT})
    result = run_project(root / "job.py", params=["count=4"], output_dir=tmp_path / "out")
    assert result.exit_code == 0
    run_dir = only_run_dir(tmp_path / "out")
    assert result.run_dir == run_dir
    logs = (run_dir / "logs.txt").read_text()
    assert "user.code: processing 3" in logs  # the user's own logging.info reaches logs.txt
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["succeeded"] == 4 and summary["failed"] == 0 and summary["exit_code"] == 0
    assert not (run_dir / "failed.jsonl").exists()


def test_failed_items_reach_failed_jsonl_and_persist_failed(make_project, tmp_path: Path) -> None:
    root = make_project({"job.py": FAILING_PROJECT})
    result = run_project(root / "job.py", output_dir=tmp_path / "out")
    assert result.exit_code == 3
    records = read_jsonl(result.run_dir / "failed.jsonl")
    assert len(records) == 4  # objects at 0, 2, 4 and {"n": 3}
    by_index = {r["index"]: r for r in records}
    assert by_index[3]["item"] == {"n": 3}
    assert by_index[3]["error_type"] == "ValueError"
    assert by_index[3]["message"] == "three is not allowed"
    assert by_index[3]["attempts"] == 1
    assert "raise ValueError" in by_index[3]["traceback"]
    assert "job.py" in by_index[3]["traceback"]
    assert "batchframe" not in by_index[3]["traceback"].replace(str(root), "")  # the user's frames, not ours
    assert by_index[0]["item"] is None and by_index[0]["item_repr"].startswith("<object object")
    module = __import__("sys").modules[result_module_name(root)]
    assert len(module.RESULTS["persisted"]) == 4
    assert module.RESULTS["finished"] == 1
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["failures_by_type"] == {"TypeError": 3, "ValueError": 1}


def result_module_name(root: Path) -> str:
    import sys

    return next(name for name, m in sys.modules.items() if getattr(m, "__file__", None) == str(root / "job.py"))


def test_persist_failed_raising_loses_nothing(make_project, tmp_path: Path) -> None:
    root = make_project({"job.py": FAILING_PROJECT})
    result = run_project(root / "job.py", params=["persist_raises=true"], output_dir=tmp_path / "out")
    assert result.exit_code == 1
    assert len(read_jsonl(result.run_dir / "failed.jsonl")) == 4
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert "Things.persist_failed() raised RuntimeError: database is down" in summary["problems"]
    assert "database is down" in (result.run_dir / "logs.txt").read_text()


def test_finish_raising_is_reported(make_project, tmp_path: Path) -> None:
    root = make_project({"job.py": FAILING_PROJECT})
    result = run_project(root / "job.py", params=["finish_raises=yes"], output_dir=tmp_path / "out")
    assert result.exit_code == 1
    assert len(read_jsonl(result.run_dir / "failed.jsonl")) == 4
    assert "finish() raised OSError: could not flush" in (result.run_dir / "logs.txt").read_text()


def test_a_service_whose_init_raises_is_a_run_error(make_project, tmp_path: Path) -> None:
    broken = SIMPLE_PROJECT.replace("self.source = source", "raise RuntimeError('no credentials')")
    root = make_project({"job.py": broken})
    with pytest.raises(RunError) as info:
        run_project(root / "job.py", output_dir=tmp_path / "out")
    assert info.value.exit_code == 1
    assert "no credentials" in str(info.value)
    assert "job.py" in (info.value.user_traceback or "")


def test_a_missing_required_param_lists_all_of_them(make_project, tmp_path: Path) -> None:
    project = SIMPLE_PROJECT.replace(
        "count: BatchframeParam[int] = 5", "count: BatchframeParam[int], tag: BatchframeParam[str]"
    )
    root = make_project({"job.py": project})
    with pytest.raises(ParamError) as info:
        run_project(root / "job.py", output_dir=tmp_path / "out")
    assert "count (int" in str(info.value) and "tag (str" in str(info.value)
    assert not (tmp_path / "out").exists()  # nothing ran, no run folder


def test_a_usage_error_while_wiring_leaves_no_run_folder(make_project, tmp_path: Path) -> None:
    project = SIMPLE_PROJECT.replace(
        "def __init__(self, source: Source[int]):", "def __init__(self, source: Source[int], db):"
    )
    root = make_project({"job.py": project})
    with pytest.raises(UsageError, match="needs db"):
        run_project(root / "job.py", output_dir=tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_run_folders_are_unique_within_one_second(tmp_path: Path) -> None:
    started = dt.datetime(2026, 11, 25, 10, 30, 0)
    first = create_run_dir(tmp_path, started)
    second = create_run_dir(tmp_path, started)
    assert first.name == "2026-11-25T10-30-00"
    assert second.name == "2026-11-25T10-30-00-2"


def test_two_runs_in_one_process(make_project, tmp_path: Path) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT})
    first = run_project(root / "job.py", params=["count=2"], output_dir=tmp_path / "out")
    second = run_project(root / "job.py", params=["count=3"], output_dir=tmp_path / "out")
    assert (first.stats.succeeded, second.stats.succeeded) == (2, 3)
    assert first.run_dir != second.run_dir
    # the second run's log has only its own records
    assert "processing 2" in (second.run_dir / "logs.txt").read_text()
    assert "processing 2" not in (first.run_dir / "logs.txt").read_text()


def test_a_source_whose_next_raises_midway_exits_1_and_keeps_what_was_done(make_project, tmp_path: Path) -> None:
    broken = SIMPLE_PROJECT.replace(
        "return next(self.it)",
        "value = next(self.it)\n        if value == 3:\n            raise IOError('feed broke')\n        return value",
    )
    root = make_project({"job.py": broken})
    result = run_project(
        root / "job.py", params=["count=10", "concurrency=1", "queue_size=1"], output_dir=tmp_path / "out"
    )
    assert result.exit_code == 1
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["fatal_error"] == "OSError: feed broke"
    assert summary["this_part"]["read"] == 3
    assert summary["succeeded"] + summary["not_processed"] == 3
    assert "feed broke" in (result.run_dir / "logs.txt").read_text()


def test_every_item_failing_exits_3_with_all_in_failed_jsonl(make_project, tmp_path: Path) -> None:
    failing = SIMPLE_PROJECT.replace("self.seen.append(item)", "raise PermissionError(f'no access to {item}')")
    root = make_project({"job.py": failing})
    result = run_project(root / "job.py", params=["count=25"], output_dir=tmp_path / "out")
    assert result.exit_code == 3
    records = read_jsonl(result.run_dir / "failed.jsonl")
    assert sorted(r["item"] for r in records) == list(range(25))
    assert {r["error_type"] for r in records} == {"PermissionError"}
    assert result.stats.failed == 25


def test_off_a_terminal_progress_is_a_periodic_log_line(make_project, tmp_path: Path) -> None:
    slow = SIMPLE_PROJECT.replace("self.seen.append(item)", "import asyncio; await asyncio.sleep(0.01)")
    root = make_project({"job.py": slow})
    result = run_project(
        root / "job.py", params=["count=20", "concurrency=1"], output_dir=tmp_path / "out", progress_interval_s=0.02
    )
    assert result.exit_code == 0
    assert "Progress: " in (result.run_dir / "logs.txt").read_text()
    assert "/20 done" in (result.run_dir / "logs.txt").read_text()
