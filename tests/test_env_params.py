"""Parameters from ``BATCHFRAME_PARAM_<NAME>``: parsed like -p, -p wins, shown by ``params``, kept for resume."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import batchframe_cli, only_run_dir

from batchframe.errors import ParamError
from batchframe.project.load import load_project
from batchframe.project.params import env_values
from batchframe.run.prepare import collect_specs, prepare

PROJECT = """
import json
import os
import signal
from pathlib import Path
from batchframe import BatchframeParam, Service, Source

class Numbers(Source[int]):
    def __init__(self, count: BatchframeParam[int] = 3, tags: BatchframeParam[list[str]] = ["a"]) -> None:
        self.count = count
        self.tags = tags

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        return iter(range(self.count))

class Job(Service[int]):
    def __init__(self, source: Numbers, label: BatchframeParam[str] = "plain",
                 stop_at: BatchframeParam[int] = -1) -> None:
        self.stop_at = stop_at
        seen = {"count": source.count, "tags": source.tags, "label": label}
        with Path("seen.jsonl").open("a") as out:
            out.write(json.dumps(seen) + "\\n")

    def process(self, item: int) -> None:
        if item == self.stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
"""


@pytest.fixture
def project(make_project: Callable[..., Path]) -> Path:
    return make_project({"job.py": PROJECT}) / "job.py"


def _seen(cwd: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (cwd / "seen.jsonl").read_text().splitlines()]


@pytest.mark.timeout(60)
def test_environment_sets_a_parameter_and_p_wins_over_it(project: Path, tmp_path: Path) -> None:
    env = {"BATCHFRAME_PARAM_COUNT": "4", "BATCHFRAME_PARAM_LABEL": "from env", "BATCHFRAME_PARAM_TAGS": "x,y"}
    done = batchframe_cli("exec", project, "-p", "label=from p", cwd=tmp_path, **env)
    assert done.returncode == 0, done.stderr
    assert _seen(tmp_path) == [{"count": 4, "tags": ["x", "y"], "label": "from p"}]
    summary = json.loads((only_run_dir(tmp_path / "batchframe_outputs") / "summary.json").read_text())
    assert summary["succeeded"] == 4
    assert summary["run"]["param_sources"] == {
        "label": "-p",
        "count": "BATCHFRAME_PARAM_COUNT",
        "tags": "BATCHFRAME_PARAM_TAGS",
    }


@pytest.mark.timeout(60)
def test_a_value_that_does_not_parse_names_the_variable(project: Path, tmp_path: Path) -> None:
    done = batchframe_cli("exec", project, cwd=tmp_path, BATCHFRAME_PARAM_COUNT="three")
    assert done.returncode == 2
    assert "BATCHFRAME_PARAM_COUNT='three'" in done.stderr
    assert "int" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "batchframe_outputs").exists()


@pytest.mark.timeout(60)
def test_a_variable_naming_no_parameter_is_a_warning_not_an_error(project: Path, tmp_path: Path) -> None:
    done = batchframe_cli("exec", project, cwd=tmp_path, BATCHFRAME_PARAM_CUONT="9")
    assert done.returncode == 0, done.stderr
    assert "BATCHFRAME_PARAM_CUONT names no parameter" in done.stderr
    assert "Did you mean BATCHFRAME_PARAM_COUNT?" in done.stderr
    assert _seen(tmp_path)[0]["count"] == 3


@pytest.mark.timeout(60)
def test_params_shows_where_each_value_comes_from(project: Path, tmp_path: Path) -> None:
    shown = batchframe_cli(
        "params", project, "-p", "label=typed", cwd=tmp_path, BATCHFRAME_PARAM_COUNT="8", COLUMNS="120"
    )
    assert shown.returncode == 0, shown.stderr
    rows = {line.split("│")[1].strip(): line for line in shown.stdout.splitlines() if line.count("│") > 3}
    assert "8 (env)" in rows["count"]
    assert "'typed' (-p)" in rows["label"]
    assert "(env)" not in rows["tags"] and "(-p)" not in rows["tags"] and "['a']" in rows["tags"]
    assert "BATCHFRAME_PARAM_COUNT" in shown.stdout


def test_an_old_setting_name_works_from_the_environment(project: Path) -> None:
    specs = collect_specs(load_project(project))
    values, variables = env_values(specs, {"BATCHFRAME_PARAM_EXECUTOR_CONSUMERS": "7"})
    assert values == {"concurrency": 7}
    assert variables == {"concurrency": "BATCHFRAME_PARAM_EXECUTOR_CONSUMERS"}


def test_p_given_under_a_name_skips_the_variable(project: Path) -> None:
    prepared = prepare(project, params=["count=2"], environ={"BATCHFRAME_PARAM_COUNT": "not a number"})
    assert prepared.values["count"] == 2 and prepared.sources["count"] == "-p"


def test_a_bad_value_raises_a_param_error_naming_the_variable(project: Path) -> None:
    with pytest.raises(ParamError, match="BATCHFRAME_PARAM_COUNT"):
        prepare(project, environ={"BATCHFRAME_PARAM_COUNT": "1.5"})


@pytest.mark.timeout(90)
def test_resume_keeps_the_value_the_environment_gave_the_run(project: Path, tmp_path: Path) -> None:
    stopped = batchframe_cli(
        "exec", project, "-p", "stop_at=2", cwd=tmp_path, BATCHFRAME_PARAM_COUNT="6", BATCHFRAME_PARAM_LABEL="env"
    )
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    run_dir = only_run_dir(tmp_path / "batchframe_outputs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHFRAME_PARAM_")}
    resumed = batchframe_cli("resume", run_dir, cwd=tmp_path, **env)
    assert resumed.returncode == 0, resumed.stderr  # item 2 finished before the stop: not run again
    assert "changed since this run started" not in resumed.stderr
    assert [seen["count"] for seen in _seen(tmp_path)] == [6, 6]
    assert [seen["label"] for seen in _seen(tmp_path)] == ["env", "env"]
    shown = batchframe_cli("runs", run_dir, cwd=tmp_path)
    assert "count=6" in shown.stdout and "label=env" in shown.stdout


@pytest.mark.timeout(60)
def test_params_shows_an_enum_by_the_names_p_takes(make_project: Callable[..., Path], tmp_path: Path) -> None:
    job = make_project(
        {
            "job.py": """
            import enum
            from batchframe import BatchframeParam, Service, Source

            class Color(enum.Enum):
                RED = "red"
                GREEN = "green"

            class Numbers(Source[int]):
                def __iter__(self):
                    return iter(range(2))

            class Job(Service[int]):
                def __init__(self, color: BatchframeParam[Color] = Color.GREEN) -> None: ...

                def process(self, item: int) -> None: ...
            """
        },
        name="enum_job",
    )
    shown = batchframe_cli("params", job / "job.py", cwd=tmp_path, BATCHFRAME_PARAM_COLOR="red", COLUMNS="100")
    (row,) = [line for line in shown.stdout.splitlines() if line.startswith("│ color")]
    assert [cell.strip() for cell in row.split("│")[1:4]] == ["color", "Color: RED, GREEN", "RED (env)"]
