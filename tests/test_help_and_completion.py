"""``--help`` at 80 columns, shell completion through the real protocol, and Ctrl-C while the pause shell opens."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from helpers import batchframe_cli
from test_supervisor import Numbers, SignalsItself, supervise
from typer.testing import CliRunner

from batchframe.cli.app import app
from batchframe.runfolder.outcome import Outcome

COMMANDS = ["exec", "params", "init", "new-config", "update", "resume", "retry", "runs", "ui"]


def help_text(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "80", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_help_fits_80_columns_with_plain_usage(command: list[str]) -> None:
    text = help_text(*command)
    assert max(len(line) for line in text.splitlines()) <= 80, text
    usage = text.splitlines()[0]
    assert "{" not in usage, usage  # not {path}
    assert not re.search(r"<(path|str|int)>", text), text  # metavars in capitals, as in the usage line
    assert "[default: 0]" not in text  # -v


def test_usage_lines_name_arguments_in_capitals() -> None:
    assert help_text("exec").splitlines()[0] == "Usage: batchframe exec [OPTIONS] PATH"
    assert help_text("ui").splitlines()[0] == "Usage: batchframe ui [OPTIONS] [PATH]"
    assert help_text("runs").splitlines()[0] == "Usage: batchframe runs [OPTIONS] [RUN_DIR]"


def test_the_command_list_shows_whole_summaries() -> None:
    text = help_text()
    commands = text[text.index("Commands:") :]
    assert "..." not in commands and "…" not in commands, commands
    for name in COMMANDS:
        line = next(line for line in commands.splitlines() if line.strip().startswith(name + " "))
        assert line.rstrip().endswith("."), line  # one line, the whole first sentence


def test_exec_help_points_to_params_and_lists_the_exit_codes() -> None:
    text = help_text("exec")
    assert "batchframe params PATH" in text
    for code in ("0", "1", "2", "3", "130", "143"):
        assert f"\n    {code} " in text, text


def test_runs_help_says_where_it_looks() -> None:
    assert "batchframe_outputs in the current folder" in " ".join(help_text("runs").split())


# ------------------------------------------------------------------------------------- completion

PROJECT = {
    "job.py": """
        import enum
        from batchframe import BatchframeParam, Service, Source

        class Mode(enum.Enum):
            FAST = "fast"
            SAFE = "safe"

        class Items(Source[int]):
            def __init__(self, mode: BatchframeParam[Mode] = Mode.FAST, dry_run: BatchframeParam[bool] = False):
                pass

            def __iter__(self):
                yield 1

        class Noop(Service[int]):
            def process(self, item):
                pass
    """
}


def complete(words: str, cwd: Path, cword: int | None = None) -> list[str]:
    """What ``batchframe`` answers bash's completion script for ``words`` (the cursor on the last word)."""
    split = words.split(" ")
    result = batchframe_cli(
        cwd=cwd, _BATCHFRAME_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=str(cword or len(split) - 1)
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_p_completes_the_executors(make_project) -> None:
    root = make_project(PROJECT)
    values = complete("batchframe exec job.py -p executor=", root)
    assert values == ["executor=asyncio", "executor=threads", "executor=processes", "executor=dask", "executor=ray"]
    assert complete("batchframe exec job.py -p executor=th", root) == ["executor=threads"]


def test_p_completes_values_before_c_is_given(tmp_path: Path) -> None:
    from helpers import EXAMPLES

    # webhooks has two configs: until -c chooses one, the first one's parameters are completed.
    assert complete(f"batchframe exec {EXAMPLES / 'webhooks'} -p executor=d", tmp_path) == ["executor=dask"]


def test_p_completes_enum_and_bool_values(make_project) -> None:
    root = make_project(PROJECT)
    assert complete("batchframe exec job.py -p mode=", root) == ["mode=FAST", "mode=SAFE"]
    assert complete("batchframe exec job.py -p dry_run=", root) == ["dry_run=true", "dry_run=false"]
    assert complete("batchframe exec job.py -p count=", root) == []  # an int: nothing to offer


def test_p_values_when_bash_splits_the_word_at_equals(make_project) -> None:
    # bash's COMP_WORDBREAKS holds "=": it sends "executor", "=", "th" and replaces only the text after "=".
    root = make_project(PROJECT)
    assert complete("batchframe exec job.py -p executor = th", root) == ["threads"]
    assert complete("batchframe exec job.py -p mode =", root) == ["FAST", "SAFE"]


CONFIG_BASE = """
    import abc
    from dataclasses import dataclass
    from batchframe import Configuration

    @dataclass
    class {name}(Configuration{extra}):
        pass
"""


def test_c_completes_only_concrete_configs(make_project) -> None:
    root = make_project(
        {
            **PROJECT,
            "config/__init__.py": "",
            "config/config_base.py": CONFIG_BASE.format(name="Base", extra=", abc.ABC"),
            "config/shared.py": CONFIG_BASE.format(name="Shared", extra=""),  # the base of config_dev
            "config/config_dev.py": "from .shared import Shared\nclass Dev(Shared):\n    pass\n",
            "config/config_prod.py": "from .config_base import Base\nclass Prod(Base):\n    pass\n",
            "config/helpers.py": "def helper():\n    pass\n",
        }
    )
    assert complete("batchframe exec job.py -c ", root) == ["config_dev", "config_prod"]
    assert complete("batchframe exec job.py -c config_p", root) == ["config_prod"]


# ------------------------------------------------------------------------- Ctrl-C while the shell opens


def test_ctrl_c_while_the_shell_opens_cancels_in_flight_items_and_the_shell_opens() -> None:
    def interrupted_while_loading(namespace) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # what a second Ctrl-C does while IPython imports

    service = SignalsItself()
    executor, supervisor, calls = supervise(Numbers(), service, interactive=True, shell=interrupted_while_loading)
    assert len(calls) == 1
    assert executor.outcome is Outcome.COMPLETED and supervisor.stopped_by is None
    assert sorted(service.done) == list(range(30))


def test_an_interrupt_that_ends_the_first_attempt_opens_the_shell_again() -> None:
    attempts: list[int] = []

    def interrupted_once(namespace) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise KeyboardInterrupt  # in the instant IPython has Python's handler back, before its prompt

    service = SignalsItself()
    executor, supervisor, calls = supervise(Numbers(), service, interactive=True, shell=interrupted_once)
    assert len(calls) == 2
    assert executor.outcome is Outcome.COMPLETED and supervisor.stopped_by is None
    assert sorted(service.done) == list(range(30))
