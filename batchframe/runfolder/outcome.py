"""How a run ended: its exit code, its outcome word, and whether it finished every item.

The one home of these rules: the run writes them (the journal's meta, summary.json), ``runs``, the UI,
``resume`` and ``retry`` read them.
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Mapping
from typing import Any

__all__ = [
    "COMPLETED",
    "EXIT_FAILED_ITEMS",
    "EXIT_FATAL",
    "EXIT_OK",
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
    "EXIT_USAGE",
    "FAILED_TO_START",
    "FATAL",
    "RESUMED",
    "STOPPED",
    "Outcome",
    "finished_every_item",
    "outcome_label",
    "signal_exit_code",
    "state_word",
]

EXIT_OK = 0
"""Every item succeeded."""
EXIT_FATAL = 1
"""The run could not go on: a fatal error, or it could not start (``BatchframeError``'s code)."""
EXIT_USAGE = 2
"""Nothing ran: a wrong path, parameter, config or command (``UsageError``'s code)."""
EXIT_FAILED_ITEMS = 3
"""Every item was tried, and some failed (they are in ``failed.jsonl``)."""
EXIT_SIGINT = 128 + signal.SIGINT  # 130: stopped by Ctrl-C
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143: stopped by SIGTERM


class Outcome(enum.Enum):
    """How the driver's run ended (its value is the ``outcome`` word of the journal and summary.json)."""

    COMPLETED = "completed"
    STOPPED = "stopped"
    FATAL = "fatal"


COMPLETED, STOPPED, FATAL = Outcome.COMPLETED.value, Outcome.STOPPED.value, Outcome.FATAL.value
FAILED_TO_START = "failed_to_start"
"""The outcome of a run whose Source, Service or back end could not be built (nothing ran)."""
RESUMED = "resumed"
"""The outcome while a resume goes on (the resume writes its own outcome when it ends)."""


def signal_exit_code(signum: int) -> int:
    """The exit code of a run stopped by ``signum`` (the shell's convention: 128 + the signal's number)."""
    return 128 + signum


def finished_every_item(meta: Mapping[str, Any], counts: Mapping[str, int]) -> bool:
    """Whether a run tried every item to the end (exit 0 or 3, none left, none in flight).

    Such a run has nothing to resume; ``retry`` re-runs its failed items.
    """
    return (
        meta.get("exit_code") in (EXIT_OK, EXIT_FAILED_ITEMS)
        and not counts.get("not_processed")
        and not counts.get("in_flight")
    )


def outcome_label(outcome: str | None, exit_code: int | None) -> str | None:
    """How a run that ended ended, in words; None when it has not ended.

    Exit 0 is "completed", exit 3 "completed with failures"; a stop is "stopped"; a fatal error or a
    run that could not start is "failed".
    """
    if outcome == STOPPED:
        return "stopped"
    if outcome in (FATAL, FAILED_TO_START):
        return "failed"
    if exit_code is None:
        return None
    return {EXIT_OK: "completed", EXIT_FAILED_ITEMS: "completed with failures"}.get(exit_code, "failed")


def state_word(meta: Mapping[str, Any], *, from_journal: bool) -> str:
    """A past run's state for the ``runs`` table: its exit code, "failed to start", or why there is none.

    "running or killed": the journal has no exit code yet. "unknown": no journal, and summary.json does not say.
    """
    if meta.get("outcome") == FAILED_TO_START:
        return "failed to start"
    code = meta.get("exit_code")
    if code is None:
        return "running or killed" if from_journal else "unknown"
    return str(code)
