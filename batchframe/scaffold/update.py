"""``batchframe update``: bring a generated project to the installed templates without losing the user's work.

With git and this machine's template history: copier's three-way update. A clean git repository
without that history: a re-render (``recopy``) that ``git diff`` shows. Without git: refused, unless
``force``, which first copies every file the re-render rewrites to ``.batchframe-backup/<time>/``.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchframe.scaffold.history import (
    ANSWERS_FILE,
    CONFLICT_MARKER,
    ScaffoldError,
    TemplateSource,
    git,
    installed_version,
    project_template,
    run_copier,
)

logger = logging.getLogger(__name__)


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
    run_copier(
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
    run_copier("run_copy", str(source.path), folder, data=data, vcs_ref=source.ref, defaults=True, overwrite=True)


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
