"""The executor's settings and the per-item rate limit.

The rate limit wraps the back end's per-item call once, at the start of a run, so the hot path has
no per-item branching when it is not set. (The time limit is enforced by the back ends.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from batchframe.backends import ItemCall
from batchframe.errors import ParamError
from batchframe.retry import RetryPolicy


@dataclass(frozen=True, kw_only=True)
class ExecutorSettings:
    """How the executor runs: validated on creation, each error naming the config field.

    Attributes:
        concurrency: items processed at the same time (workers).
        queue_size: items read ahead of the workers (default: twice the concurrency).
        retry: the retry policy.
        item_timeout_s: time limit for one attempt, or None.
        rate_per_s: items started per second at most, or None.
        rate_per_minute: items started per minute at most, or None (both windows apply when both are set).
    """

    concurrency: int = 8
    queue_size: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    item_timeout_s: float | None = None
    rate_per_s: float | None = None
    rate_per_minute: float | None = None

    def __post_init__(self) -> None:
        _check_positive("concurrency", self.concurrency, integer=True)
        if self.queue_size is not None:
            _check_positive("queue_size", self.queue_size, integer=True)
        if self.item_timeout_s is not None:
            _check_limit("item_timeout_sec", self.item_timeout_s)
        if self.rate_per_s is not None:
            _check_limit("max_per_second", self.rate_per_s)
        if self.rate_per_minute is not None:
            _check_limit("max_per_minute", self.rate_per_minute)

    @property
    def read_ahead(self) -> int:
        """The bound of the queue between the source and the workers."""
        return self.queue_size or 2 * self.concurrency


def _check_positive(name: str, value: float, *, integer: bool = False) -> None:
    if (integer and (isinstance(value, bool) or not isinstance(value, int))) or not value > 0:
        kind = "a whole number" if integer else "a number"
        raise ParamError(
            f"{name} must be {kind} greater than 0, got {value!r}.",
            hint=f"Set it with -p {name}=VALUE or in your config.",
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


def with_limits(call: ItemCall, settings: ExecutorSettings) -> ItemCall:
    """``call`` with the settings' rate limits applied (when set): each window is its own limiter.

    The time limit is the back end's to enforce (see ``batchframe.backends.make_backend``): only it
    knows when an item starts running, and how to abandon or kill an attempt.
    """
    if settings.rate_per_s is not None:
        call = _with_rate_limit(call, settings.rate_per_s, 1.0)
    if settings.rate_per_minute is not None:
        call = _with_rate_limit(call, settings.rate_per_minute, 60.0)
    return call


def _with_rate_limit(call: ItemCall, rate: float, period_s: float) -> ItemCall:
    from aiolimiter import AsyncLimiter

    # aiolimiter needs a capacity of at least one item: express slow rates as 1 item per period.
    limiter = AsyncLimiter(rate, period_s) if rate >= 1 else AsyncLimiter(1, period_s / rate)

    async def limited(item: Any) -> Any:
        async with limiter:
            return await call(item)

    return limited
