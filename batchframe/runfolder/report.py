"""What a run measures about itself, in constant memory: attempt latency, a timeline, top errors, attempts.

- ``Latency``: attempt durations in a log-linear histogram (8 buckets per doubling, so a percentile
  is within about 9% of the exact one), with the maximum: the same few hundred integers for a run of
  ten items or ten million. The driver times every attempt of the first ``LATENCY_ALL``, then one in
  ``LATENCY_EVERY`` (a uniform sample: the percentiles hold, the maximum is the sample's).
- ``Timeline``: the run's cumulative counts sampled on a timer (nothing per item), about 100 to 200
  points for any run length: when it holds ``MOST_POINTS``, every other point goes and the interval
  doubles.
- ``ErrorGroups``: failures grouped by exception type and message pattern (numbers, hex and ids
  masked), each with a count and one example item; at most ``MOST_GROUPS`` patterns are kept apart.
- attempts per item: how many items needed 1, 2, 3... attempts.
"""

from __future__ import annotations

import collections
import itertools
import re
from typing import Any

LATENCY_ALL = 2000
"""Every attempt's latency is measured until this many are; then one attempt in ``LATENCY_EVERY``."""
LATENCY_EVERY = 32
SUB_BUCKETS = 8
"""Buckets per doubling of the latency histogram."""
_SUB_BITS = 3
MOST_POINTS = 200
"""The timeline keeps at most this many points (then halves them)."""
FIRST_INTERVAL_S = 0.05
MOST_GROUPS = 50
"""Distinct error patterns kept apart; the others are counted together."""
OTHER_ERRORS = "(other patterns)"


class Latency:
    """Attempt durations: count, exact max, and percentiles from a log-linear histogram of microseconds."""

    __slots__ = ("buckets", "count", "max_s", "total_s")

    def __init__(self) -> None:
        self.buckets: list[int] = [0] * 512
        self.count = 0
        self.max_s = 0.0
        self.total_s = 0.0

    def add(self, seconds: float) -> None:
        """One attempt that took ``seconds``."""
        self.count += 1
        self.total_s += seconds
        if seconds > self.max_s:
            self.max_s = seconds
        micros = int(seconds * 1_000_000)
        if micros < 2 * SUB_BUCKETS:
            index = micros if micros > 0 else 0
        else:
            shift = micros.bit_length() - _SUB_BITS - 1
            index = (shift + 1) * SUB_BUCKETS + (micros >> shift) - SUB_BUCKETS
        buckets = self.buckets
        if index >= len(buckets):
            index = len(buckets) - 1
        buckets[index] += 1

    @staticmethod
    def bucket_middle_s(index: int) -> float:
        """The middle of bucket ``index``, in seconds."""
        return _bucket_middle(index) / 1_000_000

    def percentile(self, share: float) -> float | None:
        """The duration below which ``share`` (0.5, 0.95...) of the attempts fell, in seconds; None before any."""
        if not self.count:
            return None
        rank = share * self.count
        seen = 0
        for index, count in enumerate(self.buckets):
            seen += count
            if count and seen >= rank:
                return min(_bucket_middle(index) / 1_000_000, self.max_s)
        return self.max_s

    def as_dict(self) -> dict[str, Any]:
        """``count``, ``mean_s``, ``p50_s``, ``p95_s``, ``p99_s``, ``max_s`` (None before any attempt)."""

        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 6)

        return {
            "count": self.count,
            "mean_s": rounded(self.total_s / self.count) if self.count else None,
            "p50_s": rounded(self.percentile(0.50)),
            "p95_s": rounded(self.percentile(0.95)),
            "p99_s": rounded(self.percentile(0.99)),
            "max_s": rounded(self.max_s) if self.count else None,
        }


def _bucket_middle(index: int) -> float:
    """The middle of bucket ``index``, in microseconds."""
    if index < 2 * SUB_BUCKETS:
        return float(index) + 0.5
    shift = index // SUB_BUCKETS - 1
    low = (index - (shift + 1) * SUB_BUCKETS + SUB_BUCKETS) << shift
    return low + (1 << shift) / 2


class Timeline:
    """The run's cumulative (finished, failed, rate limited) counts at regular times since its start.

    ``sample`` is called on a timer every ``interval_s``; the points stay between ``MOST_POINTS / 2``
    and ``MOST_POINTS`` once the run is long enough, whatever its length.
    """

    def __init__(self) -> None:
        self.interval_s = FIRST_INTERVAL_S
        self.points: list[tuple[int, int, int]] = [(0, 0, 0)]
        self._ticks = 0

    def sample(self, finished: int, failed: int, rate_limited: int) -> None:
        """Called every ``interval_s`` with the counts so far (a sample that is not due is skipped)."""
        self._ticks += 1
        if self._ticks < self._every:
            return
        self._ticks = 0
        self.points.append((finished, failed, rate_limited))
        if len(self.points) > MOST_POINTS:
            self.points = self.points[::2]
            self.interval_s *= 2

    @property
    def _every(self) -> int:
        return round(self.interval_s / FIRST_INTERVAL_S)

    def as_dict(self, last: tuple[int, int, int] | None = None) -> dict[str, Any]:
        """Per interval: items finished and failed, rate-limit refusals, and the rate (items/s).

        Args:
            last: the counts at the end, added as a last (shorter) interval when they moved since.
        """
        points = list(self.points)
        if last is not None and last != points[-1]:
            points.append(last)
        deltas = [
            (after[0] - before[0], after[1] - before[1], after[2] - before[2])
            for before, after in itertools.pairwise(points)
        ]
        return {
            "interval_s": round(self.interval_s, 3),
            "finished": [delta[0] for delta in deltas],
            "failed": [delta[1] for delta in deltas],
            "rate_limited": [delta[2] for delta in deltas],
            "rate_per_s": [round(delta[0] / self.interval_s, 1) for delta in deltas],
        }


_MASKS = (
    (re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"), "<uuid>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b[0-9a-fA-F]{12,}\b"), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
)


def message_pattern(message: str, limit: int = 200) -> str:
    """The first line of an error message with its numbers, hex values and ids masked: ``item <n> is bad``."""
    line = message.splitlines()[0] if message else ""
    for pattern, mask in _MASKS:
        line = pattern.sub(mask, line)
    return line if len(line) <= limit else line[: limit - 3] + "..."


class ErrorGroups:
    """Failures grouped by (exception type, message pattern), with a count and the first item's index each."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str], list[int]] = {}  # (type, pattern) -> [count, example index]

    def add(self, error_type: str, message: str, index: int) -> None:
        """One item that failed for good."""
        key = (error_type, message_pattern(message))
        group = self._groups.get(key)
        if group is None:
            if len(self._groups) >= MOST_GROUPS:
                key = (error_type, OTHER_ERRORS)
                group = self._groups.setdefault(key, [0, index])
            else:
                group = self._groups[key] = [0, index]
        group[0] += 1

    def top(self, most: int = 10) -> list[dict[str, Any]]:
        """The most frequent groups first: ``type``, ``pattern``, ``count``, ``example_index``."""
        ranked = sorted(self._groups.items(), key=lambda entry: -entry[1][0])[:most]
        return [
            {"type": kind, "pattern": pattern, "count": count, "example_index": example}
            for (kind, pattern), (count, example) in ranked
        ]


class RunReport:
    """The measurements of one run (of this part of a resumed one)."""

    def __init__(self) -> None:
        self.latency = Latency()
        self.timeline = Timeline()
        self.errors = ErrorGroups()
        self.retried: collections.Counter[int] = collections.Counter()
        """Items that succeeded or failed after more than one attempt, by attempts (the rest took one)."""

    def finished_after(self, attempts: int) -> None:
        """An item finished (succeeded or failed for good) after ``attempts`` attempts, more than one."""
        self.retried[attempts] += 1

    def attempts(self, finished: int) -> dict[str, int]:
        """Items by the attempts they took: ``{"1": 980, "2": 15, "3": 5}`` of ``finished`` items."""
        counts = {"1": finished - sum(self.retried.values())} if finished else {}
        counts.update({str(attempts): count for attempts, count in sorted(self.retried.items())})
        return {attempts: count for attempts, count in counts.items() if count > 0}
