"""The live counters of a run and how it ended: read by progress, the summary and the shell."""

from __future__ import annotations

import collections
import enum
import time
from dataclasses import dataclass, field


@dataclass
class Stats:
    """Live counters of a run; the progress display and the summary read them.

    Attributes:
        total: the source's length when it has one.
        read: items taken from the source so far.
        succeeded: items processed successfully.
        failed: items that failed for good.
        not_processed: items a stopped or crashed run read but never finished (recorded as failed items).
        skipped: items an earlier part of this run finished already (a resumed run skips them).
        retrying: items waiting for a retry.
        in_flight: items being processed right now.
        failures_by_type: failed items counted by exception type name.
    """

    total: int | None = None
    read: int = 0
    succeeded: int = 0
    failed: int = 0
    not_processed: int = 0
    skipped: int = 0
    retrying: int = 0
    in_flight: int = 0
    failures_by_type: collections.Counter[str] = field(default_factory=collections.Counter)
    started_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None

    @property
    def done(self) -> int:
        """Items finished one way or another."""
        return self.succeeded + self.failed + self.not_processed

    @property
    def completed(self) -> int:
        """Items finished, counting those an earlier part of a resumed run finished: for progress."""
        return self.done + self.skipped

    @property
    def elapsed_s(self) -> float:
        """Seconds since the run started (until it finished)."""
        return (self.finished_at or time.monotonic()) - self.started_at

    @property
    def rate_per_s(self) -> float:
        """Finished items per second so far."""
        elapsed = self.elapsed_s
        return self.done / elapsed if elapsed > 0 else 0.0


class Outcome(enum.Enum):
    """How a run ended."""

    COMPLETED = "completed"
    STOPPED = "stopped"
    FATAL = "fatal"
