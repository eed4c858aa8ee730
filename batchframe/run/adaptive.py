"""The adaptive start rate (``-p adaptive=true``): the rate follows what the API can take.

The control law is CUBIC (RFC 9438, https://www.rfc-editor.org/rfc/rfc9438), TCP's congestion
control, applied to the rate at which items start instead of a congestion window:

- **Back off** when the API pushes back: a ``RateLimited`` from an attempt that started after the
  last decrease, or a share of retryable failures and timeouts in the last second well above its
  recent level (twice it, and 5 points more). The rate becomes ``BETA`` (0.8) of what it was, and
  ``w_max``, where growth will flatten, is set a little below the rate refused (``PLATEAU_SHARE``,
  0.95). Attempts started before a decrease do not count again: one overload, one decrease (TCP's
  "once per window").
- **Recover** along ``w(t) = w_max (1 + (1 - BETA) ((t - K) / K)^3)``: fast while far below ``w_max``,
  flat near it (where the API refused before), then probing above it for ``PROBE_S`` (2 s), and past
  that growing by ``SURGE`` (1.5x) a second, so a capacity that rose far is found in seconds. ``K``
  (``REGAIN_S``, 4 s) is the time to regain ``w_max``.
- **Jump to what the API admitted**: a decrease goes no higher than ``PLATEAU_SHARE`` of the calls
  that succeeded in the last second (counted in ten buckets: constant memory), so a capacity that fell
  far (100/s to 40/s) costs one cool-down, not one per ``BETA`` step on the way down.
- **Grow only when the limit binds**: ``t`` advances only during seconds in which the run started at
  least ``BINDING_SHARE`` of what the limit allowed (RFC 7661's "validation"). A run held back by its
  concurrency or a slow source does not inflate a limit it never reaches, which would take many
  decreases to bring down when the API pushes back.

Why CUBIC's shape rather than plain AIMD: every pushback from a ``Retry-After`` API costs a run-wide
cool-down, so how often the limit crosses the capacity matters more than how fast it climbs. AIMD
climbs linearly through the capacity and crosses it at every cycle; this law slows down where the
last pushback came and stays near it (``benchmarks/adaptive.py`` measures the time and the 429s;
``tests/test_adaptive.py`` simulates an API whose capacity changes).

The ceilings (``max_per_second`` / ``max_per_minute``) stay exact windows in the rate limiter: the
adaptive rate only ever paces starts more slowly than they allow.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable

Clock = Callable[[], float]

BETA = 0.8
"""The rate after a decrease, as a share of the rate before it (CUBIC's is 0.7; a run alone on its API loses less)."""
REGAIN_S = 4.0
"""Seconds (of binding time) to climb back to the rate of the last decrease (CUBIC's K)."""
PROBE_S = 2.0
"""Above ``w_max`` the rate grows along the cubic for this long (to ``(2 - BETA) w_max``), then by ``SURGE``."""
SURGE = 1.5
"""Past the cubic, the rate grows by this factor each binding second."""
PLATEAU_SHARE = 0.95
"""``w_max`` is this share of the rate the API refused (which was above its capacity)."""
INTERVAL_S = 1.0
"""How often the error share is compared and the growth applied."""
BINDING_SHARE = 0.8
"""A second in which the run started at least this share of what the limit allowed counts for growth."""
MIN_SAMPLES = 10
"""Attempts a second needs before its share of retryable failures can lower the rate."""
ERROR_RISE = 0.05
"""A share of retryable failures above ``max(2 * recent, recent + ERROR_RISE)`` is pushback."""
FLOOR_SHARE = 0.01
"""The rate never drops below this share of its ceiling (or of the first rate it backed off from)."""


class Outcome(enum.Enum):
    """What an attempt said about the API's load."""

    OK = "ok"
    """It succeeded, or failed for a reason of its own (not retryable): the API answered."""
    PUSHBACK = "pushback"
    """``RateLimited``: the API said slow down."""
    ERROR = "error"
    """A retryable failure or a timeout: a sign of overload when their share rises."""


class AdaptiveRate:
    """The start rate of a run with ``adaptive`` on: lowered on pushback, raised while calls succeed.

    Args:
        ceiling: the highest rate in items per second (from ``max_per_second``/``max_per_minute``), or
            None: no limit until the API first pushes back.
        start: the rate to start from (a resumed run's last limit, probing up from it), or None: the
            ceiling.
        clock: a monotonic clock in seconds (a fake one in tests).

    Attributes:
        rate: the limit now, in items per second; None while there is none (no ceiling, no pushback yet).
        lowered: how many times the rate was lowered.
        lowest: the lowest rate so far (None while there has been none).
    """

    def __init__(self, ceiling: float | None, *, start: float | None = None, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        now = clock()
        self._born = now
        self._admitted = _Counter()
        self.ceiling = ceiling
        self.rate: float | None = _capped(start, ceiling) if start is not None else ceiling
        self.lowered = 0
        self.lowest = self.rate
        self._w_max = self.rate
        self._t = REGAIN_S  # at w_max: flat, then probing above it
        self._reduced_at = -math.inf
        self._interval_start = now
        self._starts = 0
        self._previous_rate_observed = 0.0
        self._attempts = 0
        self._errors = 0
        self._recent_error_share: float | None = None
        self._weighted_since = now
        self._weighted_sum = 0.0
        self._weighted_time = 0.0

    # ---- what the run tells it

    def started(self) -> bool:
        """An item starts now. Returns whether the rate changed (a second ended)."""
        self._starts += 1
        return self._tick()

    def finished(self, started_at: float, outcome: Outcome) -> bool:
        """An attempt that started at ``started_at`` ended so. Returns whether the rate changed."""
        if started_at < self._reduced_at:
            return self._tick()  # it ran at the rate before the last decrease: already answered for
        if outcome is Outcome.PUSHBACK:
            self._decrease(self._clock())
            return True
        self._attempts += 1
        self._errors += outcome is Outcome.ERROR
        self._admitted.add(self._clock())
        return self._tick()

    def set_ceiling(self, ceiling: float | None) -> None:
        """A new ceiling (``batchframe tune``): the rate is cut to it at once, or may grow up to it."""
        self._account(self._clock())
        self.ceiling = ceiling
        if self.rate is not None and ceiling is not None and self.rate > ceiling:
            self.rate = ceiling
            self._w_max = min(self._w_max or ceiling, ceiling)
        elif self.rate is None:
            self.rate = ceiling
            self._w_max = ceiling
        self._note_lowest()

    @property
    def mean(self) -> float | None:
        """The time-weighted mean of the rate while there was one."""
        self._account(self._clock())
        return self._weighted_sum / self._weighted_time if self._weighted_time > 0 else self.rate

    # ---- the law

    def _tick(self) -> bool:
        now = self._clock()
        elapsed = now - self._interval_start
        if elapsed < INTERVAL_S:
            return False
        changed = False
        observed = self._starts / elapsed
        if self._overloaded():
            self._decrease(now)
            changed = True
        elif self.rate is not None and observed >= BINDING_SHARE * self.rate:
            self._t += elapsed
            changed = self._grow(now)
        self._previous_rate_observed = observed
        self._interval_start, self._starts, self._attempts, self._errors = now, 0, 0, 0
        return changed

    def _overloaded(self) -> bool:
        """Whether the last second's share of retryable failures rose well above its recent level."""
        if self._attempts < MIN_SAMPLES:
            return False
        share = self._errors / self._attempts
        recent = self._recent_error_share
        self._recent_error_share = share if recent is None else 0.8 * recent + 0.2 * share
        return recent is not None and share > max(2 * recent, recent + ERROR_RISE)

    def _grow(self, now: float) -> bool:
        w_max = self._w_max
        if w_max is None:
            return False
        grown = _capped(w_max * growth(self._t), self.ceiling)
        if self.rate is not None and grown <= self.rate:
            return False
        self._account(now)
        self.rate = grown
        return True

    def _decrease(self, now: float) -> None:
        self._account(now)
        current = self.rate
        if current is None:  # no limit so far: start from the rate the run reached
            elapsed = max(now - self._interval_start, 1e-9)
            current = max(self._previous_rate_observed, self._starts / elapsed)
            if current <= 0:
                current = 1.0
        floor = FLOOR_SHARE * (self.ceiling if self.ceiling is not None else (self._w_max or current))
        # The rate refused is above the API's capacity: the plateau sits a little below it. (CUBIC's
        # "fast convergence", which lowers it further, shares a link with other flows; a run is alone.)
        plateau = current * PLATEAU_SHARE
        lowered = current * BETA
        # What the API admitted in the last second, once the run has run a second: after a capacity
        # that fell far, one decrease goes to it instead of one per cool-down on the way down.
        admitted = self._admitted.in_last_second(now) if now - self._born >= 1.0 else None
        if admitted is not None and admitted >= MIN_SAMPLES and admitted * PLATEAU_SHARE < lowered:
            lowered, plateau = admitted * PLATEAU_SHARE, admitted
        self._w_max = max(plateau, lowered)
        self.rate = max(lowered, floor)
        self._t = 0.0
        self._reduced_at = now
        self.lowered += 1
        self._note_lowest()
        self._interval_start, self._starts, self._attempts, self._errors = now, 0, 0, 0

    def _note_lowest(self) -> None:
        if self.rate is not None and (self.lowest is None or self.rate < self.lowest):
            self.lowest = self.rate

    def _account(self, now: float) -> None:
        """Add the time since the last change to the time-weighted mean."""
        spent = now - self._weighted_since
        if self.rate is not None and spent > 0:
            self._weighted_sum += self.rate * spent
            self._weighted_time += spent
        self._weighted_since = now


def growth(t: float) -> float:
    """The rate ``t`` binding seconds after a decrease, as a share of ``w_max``.

    CUBIC's curve (concave up to ``w_max`` at ``REGAIN_S``, convex past it for ``PROBE_S``), then
    growing by ``SURGE`` a second: a capacity that rose far is found in seconds, not minutes.
    """
    past = t - REGAIN_S
    if past <= PROBE_S:
        scale = REGAIN_S if past < 0 else PROBE_S
        return 1.0 + (1 - BETA) * (past / scale) ** 3
    return float((2 - BETA) * SURGE ** (past - PROBE_S))


class _Counter:
    """Events in the last second, in ten buckets of 0.1 s: constant memory at any rate."""

    _BUCKETS = 10

    def __init__(self) -> None:
        self._counts = [0] * self._BUCKETS
        self._slots = [-1] * self._BUCKETS  # the tenth of a second each bucket counts

    def add(self, now: float) -> None:
        slot = int(now * self._BUCKETS)
        at = slot % self._BUCKETS
        if self._slots[at] != slot:
            self._slots[at], self._counts[at] = slot, 0
        self._counts[at] += 1

    def in_last_second(self, now: float) -> int:
        slot = int(now * self._BUCKETS)
        counted = zip(self._slots, self._counts, strict=True)
        return sum(count for counted_slot, count in counted if slot - counted_slot < self._BUCKETS)


def _capped(rate: float, ceiling: float | None) -> float:
    return rate if ceiling is None else min(rate, ceiling)
