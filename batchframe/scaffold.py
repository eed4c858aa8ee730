"""Scaffolding with copier: ``batchframe init``, ``batchframe new-config`` and ``batchframe update``.

The project template is rendered from its version history (``_template_history``), so ``update``
can do copier's three-way merge; without git or that history it falls back to ``recopy`` and says so.
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


def _questions(folder: Path) -> dict[str, Any]:
    import yaml

    config = yaml.safe_load((folder / "copier.yml").read_text(encoding="utf-8")) or {}
    return {key: value for key, value in config.items() if not key.startswith("_")}


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
    questions = _questions(template_dir)
    data: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key.strip():
            raise ScaffoldError(
                f"--data {assignment!r} is not of the form KEY=VALUE.", hint="e.g. --data source_kind=csv"
            )
        key = key.strip()
        if key not in questions:
            import difflib

            close = difflib.get_close_matches(key, list(questions), n=1)
            raise ScaffoldError(
                f"The template has no question {key!r}." + (f" Did you mean {close[0]!r}?" if close else ""),
                hint="Its questions are: " + ", ".join(sorted(questions)),
            )
        data[key] = _typed_answer(questions[key], value)
    return data


def _typed_answer(question: Any, value: str) -> Any:
    spec = question if isinstance(question, dict) else {}
    if spec.get("multiselect"):
        return [part.strip() for part in value.split(",") if part.strip()]
    kind = spec.get("type", "str")
    if kind == "bool":
        return value.strip().lower() in {"1", "true", "yes", "y", "on"}
    if kind in ("int", "float"):
        return int(value) if kind == "int" else float(value)
    return value


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
    except CopierError as exc:
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


@dataclass
class UpdateReport:
    """What ``update`` did.

    Attributes:
        merged: True for copier's three-way update, False for a recopy.
        reason: why it fell back to recopy (empty when merged).
        conflicts: files with conflict markers to resolve.
        ref: the template tag the project is now on.
    """

    merged: bool
    reason: str = ""
    conflicts: list[Path] = field(default_factory=list)
    ref: str | None = None


def update_project(
    project: Path = Path(), *, force: bool = False, template_dir: Path | None = None, version: str | None = None
) -> UpdateReport:
    """Bring a generated project to the installed templates, keeping its answers and the user's edits.

    Raises:
        ScaffoldError: not a generated project, or uncommitted changes in it.
    """
    answers_path = project / ANSWERS_FILE
    if not answers_path.is_file():
        raise ScaffoldError(
            f"{project.resolve()} has no {ANSWERS_FILE}, so it was not made by batchframe init.",
            hint="Run batchframe update inside a generated project, or pass its folder: batchframe update DIR",
        )
    source = project_template(template_dir, version)
    reason = _why_no_merge(project, source)
    data = {"batchframe_version": version or installed_version()}
    if reason and "uncommitted" in reason:
        raise ScaffoldError(reason, hint="Commit or stash your changes (git status), then run batchframe update again.")
    if reason:
        logger.warning("Cannot merge template changes (%s): re-rendering the project instead (recopy).", reason)
        _copier("run_recopy", project, data=data, vcs_ref=source.ref, defaults=True, overwrite=True, skip_answered=True)
    else:
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
    return UpdateReport(merged=not reason, reason=reason, conflicts=_conflicts(project), ref=source.ref)


def _why_no_merge(project: Path, source: TemplateSource) -> str:
    import yaml

    answers = yaml.safe_load((project / ANSWERS_FILE).read_text(encoding="utf-8")) or {}
    if source.ref is None:
        return "git is not installed"
    if not (project / ".git").exists():
        return "the project is not a git repository"
    if git(project, "status", "--porcelain").strip():
        return f"{project.resolve()} has uncommitted changes"
    commit = answers.get("_commit")
    if not commit or Path(str(answers.get("_src_path", ""))) != source.path:
        return "the project was not made from this machine's template history"
    if commit not in git(source.path, "tag", "--list", str(commit)).split():
        return f"the template version {commit} is not in the local template history"
    return ""


def _conflicts(project: Path) -> list[Path]:
    found = []
    for path in project.rglob("*"):
        if ".git" in path.parts or not path.is_file():
            continue
        with contextlib.suppress(UnicodeDecodeError, OSError):
            if CONFLICT_MARKER in path.read_text(encoding="utf-8"):
                found.append(path)
    return sorted(found)
