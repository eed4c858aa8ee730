"""The live counters of a run and how it ended: read by progress, the summary and the shell."""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batchframe._text import clock
from batchframe.runfolder.report import RunReport


@dataclass(frozen=True)
class EarlierParts:
    """What the earlier parts of a resumed run counted: added to this part's counters wherever a run's counts show.

    Attributes:
        succeeded: items that succeeded before (from the journal).
        failed: items that failed for good before (from the journal).
        failures_by_type: those failures by exception type name (from the journal).
        retries: retries scheduled before (from the last ``status.json``; 0 when there is none).
        rate_limited: ``RateLimited`` refusals before.
        cooldown_total_s: seconds of run-wide cool-down before.
        limit_per_s: the start rate limit when the run stopped (an adaptive run goes on from it).
    """

    succeeded: int = 0
    failed: int = 0
    failures_by_type: Mapping[str, int] = field(default_factory=dict)
    retries: int = 0
    rate_limited: int = 0
    cooldown_total_s: float = 0.0
    limit_per_s: float | None = None


@dataclass
class LimitStats:
    """The run's limits as they are now (they change with ``adaptive`` and ``batchframe tune``).

    Attributes:
        concurrency: items in flight at most.
        adaptive: whether the start rate adapts.
        per_second: the start rate limit now, in items per second (the adaptive rate, else the
            ceiling of ``max_per_second``/``max_per_minute``); None: no rate limit.
        lowest: the lowest adaptive rate so far (None without ``adaptive``).
        mean: the adaptive rate's time-weighted mean.
        lowered: how many times the adaptive rate was lowered.
        tuned: how many times the limits were changed while the run went.
    """

    concurrency: int = 0
    adaptive: bool = False
    per_second: float | None = None
    lowest: float | None = None
    mean: float | None = None
    lowered: int = 0
    tuned: int = 0

    @property
    def shown(self) -> str | None:
        """``limit 38/s`` for the live line while the limit adapts or was tuned; None otherwise."""
        if not (self.adaptive or self.tuned):
            return None
        return "no limit" if self.per_second is None else f"limit {rate_text(self.per_second)}"


def rate_text(per_second: float) -> str:
    """A start rate as people read it: ``38/s``, ``2.5/s``, ``30/min`` below one a second."""
    if per_second >= 10:
        return f"{per_second:,.0f}/s"
    if per_second >= 1:
        return f"{per_second:.2g}/s"
    return f"{per_second * 60:,.3g}/min"


@dataclass
class Stats:
    """Live counters of a run; the progress display and the summary read them.

    The plain counters are this part's (a resumed run's earlier parts are in ``earlier``); every
    place that shows a run's counts reads the ``whole_*`` properties, which add them up.

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
        retries: retries scheduled (an item tried three times counts two).
        rate_limited: attempts the API refused (``RateLimited`` raised).
        cooldown_total_s: seconds the run-wide cool-downs lasted (overlapping ones counted once).
        earlier: what the earlier parts of a resumed run counted.
        limits: the limits now (concurrency, the start rate limit).
        report: latency, timeline, top errors and attempts (this part of a resumed run).
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
    retries: int = 0
    rate_limited: int = 0
    cooldown_total_s: float = 0.0
    earlier: EarlierParts = field(default_factory=EarlierParts)
    started_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None
    paused_s: float = 0.0
    paused_since: float | None = None
    limits: LimitStats = field(default_factory=LimitStats)
    report: RunReport = field(default_factory=RunReport)
    cooldown_until: float = 0.0
    """While a ``RateLimited`` cool-down lasts: when it ends (``time.monotonic()``); no item starts before."""

    @property
    def cooldown_s(self) -> float:
        """Seconds left of the run-wide cool-down (0 when there is none)."""
        return max(self.cooldown_until - time.monotonic(), 0.0) if self.cooldown_until else 0.0

    def __repr__(self) -> str:
        """The counters, and times as people read them (the clock fields hold monotonic seconds)."""
        return "Stats(" + ", ".join(f"{name}={value!r}" for name, value in self._readable_fields()) + ")"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """In IPython (the pause shell): the same, one field per line when they do not fit on one."""
        with printer.group(6, "Stats(", ")"):
            for number, (name, value) in enumerate(self._readable_fields()):
                if number:
                    printer.text(",")
                    printer.breakable()
                printer.text(f"{name}={value!r}")

    def _readable_fields(self) -> list[tuple[str, Any]]:
        names = (
            "total", "read", "succeeded", "failed", "not_processed", "skipped", "retrying", "in_flight",
            "retries", "rate_limited",
        )  # fmt: skip
        now = self.finished_at or time.monotonic()
        started = time.localtime(time.time() - (time.monotonic() - self.started_at))
        return [
            *((name, getattr(self, name)) for name in names),
            ("failures_by_type", dict(self.failures_by_type)),
            ("cooldown_total", f"{self.cooldown_total_s:,.1f} s"),
            *([("earlier", self.earlier)] if self.earlier != EarlierParts() else []),
            ("started", time.strftime("%Y-%m-%d %H:%M:%S", started)),
            ("elapsed", clock(self.elapsed_s)),
            ("paused", clock(max(now - self.started_at - self.elapsed_s, 0.0))),
            ("rate", f"{self.rate_per_s:,.1f} items/s"),
        ]

    @property
    def whole_succeeded(self) -> int:
        """Items that succeeded in the whole run (every part of a resumed one)."""
        return self.earlier.succeeded + self.succeeded

    @property
    def whole_failed(self) -> int:
        """Items that failed for good in the whole run."""
        return self.earlier.failed + self.failed

    @property
    def whole_failures_by_type(self) -> dict[str, int]:
        """The whole run's failures by exception type name, most frequent first (not-processed items too)."""
        counts = collections.Counter(self.earlier.failures_by_type)
        counts.update(self.failures_by_type)
        return dict(counts.most_common())

    @property
    def whole_retries(self) -> int:
        """Retries scheduled in the whole run."""
        return self.earlier.retries + self.retries

    @property
    def whole_rate_limited(self) -> int:
        """``RateLimited`` refusals in the whole run."""
        return self.earlier.rate_limited + self.rate_limited

    @property
    def whole_cooldown_total_s(self) -> float:
        """Seconds of run-wide cool-down in the whole run."""
        return self.earlier.cooldown_total_s + self.cooldown_total_s

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
        """Items processed (succeeded or failed) per second so far.

        Not the items a stop left unprocessed: they are counted all at once when the run stops.
        """
        elapsed = self.elapsed_s
        return (self.succeeded + self.failed) / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far, when the total is known and something finished."""
        rate = self.rate_per_s
        if self.total is None or rate <= 0:
            return None
        return max(self.total - self.completed, 0) / rate
