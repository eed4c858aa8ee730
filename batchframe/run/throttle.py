"""The limits of a running run, changed while it goes: concurrency, the rate windows and the adaptive rate.

The ``Throttle`` wraps the back end's per-item call once at the start, and again after each
``tune``: with no rate and no adaptive limit, the back end's call itself is the run's call, so the
per-item path pays for nothing it does not use. ``batchframe tune``, the pause shell's
``self.tune(...)`` and the web UI all end in ``Throttle.tune``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from batchframe.backends import ItemCall
from batchframe.errors import ParamError
from batchframe.retry import RateLimited
from batchframe.run.adaptive import AdaptiveRate, Clock, Outcome
from batchframe.run.limits import TUNABLE, DriverSettings, RateLimiter
from batchframe.runfolder.logs import FILE_ONLY
from batchframe.runfolder.stats import LimitStats, rate_text

logger = logging.getLogger(__name__)


def tuned_settings(settings: DriverSettings, tuned: object) -> DriverSettings:
    """``settings`` with the values a run was tuned to (the journal's ``tuned``), for its resume.

    A value that no longer fits (an edited journal) is left out with a warning: the run goes on as started.
    """
    if not isinstance(tuned, dict):
        return settings
    changes = {TUNABLE[name]: value for name, value in tuned.items() if name in TUNABLE}
    try:
        return dataclasses.replace(settings, **changes)
    except (ParamError, TypeError) as exc:
        logger.warning("The limits this run was tuned to are not taken again (%s); it goes on as started.", exc)
        return settings


def ceiling_of(settings: DriverSettings) -> float | None:
    """The fastest steady start rate the windows allow, in items per second (None: no window)."""
    limits = settings.rate_limits
    return min(limit.starts / limit.window_s for limit in limits) if limits else None


class Throttle:
    """The run's limits as they are now.

    Args:
        settings: the run's settings at its start (``concurrency`` is the most a tune may set).
        paced_start: a resumed run: the windows start as if items had been starting at full pace.
        start_limit: the adaptive rate to start from (a resumed run's last one), or None: the ceiling.
        not_before: no item starts before the ``time.monotonic()`` it returns (the run's cool-down).
        waiting: the tasks waiting for their start are in it while they wait (a pause cancels them).
        is_retryable: whether a failure is one the run retries (its rising share lowers the adaptive rate).
        clock: a monotonic clock.

    Attributes:
        settings: the settings now, tunes applied.
        call: the per-item call with the limits applied (the back end's own when none is set).
        stats: the limits as the live line, status.json and the summary show them.
    """

    def __init__(
        self,
        settings: DriverSettings,
        *,
        paced_start: bool = False,
        start_limit: float | None = None,
        not_before: Clock | None = None,
        waiting: set[asyncio.Task[Any]] | None = None,
        is_retryable: Callable[[BaseException], bool] = lambda exc: False,
        clock: Clock = time.monotonic,
    ) -> None:
        self.settings = settings
        self.most_concurrency = settings.concurrency
        self.stats = LimitStats(concurrency=settings.concurrency)
        self._paced_start = paced_start
        self._start_limit = start_limit
        self._not_before = not_before
        self._waiting = waiting if waiting is not None else set()
        self._is_retryable = is_retryable
        self._clock = clock
        self.limiter: RateLimiter | None = None
        self.adaptive: AdaptiveRate | None = None
        self._raw: ItemCall | None = None
        self.call: ItemCall | None = None
        self.started_at: dict[asyncio.Task[Any], float] = {}
        """When each attempt that waited for its turn started (``time.perf_counter``), by its task: its latency
        counts from there. The driver takes each out once the attempt is over."""

    def wrap(self, raw: ItemCall) -> ItemCall:
        """The run's per-item call over the back end's ``raw`` one."""
        self._raw = raw
        self._apply(self._paced_start)
        if self.adaptive is not None:
            logger.info("%s", self._adaptive_start())
        assert self.call is not None
        return self.call

    def _adaptive_start(self) -> str:
        adaptive = self.adaptive
        assert adaptive is not None
        ceiling = "no ceiling" if adaptive.ceiling is None else f"at most {rate_text(adaptive.ceiling)}"
        if adaptive.rate is None:
            return f"Adaptive rate limit: none until the API pushes back ({ceiling})."
        if self._start_limit is not None:
            return f"Adaptive rate limit: {rate_text(adaptive.rate)}, where this run left it ({ceiling})."
        start = rate_text(adaptive.rate)
        return f"Adaptive rate limit: {start} to start ({ceiling}); lowered when the API pushes back."

    # ---- tuning

    def check(self, changes: Mapping[str, Any]) -> DriverSettings:
        """The settings ``changes`` (``-p`` names and typed values) would make.

        Raises:
            ParamError: a name that cannot be tuned, or a value ``-p`` would refuse (same messages).
        """
        unknown = sorted(set(changes) - set(TUNABLE))
        if unknown:
            raise ParamError(
                f"{', '.join(unknown)} cannot be changed while a run goes.",
                hint=f"A running run takes: {', '.join(TUNABLE)}.",
                param=unknown[0],
            )
        concurrency = changes.get("concurrency")
        if isinstance(concurrency, int) and not isinstance(concurrency, bool) and concurrency > self.most_concurrency:
            raise ParamError(
                f"concurrency can be tuned from 1 up to {self.most_concurrency}, the concurrency this run started "
                f"with (its workers were made at the start), got {concurrency}.",
                hint="More needs more workers, made when a run starts: start a new run with -p concurrency=N.",
                param="concurrency",
            )
        try:
            return dataclasses.replace(self.settings, **{TUNABLE[name]: value for name, value in changes.items()})
        except TypeError as exc:  # a value of the wrong type for a field that checks none
            raise ParamError(
                f"A tuned value is of the wrong type: {exc}.", hint="Give numbers, true or false."
            ) from exc

    def tune(self, changes: Mapping[str, Any]) -> list[str]:
        """Apply ``changes`` now; return what changed, as ``name: old -> new`` lines (logged in logs.txt).

        Raises:
            ParamError: as ``check``; nothing is changed then.
        """
        new = self.check(changes)
        said = [
            f"{name}: {_shown(getattr(self.settings, field))} -> {_shown(getattr(new, field))}"
            for name, field in TUNABLE.items()
            if name in changes and getattr(self.settings, field) != getattr(new, field)
        ]
        self.settings = new
        if said:
            self._apply(paced_start=True)
            self.stats.tuned += 1
            logger.info("Limits tuned (%s).", "; ".join(said))
        return said

    @property
    def tuned(self) -> dict[str, Any]:
        """The tunable settings now, by their ``-p`` names (the journal keeps them for a resume)."""
        return {name: getattr(self.settings, field) for name, field in TUNABLE.items()}

    # ---- the call

    def _apply(self, paced_start: bool) -> None:
        settings = self.settings
        self.stats.concurrency = settings.concurrency
        self.stats.adaptive = settings.adaptive
        ceiling = ceiling_of(settings)
        if settings.adaptive:
            if self.adaptive is None:
                self.adaptive = AdaptiveRate(ceiling, start=self._start_limit, clock=self._clock)
            else:
                self.adaptive.set_ceiling(ceiling)
        else:
            self.adaptive = None
        pace = self.adaptive.rate if self.adaptive is not None else None
        limits = settings.rate_limits
        if not limits and self.adaptive is None:
            self.limiter = None
        elif self.limiter is None:
            self.limiter = RateLimiter(
                limits, pace_per_s=pace, paced_start=paced_start, not_before=self._not_before, clock=self._clock
            )
        else:
            self.limiter.set_limits(limits)
            self.limiter.set_pace(pace)
        self.note()
        self.call = self._make_call()

    def note(self) -> None:
        """Bring ``stats`` up to date with the limit now."""
        stats, adaptive = self.stats, self.adaptive
        if adaptive is not None:
            stats.per_second = adaptive.rate
            stats.lowest = adaptive.lowest
            stats.mean = adaptive.mean
            stats.lowered = adaptive.lowered
        else:
            stats.per_second = ceiling_of(self.settings)

    def _make_call(self) -> ItemCall:
        raw = self._raw
        assert raw is not None
        limiter, adaptive = self.limiter, self.adaptive
        if limiter is None:
            return raw
        acquire, waiting, started_at = limiter.acquire, self._waiting, self.started_at

        async def wait_for_start() -> None:
            task = asyncio.current_task()
            assert task is not None
            waiting.add(task)
            try:
                await acquire()
            finally:
                waiting.discard(task)
            started_at[task] = time.perf_counter()

        if adaptive is None:

            async def limited(item: Any) -> Any:
                await wait_for_start()
                return await raw(item)

            return limited
        return self._adapted(raw, wait_for_start, adaptive)

    def _adapted(self, raw: ItemCall, wait_for_start: Callable[[], Any], adaptive: AdaptiveRate) -> ItemCall:
        """``raw`` paced by the adaptive rate, each attempt's outcome told to it."""
        clock, classify = self._clock, self._classify

        async def adapted(item: Any) -> Any:
            await wait_for_start()
            started = clock()
            if adaptive.started():
                self._follow(adaptive)
            try:
                result = await raw(item)
            except asyncio.CancelledError:
                raise  # a pause or a stop, not the API's answer
            except BaseException as exc:
                if adaptive.finished(started, classify(exc)):
                    self._follow(adaptive)
                raise
            if adaptive.finished(started, Outcome.OK):
                self._follow(adaptive)
            return result

        return adapted

    def _classify(self, exc: BaseException) -> Outcome:
        if isinstance(exc, RateLimited):
            return Outcome.PUSHBACK
        if isinstance(exc, TimeoutError) or self._is_retryable(exc):
            return Outcome.ERROR
        return Outcome.OK

    def _follow(self, adaptive: AdaptiveRate) -> None:
        """The adaptive rate changed: the limiter paces by it from now on."""
        if adaptive is not self.adaptive or self.limiter is None:
            return  # tuned off meanwhile
        lowered = adaptive.lowered > self.stats.lowered
        self.limiter.set_pace(adaptive.rate)
        self.note()
        if lowered and adaptive.rate is not None:
            # logs.txt only: the live line shows the limit, and a long run lowers it every few seconds
            logger.info(
                "Adaptive limit lowered to %s/s (the API pushed back).", f"{adaptive.rate:,.3g}", extra=FILE_ONLY
            )


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)
