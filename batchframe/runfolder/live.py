"""A running run, seen and steered from outside: ``status.json`` and ``control.json`` in its run folder.

Every run (from a terminal or from ``batchframe ui``) rewrites ``status.json`` about twice a second
with its counters and state, and reads ``control.json`` four times a second for a ``pause``,
``resume`` or ``stop`` sent by ``send_control``. Both are plain files, so they work wherever the run
folder is reachable, with no signals (which Windows lacks and which a paused shell would catch) and
no socket to keep open. The run folder stays the only state: the UI keeps nothing in memory.

The link is a thread, not a task on the run's event loop, so a ``process`` that blocks the loop does
not freeze the status; commands are handed to the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import threading
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from batchframe.errors import UsageError
from batchframe.runfolder.files import read_regular_text
from batchframe.runfolder.folder import CONTROL_NAME, STATUS_NAME, write_json_atomically
from batchframe.runfolder.stats import Stats

if TYPE_CHECKING:
    import asyncio  # the reader of status.json (runs, the UI) needs no event loop

logger = logging.getLogger(__name__)

LAUNCH_ID_ENV = "BATCHFRAME_LAUNCH_ID"
WRITE_EVERY_S = 0.5
POLL_EVERY_S = 0.25

Command = Literal["pause", "resume", "stop", "tune"]
COMMANDS: tuple[str, ...] = get_args(Command)
FINISHED, KILLED = "finished", "killed"


@dataclass(frozen=True)
class RunStatus:
    """What ``status.json`` says of a run, with ``killed`` for a run whose process is gone unfinished.

    Attributes:
        state: running, pausing (in-flight items finishing), paused, stopping, finished or killed.
        pid: the process that runs it.
        succeeded, failed, failures_by_type, retries, rate_limited, cooldown_total_s: the whole run's
            (every part of a resumed one), as everywhere a run's counts show; the last three are None
            in the status of a run of an older batchframe.
        completed: succeeded + failed + done before a resume: the N of "N / TOTAL".
        eta_s: seconds left at the current rate, when the total is known.
        cooldown_s: seconds left of a run-wide ``RateLimited`` cool-down when the status was written
            (no item starts until it ends); 0 when there is none.
        updated_at: when the status was written (seconds since the epoch).
        outcome: how it ended (completed, stopped, fatal), once finished.
        launch_id: the ``BATCHFRAME_LAUNCH_ID`` of the process running it (set by ``batchframe ui``).
        pid_started: when that process started (``/proc``'s clock ticks since boot), so a process that
            got the same PID later is not taken for it; None where there is no ``/proc``.
        concurrency, limit_per_s, adaptive: the limits now (``batchframe tune`` changes them; the
            adaptive one moves by itself); ``limit_per_s`` is None without a start rate limit.
        control_seq, control_result, control_error: the last command of ``control.json`` carried out,
            and what it changed (a tune's ``name: old -> new`` lines) or why it was refused.
    """

    state: str
    pid: int
    total: int | None = None
    succeeded: int = 0
    failed: int = 0
    not_processed: int = 0
    skipped: int = 0
    retrying: int = 0
    in_flight: int = 0
    completed: int = 0
    rate_per_s: float = 0.0
    eta_s: float | None = None
    elapsed_s: float = 0.0
    cooldown_s: float = 0.0
    updated_at: float = 0.0
    outcome: str | None = None
    exit_code: int | None = None
    launch_id: str | None = None
    failures_by_type: dict[str, int] = field(default_factory=dict)
    retries: int | None = None
    rate_limited: int | None = None
    cooldown_total_s: float | None = None
    pid_started: str | None = None
    concurrency: int | None = None
    limit_per_s: float | None = None
    adaptive: bool | None = None
    control_seq: int | None = None
    control_result: list[str] | None = None
    control_error: str | None = None

    @property
    def live(self) -> bool:
        """Whether the run is still going (its process is there and it has not finished)."""
        return self.state not in (FINISHED, KILLED)


class RunNotLiveError(UsageError):
    """A command was sent to a run that is not running."""


def read_status(run_dir: Path) -> RunStatus | None:
    """The run's status, or None when it has none (an older version's run, or one that never started)."""
    try:
        data = json.loads(read_regular_text(run_dir / STATUS_NAME))
        fields = _status_fields()
        known = {key: value for key, value in data.items() if key in fields}
        if not all(_is_a(value, fields[key]) for key, value in known.items()):
            return None  # a status.json edited by hand: the run is shown from its journal and summary
        status = RunStatus(**known)
    except (OSError, ValueError, TypeError, AttributeError, RecursionError):  # not JSON; not an object
        return None
    if status.live and not _alive(status.pid, status.pid_started):
        return dataclasses.replace(status, state=KILLED)
    return status


@functools.cache
def _status_fields() -> dict[str, Any]:
    """Each field of ``RunStatus`` and its type."""
    return typing.get_type_hints(RunStatus)


def _is_a(value: object, kind: Any) -> bool:
    """Whether a value read from JSON is of ``kind``: ``int``, ``float``, ``str``, ``X | None``, ``dict[str, int]``."""
    if typing.get_origin(kind) is types.UnionType:
        return any(_is_a(value, member) for member in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if typing.get_origin(kind) is list:
        return isinstance(value, list) and all(_is_a(each, typing.get_args(kind)[0]) for each in value)
    if typing.get_origin(kind) is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and _is_a(v, int) for k, v in value.items())
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)  # JSON's NaN and Infinity too
    return isinstance(value, kind)


def send_control(run_dir: Path, command: Command, values: dict[str, Any] | None = None) -> int:
    """Ask a running run to pause, resume, stop or tune its limits; it acts within a quarter of a second.

    Args:
        run_dir: the run folder.
        command: what to do.
        values: for ``tune``, the settings to change (``-p`` names, typed values).

    Returns:
        The command's sequence number: ``status.json``'s ``control_seq`` says when it was carried out.

    Raises:
        RunNotLiveError: the run is finished, was killed, or never wrote a status.
        UsageError: an unknown command.
    """
    if command not in COMMANDS:
        raise UsageError(f"Unknown run command {command!r}.", hint=f"Use one of: {', '.join(COMMANDS)}.")
    status = read_status(run_dir)
    if status is None or not status.live:
        state = "has no status" if status is None else f"is {status.state}"
        raise RunNotLiveError(
            f"The run in {run_dir} {state}: it cannot {command}.",
            hint=f"Only a running run can {command}. A killed or stopped run goes on with: batchframe resume {run_dir}",
        )
    seq = time.time_ns()
    write_json_atomically(run_dir / CONTROL_NAME, {"seq": seq, "command": command, "values": values or {}})
    return seq


def _alive(pid: int, started: str | None = None) -> bool:
    """Whether ``pid`` runs and is the process that started at ``started`` (when known): a reused PID is not."""
    if pid <= 0:
        return False
    if started is not None and process_started(pid) not in (started, None):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    except (OSError, OverflowError):  # OverflowError: a number no PID can be
        return False
    return not _zombie(pid)


def process_started(pid: int) -> str | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/PID/stat`` field 22); None without ``/proc``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return fields[19] if len(fields) > 19 else None  # fields[0] is field 3 (the state)


def _zombie(pid: int) -> bool:
    """A process that exited but was not reaped yet (e.g. by a UI that launched it) is gone for us."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc (macOS): trust kill(0)
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


class RunLink:
    """The running side: writes ``status.json`` and applies the commands of ``control.json``.

    Args:
        run_dir: the run folder.
        stats: the run's live counters.
        state: the driver's state word (running, pausing, paused, stopping), read on the link's thread.
        apply: carries out a command with its values; called on the run's event loop. Returns what
            changed (lines), or raises ``UsageError`` (a tune's bad value) with the reason.
    """

    def __init__(
        self,
        run_dir: Path,
        stats: Stats,
        *,
        state: Callable[[], str],
        apply: Callable[[str, dict[str, Any]], list[str]],
    ) -> None:
        self.run_dir = run_dir
        self.stats = stats
        self.state = state
        self.apply = apply
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_seq = self._control_seq()  # a command left by an earlier part of the run is not ours
        self._control_mtime: int | None = None
        self._launch_id = os.environ.get(LAUNCH_ID_ENV) or None
        self._pid_started = process_started(os.getpid())
        self._failed = False
        self._done: tuple[int, list[str] | None, str | None] | None = None  # the last command carried out
        self._write_soon = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write the first status and start the thread that keeps it fresh and reads commands."""
        self._loop = loop
        self.write()
        self._thread = threading.Thread(target=self._run, name="batchframe-run-link", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread (the last status is written by ``finish``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def finish(self, outcome: str, exit_code: int) -> None:
        """The run has ended and its files are written: say so, for good."""
        self.close()
        self.write(state=FINISHED, outcome=outcome, exit_code=exit_code)

    def write(self, *, state: str | None = None, outcome: str | None = None, exit_code: int | None = None) -> None:
        """Write ``status.json`` now; a failure is logged once, never raised (the run matters more)."""
        stats = self.stats
        status = RunStatus(
            state=state or self.state(),
            pid=os.getpid(),
            total=stats.total,
            succeeded=stats.whole_succeeded,
            failed=stats.whole_failed,
            not_processed=stats.not_processed,
            skipped=stats.skipped,
            retrying=stats.retrying,
            in_flight=stats.in_flight,
            completed=stats.completed,
            rate_per_s=round(stats.rate_per_s, 2),
            eta_s=None if stats.eta_s is None else round(stats.eta_s, 1),
            elapsed_s=round(stats.elapsed_s, 3),
            cooldown_s=0.0 if state == FINISHED else round(stats.cooldown_s, 2),  # a stop cuts it short
            updated_at=time.time(),
            outcome=outcome,
            exit_code=exit_code,
            launch_id=self._launch_id,
            pid_started=self._pid_started,
            failures_by_type=stats.whole_failures_by_type,
            retries=stats.whole_retries,
            rate_limited=stats.whole_rate_limited,
            cooldown_total_s=round(stats.whole_cooldown_total_s, 2),
            control_seq=self._done[0] if self._done else None,
            control_result=self._done[1] if self._done else None,
            control_error=self._done[2] if self._done else None,
            concurrency=stats.limits.concurrency or None,
            limit_per_s=None if stats.limits.per_second is None else round(stats.limits.per_second, 3),
            adaptive=stats.limits.adaptive,
        )
        try:
            write_json_atomically(self.run_dir / STATUS_NAME, dataclasses.asdict(status))
        except (OSError, ValueError) as exc:
            if not self._failed:
                self._failed = True
                logger.warning("Could not write %s (the UI will not see this run live): %s", STATUS_NAME, exc)

    def _run(self) -> None:
        next_write = time.monotonic() + WRITE_EVERY_S
        while not self._stop.wait(POLL_EVERY_S):
            self._poll_control()
            if time.monotonic() >= next_write or self._write_soon:
                self._write_soon = False
                self.write()
                next_write = time.monotonic() + WRITE_EVERY_S

    def _poll_control(self) -> None:
        path = self.run_dir / CONTROL_NAME
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return
        if mtime == self._control_mtime:
            return
        self._control_mtime = mtime
        seq, command, values = self._read_control()
        if seq <= self._last_seq or command not in COMMANDS or self._loop is None:
            return
        self._last_seq = seq
        with contextlib.suppress(RuntimeError):  # the loop closed: the run is over
            self._loop.call_soon_threadsafe(self._carry_out, seq, command, values)

    def _carry_out(self, seq: int, command: str, values: dict[str, Any]) -> None:
        """On the run's loop: the command, and what came of it for ``status.json`` (written at the next poll)."""
        try:
            self._done = (seq, self.apply(command, values), None)
        except UsageError as exc:
            logger.warning("The %s command from control.json was refused: %s", command, exc.message)
            self._done = (seq, None, str(exc))
        self._write_soon = True

    def _control_seq(self) -> int:
        return self._read_control()[0]

    def _read_control(self) -> tuple[int, str, dict[str, Any]]:
        try:
            data = json.loads(read_regular_text(self.run_dir / CONTROL_NAME))
            values = data.get("values") or {}
            return int(data["seq"]), str(data["command"]), values if isinstance(values, dict) else {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return 0, "", {}
