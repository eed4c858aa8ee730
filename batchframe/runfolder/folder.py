"""The run folder itself: the name of each file in it, creating it, checking it, and rewriting its files safely.

Every other module names a run file through the constants here, so a file name lives in one place.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from batchframe.errors import RunError, UsageError

__all__ = [
    "CONTROL_NAME",
    "DEFAULT_OUTPUT_DIR",
    "FAILED_NAME",
    "JOURNAL_NAME",
    "LOCK_NAME",
    "LOG_NAME",
    "RUN_DIR_FORMAT",
    "RUN_FILES",
    "STATUS_NAME",
    "SUMMARY_NAME",
    "create_run_dir",
    "keep_final_failures",
    "refuse_odd_files",
    "write_json_atomically",
]

DEFAULT_OUTPUT_DIR = Path("batchframe_outputs")
"""Where run folders go unless ``-d`` says otherwise (relative to the current directory)."""
RUN_DIR_FORMAT = "%Y-%m-%dT%H-%M-%S"
"""A run folder's name is its start time (with a ``-2``, ``-3``... suffix when that second is taken)."""

JOURNAL_NAME = "journal.sqlite"
LOCK_NAME = "journal.lock"
FAILED_NAME = "failed.jsonl"
LOG_NAME = "logs.txt"
SUMMARY_NAME = "summary.json"
STATUS_NAME = "status.json"
CONTROL_NAME = "control.json"

RUN_FILES = (
    JOURNAL_NAME, f"{JOURNAL_NAME}-wal", f"{JOURNAL_NAME}-shm", LOCK_NAME, FAILED_NAME, LOG_NAME,
    SUMMARY_NAME, STATUS_NAME, CONTROL_NAME,
)  # fmt: skip
"""Every file batchframe writes in a run folder."""


def create_run_dir(output_dir: Path, started: dt.datetime) -> Path:
    """``output_dir/<start time>`` (owner-only), with a ``-2``, ``-3``... suffix when that second is taken.

    Raises:
        UsageError: ``output_dir`` is a file, or cannot be created or written to.
    """
    _check_output_dir(output_dir)
    stem = started.strftime(RUN_DIR_FORMAT)
    for attempt in range(1, 10_000):
        candidate = output_dir / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            candidate.mkdir(mode=0o700)
        except FileExistsError:
            continue
        except OSError as exc:
            raise _unwritable(output_dir, exc) from None
        return candidate
    raise RunError(f"Could not create a run folder in {output_dir}.", hint="Clean up old runs in that folder.")


def _check_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(
            f"The output folder {output_dir} is a file, not a folder.",
            hint=f"Give -d a folder (it is created if missing), e.g. -d {DEFAULT_OUTPUT_DIR}.",
        )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(output_dir, exc) from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise _unwritable(output_dir, PermissionError("permission denied"))


def _unwritable(output_dir: Path, exc: OSError) -> UsageError:
    return UsageError(
        f"Cannot create a run folder in {output_dir} ({exc.strerror or exc}).",
        hint=f"Give -d a folder you can write to, e.g. -d ./{DEFAULT_OUTPUT_DIR}.",
    )


def refuse_odd_files(run_dir: Path) -> None:
    """Refuse a run folder whose files are symlinks or not regular files (a FIFO, a device, a folder).

    A resume rewrites them: it would write through a link, and wait for good on a FIFO it opens to write.

    Raises:
        JournalError: one of the run's files is a symlink, a FIFO, a device or a folder.
    """
    from batchframe.runfolder.files import regular_or_missing
    from batchframe.runfolder.journal import JournalError

    linked = [name for name in RUN_FILES if (Path(run_dir) / name).is_symlink()]
    if linked:
        raise JournalError(
            f"{run_dir} has files that are symbolic links ({', '.join(linked)}); batchframe will not write "
            f"through them (a resume rewrites {FAILED_NAME} and the journal).",
            hint="Use the run's real folder, or replace the links with the files they point to.",
        )
    odd = [name for name in RUN_FILES if not regular_or_missing(Path(run_dir) / name)]
    if odd:  # a FIFO: opened to be written (a resume's logs.txt, failed.jsonl), it would wait for good
        raise JournalError(
            f"{run_dir} has files that are not regular files ({', '.join(odd)}: a FIFO, a device or a "
            "folder); batchframe will not read or write them.",
            hint=f"Move them away (a run's {LOG_NAME}, {FAILED_NAME} and {SUMMARY_NAME} are written anew "
            "when missing).",
        )


def keep_final_failures(run_dir: Path, final: set[int]) -> None:
    """Drop from ``failed.jsonl`` the items a resume runs again (not processed, in flight), and a torn last line.

    Streams the file into a sibling and renames it over the original, so a crash here loses nothing.
    """
    failed_jsonl = run_dir / FAILED_NAME
    if not failed_jsonl.is_file():
        return
    kept = failed_jsonl.with_name(failed_jsonl.name + ".tmp")
    with (
        failed_jsonl.open(encoding="utf-8", errors="surrogateescape") as lines,
        kept.open("w", encoding="utf-8", errors="surrogateescape") as out,
    ):
        for line in lines:
            try:
                index = json.loads(line).get("index")
            except (ValueError, AttributeError):
                continue  # a torn line from a crash mid-write
            if index in final:
                out.write(line if line.endswith("\n") else line + "\n")
    os.chmod(kept, 0o600)
    os.replace(kept, failed_jsonl)


def write_json_atomically(path: Path, data: Any, *, indent: int | None = None) -> None:
    """Replace ``path`` with ``data`` as JSON at once (a reader never sees half a file), owner-only.

    Values JSON cannot hold are written as their ``str()``; text is ASCII (any character is escaped).

    Raises:
        OSError: the folder cannot be written (the file is left as it was).
        ValueError: ``data`` holds a circular reference.
    """
    text = json.dumps(data, indent=indent, default=str, ensure_ascii=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text + ("\n" if indent is not None else ""))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
