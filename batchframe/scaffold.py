"""Scaffolding with copier: ``batchframe init``, ``batchframe new-config`` and ``batchframe update``.

The project template is rendered from its version history (``_template_history``), so ``update``
can do copier's three-way merge. Without that history it falls back to ``recopy`` and says so; a
project git cannot restore (no git, no repository) is re-rendered only with ``force``, after its
files that the recopy rewrites are copied to ``.batchframe-backup/<time>/``.
"""

from __future__ import annotations

import contextlib
import keyword
import logging
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchframe._template_history import (
    GIT_IDENTITY,
    ScaffoldError,
    TemplateSource,
    git,
    installed_version,
    project_template,
    templates_root,
)

logger = logging.getLogger(__name__)

ANSWERS_FILE = ".copier-answers.yml"
CONFLICT_MARKER = "<<<<<<< before updating"

__all__ = [
    "ScaffoldError",
    "find_config_dir",
    "init_project",
    "new_config",
    "package_name_for",
    "parse_data",
    "templates_root",
    "update_project",
]


# Answers batchframe itself gives copier: ``init`` derives them from NAME, never from ``--data``.
_SET_BY_INIT = frozenset({"project_name", "package_name"})


def _copier_yml(folder: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((folder / "copier.yml").read_text(encoding="utf-8")) or {}


def _questions(config: Mapping[str, Any]) -> dict[str, Any]:
    """The questions of a template's ``copier.yml`` that a user answers (not its settings or internal values)."""
    return {
        key: value
        for key, value in config.items()
        if not key.startswith("_") and key not in _SET_BY_INIT and not _internal(value)
    }


def _internal(question: Any) -> bool:
    """``when: false``: copier never asks it; the template or batchframe sets the value."""
    when = question.get("when", True) if isinstance(question, dict) else True
    return when is False or str(when).strip().lower() in {"false", "{{ false }}"}


# ----------------------------------------------------------------------------------------------- init


def package_name_for(name: str) -> str:
    """The Python package name for a project name: lower case, ``-`` and spaces become ``_``.

    Raises:
        ScaffoldError: the result is not a Python identifier (or is a keyword).
    """
    base = Path(name).name
    package = re.sub(r"[\s\-.]+", "_", base.strip()).lower()
    if not package.isidentifier() or keyword.iskeyword(package):
        raise ScaffoldError(
            f"{base!r} cannot be a project name: {package!r} is not a valid Python package name.",
            hint="Use letters, digits, '-' and '_', starting with a letter, e.g. batchframe init my-job",
        )
    if package in _RESERVED_PACKAGES or _importable(package):
        raise ScaffoldError(
            f"{base!r} cannot be a project name: a package named {package!r} would clash with "
            + ("a folder of the project." if package in _RESERVED_PACKAGES else "an installed module of that name."),
            hint="Pick a more specific name, e.g. batchframe init my-job",
        )
    return package


_RESERVED_PACKAGES = frozenset({"tests", "data", "config", "batchframe"})


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def parse_data(assignments: list[str], template_dir: Path) -> dict[str, Any]:
    """``--data KEY=VALUE`` strings to answers, typed by the template's questions.

    Raises:
        ScaffoldError: malformed, or a key the template does not ask.
    """
    config = _copier_yml(template_dir)
    questions = _questions(config)
    data: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key.strip():
            raise ScaffoldError(
                f"--data {assignment!r} is not of the form KEY=VALUE.", hint="e.g. --data source_kind=csv"
            )
        key = key.strip()
        if key not in questions:
            raise _unknown_key(key, questions, set_by_batchframe=key in config and not key.startswith("_"))
        data[key] = _typed_answer(key, questions[key], value)
    return data


def _unknown_key(key: str, questions: Mapping[str, Any], *, set_by_batchframe: bool) -> ScaffoldError:
    import difflib

    close = difflib.get_close_matches(key, list(questions), n=1)
    why = " (batchframe sets it)" if set_by_batchframe else ""
    return ScaffoldError(
        f"The template has no question {key!r}{why}." + (f" Did you mean {close[0]!r}?" if close else ""),
        hint="Its questions are: " + ", ".join(sorted(questions)),
    )


def _typed_answer(key: str, question: Any, value: str) -> Any:
    spec = question if isinstance(question, dict) else {}
    kind = spec.get("type", "str")
    if spec.get("multiselect"):
        answer: Any = [part.strip() for part in value.split(",") if part.strip()]
    elif kind == "bool":
        answer = value.strip().lower() in {"1", "true", "yes", "y", "on"}
    elif kind in ("int", "float"):
        try:
            answer = int(value) if kind == "int" else float(value)
        except ValueError:
            raise ScaffoldError(f"--data {key}={value!r} is not a valid {kind}.", hint=f"e.g. --data {key}=1") from None
    else:
        answer = value
    _check_choice(key, spec, answer)
    return answer


def _check_choice(key: str, spec: Mapping[str, Any], answer: Any) -> None:
    """An answer outside the question's ``choices`` fails here, naming them, not as copier's traceback."""
    valid = _choice_values(spec.get("choices"))
    if not valid or any("{{" in str(choice) or "{%" in str(choice) for choice in valid):
        return  # no choices, or templated ones: copier checks them
    for item in answer if isinstance(answer, list) else [answer]:
        if item not in valid and str(item) not in {str(choice) for choice in valid}:
            several = " (comma-separated, any of them)" if spec.get("multiselect") else ""
            raise ScaffoldError(
                f"--data {key}: {item!r} is not one of the choices.",
                hint=f"Valid values for {key}{several}: " + ", ".join(str(choice) for choice in valid),
            )


def _choice_values(choices: Any) -> list[Any]:
    """Copier's ``choices``: a list of values or of [label, value] pairs, or a {label: value} mapping."""
    if isinstance(choices, dict):
        values = list(choices.values())
    elif isinstance(choices, list):
        values = [c[1] if isinstance(c, (list, tuple)) and len(c) == 2 else c for c in choices]
    else:
        return []
    return [v.get("value") if isinstance(v, dict) else v for v in values]


def init_project(
    name: str,
    *,
    data: Mapping[str, Any] | None = None,
    defaults: bool = False,
    force: bool = False,
    git_init: bool = True,
    template_dir: Path | None = None,
    version: str | None = None,
) -> Path:
    """Render the project template into ``name``; return the project folder.

    Raises:
        ScaffoldError: an invalid name, a non-empty target without ``force``, or a template error.
    """
    target = Path(name)
    package = package_name_for(name)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not force:
        raise ScaffoldError(
            f"{target} already exists and is not empty.",
            hint=f"Choose another name, or pass --force to render into {target} anyway (files may be overwritten).",
        )
    source = project_template(template_dir, version)
    answers = {
        "project_name": target.name,
        "package_name": package,
        "batchframe_version": version or installed_version(),
        **(data or {}),
    }
    _copier(
        "run_copy",
        str(source.path),
        target,
        data=answers,
        vcs_ref=source.ref,
        defaults=defaults,
        overwrite=force,
    )
    if git_init and shutil.which("git"):
        _initial_commit(target)
    return target


def _initial_commit(target: Path) -> None:
    if (target / ".git").exists():
        return
    git(target, "init", "-q")
    git(target, "add", "--all")
    identity = [] if _git_identity_configured(target) else GIT_IDENTITY
    git(target, *identity, "commit", "-q", "-m", "New batchframe project (batchframe init)")


def _git_identity_configured(cwd: Path) -> bool:
    result = subprocess.run(["git", "config", "user.email"], cwd=cwd, capture_output=True, text=True, check=False)
    return bool(result.stdout.strip())


def _copier(function: str, *args: Any, **kwargs: Any) -> Any:
    import copier
    from copier.errors import CopierError

    try:
        return getattr(copier, function)(*args, quiet=True, unsafe=False, **kwargs)
    except KeyboardInterrupt:
        # Ctrl-C at a question is copier's CopierAnswersInterrupt (a CopierError too), whose text is
        # the repr of its internal objects: a plain KeyboardInterrupt lets the CLI say "Interrupted.".
        raise KeyboardInterrupt from None
    except (CopierError, ValueError) as exc:  # ValueError: copier rejects an answer (bad choice, missing)
        raise ScaffoldError(f"copier could not render the template: {exc}") from exc


# ----------------------------------------------------------------------------------------- new-config


@dataclass(frozen=True)
class AbstractConfig:
    """The project's abstract configuration, found in its ``config/`` package.

    Attributes:
        class_name: e.g. ``DemoConfig``.
        import_line: how a sibling config module imports it, e.g. ``from . import DemoConfig``.
    """

    class_name: str
    import_line: str


def find_config_dir(project: Path) -> Path:
    """The ``config/`` folder of the project at ``project`` (itself, or its one package).

    Raises:
        ScaffoldError: none, or more than one.
    """
    if (project / "config").is_dir():
        return project / "config"
    found = sorted(p for p in project.glob("*/config") if p.is_dir() and not p.parent.name.startswith("."))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ScaffoldError(
            f"No config/ folder found in {project.resolve()}.",
            hint="Run this inside a batchframe project (made with batchframe init), or pass --project DIR.",
        )
    listing = ", ".join(str(p) for p in found)
    raise ScaffoldError(f"Several config/ folders found: {listing}.", hint="Pass --project DIR to pick one.")


def find_abstract_config(config_dir: Path) -> AbstractConfig:
    """The Configuration subclass the configs of ``config_dir`` build on, found by reading (not running) the code.

    Raises:
        ScaffoldError: no such class in ``config/__init__.py`` or another non-``config_*`` module.
    """
    import ast

    for module in sorted(config_dir.glob("*.py"), key=lambda p: p.name != "__init__.py"):
        if module.stem.startswith("config_"):
            continue
        tree = ast.parse(module.read_text(encoding="utf-8"), filename=str(module))
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and any(_base_name(b) == "Configuration" for b in node.bases):
                where = "." if module.name == "__init__.py" else f".{module.stem}"
                return AbstractConfig(node.name, f"from {where} import {node.name}")
    raise ScaffoldError(
        f"No abstract configuration found in {config_dir}.",
        hint="Define a class subclassing batchframe.Configuration in config/__init__.py, then run this again.",
    )


def _base_name(node: Any) -> str:
    import ast

    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def new_config(name: str, *, project: Path = Path()) -> Path:
    """Render ``config/config_<name>.py`` subclassing the project's abstract config; return its path.

    Raises:
        ScaffoldError: a bad name, no config folder or abstract config, or the file exists already.
    """
    short = name.removeprefix("config_").removesuffix(".py")
    if not short.isidentifier() or keyword.iskeyword(short):
        raise ScaffoldError(
            f"{name!r} cannot be a config name.", hint="Use letters, digits and '_', e.g. batchframe new-config staging"
        )
    config_dir = find_config_dir(project)
    target = config_dir / f"config_{short}.py"
    if target.exists():
        raise ScaffoldError(
            f"{target} already exists; batchframe does not overwrite it.", hint="Pick another name or edit that file."
        )
    base = find_abstract_config(config_dir)
    class_name = "".join(part.capitalize() for part in short.split("_")) + "Config"
    answers = {"name": short, "class_name": class_name, "base_class": base.class_name, "base_import": base.import_line}
    _copier("run_copy", str(templates_root() / "config"), config_dir, data=answers, defaults=True)
    return target


# --------------------------------------------------------------------------------------------- update

BACKUP_DIR = ".batchframe-backup"


@dataclass
class UpdateReport:
    """What ``update`` did.

    Attributes:
        merged: True for copier's three-way update, False for a recopy.
        reason: why it fell back to recopy, and where the files it overwrote were saved (empty when merged).
        conflicts: files with conflict markers to resolve.
        ref: the template tag the project is now on.
        backup: the folder holding the files the recopy overwrote that git could not give back, if any.
    """

    merged: bool
    reason: str = ""
    conflicts: list[Path] = field(default_factory=list)
    ref: str | None = None
    backup: Path | None = None


def update_project(
    project: Path = Path(), *, force: bool = False, template_dir: Path | None = None, version: str | None = None
) -> UpdateReport:
    """Bring a generated project to the installed templates, keeping its answers and the user's edits.

    With git, copier merges the template changes into the committed project (or, without the template
    history, re-renders it: git still has every file). Without git, it re-renders only with ``force``,
    after copying each file it overwrites to ``.batchframe-backup/<time>/`` in the project.

    Raises:
        ScaffoldError: not a generated project, uncommitted changes, or not under git without ``force``.
    """
    answers_path = project / ANSWERS_FILE
    if not answers_path.is_file():
        raise ScaffoldError(
            f"{project.resolve()} has no {ANSWERS_FILE}, so it was not made by batchframe init.",
            hint="Run batchframe update inside a generated project, or pass its folder: batchframe update DIR",
        )
    source = project_template(template_dir, version)
    data = {"batchframe_version": version or installed_version()}
    no_git = _why_not_under_git(project, source)
    if no_git:
        if not force:
            raise _not_under_git(project, no_git)
        return _recopy(project, source, data, reason=no_git, tracked=frozenset())
    reason = _why_no_merge(project, source)
    if reason and "uncommitted" in reason:
        raise ScaffoldError(reason, hint="Commit or stash your changes (git status), then run batchframe update again.")
    if reason:
        return _recopy(project, source, data, reason=reason, tracked=_tracked_files(project))
    _copier(
        "run_update",
        project,
        data=data,
        vcs_ref=source.ref,
        defaults=True,
        overwrite=True,
        skip_answered=True,
        conflict="inline",
    )
    return UpdateReport(merged=True, conflicts=_conflicts(project), ref=source.ref)


_NO_GIT, _NO_REPOSITORY = "git is not installed", "the project is not in a git repository"


def _why_not_under_git(project: Path, source: TemplateSource) -> str:
    """Why git could not give back a file a re-render overwrites ("" when it could)."""
    if source.ref is None:  # project_template found no git executable
        return _NO_GIT
    inside = subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"], cwd=project, capture_output=True, text=True, check=False
    )
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return _NO_REPOSITORY
    if not git(project, "ls-files", "--", ANSWERS_FILE).strip():
        return f"the project's files are not committed to git ({ANSWERS_FILE} is not tracked)"
    return ""


def _not_under_git(project: Path, why: str) -> ScaffoldError:
    command = "batchframe update" if project == Path() else f"batchframe update {project}"
    where = "" if project == Path() else f" (in {project})"
    first = {_NO_GIT: "install git, then git init && ", _NO_REPOSITORY: "git init && "}.get(why, "")
    return ScaffoldError(
        f"{project.resolve()} is not under git: {why}. Re-rendering it with the new templates would overwrite "
        "your edits with no way back.",
        hint=f'Commit it first{where}: {first}git add -A && git commit -m "before update", then run '
        f"{command} again. Or run {command} --force: it copies every file it overwrites to {BACKUP_DIR}/<time>/ "
        "in the project first.",
    )


def _why_no_merge(project: Path, source: TemplateSource) -> str:
    """Why copier's three-way update cannot run in this git-tracked project ("" when it can)."""
    import yaml

    answers = yaml.safe_load((project / ANSWERS_FILE).read_text(encoding="utf-8")) or {}
    if git(project, "status", "--porcelain", "--", ".").strip():
        return f"{project.resolve()} has uncommitted changes"
    commit = answers.get("_commit")
    if not commit or Path(str(answers.get("_src_path", ""))) != source.path:
        return "the project was not made from this machine's template history"
    if commit not in git(source.path, "tag", "--list", str(commit)).split():
        return f"the template version {commit} is not in the local template history"
    return ""


def _tracked_files(project: Path) -> frozenset[str]:
    """The project's files git has (paths relative to the project): a recopy over them is undone with git."""
    return frozenset(git(project, "ls-files", "-z", "--", ".").split("\0")) - {""}


def _recopy(
    project: Path, source: TemplateSource, data: dict[str, Any], *, reason: str, tracked: frozenset[str]
) -> UpdateReport:
    """Copier's recopy, after saving each file it overwrites that git does not have (all of them without git)."""
    at_risk = [path for path in _files_a_recopy_changes(project, source, data) if path not in tracked]
    backup = _back_up(project, at_risk) if at_risk else None
    if backup is not None:
        reason += f"; saved the {_files(len(at_risk))} it rewrites to {backup} first"
    elif not tracked:  # without git: say that nothing of the user's is lost
        reason += "; none of the project's files differs from the new render, so nothing needed saving"
    logger.warning("Cannot merge template changes (%s): re-rendering the project instead (recopy).", reason)
    _recopy_into(project, source, data)
    return UpdateReport(merged=False, reason=reason, conflicts=_conflicts(project), ref=source.ref, backup=backup)


def _recopy_into(folder: Path, source: TemplateSource, data: dict[str, Any]) -> None:
    """Copier's recopy (keep the answers in ``folder``, discard the project's evolution), from ``source``.

    copier's own ``run_recopy`` renders from the answers' ``_src_path``: on another machine, or after
    the virtualenv moved, that folder does not exist. A copy over the folder reuses its answers too.
    """
    _copier("run_copy", str(source.path), folder, data=data, vcs_ref=source.ref, defaults=True, overwrite=True)


def _files(count: int) -> str:
    return "1 file" if count == 1 else f"{count} files"


def _files_a_recopy_changes(project: Path, source: TemplateSource, data: dict[str, Any]) -> list[str]:
    """The project's existing files a recopy would rewrite: the same recopy, rendered into a scratch folder first."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="batchframe-update-") as scratch:
        preview = Path(scratch) / project.resolve().name  # the same folder name: templates may use it
        preview.mkdir()
        shutil.copy2(project / ANSWERS_FILE, preview / ANSWERS_FILE)
        _recopy_into(preview, source, data)
        rendered = (p.relative_to(preview).as_posix() for p in preview.rglob("*") if not p.is_dir())
        return sorted(path for path in rendered if _differs(project / path, preview / path))


def _differs(existing: Path, rendered: Path) -> bool:
    if existing.is_symlink() or rendered.is_symlink():
        return existing.is_symlink() or existing.exists()
    if not existing.is_file():
        return False  # nothing to lose (a folder in its place makes copier fail before writing it)
    try:
        return existing.read_bytes() != rendered.read_bytes()
    except OSError:
        return True


def _back_up(project: Path, paths: list[str]) -> Path:
    """Copy ``paths`` (relative to ``project``) to a new ``.batchframe-backup/<time>/`` folder; return it."""
    from datetime import datetime

    stamp = datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
    folder, n = project / BACKUP_DIR / stamp, 1
    while folder.exists():
        folder, n = project / BACKUP_DIR / f"{stamp}-{n}", n + 1
    try:
        for path in paths:
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(project / path, folder / path, follow_symlinks=False)
    except OSError as exc:
        raise ScaffoldError(
            f"Could not save {path} to {folder} before re-rendering ({exc}); nothing was re-rendered.",
            hint="Free some space or fix the permissions, then run batchframe update again.",
        ) from exc
    return folder


_NOT_SCANNED = frozenset({".git", BACKUP_DIR, ".venv", "venv", "__pycache__", "batchframe_outputs", "node_modules"})


def _conflicts(project: Path) -> list[Path]:
    import os

    found = []
    for folder, dirs, files in os.walk(project):
        dirs[:] = [d for d in dirs if d not in _NOT_SCANNED]
        for name in files:
            path = Path(folder, name)
            with contextlib.suppress(UnicodeDecodeError, OSError):
                if CONFLICT_MARKER in path.read_text(encoding="utf-8"):
                    found.append(path)
    return sorted(found)
