"""Scaffolding never loses the user's work (update without git) and fails in panels (init's questions, --data)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, batchframe_cli
from typer.testing import CliRunner

from batchframe.cli.app import app
from batchframe.scaffold.create import ScaffoldError, init_project, parse_data, update_project
from batchframe.scaffold.update import BACKUP_DIR

runner = CliRunner()
TEMPLATE = REPO / "templates" / "project"


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHFRAME_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # a repository around tmp_path is not the project's


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200", "NO_COLOR": "1"})


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(folder).parts
    }


@pytest.fixture
def edited_project(tmp_path: Path) -> tuple[Path, Path]:
    """A project made without git, the user's edit in its service, and a newer template: (project, template)."""
    template = tmp_path / "template"
    shutil.copytree(TEMPLATE, template)
    project = init_project(str(tmp_path / "demo"), defaults=True, git_init=False, template_dir=template, version="1.0")
    service = project / "demo" / "service.py"
    service.write_text(service.read_text() + "\n# my own note\n")
    readme = template / "README.md.jinja"
    readme.write_text(readme.read_text() + "\nA line added by template v2.\n")
    return project, template


# ---------------------------------------------------------------------------------------- update without git


@pytest.mark.timeout(30)
def test_update_without_git_refuses_and_changes_nothing(edited_project: tuple[Path, Path]) -> None:
    project, template = edited_project
    before = snapshot(project)
    with pytest.raises(ScaffoldError) as caught:
        update_project(project, template_dir=template, version="1.1")
    assert "not in a git repository" in caught.value.message
    assert "no way back" in caught.value.message
    assert 'git init && git add -A && git commit -m "before update"' in str(caught.value.hint)
    assert "--force" in str(caught.value.hint)
    assert snapshot(project) == before
    assert not (project / BACKUP_DIR).exists()


@pytest.mark.timeout(30)
def test_update_without_git_through_the_cli_is_a_usage_error(tmp_path: Path) -> None:
    project = init_project(str(tmp_path / "demo"), defaults=True, git_init=False, template_dir=TEMPLATE, version="1.0")
    service = project / "demo" / "service.py"
    service.write_text("# all mine\n")
    result = invoke("update", project)
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert "is not under git" in output and "batchframe update" in output and "--force" in output
    assert "Traceback" not in result.output
    assert service.read_text() == "# all mine\n"


@pytest.mark.timeout(30)
def test_update_without_a_git_executable_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = init_project(str(tmp_path / "demo"), defaults=True, git_init=False, template_dir=TEMPLATE, version="1.0")
    before = snapshot(project)
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    with pytest.raises(ScaffoldError, match="git is not installed") as caught:
        update_project(project, template_dir=TEMPLATE, version="1.1")
    assert "install git" in str(caught.value.hint)
    assert snapshot(project) == before


@pytest.mark.timeout(30)
def test_update_force_without_git_saves_the_edits_then_rerenders(edited_project: tuple[Path, Path]) -> None:
    project, template = edited_project
    report = update_project(project, force=True, template_dir=template, version="1.1")
    assert not report.merged
    assert report.backup is not None and report.backup.parent == project / BACKUP_DIR
    assert str(report.backup) in report.reason
    saved = report.backup / "demo" / "service.py"
    assert "# my own note" in saved.read_text()
    # re-rendered: the template's change is in, the edit is out of the project (and only in the backup)
    assert "# my own note" not in (project / "demo" / "service.py").read_text()
    assert "A line added by template v2." in (project / "README.md").read_text()
    assert "v1.1" in (project / ".copier-answers.yml").read_text()
    assert (report.backup / "README.md").is_file()  # the template rewrote it too: saved as it was
    assert not (report.backup / "demo" / "source.py").exists()  # unchanged by the re-render: nothing to save
    # a second run saves nothing (nothing differs) and leaves the first backup alone
    again = update_project(project, force=True, template_dir=template, version="1.1")
    assert again.backup is None and "nothing needed saving" in again.reason
    assert saved.is_file() and [p.name for p in (project / BACKUP_DIR).iterdir()] == [report.backup.name]


@pytest.mark.timeout(30)
def test_update_force_through_the_cli_names_the_backup_folder(edited_project: tuple[Path, Path]) -> None:
    project, _template = edited_project
    result = invoke("update", project, "--force")
    assert result.exit_code == 0, result.output
    (backup,) = (project / BACKUP_DIR).iterdir()
    assert str(backup) in "".join(result.output.split())  # rich may wrap the line anywhere
    assert "# my own note" in (backup / "demo" / "service.py").read_text()


# ------------------------------------------------------------------------------------------ update with git


@pytest.mark.timeout(30)
def test_update_with_git_and_a_dirty_tree_is_still_refused(tmp_path: Path) -> None:
    project = init_project(str(tmp_path / "demo"), defaults=True, template_dir=TEMPLATE, version="1.0")
    service = project / "demo" / "service.py"
    service.write_text("# not committed\n")
    result = invoke("update", project, "--force")
    assert result.exit_code == 2, result.output
    assert "uncommitted changes" in result.output
    assert service.read_text() == "# not committed\n"
    assert not (project / BACKUP_DIR).exists()


@pytest.mark.timeout(30)
def test_update_of_a_project_never_committed_refuses(tmp_path: Path) -> None:
    project = init_project(str(tmp_path / "demo"), defaults=True, git_init=False, template_dir=TEMPLATE, version="1.0")
    git(project, "init", "-q")  # a repository, but the project's files are not in it
    (project / ".gitignore").write_text("*\n")
    with pytest.raises(ScaffoldError, match="not under git"):
        update_project(project, template_dir=TEMPLATE, version="1.1")


@pytest.mark.timeout(30)
def test_update_from_another_machines_history_recopies_a_clean_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = init_project(str(tmp_path / "demo"), defaults=True, template_dir=TEMPLATE, version="1.0")
    (project / ".gitignore").write_text((project / ".gitignore").read_text() + "demo/config/config_prod.py\n")
    git(project, "rm", "-q", "--cached", "demo/config/config_prod.py")
    git(project, "commit", "-qam", "keep the prod config out of git")
    prod = project / "demo" / "config" / "config_prod.py"
    prod.write_text("SECRET = 'mine'\n")  # ignored: git could not give it back
    shutil.rmtree(tmp_path / "cache")
    monkeypatch.setenv("BATCHFRAME_CACHE_DIR", str(tmp_path / "other-cache"))  # this machine's history
    report = update_project(project, template_dir=TEMPLATE, version="1.1")
    assert not report.merged and "this machine's template history" in report.reason
    assert report.backup is not None
    assert (report.backup / "demo" / "config" / "config_prod.py").read_text() == "SECRET = 'mine'\n"
    assert not (report.backup / "demo" / "service.py").exists()  # git has it
    assert str(tmp_path / "other-cache") in (project / ".copier-answers.yml").read_text()


# ----------------------------------------------------------------------------------------------------- init


@pytest.mark.timeout(60)
def test_ctrl_c_at_a_question_of_init_is_interrupted(tmp_path: Path) -> None:
    import pexpect

    env = {**os.environ, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm", "COLUMNS": "200"}
    executable = str(Path(sys.executable).parent / "batchframe")
    child = pexpect.spawn(executable, ["init", "proj"], cwd=str(tmp_path), env=env, encoding="utf-8", timeout=30)
    child.expect("One-line description")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    output = child.before or ""
    assert child.exitstatus == 130, output
    assert "Interrupted." in output
    for dump in ("Traceback", "<copier", "Worker(", "AnswersMap", "Question(", "Scaffolding error"):
        assert dump not in output
    assert not (tmp_path / "proj").exists()


@pytest.mark.timeout(30)
def test_data_outside_the_choices_is_a_usage_error(tmp_path: Path) -> None:
    result = batchframe_cli("init", "demo", "--defaults", "--data", "source_kind=files", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("Scaffolding error") == 1
    message = " ".join(result.stderr.split())
    assert "source_kind" in message and "'files'" in message
    assert "numbers, csv, folder" in message
    assert not (tmp_path / "demo").exists()


@pytest.mark.timeout(10)
def test_multiselect_data_is_checked_against_the_choices() -> None:
    with pytest.raises(ScaffoldError, match="'qa' is not one of the choices") as caught:
        parse_data(["configs=dev,qa"], TEMPLATE)
    assert "dev, prod, staging" in str(caught.value.hint)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("key", ["batchframe_version", "package_name", "project_name", "_commit"])
def test_internal_keys_are_not_data_keys(key: str) -> None:
    with pytest.raises(ScaffoldError, match=f"no question '{key}'") as caught:
        parse_data([f"{key}=x"], TEMPLATE)
    assert caught.value.hint == "Its questions are: configs, description, service_style, source_kind"


@pytest.mark.timeout(30)
def test_internal_data_key_through_the_cli(tmp_path: Path) -> None:
    result = batchframe_cli("init", "demo", "--defaults", "--data", "batchframe_version=9.9", cwd=tmp_path)
    assert result.returncode == 2
    assert "no question 'batchframe_version'" in result.stderr
    assert "batchframe_version" not in result.stderr.split("Its questions are:")[1]
