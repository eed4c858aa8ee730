"""What a run shows of user data never drives the terminal: control characters are written out as text."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import pexpect
import pytest
from helpers import batchframe_cli, only_run_dir, read_jsonl

CONTROL_JOB = r"""
import logging
from batchframe import BatchframeParam, Service, Source

Clear = type("Clear\x1b[2J", (Exception,), {})   # an exception class whose name clears the screen

class Numbers(Source[str]):
    def __iter__(self):
        return iter(["plain", "reset\x1bc", "bell\x07"])

class Work(Service[str]):
    def process(self, item):
        logging.getLogger("job").warning("got %s \x1b[31mred\x1b[0m", item)
        if item != "plain":
            raise Clear(f"bad {item}")
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("executor", ["asyncio", "processes"])
def test_control_sequences_in_user_data_never_reach_the_output_raw(make_project: Any, executor: str) -> None:
    project = make_project({"job.py": CONTROL_JOB})
    result = batchframe_cli("exec", "job.py", "-p", f"executor={executor}", cwd=project)
    assert result.returncode == 3, result.stderr
    run_dir = only_run_dir(project / "batchframe_outputs")
    shown = batchframe_cli("runs", run_dir, cwd=project).stdout + batchframe_cli("runs", cwd=project).stdout
    logs = (run_dir / "logs.txt").read_text()
    for output in (result.stderr, result.stdout, shown, logs):
        assert "\x1b" not in output and "\x07" not in output
    # Written out, not dropped: the job's own log line (made in a worker process too), the failure lines.
    assert "\\x1b[31mred" in result.stderr and "\\x1b[31mred" in logs
    assert "Clear\\x1b[2J" in result.stderr and "Clear\\x1b[2J" in shown  # the failures by type
    assert "bad reset\\x1bc" in logs
    # failed.jsonl keeps the data as it was (JSON escapes it): it is a record, not output.
    assert {record["item"] for record in read_jsonl(run_dir / "failed.jsonl")} == {"reset\x1bc", "bell\x07"}


@pytest.mark.timeout(90)
def test_control_sequences_on_a_terminal_are_written_out(make_project: Any, tmp_path: Path) -> None:
    project = make_project({"job.py": CONTROL_JOB})
    executable = str(Path(sys.executable).parent / "batchframe")
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "160", "LINES": "40"}
    screens = []
    for args in (["exec", "job.py", "--no-input"], ["runs", "RUN_DIR"]):
        if "RUN_DIR" in args:  # one run in detail: its failures by exception type
            args = ["runs", str(only_run_dir(project / "batchframe_outputs"))]
        child = pexpect.spawn(
            executable, args, cwd=str(project), env=env, encoding="utf-8", timeout=60, dimensions=(40, 160)
        )
        try:
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        screens.append(child.before)
    ran, listed = screens
    # rich colours the screen with ESC sequences of its own; none comes from the data.
    for raw in ("\x1bc", "\x1b[2J", "\x1b[31mred", "\x07"):
        assert raw not in ran and raw not in listed
    ran, listed = (re.sub(r"\x1b\[[0-9;]*m", "", screen) for screen in screens)  # rich's colours off
    assert "\\x1b[31mred" in ran and "Clear\\x1b[2J" in ran and "\\x1bc" in ran
    assert "Clear\\x1b[2J" in listed
