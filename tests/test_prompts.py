"""Prompts for missing parameters: real questionary prompts in a pseudo-terminal, and the off-terminal error."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from helpers import batchframe_cli, build_file_tree
from test_interactive import spawn  # noqa: F401 - the pexpect fixture

from batchframe import BatchframeParam
from batchframe.cli.prompts import _validator
from batchframe.project.params import params_of_class

PROJECT = '''
import enum
from pathlib import Path
from batchframe import BatchframeParam, Service, Source


class Mode(enum.Enum):
    FAST = "fast"
    SAFE = "safe"
    DRY = "dry"


class Numbers(Source[int]):
    """Numbers to process.

    Args:
        count: how many numbers to generate
        mode: how to process them
        tags: labels for the run
    """

    def __init__(
        self,
        count: BatchframeParam[int],
        mode: BatchframeParam[Mode],
        verbose: BatchframeParam[bool],
        tags: BatchframeParam[list[int]],
        limit: BatchframeParam[int] = 3,
    ):
        self.count = count
        print(f"STARTED count={count} mode={mode.name} verbose={verbose} tags={tags} limit={limit}")

    def __iter__(self):
        yield from range(self.count)


class Noop(Service[int]):
    def process(self, item):
        pass
'''

DOWN = "\x1b[B"


def test_prompts_validate_reask_select_and_confirm(spawn, tmp_path: Path) -> None:  # noqa: F811
    build_file_tree(tmp_path, {"job.py": PROJECT})
    child = spawn("exec", "job.py", "-d", "out")
    child.expect(r"count \(int\) - how many numbers to generate")
    child.send("abc\r")
    child.expect("Not a valid int: expected a whole number")
    child.send("\x7f\x7f\x7f7\r")
    child.expect(r"mode \(Mode\) - how to process them")
    child.expect("FAST")
    child.send(DOWN)
    child.send("\r")
    child.expect(r"verbose \(bool\)")
    child.send("y")
    child.expect(r"tags \(list\[int\]\) - labels for the run")
    child.send("1, 2,3\r")
    child.expect(r"STARTED count=7 mode=SAFE verbose=True tags=\[1, 2, 3\] limit=3")
    child.expect("exit code")
    child.expect("0")
    child.wait()
    child.close()
    assert child.exitstatus == 0


def test_values_given_with_p_are_not_asked_for(spawn, tmp_path: Path) -> None:  # noqa: F811
    build_file_tree(tmp_path, {"job.py": PROJECT})
    child = spawn("exec", "job.py", "-p", "count=2", "-p", "mode=DRY", "-p", "tags=5", "-d", "out")
    child.expect(r"verbose \(bool\)")  # the only one missing
    child.send("n")
    child.expect(r"STARTED count=2 mode=DRY verbose=False tags=\[5\] limit=3")
    child.wait()
    child.close()
    assert child.exitstatus == 0


def test_no_input_on_a_terminal_does_not_prompt(spawn, tmp_path: Path) -> None:  # noqa: F811
    build_file_tree(tmp_path, {"job.py": PROJECT})
    child = spawn("exec", "job.py", "--no-input", "-p", "count=2")
    child.expect("Missing required parameters")
    child.wait()
    child.close()
    assert child.exitstatus == 2


def test_off_a_terminal_one_error_lists_every_missing_param(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": PROJECT})
    result = batchframe_cli("exec", "job.py", "-p", "count=2", cwd=tmp_path)
    assert result.returncode == 2
    err = result.stderr
    assert "mode (Mode, Numbers): how to process them" in err
    assert "verbose (bool, Numbers)" in err
    assert "tags (list[int], Numbers): labels for the run" in err
    assert "count (" not in err  # given, so not missing
    assert "batchframe params job.py" in err
    assert "Traceback" not in err


@pytest.mark.timeout(60)
def test_enter_alone_does_not_answer_a_required_bool(spawn, tmp_path: Path) -> None:  # noqa: F811
    build_file_tree(tmp_path, {"job.py": PROJECT})
    child = spawn("exec", "job.py", "-p", "count=2", "-p", "mode=DRY", "-p", "tags=5", "-d", "out")
    child.expect(r"verbose \(bool\)")
    child.send("\r")  # with questionary.confirm, this answered No
    child.expect("type y or n")
    child.send("y")
    child.expect(r"STARTED count=2 mode=DRY verbose=True")
    child.wait()
    child.close()
    assert child.exitstatus == 0


class Dated:
    def __init__(self, when: BatchframeParam[dt.date]) -> None: ...


def test_a_date_prompt_says_what_is_wrong_with_the_date() -> None:
    validate = _validator(params_of_class(Dated)[0])
    assert validate("2026-13-45") == "Not a valid date: month must be in 1..12"
    assert validate("tomorrow") == "Not a valid date: expected an ISO date, e.g. 2026-11-25"
    assert validate("2026-11-25") is True
