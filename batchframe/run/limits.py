"""The driver's settings and the per-item rate limit.

A rate limit means what it says: ``max_per_second=N`` lets at most N items start in any window of one
second, ``max_per_minute=M`` at most M in any window of 60 seconds, and both hold together when both
are set: at the start of a run, after a pause or a cool-down, and across a resume. Three rules:

1. **Exact windows.** Each window keeps a sliding log of its recent start times, and an item starts
   only when fewer than the window's capacity started in the last window.
2. **No bursts.** Starts are paced one ``spacing`` apart (``window / capacity`` of the slowest window
   set), by GCRA (https://en.wikipedia.org/wiki/Generic_cell_rate_algorithm) with a small tolerance:
   a start late by less than ``catch_up`` (a quarter of the spacing, at least 2 ms) does not delay
   the next one, so the event loop's timer lateness does not add up to a lower rate. Below 125/s two
   starts are never closer than three quarters of the spacing. A sliding window alone would let a
   whole window's capacity start at once, and its bursts repeat every window: an API counts them on
   its own clock, after milliseconds of jitter that push the edge of one burst into the next window
   (against an API admitting 100 calls in any sliding second, an exact sliding window at 95/s still
   drew 38 answers 429 in 1,000 rows; paced, none: ``benchmarks/rate_limit.py``).
3. **A resumed run** cannot know when the stopped one last started items: with ``paced_start`` its
   windows start as if the stopped run had started as many items as the pacing ever allows, as late
   as it could (up to now), so no window straddling the two runs holds more than its capacity either.
   The first start waits about ``spacing + catch_up``, then items start at the steady pace.

Fractional rates: "at most N in any window" can only be met by a whole number of starts, and a
mean above ``floor(N)`` would put more than N starts in some window (pigeonhole), so a rate of 1 or
more allows ``floor(N)`` starts per window (``max_per_second=2.5`` is 2 per second, one every 0.5 s);
a rate below 1 means one start every ``1/N`` windows (``max_per_second=0.5`` is one start every 2 s).

The rate limit wraps the back end's per-item call (``run.throttle``): no limiter is in the call path
when no rate is set. (The time limit is enforced by the back ends.)
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchframe.errors import ParamError
from batchframe.retry import RetryPolicy

Clock = Callable[[], float]
"""Seconds from a monotonic clock (``time.monotonic``; a fake one in tests)."""

Sleep = Callable[[float], Awaitable[Any]]
"""Waits a number of seconds on that clock (``asyncio.sleep``)."""

MIN_CATCH_UP_S = 0.002
"""A start this late (or a quarter of the spacing, if more) does not delay the next one.

asyncio's timers wake up to about 2 ms late (the selector rounds timeouts up to the millisecond): if
each start pushed the next one back by its lateness, 95/s would run at about 80/s.
"""


MAX_CONCURRENCY = 10_000
"""The most items a run keeps in flight at once (``concurrency``).

Past a few thousand items at once the limits are elsewhere: sockets (1,024 open files by default,
about 28,000 ephemeral ports), the API at the other end, a thread per item for a plain ``def
process``. Each slot costs a worker task (and, for a sync ``process``, a thread) once items fill it,
so a mistyped ``concurrency=10000000`` is refused rather than taking minutes and gigabytes to start.
"""

TUNABLE: dict[str, str] = {
    "concurrency": "concurrency",
    "max_per_second": "rate_per_s",
    "max_per_minute": "rate_per_minute",
    "adaptive": "adaptive",
}
"""The settings a running run takes (``-p`` names, for ``batchframe tune``) and the ``DriverSettings`` field of each."""

MAX_QUEUE_SIZE = 1_000_000
"""The most items read ahead of the workers (``queue_size``): more only holds the source in memory."""


@dataclass(frozen=True, kw_only=True)
class DriverSettings:
    """How the driver runs items: validated on creation, each error naming the config field.

    Attributes:
        concurrency: items processed at the same time (workers).
        queue_size: items read ahead of the workers (default: twice the concurrency).
        retry: the retry policy.
        item_timeout_s: time limit for one attempt, or None.
        rate_per_s: at most this many items start in any window of one second, or None. A rate of 1
            or more allows ``floor(rate)`` starts per second (2.5 is 2); a rate below 1 means one
            start every ``1/rate`` seconds (0.5: one every 2 s). See ``RateLimit.from_rate``.
        rate_per_minute: the same over any window of 60 seconds, or None (both windows apply when
            both are set).
        adaptive: the start rate follows the API's pushback below those ceilings (``run.adaptive``).
    """

    concurrency: int = 8
    queue_size: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    item_timeout_s: float | None = None
    rate_per_s: float | None = None
    rate_per_minute: float | None = None
    adaptive: bool = False

    def __post_init__(self) -> None:
        _check_positive("concurrency", self.concurrency, integer=True)
        _check_at_most("concurrency", self.concurrency, MAX_CONCURRENCY)
        if self.queue_size is not None:
            _check_positive("queue_size", self.queue_size, integer=True)
            _check_at_most("queue_size", self.queue_size, MAX_QUEUE_SIZE)
        if self.item_timeout_s is not None:
            _check_limit("item_timeout_sec", self.item_timeout_s)
        if self.rate_per_s is not None:
            _check_limit("max_per_second", self.rate_per_s)
        if self.rate_per_minute is not None:
            _check_limit("max_per_minute", self.rate_per_minute)
        if not isinstance(self.adaptive, bool):
            raise ParamError(
                f"adaptive must be true or false, got {self.adaptive!r}.",
                hint="Set it with -p adaptive=true or in your config.",
                param="adaptive",
            )

    @property
    def read_ahead(self) -> int:
        """The bound of the queue between the source and the workers."""
        return self.queue_size or 2 * self.concurrency

    @property
    def rate_limits(self) -> tuple[RateLimit, ...]:
        """The rate windows that apply (none when no rate is set)."""
        windows = ((self.rate_per_s, 1.0), (self.rate_per_minute, 60.0))
        return tuple(RateLimit.from_rate(rate, period_s) for rate, period_s in windows if rate is not None)


def _check_positive(name: str, value: float, *, integer: bool = False) -> None:
    if (integer and (isinstance(value, bool) or not isinstance(value, int))) or not value > 0:
        kind = "a whole number" if integer else "a number"
        raise ParamError(
            f"{name} must be {kind} greater than 0, got {value!r}.",
            hint=f"Set it with -p {name}=VALUE or in your config.",
            param=name,
        )


def _check_at_most(name: str, value: int, maximum: int) -> None:
    if value > maximum:
        raise ParamError(
            f"{name} must be at most {maximum:,}, got {value:,}.",
            hint=f"Set it with -p {name}=VALUE (1 to {maximum:,}) or in your config.",
            param=name,
        )


def _check_limit(name: str, value: float) -> None:
    """A limit is a finite number greater than 0; "no limit" is None, not inf."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value):
        raise ParamError(
            f"{name} must be a finite number greater than 0, got {value!r}.",
            hint=f"Set it with -p {name}=VALUE, or -p {name}=none for no limit (or in your config).",
            param=name,
        )
    _check_positive(name, value)


# ------------------------------------------------------------------------------------ rate limits


@dataclass(frozen=True)
class RateLimit:
    """At most ``starts`` starts in any window of ``window_s`` seconds.

    Attributes:
        starts: the window's capacity, 1 or more.
        window_s: the window's length in seconds.
    """

    starts: int
    window_s: float

    def __post_init__(self) -> None:
        if self.starts < 1 or not self.window_s > 0:
            raise ValueError(f"a rate limit needs 1 start or more in a window over 0 s, got {self!r}")

    @classmethod
    def from_rate(cls, rate: float, period_s: float) -> RateLimit:
        """The limit meant by "at most ``rate`` starts per ``period_s`` seconds".

        A rate of 1 or more allows ``floor(rate)`` starts per period: a mean above that would put
        more than ``rate`` starts in some window. A rate below 1 allows one start per
        ``period_s / rate`` seconds.
        """
        if rate >= 1:
            return cls(math.floor(rate), period_s)
        return cls(1, period_s / rate)

    @property
    def spacing_s(self) -> float:
        """The steady pace: one start every ``window_s / starts`` seconds."""
        return self.window_s / self.starts


class _Window:
    """One window's sliding log of start times, after the assumed past of a resumed run.

    The assumed past (``past_until`` set) is the most a stopped run paced like this one can have
    started before ``past_until``: its j-th latest start (j = 0, 1, ...) at
    ``past_until - max(0, j * spacing_s - catch_up_s)`` (see ``RateLimiter``). Those starts are not
    stored (a capacity may be a million): they are computed when needed.
    """

    __slots__ = ("_catch_up_s", "_past_until", "_spacing_s", "_starts", "capacity", "window_s")

    def __init__(self, limit: RateLimit, *, spacing_s: float, catch_up_s: float, past_until: float | None) -> None:
        self.capacity = limit.starts
        self.window_s = limit.window_s
        self._spacing_s = spacing_s
        self._catch_up_s = catch_up_s
        self._past_until = past_until
        self._starts: collections.deque[float] = collections.deque()

    def free_at(self, now: float) -> float:
        """When a start may happen: ``now`` if the window has room, else when its oldest start leaves."""
        starts = self._starts
        # A start at s counts in the window (now - window_s, now] until now = s + window_s.
        cutoff = now - self.window_s
        while starts and starts[0] <= cutoff:
            starts.popleft()
        if self._past_until is not None:
            return self._free_at_after_past(now)
        if len(starts) < self.capacity:
            return now
        # Later than now even where rounding makes starts[0] + window_s <= now while starts[0] > cutoff.
        return max(starts[0] + self.window_s, math.nextafter(now, math.inf))

    def _free_at_after_past(self, now: float) -> float:
        past = self._past_in_window(now)
        if past == 0:
            self._past_until = None  # the assumed past has left the window: the plain log from now on
            return self.free_at(now)
        if past + len(self._starts) < self.capacity:
            return now
        return self._past_leaves(past - 1)  # the oldest start in the window: assumed ones come first

    def _past_in_window(self, now: float) -> int:
        """How many of the assumed past's starts are still in the window at ``now``: the j < that count."""
        assert self._past_until is not None
        ahead_s = self._past_until + self.window_s - now
        if ahead_s <= 0:
            return 0
        past = min(self.capacity, math.ceil((ahead_s + self._catch_up_s) / self._spacing_s))
        # Rounding may put the estimate one off: settle it on the very times free_at returns.
        while past > 0 and self._past_leaves(past - 1) <= now:
            past -= 1
        while past < self.capacity and self._past_leaves(past) > now:
            past += 1
        return past

    def _past_leaves(self, j: int) -> float:
        """When the assumed past's j-th latest start leaves the window."""
        assert self._past_until is not None
        return self._past_until - max(0.0, j * self._spacing_s - self._catch_up_s) + self.window_s

    def record(self, now: float) -> None:
        """An item starts at ``now``."""
        self._starts.append(now)

    def take_log(self, other: _Window) -> None:
        """Go on from ``other``'s starts and assumed past (a window of the same length, re-tuned)."""
        self._starts = other._starts
        self._past_until = other._past_until


class RateLimiter:
    """A FIFO gate: an item starts when every window has room and its paced start time has come.

    Waiters are served first come, first served: only the first in line sleeps; each one that
    leaves the line (started or cancelled) wakes the next. A waiter that is cancelled (a pause
    cancelling items in flight, a stop) takes no start.

    Pacing is GCRA with a tolerance of ``catch_up_s``: a start and the m-th after it are at least
    ``m * spacing_s - catch_up_s`` apart. ``paced_start`` (a resumed run) assumes the stopped run made as
    many starts as that allows up to now, the latest they could be: the windows then hold across
    both runs (given the same limits), and the first start comes ``spacing_s + catch_up_s`` after
    this limiter is made.

    Args:
        limits: the windows, each one exact (none: only ``pace_per_s``, or no limit at all).
        pace_per_s: a pace slower than the windows' (the adaptive rate), or None.
        paced_start: start as if items had been starting at full pace until now (a resumed run).
        not_before: no start before the time it returns (on ``clock``): the run's cool-down.
        clock: a monotonic clock, in seconds.
        sleep: waits seconds on that clock.

    Attributes:
        spacing_s: the pace: one start every ``window_s / starts`` of the slowest window.
        catch_up_s: how late a start may be without delaying the next one.
    """

    def __init__(
        self,
        limits: Sequence[RateLimit],
        *,
        pace_per_s: float | None = None,
        paced_start: bool = False,
        not_before: Clock | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._not_before = not_before
        self._clock = clock
        self._sleep = sleep
        self._pace_per_s = pace_per_s
        self._limits = tuple(limits)
        self.spacing_s, self.catch_up_s = self._pacing()
        now = clock()
        past_until = now if paced_start else None
        self._windows = tuple(
            _Window(limit, spacing_s=self.spacing_s, catch_up_s=self.catch_up_s, past_until=past_until)
            for limit in limits
        )
        # GCRA's "theoretical arrival time" minus the tolerance: a start is due when now reaches it.
        self._next_at = now + self.spacing_s if paced_start else -math.inf
        self._line: collections.deque[asyncio.Future[None]] = collections.deque()

    def _pacing(self) -> tuple[float, float]:
        """The spacing (the slowest of the windows' and the pace's) and the catch-up tolerance."""
        spacings = [limit.spacing_s for limit in self._limits]
        if self._pace_per_s is not None:
            spacings.append(1.0 / self._pace_per_s)
        spacing = max(spacings, default=0.0)
        return spacing, max(spacing / 4, MIN_CATCH_UP_S)

    @property
    def limits(self) -> tuple[RateLimit, ...]:
        """The exact windows (the ceilings)."""
        return self._limits

    def set_pace(self, rate_per_s: float | None) -> None:
        """Pace starts at most ``rate_per_s`` apart on top of the windows (the adaptive rate); None: the windows' pace.

        The next start stays due when it was; those after it follow the new spacing.
        """
        self._pace_per_s = rate_per_s
        self.spacing_s, self.catch_up_s = self._pacing()

    def set_limits(self, limits: Sequence[RateLimit]) -> None:
        """New windows (``batchframe tune``).

        A window of the same length keeps its log of starts, so no window straddling the change
        holds more than the old capacity and then the new one; a new window length starts as a
        resumed run's would, as if items had started at full pace until now.
        """
        self._limits = tuple(limits)
        self.spacing_s, self.catch_up_s = self._pacing()
        now = self._clock()
        old = {window.window_s: window for window in self._windows}
        windows = []
        for limit in limits:
            window = _Window(limit, spacing_s=self.spacing_s, catch_up_s=self.catch_up_s, past_until=now)
            kept = old.get(limit.window_s)
            if kept is not None:
                window.take_log(kept)
            windows.append(window)
        self._windows = tuple(windows)

    async def acquire(self) -> None:
        """Wait for this item's start: return once it may start (the start is then taken)."""
        if self._line or self._wait_s() > 0:
            await self._wait_in_line()

    def _wait_s(self) -> float:
        """Take a start and return 0 if one may happen now; else return how long to wait for one."""
        now = self._clock()
        free_at = self._next_at
        if self._not_before is not None:
            # Asked each time: a cool-down may begin while the first in line sleeps; it rechecks on waking.
            free_at = max(free_at, self._not_before())
        for window in self._windows:
            free_at = max(free_at, window.free_at(now))
        if free_at > now:
            return free_at - now
        for window in self._windows:
            window.record(now)
        # GCRA: the next start is due one spacing after this one's due time, unless this one is
        # more than catch_up_s late (after a pause, say): then one spacing minus catch_up_s after it.
        self._next_at = max(self._next_at, now - self.catch_up_s) + self.spacing_s
        return 0.0

    async def _wait_in_line(self) -> None:
        line = self._line
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        line.append(turn)
        try:
            if line[0] is not turn:
                await turn  # the waiter ahead sets it when it leaves the line
            # Loop: a sleep may end a little early (the event loop's clock resolution).
            while (wait_s := self._wait_s()) > 0:
                await self._sleep(wait_s)
        finally:
            self._leave(turn)

    def _leave(self, turn: asyncio.Future[None]) -> None:
        line = self._line
        if line[0] is not turn:
            line.remove(turn)  # cancelled while waiting behind others
            return
        line.popleft()
        # A next waiter cancelled already leaves as the first in line, and wakes the one after it.
        if line and not line[0].done():
            line[0].set_result(None)
