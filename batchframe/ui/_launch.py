"""Starting ``batchframe exec``, ``resume`` and ``retry`` from the UI, each as a process of its own.

A run launched from the page must outlive the server and never block it, so it is a separate
``batchframe`` process in its own session, with no terminal: stdin is empty and its output goes to a
file in the server's private scratch folder (a pipe nobody reads could fill up and block it). The
process carries a random ``BATCHFRAME_LAUNCH_ID``, which the run writes into its ``status.json``:
that is how its run folder is found. If the process ends before a status names it (a bad project, a
run that has nothing to resume), its output is the error to show. A thread waits on each process, so
none is left a zombie. Secret parameters go in the process's environment (``BATCHFRAME_PARAM_<NAME>``),
never on its command line, which every user of the machine can read (``ps``, ``/proc/PID/cmdline``).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

import anyio.to_thread

from batchframe._text import without_ansi
from batchframe.errors import BatchframeError
from batchframe.runfolder.live import LAUNCH_ID_ENV, read_status
from batchframe.ui._runs_view import folder_names

FIND_EVERY_S = 0.1
FIND_TIMEOUT_S = 20.0
_OUTPUT_TAIL_BYTES = 16 * 1024
_PANEL_EDGE = re.compile(r"^\s*[╭╰┏┗].*[╮╯┓┛]\s*$")
_PANEL_LINE = re.compile(r"^\s*[│┃] ?(.*?)\s*[│┃]\s*$")

# `-c` rather than `-m batchframe`: `-m` puts the working directory first on sys.path, where a user's
# `json.py` or `logging.py` would shadow the standard library (the console script never does that).
_CHILD_CODE = (
    "import sys\n"
    "if sys.path and sys.path[0] in ('', '.'):\n"
    "    del sys.path[0]\n"
    "from batchframe.cli.app import app\n"
    "app(prog_name='batchframe')\n"
)


class LaunchError(BatchframeError):
    """The launched process ended before its run started; the message is what it printed."""

    title = "The run did not start"


class Launcher:
    """Starts ``batchframe`` processes and finds the run folder each one works in.

    Args:
        scratch: a private folder for the processes' output files.
        workdir: the working directory of the processes (relative paths in parameters resolve there).
        find_timeout_s: how long to look for the run folder before giving up on finding it.
    """

    def __init__(self, scratch: Path, workdir: Path, *, find_timeout_s: float = FIND_TIMEOUT_S) -> None:
        self.scratch = scratch
        self.workdir = workdir
        self.find_timeout_s = find_timeout_s

    async def exec_run(
        self,
        project: Path,
        *,
        config: str | None,
        params: Sequence[str],
        output_dir: Path,
        environment: Mapping[str, str] | None = None,
        limit: int | None = None,
    ) -> Path | None:
        """``batchframe exec PROJECT -c CONFIG -d OUTPUT_DIR --no-input [--limit N] -p ...``: its new run folder.

        ``environment``: variables added to the process's (the secrets, as ``BATCHFRAME_PARAM_<NAME>``).

        Returns:
            The run folder, or None when the process is still preparing after ``find_timeout_s``.

        Raises:
            LaunchError: the process ended without starting a run (its output says why).
        """
        args = ["exec", str(project), "-d", str(output_dir), "--no-input"]
        if config:
            args += ["-c", config]
        if limit is not None:
            args += ["--limit", str(limit)]
        for assignment in params:
            args += ["-p", assignment]
        known = await anyio.to_thread.run_sync(folder_names, output_dir)
        return await self._launch(args, partial(_find_new, output_dir, known), environment)

    async def resume_run(self, run_dir: Path, *, environment: Mapping[str, str] | None = None) -> Path | None:
        """``batchframe resume RUN_DIR --no-input``: the same folder, once the new process runs it.

        ``environment``: the run's secrets again, as for ``exec_run`` (the journal does not keep them).
        """
        return await self._launch(["resume", str(run_dir), "--no-input"], partial(_find_same, run_dir), environment)

    async def retry_run(
        self, run_dir: Path, output_dir: Path, *, environment: Mapping[str, str] | None = None
    ) -> Path | None:
        """``batchframe retry RUN_DIR --no-input``: the new run folder it creates in ``output_dir``.

        ``environment``: the run's secrets again, as for ``exec_run``.
        """
        known = await anyio.to_thread.run_sync(folder_names, output_dir)
        args = ["retry", str(run_dir), "--no-input"]
        return await self._launch(args, partial(_find_new, output_dir, known), environment)

    async def _launch(
        self, args: list[str], find: Callable[[str], Path | None], environment: Mapping[str, str] | None
    ) -> Path | None:
        """Start ``batchframe ARGS`` and poll (off the event loop) until ``find(launch_id)`` names its folder."""
        launch_id = uuid.uuid4().hex
        process, output = await anyio.to_thread.run_sync(self._start, args, launch_id, dict(environment or {}))
        deadline = time.monotonic() + self.find_timeout_s
        while True:
            ended = process.returncode is not None  # set by the reaper thread; read before looking
            found = await anyio.to_thread.run_sync(find, launch_id)
            if found is not None:
                _forget(output)  # the process keeps writing to it; the file goes when it exits
                return found
            if ended:
                text = await anyio.to_thread.run_sync(_read_output, output)
                _forget(output)
                raise LaunchError(text or f"batchframe {args[0]} ended (exit code {process.returncode}).")
            if time.monotonic() >= deadline:
                return None
            await anyio.sleep(FIND_EVERY_S)

    def _start(
        self, args: list[str], launch_id: str, environment: Mapping[str, str]
    ) -> tuple[subprocess.Popen[bytes], Path]:
        fd, name = tempfile.mkstemp(dir=self.scratch, prefix=f"{args[0]}-", suffix=".txt")
        with os.fdopen(fd, "wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-c", _CHILD_CODE, *args],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, **environment, LAUNCH_ID_ENV: launch_id, "NO_COLOR": "1", "COLUMNS": "120"},
                start_new_session=True,  # the run outlives the server and ignores its Ctrl-C
            )
        threading.Thread(target=process.wait, name=f"batchframe-ui-reap-{process.pid}", daemon=True).start()
        return process, Path(name)


def _find_new(output_dir: Path, known: set[str], launch_id: str) -> Path | None:
    """A folder of ``output_dir`` not in ``known`` whose status carries ``launch_id``."""
    for name in sorted(folder_names(output_dir) - known):
        status = read_status(output_dir / name)
        if status is not None and status.launch_id == launch_id:
            return output_dir / name
    return None


def _find_same(run_dir: Path, launch_id: str) -> Path | None:
    """``run_dir`` once its status carries ``launch_id`` (a resume runs in the same folder)."""
    status = read_status(run_dir)
    return run_dir if status is not None and status.launch_id == launch_id else None


def _read_output(path: Path) -> str:
    """The end of what the process printed, without terminal colour codes."""
    try:
        with path.open("rb") as output:
            size = output.seek(0, os.SEEK_END)
            output.seek(max(0, size - _OUTPUT_TAIL_BYTES))
            data = output.read()
    except OSError:
        return ""
    return _unboxed(without_ansi(data.decode("utf-8", errors="replace"))).strip()


def _unboxed(text: str) -> str:
    """The CLI's error panel without its frame: the page draws its own."""
    lines = []
    for line in text.splitlines():
        if _PANEL_EDGE.match(line):
            continue
        inner = _PANEL_LINE.match(line)
        lines.append(inner.group(1) if inner else line)
    return "\n".join(lines)


def _forget(path: Path) -> None:
    with contextlib.suppress(OSError):  # Windows cannot remove a file a process has open: it stays
        path.unlink()
