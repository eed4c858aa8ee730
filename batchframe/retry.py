"""The retry policy: which failures are retried, and how long to wait before each retry."""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import random
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchframe.errors import ParamError


class Retry(Exception):  # noqa: N818 - named for what the user asks for, like arq's Retry
    """Raise from ``Service.process`` to retry the item explicitly, whatever its exception type.

    Args:
        delay_s: wait this long before the retry (default: the policy's backoff; so is a value that is
            not a finite number of seconds, such as ``inf``). A negative delay means no wait.
        reason: why, for the logs and failed.jsonl if the retries run out.
    """

    def __init__(self, delay_s: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.delay_s = delay_s


class RateLimited(Retry):
    """Raise from ``Service.process`` when the API says "slow down" (HTTP 429/503 with ``Retry-After``).

    The item is retried after ``retry_after`` seconds, and no new item starts anywhere in the run
    until then (items already in flight finish): one cool-down for the whole run, not one per item,
    so the other workers stop hitting the API too.

    Args:
        retry_after: seconds to wait, or an HTTP ``Retry-After`` value: seconds (``"30"``) or an HTTP
            date (``"Wed, 21 Oct 2026 07:28:00 GMT"``). None: the retry policy's backoff.
        reason: why, for the logs and failed.jsonl if the item fails in the end.
        counts_as_attempt: whether this try counts toward ``max_retries``. By default it does not:
            the API refused the call, the item did not fail; set True to give up after
            ``max_retries`` refusals of the same item.

    Raises:
        ValueError: ``retry_after`` is neither a number of seconds nor an HTTP date.
    """

    def __init__(
        self, retry_after: float | str | None = None, reason: str = "rate limited", *, counts_as_attempt: bool = False
    ) -> None:
        super().__init__(parse_retry_after(retry_after), reason)
        self.retry_after = retry_after
        self.counts_as_attempt = counts_as_attempt

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the delay and the choice when the error comes back from a worker process.
        return _rate_limited, (self.delay_s, str(self), self.counts_as_attempt)


def _rate_limited(delay_s: float | None, reason: str, counts_as_attempt: bool) -> RateLimited:
    return RateLimited(delay_s, reason, counts_as_attempt=counts_as_attempt)


def parse_retry_after(value: float | str | None, *, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: a number of seconds, or an HTTP date (never negative)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            seconds = _seconds_until(text, now or dt.datetime.now(dt.timezone.utc))
    if not math.isfinite(seconds):
        raise ValueError(f"Retry-After must be a finite number of seconds or an HTTP date, got {value!r}")
    return max(seconds, 0.0)


def _seconds_until(http_date: str, now: dt.datetime) -> float:
    try:
        when = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"Retry-After must be a number of seconds or an HTTP date, got {http_date!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)  # HTTP dates are GMT
    return (when - now).total_seconds()


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped; or an explicit list of delays.

    Attempt ``n`` (1 = the first retry) waits ``uniform(0, min(cap, base * 2**(n-1)))`` seconds
    ("full jitter", https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/),
    or ``delays_s[n-1]`` (the last one repeating) when delays are given.

    Attributes:
        max_retries: retries after the first attempt; 0 disables retrying.
        base_s: the first delay.
        cap_s: the largest delay.
        delays_s: explicit delays, overriding base and cap.
        retry_on: exception types retried (matched with isinstance).
    """

    max_retries: int = 3
    base_s: float = 1.0
    cap_s: float = 60.0
    delays_s: Sequence[float] | None = None
    retry_on: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError)
    jitter: Callable[[float, float], float] = field(default=random.uniform, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_non_negative("max_retries", self.max_retries)
        _check_non_negative("retry_backoff_sec", self.base_s)
        _check_non_negative("retry_backoff_max_sec", self.cap_s)
        for delay in self.delays_s or ():
            _check_non_negative("retry_delays_sec", delay, within=self.delays_s)

    @classmethod
    def with_exceptions(cls, policy: RetryPolicy, retry_on: Collection[type[BaseException]]) -> RetryPolicy:
        """A copy of ``policy`` that retries ``retry_on``."""
        return cls(
            max_retries=policy.max_retries,
            base_s=policy.base_s,
            cap_s=policy.cap_s,
            delays_s=policy.delays_s,
            retry_on=tuple(retry_on),
            jitter=policy.jitter,
        )

    def should_retry(self, exc: BaseException, attempts: int) -> bool:
        """Whether an item that failed its ``attempts``-th attempt with ``exc`` gets another one."""
        if attempts > self.max_retries:
            return False
        # An error from a worker process that could not travel as itself says whether the worker's
        # Service retries it (backends._worker.RemoteError.retryable).
        return isinstance(exc, (Retry, *self.retry_on)) or _says_retryable(exc)

    def delay_s(self, attempts: int, exc: BaseException | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt: finite, zero or more, for any input.

        A ``Retry`` whose ``delay_s`` is not a finite number (``inf``, ``nan``, text) gets the policy's
        delay instead; so does an explicit ``delay_s`` of None.
        """
        requested = _requested_delay(exc)
        if requested is not None:
            return requested
        attempts = max(attempts, 1)
        if self.delays_s:
            return float(self.delays_s[min(attempts, len(self.delays_s)) - 1])
        return _finite(self.jitter(0.0, backoff_ceiling(self.base_s, self.cap_s, attempts)))


def _says_retryable(exc: BaseException) -> bool:
    """Whether ``exc.retryable`` is True; False when it is not, or reading it raises (a user's property)."""
    try:
        return getattr(exc, "retryable", False) is True
    except Exception:
        return False


def backoff_ceiling(base_s: float, cap_s: float, attempts: int) -> float:
    """``min(cap_s, base_s * 2**(attempts - 1))``, computed without ever overflowing or raising.

    The number of doublings is compared with the doublings that reach the cap (in log space) before
    anything is scaled, so attempt 1025 or 10**9 simply gets ``cap_s``. ``inf`` and ``nan`` (a policy
    built around its validation) give a finite answer: a ``nan`` is 0, an infinite cap the largest float.
    """
    cap = 0.0 if math.isnan(cap_s) else min(cap_s, sys.float_info.max)
    base = 0.0 if math.isnan(base_s) else base_s
    if base <= 0 or cap <= 0:
        return 0.0
    base = min(base, cap)
    doublings = max(attempts - 1, 0)
    if doublings >= math.log2(cap) - math.log2(base):
        return cap
    try:
        # ldexp scales by a power of two without computing 2**n on its own; below the cap it cannot
        # overflow, but rounding in the logs above must not become an exception.
        return min(cap, math.ldexp(base, doublings))
    except OverflowError:
        return cap


def _requested_delay(exc: BaseException | None) -> float | None:
    """The delay a ``Retry`` asks for, when it is a usable number of seconds (never negative)."""
    if not isinstance(exc, Retry):
        return None
    try:
        requested = exc.delay_s
        if requested is None:
            return None
        seconds = float(requested)
    except Exception:  # text that is no number, or a user's property that raises
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _finite(seconds: float) -> float:
    """``seconds`` when it is a finite number, zero or more; else 0 (what a broken jitter function gave)."""
    try:
        value = float(seconds)
    except Exception:
        return 0.0
    return value if math.isfinite(value) and value >= 0 else 0.0


def _check_non_negative(name: str, value: float, *, within: Sequence[float] | None = None) -> None:
    """Raise a ParamError naming ``name`` unless ``value`` is a finite number, zero or more."""
    if math.isfinite(value) and value >= 0:
        return
    where = f" (in {name}={','.join(map(str, within))})" if within is not None else ""
    problem = "zero or more" if math.isfinite(value) else "a finite number, zero or more"
    raise ParamError(
        f"{name} must be {problem}, got {value!r}{where}.",
        hint=f"Set it with -p {name}=VALUE (or in your config); inf and nan are not accepted.",
        param=name,
    )
