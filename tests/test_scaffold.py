"""Scaffolding: init, new-config and update, through the real CLI and the copier templates."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, batchframe_cli, build_file_tree
from typer.testing import CliRunner

from batchframe.cli.app import app
from batchframe.scaffold.create import ScaffoldError, init_project, package_name_for, parse_data, update_project

runner = CliRunner()
TEMPLATE = REPO / "templates" / "project"
SOURCE_KINDS = list(
    yaml.safe_load((TEMPLATE / "copier.yml").read_text(encoding="utf-8"))["source_kind"]["choices"].values()
)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHFRAME_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))  # no user identity: the fallback is used


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200", "NO_COLOR": "1"})


CONFIG_PROJECT = {
    "job/__init__.py": "",
    "job/config/__init__.py": """
        from dataclasses import dataclass
        from batchframe import BatchframeParam, Configuration

        @dataclass
        class JobConfig(Configuration):
            region: BatchframeParam[str] = "eu"
    """,
    "job/config/config_dev.py": """
        from dataclasses import dataclass
        from . import JobConfig

        @dataclass
        class DevConfig(JobConfig):
            concurrency: int = 2
    """,
    "job/service.py": """
        from batchframe import Service, Source, inject
        from .config import JobConfig

        class Items(Source[int]):
            def __iter__(self):
                yield from range(3)

        @inject
        class Job(Service[int]):
            def __init__(self, config: JobConfig):
                self.config = config

            async def process(self, item):
                print("REGION", self.config.region, "CONCURRENCY", self.config.concurrency)
    """,
}


# ---------------------------------------------------------------------------------------- new-config


def test_new_config_subclasses_the_abstract_config_and_runs(make_project, tmp_path: Path) -> None:
    root = make_project(CONFIG_PROJECT)
    result = invoke("new-config", "staging", "--project", root)
    assert result.exit_code == 0, result.output
    created = root / "job" / "config" / "config_staging.py"
    text = created.read_text()
    assert "from . import JobConfig" in text
    assert "class StagingConfig(JobConfig):" in text
    run = batchframe_cli("exec", root / "job", "-c", "config_staging", "-d", tmp_path / "out", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "REGION eu CONCURRENCY 8" in run.stdout


def test_new_config_in_the_current_folder(make_project, monkeypatch) -> None:
    root = make_project(CONFIG_PROJECT)
    monkeypatch.chdir(root)
    assert invoke("new-config", "config_prod").exit_code == 0
    assert (root / "job" / "config" / "config_prod.py").exists()


def test_new_config_refuses_to_overwrite(make_project) -> None:
    root = make_project(CONFIG_PROJECT)
    before = (root / "job" / "config" / "config_dev.py").read_text()
    result = invoke("new-config", "dev", "--project", root)
    assert result.exit_code == 2
    assert "already exists" in result.output
    assert (root / "job" / "config" / "config_dev.py").read_text() == before


def test_new_config_outside_a_project(tmp_path: Path) -> None:
    result = invoke("new-config", "staging", "--project", tmp_path)
    assert result.exit_code == 2
    assert "No config/ folder found" in result.output


def test_new_config_without_an_abstract_config(make_project) -> None:
    root = make_project({"job/config/config_dev.py": "X = 1\n", "job/config/__init__.py": "Y = 2\n"})
    result = invoke("new-config", "staging", "--project", root)
    assert result.exit_code == 2
    assert "No abstract configuration found" in result.output


def test_new_config_rejects_a_bad_name(make_project) -> None:
    root = make_project(CONFIG_PROJECT)
    result = invoke("new-config", "my-env!", "--project", root)
    assert result.exit_code == 2
    assert "cannot be a config name" in result.output


# --------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(("name", "package"), [("demo", "demo"), ("My-Job", "my_job"), ("path/to/etl job", "etl_job")])
def test_package_names(name: str, package: str) -> None:
    assert package_name_for(name) == package


@pytest.mark.parametrize("name", ["1abc", "class", "what?", ""])
def test_invalid_project_names(name: str) -> None:
    with pytest.raises(ScaffoldError):
        package_name_for(name)


def test_data_keys_are_checked_against_the_template() -> None:
    assert parse_data(["source_kind=csv", "configs=dev,staging"], TEMPLATE) == {
        "source_kind": "csv",
        "configs": ["dev", "staging"],
    }
    with pytest.raises(ScaffoldError, match=r"no question .source_knd.\. Did you mean .source_kind."):
        parse_data(["source_knd=csv"], TEMPLATE)
    with pytest.raises(ScaffoldError, match="KEY=VALUE"):
        parse_data(["source_kind"], TEMPLATE)


# ---------------------------------------------------------------------------------------------- init


def test_init_then_exec_then_pytest_then_ruff(tmp_path: Path) -> None:
    result = batchframe_cli("init", "demo", "--defaults", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    project = tmp_path / "demo"
    assert (project / ".copier-answers.yml").exists()
    assert {"source.py", "service.py"} <= {p.name for p in (project / "demo").iterdir()}
    assert (project / "demo" / "config" / "config_dev.py").exists()
    assert (project / "demo" / "config" / "config_prod.py").exists()
    assert "batchframe exec demo -c config_dev" in result.stdout
    run = batchframe_cli("exec", "demo", "-c", "config_dev", cwd=project)
    assert run.returncode == 0, run.stderr
    tests = subprocess.run(
        [
            str(Path(REPO / ".venv/bin/python")) if (REPO / ".venv/bin/python").exists() else "python",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    lint = subprocess.run(
        [shutil.which("ruff") or str(REPO / ".venv/bin/ruff"), "check", "."],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout
    log = subprocess.run(["git", "log", "--oneline"], cwd=project, capture_output=True, text=True)
    assert "batchframe init" in log.stdout


@pytest.mark.parametrize(
    "data",
    [
        ["source_kind=csv", "service_style=sync"],
        ["source_kind=folder", "configs=staging"],
    ],
)
def test_init_variants_run(tmp_path: Path, data: list[str]) -> None:
    args = [arg for item in data for arg in ("--data", item)]
    result = batchframe_cli("init", "etl-job", "--defaults", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    project = tmp_path / "etl-job"
    config = "config_staging" if "configs=staging" in data else "config_dev"
    run = batchframe_cli("exec", "etl_job", "-c", config, cwd=project)
    assert run.returncode == 0, run.stderr


def docs_python_block(page: str, heading: str) -> str:
    """The first ```python block of the docs page's section ``## heading``."""
    text = (REPO / "docs" / page).read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```python\n(.*?)^```", section, re.DOTALL | re.MULTILINE)
    assert block, f"no python example in {page}'s {heading!r}"
    return block.group(1)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("source_kind", SOURCE_KINDS)
def test_the_docs_testing_example_passes_in_a_new_project_of_each_source_kind(tmp_path: Path, source_kind: str) -> None:
    # docs/testing.md: the example for the tests `batchframe init` writes, in the project's tests/.
    example = docs_python_block("testing.md", "The tests batchframe init writes")
    project = init_project(
        str(tmp_path / "my-job"),
        data={"source_kind": source_kind},
        defaults=True,
        git_init=False,
        template_dir=TEMPLATE,
    )
    (project / "tests" / "test_my_job.py").write_text(example, encoding="utf-8")
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr  # the project's own tests too
    passed = re.findall(r"^PASSED tests/test_my_job\.py::", tests.stdout, re.MULTILINE)
    assert len(passed) == example.count("\ndef test_"), tests.stdout


def test_init_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"demo/keep.txt": "mine"})
    result = batchframe_cli("init", "demo", "--defaults", cwd=tmp_path)
    assert result.returncode == 2
    assert "already exists and is not empty" in result.stderr
    assert (tmp_path / "demo" / "keep.txt").read_text() == "mine"
    forced = batchframe_cli("init", "demo", "--defaults", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "demo" / "keep.txt").read_text() == "mine"


def test_init_rejects_an_invalid_name_and_unknown_data(tmp_path: Path) -> None:
    bad_name = batchframe_cli("init", "1st-job", "--defaults", cwd=tmp_path)
    assert bad_name.returncode == 2
    assert "not a valid Python package name" in bad_name.stderr
    bad_key = batchframe_cli("init", "demo", "--defaults", "--data", "colour=blue", cwd=tmp_path)
    assert bad_key.returncode == 2
    assert "no question 'colour'" in bad_key.stderr
    assert not (tmp_path / "demo").exists()


# -------------------------------------------------------------------------------------------- update


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def test_update_merges_template_changes_with_the_users_edits(tmp_path: Path) -> None:
    template = tmp_path / "template-v1"
    shutil.copytree(TEMPLATE, template)
    project = init_project(str(tmp_path / "demo"), defaults=True, template_dir=template, version="1.0.0")
    # the user edits their service and commits
    service = project / "demo" / "service.py"
    service.write_text(service.read_text() + "\n# my own note\n")
    git(project, "commit", "-qam", "my edit")
    # the template changes in a new batchframe version
    readme = next(template.glob("README.md*"))
    readme.write_text(readme.read_text() + "\nA line added by template v2.\n")
    report = update_project(project, template_dir=template, version="1.1.0")
    assert report.merged, report.reason
    assert report.conflicts == []
    assert "A line added by template v2." in (project / "README.md").read_text()
    assert "# my own note" in service.read_text()
    assert "v1.1.0" in (project / ".copier-answers.yml").read_text()


def test_update_refuses_uncommitted_changes(tmp_path: Path) -> None:
    project = init_project(str(tmp_path / "demo"), defaults=True, template_dir=TEMPLATE, version="1.0.0")
    (project / "README.md").write_text("changed\n")
    with pytest.raises(ScaffoldError, match="uncommitted changes"):
        update_project(project, template_dir=TEMPLATE, version="1.0.1")


def test_update_force_without_git_recopies(tmp_path: Path) -> None:
    project = init_project(
        str(tmp_path / "demo"), defaults=True, git_init=False, template_dir=TEMPLATE, version="1.0.0"
    )
    (project / "README.md").unlink()
    result = invoke("update", project, "--force")
    assert result.exit_code == 0, result.output
    assert "recopy" in result.output
    assert (project / "README.md").exists()


def test_update_outside_a_generated_project(tmp_path: Path) -> None:
    result = invoke("update", tmp_path)
    assert result.exit_code == 2
    assert "was not made by batchframe init" in result.output


@pytest.mark.parametrize("name", ["tests", "json", "batchframe"])
def test_names_that_would_clash(name: str) -> None:
    with pytest.raises(ScaffoldError, match="clash"):
        package_name_for(name)


def test_a_project_without_environment_configs_runs_without_c(tmp_path: Path) -> None:
    result = batchframe_cli("init", "solo", "--defaults", "--data", "configs=", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = batchframe_cli("exec", "solo", cwd=tmp_path / "solo")
    assert run.returncode == 0, run.stderr


def test_init_asks_copiers_questions_on_a_terminal(tmp_path: Path) -> None:
    import os
    import sys

    import pexpect

    env = {**os.environ, "BATCHFRAME_CACHE_DIR": str(tmp_path / "cache"), "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm"}
    executable = str(Path(sys.executable).parent / "batchframe")
    child = pexpect.spawn(executable, ["init", "shop-sync"], cwd=str(tmp_path), env=env, encoding="utf-8", timeout=60)
    child.expect("One-line description")
    child.send("\r")
    child.expect("Where do the work items come from")
    child.send("\x1b[B")  # arrow down: rows of a CSV file
    child.send("\r")
    child.expect("async or a plain function|async \\(I/O-bound work\\)")
    child.send("\r")
    child.expect("Which environment configs")
    child.send("\r")
    child.expect("Created shop-sync")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "source_kind: csv" in (tmp_path / "shop-sync" / ".copier-answers.yml").read_text()
