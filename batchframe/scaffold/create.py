"""Scaffolding with copier: ``batchframe init``, ``batchframe new-config`` and ``batchframe update``.

The project template is rendered from its version history (``_template_history``), so ``update``
can do copier's three-way merge. Without that history it falls back to ``recopy`` and says so; a
project git cannot restore (no git, no repository) is re-rendered only with ``force``, after its
files that the recopy rewrites are copied to ``.batchframe-backup/<time>/``.
"""

from __future__ import annotations

import keyword
import logging
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchframe.scaffold.history import (
    GIT_IDENTITY,
    ScaffoldError,
    git,
    installed_version,
    project_template,
    run_copier,
    templates_root,
)
from batchframe.scaffold.update import UpdateReport, update_project

logger = logging.getLogger(__name__)


__all__ = [
    "ScaffoldError",
    "UpdateReport",
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
    run_copier(
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
    run_copier("run_copy", str(templates_root() / "config"), config_dir, data=answers, defaults=True)
    return target
