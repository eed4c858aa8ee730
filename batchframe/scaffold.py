"""Scaffolding with copier: ``batchframe init``, ``batchframe new-config`` and ``batchframe update``.

copier's three-way ``update`` needs the template to be a git repository with one reference per
version. The templates ship as plain folders inside the wheel, so batchframe keeps a git repository
of the project template in the user's cache folder, with one commit and tag per batchframe version
(and template content), and renders from it: a project records the tag it was made from
(``_commit`` in ``.copier-answers.yml``) and ``update`` merges from that tag to the installed one.
Without git, or without that history, ``update`` falls back to ``recopy`` and says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import keyword
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchframe.errors import UsageError

logger = logging.getLogger(__name__)

ANSWERS_FILE = ".copier-answers.yml"
CONFLICT_MARKER = "<<<<<<< before updating"
_GIT_IDENTITY = ["-c", "user.name=batchframe", "-c", "user.email=batchframe@localhost"]


class ScaffoldError(UsageError):
    """A scaffolding command cannot do what was asked (the message says why and what to do)."""

    title = "Scaffolding error"


# ------------------------------------------------------------------------------------------ templates


def templates_root() -> Path:
    """The shipped templates: inside the installed package, or ``templates/`` of a source checkout."""
    packaged = Path(__file__).resolve().parent / "_templates"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "templates"


def cache_dir() -> Path:
    """Where batchframe keeps the versioned template repository (``BATCHFRAME_CACHE_DIR`` overrides)."""
    override = os.environ.get("BATCHFRAME_CACHE_DIR")
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("batchframe"))


def _installed_version() -> str:
    from batchframe import __version__

    return __version__


@dataclass(frozen=True)
class TemplateSource:
    """Where copier renders the project template from.

    Attributes:
        path: a git repository (versioned) or a plain folder.
        ref: the tag to render, or None for a plain folder.
    """

    path: Path
    ref: str | None


def project_template(template_dir: Path | None = None, version: str | None = None) -> TemplateSource:
    """The project template as a tagged commit of the cache repository (a plain folder without git)."""
    folder = template_dir or templates_root() / "project"
    if shutil.which("git") is None:
        logger.warning("git is not installed: projects cannot be updated with a three-way merge later.")
        return TemplateSource(folder, None)
    repo = cache_dir() / "project-template"
    tag = f"v{version or _installed_version()}+{_digest(folder)}"
    with _locked(repo):
        if not (repo / ".git").is_dir():
            _git(repo, "init", "-q")
        if tag not in _git(repo, "tag", "--list", tag).split():
            _commit_template(repo, folder, tag)
    return TemplateSource(repo, tag)


def _digest(folder: Path) -> str:
    hasher = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        hasher.update(path.relative_to(folder).as_posix().encode())
        hasher.update(path.read_bytes())
    return hasher.hexdigest()[:10]


def _commit_template(repo: Path, folder: Path, tag: str) -> None:
    for entry in repo.iterdir():
        if entry.name != ".git":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    shutil.copytree(folder, repo, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    _git(repo, "add", "--all")
    _git(repo, *_GIT_IDENTITY, "commit", "-q", "--allow-empty", "-m", f"batchframe templates {tag}")
    _git(repo, "tag", tag)


@contextlib.contextmanager
def _locked(repo: Path) -> Iterator[None]:
    """Serialise writers of the cache repository (two ``init`` at once)."""
    repo.mkdir(parents=True, exist_ok=True)
    with (repo.parent / f"{repo.name}.lock").open("w") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock, still correct for one process
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ScaffoldError(f"git {' '.join(args)} failed in {cwd}: {result.stderr.strip()}")
    return result.stdout


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
        "batchframe_version": version or _installed_version(),
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
    _git(target, "init", "-q")
    _git(target, "add", "--all")
    identity = [] if _git_identity_configured(target) else _GIT_IDENTITY
    _git(target, *identity, "commit", "-q", "-m", "New batchframe project (batchframe init)")


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
    project: Path = Path(), *, template_dir: Path | None = None, version: str | None = None
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
    data = {"batchframe_version": version or _installed_version()}
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
    if _git(project, "status", "--porcelain").strip():
        return f"{project.resolve()} has uncommitted changes"
    commit = answers.get("_commit")
    if not commit or Path(str(answers.get("_src_path", ""))) != source.path:
        return "the project was not made from this machine's template history"
    if commit not in _git(source.path, "tag", "--list", str(commit)).split():
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
