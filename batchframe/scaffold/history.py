"""The project template's version history: a git repository in the user's cache folder.

copier's three-way ``update`` needs the template to be a git repository with one reference per
version. The templates ship as plain folders inside the wheel, so batchframe commits the shipped
project template to a repository in the cache folder, one commit and tag per batchframe version and
template content, and renders from there: a project records the tag it came from (``_commit``) and
``update`` merges from that tag to the installed one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchframe.errors import UsageError

logger = logging.getLogger(__name__)

GIT_IDENTITY = ["-c", "user.name=batchframe", "-c", "user.email=batchframe@localhost"]


class ScaffoldError(UsageError):
    """A scaffolding command cannot do what was asked (the message says why and what to do)."""

    title = "Scaffolding error"


def templates_root() -> Path:
    """The shipped templates: inside the installed package, or ``templates/`` of a source checkout."""
    package = Path(__file__).resolve().parent.parent
    packaged = package / "_templates"
    return packaged if packaged.is_dir() else package.parent / "templates"


def cache_dir() -> Path:
    """Where batchframe keeps the versioned template repository (``BATCHFRAME_CACHE_DIR`` overrides)."""
    override = os.environ.get("BATCHFRAME_CACHE_DIR")
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("batchframe"))


def installed_version() -> str:
    """The version of batchframe that is running."""
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
    tag = f"v{version or installed_version()}+{_digest(folder)}"
    with _locked(repo):
        if not (repo / ".git").is_dir():
            git(repo, "init", "-q")
        if tag not in git(repo, "tag", "--list", tag).split():
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
    git(repo, "add", "--all")
    git(repo, *GIT_IDENTITY, "commit", "-q", "--allow-empty", "-m", f"batchframe templates {tag}")
    git(repo, "tag", tag)


@contextlib.contextmanager
def _locked(repo: Path) -> Iterator[None]:
    """Serialise writers of the cache repository (two ``init`` at once)."""
    import filelock

    repo.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(repo.parent / f"{repo.name}.lock"):
        yield


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` and return its output; a failure is a ``ScaffoldError`` with git's message."""
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ScaffoldError(f"git {' '.join(args)} failed in {cwd}: {result.stderr.strip()}")
    return result.stdout


ANSWERS_FILE = ".copier-answers.yml"
CONFLICT_MARKER = "<<<<<<< before updating"


def run_copier(function: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``copier.<function>``; copier's own errors become a ``ScaffoldError``."""
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
