from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
from helpers import SIMPLE_PROJECT, batchframe_cli, only_run_dir
from typer.testing import CliRunner

from batchframe import __version__
from batchframe.cli.app import app

runner = CliRunner()


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200", "NO_COLOR": "1"})


def assert_usage_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output
    assert "Traceback" not in result.output


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"batchframe {__version__}"
    assert __version__ == importlib.metadata.version("batchframe")  # _version.py is what the build installs


def test_exec_runs_a_project_and_exits_0(make_project, tmp_path: Path) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT})
    result = invoke("exec", root / "job.py", "--param", "count=3", "-d", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.output
    assert only_run_dir(tmp_path / "out").is_dir()


def test_exit_code_3_when_items_fail(make_project) -> None:
    failing = SIMPLE_PROJECT.replace("self.seen.append(item)", "raise ValueError(item)")
    root = make_project({"job.py": failing})
    result = invoke("exec", root / "job.py")
    assert result.exit_code == 3, result.output
    assert "ValueError" in result.output


def test_missing_path() -> None:
    assert_usage_error(invoke("exec", "does/not/exist.py"), "does not exist")


def test_syntax_error(make_project) -> None:
    root = make_project({"job.py": "def broken(:\n    pass\n"})
    assert_usage_error(invoke("exec", root / "job.py"), "job.py, line 1", "syntax error")


def test_import_error_shows_the_users_frame(make_project) -> None:
    root = make_project({"job.py": "import json\nfrom json import not_there\n"})
    result = invoke("exec", root / "job.py")
    assert_usage_error(result, "ImportError", "job.py", "line 2", "from json import not_there")


@pytest.mark.parametrize(
    ("cut", "message"),
    [("@inject\nclass Echo", "No Service found"), ("@inject\nclass Numbers", "No Source found")],
)
def test_missing_source_or_service(make_project, cut: str, message: str) -> None:
    text = SIMPLE_PROJECT.split(cut)[0] if "Echo" in cut else SIMPLE_PROJECT.split(cut)[0] + "\nx = 1\n"
    root = make_project({"job.py": text})
    assert_usage_error(invoke("exec", root / "job.py"), message)


def test_two_sources(make_project) -> None:
    extra = "\nclass More(Source[int]):\n    def next(self):\n        raise StopIteration\n"
    root = make_project({"job.py": SIMPLE_PROJECT + extra})
    assert_usage_error(invoke("exec", root / "job.py"), "2 Source classes", "Numbers", "More")


def test_unknown_config_lists_available(make_project) -> None:
    root = make_project(
        {
            "job.py": SIMPLE_PROJECT,
            "config/config_dev.py": "from batchframe import Configuration\nclass Dev(Configuration):\n    pass\n",
        }
    )
    assert_usage_error(
        invoke("exec", root / "job.py", "-c", "config_prod"), "config_prod", "Available configs: config_dev"
    )


def test_param_without_equals(make_project) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT})
    assert_usage_error(invoke("exec", root / "job.py", "-p", "count"), "NAME=VALUE", "-p count=VALUE")


def test_unknown_param_suggests(make_project) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT})
    assert_usage_error(
        invoke("exec", root / "job.py", "-p", "conut=3"), "Unknown parameter 'conut'", "Did you mean 'count'?"
    )


def test_unparsable_value(make_project) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT})
    assert_usage_error(invoke("exec", root / "job.py", "-p", "count=many"), "'count'", "int", "'many'")


def test_same_param_on_two_unrelated_classes(make_project) -> None:
    clash = SIMPLE_PROJECT.replace(
        "def __init__(self, source: Source[int]):",
        "def __init__(self, source: Source[int], count: BatchframeParam[int] = 1):",
    )
    root = make_project({"job.py": clash})
    assert_usage_error(invoke("exec", root / "job.py"), "'count' is declared by both", "Numbers", "Echo")


def test_invalid_concurrency_is_a_usage_error(make_project) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT})
    assert_usage_error(invoke("exec", root / "job.py", "-p", "concurrency=0"), "concurrency must be", "greater than 0")


def test_params_command_lists_parameters(make_project) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT})
    result = invoke("params", root / "job.py")
    assert result.exit_code == 0, result.output
    assert "count" in result.output and "Numbers" in result.output and "concurrency" in result.output


def test_verbose_twice_shows_the_traceback_in_a_real_process(make_project, tmp_path: Path) -> None:
    root = make_project({"job.py": "import json\nfrom json import not_there\n"})
    quiet = batchframe_cli("exec", root / "job.py", cwd=tmp_path)
    loud = batchframe_cli("exec", root / "job.py", "-vv", cwd=tmp_path)
    assert quiet.returncode == loud.returncode == 2
    assert "Traceback" not in quiet.stderr
    assert "Traceback" in loud.stderr


def test_no_traceback_for_bad_input_in_a_real_process(tmp_path: Path) -> None:
    result = batchframe_cli("exec", "missing.py", cwd=tmp_path)
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("value", ["item_timeout_sec=0", "item_timeout_sec=-1", "concurrency=-3", "max_per_second=0"])
def test_non_positive_limits_are_usage_errors(make_project, value: str) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT})
    assert_usage_error(invoke("exec", root / "job.py", "-p", value), value.split("=")[0], "greater than 0")


def test_the_old_p_name_value_spelling_gets_the_right_one(make_project) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT})
    assert_usage_error(
        invoke("exec", root / "job.py", "-p", "count", "5"), "-p NAME=VALUE, not -p NAME VALUE", "Write: -p count=5"
    )


def test_unexpected_extra_arguments(make_project) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT})
    assert_usage_error(invoke("exec", root / "job.py", "other.py"), "Unexpected argument(s): other.py")


def test_params_table_for_the_package_example() -> None:
    from helpers import EXAMPLES

    result = invoke("params", EXAMPLES / "webhooks", "-c", "config_dev")
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") >= 5}
    assert "failure_rate" in rows and "0.1" in rows["failure_rate"] and "WebhookConfig" in rows["failure_rate"]
    assert "simulated share of failing calls" in rows["failure_rate"]
    assert "events_file" in rows and "EventSource" in rows["events_file"]
    assert "a .jsonl file of events" in rows["events_file"]  # from the class docstring
    assert "concurrency" in rows and "4" in rows["concurrency"]  # config_dev's default
    lines = result.output.splitlines()
    runtime = next(i for i, line in enumerate(lines) if line.startswith("Runtime settings"))
    assert lines.index(rows["failure_rate"]) < runtime < lines.index(rows["concurrency"])  # the project's first


def test_params_marks_required_ones(make_project) -> None:
    project = SIMPLE_PROJECT.replace("count: BatchframeParam[int] = 5", "count: BatchframeParam[int]")
    root = make_project({"job.py": project})
    result = invoke("params", root / "job.py")
    line = next(line for line in result.output.splitlines() if "count" in line)
    assert "required" in line


def complete(words: str, cword: int, cwd: Path) -> list[str]:
    result = batchframe_cli(cwd=cwd, _BATCHFRAME_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=str(cword))
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_shell_completion_of_commands_configs_and_params(tmp_path: Path) -> None:
    from helpers import EXAMPLES

    assert complete("batchframe par", 1, tmp_path) == ["params"]
    assert complete(f"batchframe exec {EXAMPLES / 'webhooks'} -c ", 4, tmp_path) == ["config_dev", "config_prod"]
    params = complete(f"batchframe exec {EXAMPLES / 'webhooks'} -c config_dev -p fa", 6, tmp_path)
    assert params == ["failure_rate="]


def test_show_completion_script(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer.completion

    # typer detects the shell from the process tree (shellingham), which depends on how pytest was started.
    monkeypatch.setattr(typer.completion, "_get_shell_name", lambda: "bash")
    result = invoke("--show-completion")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "_BATCHFRAME_COMPLETE" in result.output


@pytest.mark.parametrize(("verbose", "traceback_shown"), [([], False), (["-vv"], True)])
def test_a_bug_of_batchframes_own_is_a_panel_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, verbose: list[str], traceback_shown: bool
) -> None:
    from batchframe.runfolder import history

    def broken(output_dir: Path) -> None:
        raise KeyError("a bug of ours")

    monkeypatch.setattr(history, "show_runs", broken)
    result = runner.invoke(app, ["runs", "-d", str(tmp_path), *verbose], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 1
    assert "batchframe failed unexpectedly: KeyError: 'a bug of ours'" in result.output
    assert "This is a bug in batchframe" in result.output and "-vv" in result.output
    assert ("Traceback" in result.output) is traceback_shown
