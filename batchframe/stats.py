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
    paused_s: float = 0.0
    paused_since: float | None = None

    @property
    def done(self) -> int:
        """Items finished one way or another (not processed ones included)."""
        return self.succeeded + self.failed + self.not_processed

    @property
    def completed(self) -> int:
        """Items processed for good (succeeded or failed), with those an earlier part of a resumed run did.

        Not-processed items are left out: a stopped run's bar does not reach 100%.
        """
        return self.succeeded + self.failed + self.skipped

    @property
    def elapsed_s(self) -> float:
        """Seconds the run has been running: from its start to its end (or now), less the time paused."""
        now = self.finished_at or time.monotonic()
        paused = self.paused_s + (now - self.paused_since if self.paused_since is not None else 0.0)
        return max(now - self.started_at - paused, 0.0)

    def pause_clock(self) -> None:
        """The run is paused (the shell is open): the time until ``resume_clock`` does not count."""
        if self.paused_since is None:
            self.paused_since = time.monotonic()

    def resume_clock(self) -> None:
        """The run goes on after a pause."""
        if self.paused_since is not None:
            self.paused_s += time.monotonic() - self.paused_since
            self.paused_since = None

    @property
    def rate_per_s(self) -> float:
        """Finished items per second so far."""
        elapsed = self.elapsed_s
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far, when the total is known and something finished."""
        rate = self.rate_per_s
        if self.total is None or rate <= 0:
            return None
        return max(self.total - self.completed, 0) / rate


class Outcome(enum.Enum):
    """How a run ended."""

    COMPLETED = "completed"
    STOPPED = "stopped"
    FATAL = "fatal"
