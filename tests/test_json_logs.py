"""``--log-format json``: every line a run prints, and every line of logs.txt, is one JSON object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import batchframe_cli, build_file_tree, only_run_dir

JOB = """
import logging

from batchframe import Service, Source

log = logging.getLogger("my_job")


class Rows(Source[int]):
    def __iter__(self):
        return iter(range(30))

    def __len__(self):
        return 30


class Push(Service[int]):
    def process(self, row):
        log.info("pushing row %d", row)
        if row % 10 == 4:
            raise ValueError(f"row {row} is bad\\nsecond line")
"""


def _objects(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # raises if any line is not one JSON object


@pytest.mark.timeout(60)
@pytest.mark.parametrize("terminal_width", ["80", "200"])
def test_every_line_of_a_run_is_a_json_object(tmp_path: Path, terminal_width: str) -> None:
    build_file_tree(tmp_path, {"job.py": JOB})
    result = batchframe_cli("exec", "job.py", "-d", "out", "--log-format", "json", cwd=tmp_path, COLUMNS=terminal_width)
    assert result.returncode == 3
    printed = _objects(result.stderr)
    run_dir = only_run_dir(tmp_path / "out")
    assert {line["run_id"] for line in printed} == {run_dir.name}
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in printed)
    failures = [line for line in printed if line["logger"] == "batchframe.failures" and "item" in line]
    assert [(line["item"], line["attempt"]) for line in failures] == [(4, 1), (14, 1), (24, 1)]
    assert failures[0]["message"] == "Item 4 failed after 1 attempt(s): ValueError: row 4 is bad"
    end = printed[-1]
    assert end["message"].startswith("Run ended: completed (exit code 3)")
    assert end["summary"]["succeeded"] == 27 and end["summary"]["failed"] == 3
    assert end["summary"]["run_dir"].endswith(run_dir.name)
    logged = _objects((run_dir / "logs.txt").read_text())
    assert any(line["logger"] == "my_job" and line["message"] == "pushing row 7" for line in logged)
    assert logged[-1]["summary"]["exit_code"] == 3
    assert result.stdout == ""


def test_an_error_before_the_run_is_a_json_object_too(tmp_path: Path) -> None:
    result = batchframe_cli("exec", "missing.py", "--log-format", "json", cwd=tmp_path)
    assert result.returncode == 2
    (error,) = _objects(result.stderr)
    assert error["level"] == "ERROR" and error["exit_code"] == 2
    assert "missing.py" in error["message"] and "does not exist" in error["message"]


def test_an_unknown_log_format_is_a_usage_error(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": JOB})
    result = batchframe_cli("exec", "job.py", "--log-format", "xml", cwd=tmp_path)
    assert result.returncode == 2
    assert "Unknown log format 'xml'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "batchframe_outputs").exists() or not any((tmp_path / "batchframe_outputs").iterdir())


@pytest.mark.timeout(60)
def test_resume_and_retry_take_the_json_format(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": JOB})
    assert batchframe_cli("exec", "job.py", "-d", "out", cwd=tmp_path).returncode == 3
    run_dir = only_run_dir(tmp_path / "out")
    retried = batchframe_cli("retry", run_dir, "--log-format", "json", cwd=tmp_path)
    assert retried.returncode == 3
    assert _objects(retried.stderr)[-1]["summary"]["failed"] == 3
    resumed = batchframe_cli("resume", run_dir, "--log-format", "json", cwd=tmp_path)
    assert resumed.returncode == 0  # the run finished: nothing to resume, said as one JSON object
    (said,) = _objects(resumed.stderr)
    assert said["level"] == "INFO" and "finished already" in said["message"]
