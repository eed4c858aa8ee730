"""The retry policy: which failures are retried, and how long to wait before each retry.

Two kinds of delay reach the policy. A number a programmer passes (``Retry(delay_s=5)``,
``RateLimited(retry_after=30)``) is checked when the exception is built: a negative or non-finite
number is a ``ValueError`` there, in the code that wrote it. A ``Retry-After`` header's text comes
from a server and may be nonsense (``"0"``, ``"-5"``, an epoch number, a date in 2099): it is
clamped, never refused. Whatever is asked, ``RetryPolicy.delay_s`` waits at most ``max_delay_s``
(the ``max_cooldown_sec`` setting), and a refusal asking for no wait waits the first retry delay,
so that a refused item is not retried at once, again and again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import numbers
import random
import reprlib
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchframe._text import group_members
from batchframe.errors import ParamError

logger = logging.getLogger(__name__)

_MAX_LEAVES = 10_000
"""Exceptions looked at inside one group (nested groups included) before it counts as not retryable."""


class Retry(Exception):  # noqa: N818 - named for what the user asks for, like arq's Retry
    """Raise from ``Service.process`` to retry the item explicitly, whatever its exception type.

    Args:
        delay_s: wait this long before the retry: a finite number of seconds, zero or more (a wait
            longer than ``max_cooldown_sec`` is cut to it, with a warning). None: the policy's backoff.
        reason: why, for the logs and failed.jsonl if the retries run out.

    Raises:
        ValueError: ``delay_s`` is negative, ``inf`` or ``nan``.
        TypeError: ``delay_s`` is not a number.

    Example:
        >>> if response.status_code == 409:  # the record is locked for a moment
        ...     raise Retry(delay_s=2, reason="record locked")
    """

    def __init__(self, delay_s: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.delay_s = checked_delay(delay_s, name="Retry(delay_s=...)")

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt without calling __init__ (its first argument is the delay, not the message in args);
        # the attributes follow as the state. So a subclass with an __init__ of its own travels too.
        return _rebuilt, (type(self), self.args), self.__dict__


def _rebuilt(cls: type[Retry], args: tuple[Any, ...]) -> Retry:
    return cls.__new__(cls, *args)


class RateLimited(Retry):
    """Raise from ``Service.process`` when the API says "slow down" (HTTP 429/503 with ``Retry-After``).

    The item is retried after ``retry_after`` seconds, and no new item starts anywhere in the run
    until then (items already in flight finish): one cool-down for the whole run, not one per item,
    so the other workers stop hitting the API too. A wait of zero (``"0"``, a date in the past) is
    the first retry delay instead (``retry_backoff_sec``); a wait longer than ``max_cooldown_sec``
    is cut to it, with a warning.

    Args:
        retry_after: seconds to wait as a number (finite, zero or more); or the text of an HTTP
            ``Retry-After`` header: seconds (``"30"``) or an HTTP date (``"Wed, 21 Oct 2026 07:28:00
            GMT"``), clamped rather than refused when it makes no sense (``"-5"`` is no wait).
            None: the retry policy's backoff.
        reason: why, for the logs and failed.jsonl if the item fails in the end.
        counts_as_attempt: whether this try counts toward ``max_retries``. By default it does not:
            the API refused the call, the item did not fail; set True to give up after
            ``max_retries`` refusals of the same item.

    Raises:
        ValueError: ``retry_after`` is a negative or non-finite number, or text that is neither a
            number of seconds nor an HTTP date.

    Example:
        >>> if response.status_code == 429:
        ...     raise RateLimited(retry_after=response.headers.get("Retry-After"), reason="429 Too Many Requests")
    """

    def __init__(
        self, retry_after: float | str | None = None, reason: str = "rate limited", *, counts_as_attempt: bool = False
    ) -> None:
        super().__init__(parse_retry_after(retry_after), reason)
        self.retry_after = retry_after
        self.counts_as_attempt = counts_as_attempt

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the delay, the choice and the value asked for (named by the driver's warnings) when
        # the error comes back from a worker process.
        asked = self.retry_after if isinstance(self.retry_after, (str, int, float, type(None))) else None
        return _rate_limited, (self.delay_s, str(self), self.counts_as_attempt, asked)


def _rate_limited(
    delay_s: float | None, reason: str, counts_as_attempt: bool, retry_after: float | str | None = None
) -> RateLimited:
    error = RateLimited(delay_s, reason, counts_as_attempt=counts_as_attempt)
    error.retry_after = retry_after if retry_after is not None else delay_s
    return error


def checked_delay(value: object, *, name: str, also: str = "") -> float | None:
    """A delay a programmer passed, as seconds: None, or a finite number, zero or more.

    Raises:
        ValueError: the number is negative, ``inf`` or ``nan`` (the message names ``name``).
        TypeError: ``value`` is not a number.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(value).__qualname__}")
    try:
        seconds = float(value)
    except (OverflowError, ValueError):  # an int too large for a float
        seconds = math.inf
    if not (math.isfinite(seconds) and seconds >= 0):
        try:
            shown = reprlib.repr(value)
        except Exception:  # a user's number type whose repr raises
            shown = repr(seconds)
        raise ValueError(
            f"{name} must be a finite number of seconds, zero or more, or None (the retry policy's backoff){also}; "
            f"got {shown}"
        )
    return seconds


def parse_retry_after(value: object, *, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: finite, zero or more (None for None).

    A number is the programmer's and is checked (see ``checked_delay``). Text is a server's and is
    clamped: seconds (``"30"``; ``"-5"`` is 0, ``"inf"`` the largest float) or an HTTP date (in the
    past: 0). ``RetryPolicy.delay_s`` then applies the run's floor and cap.

    Raises:
        ValueError: a negative or non-finite number; text that is neither seconds nor an HTTP date.
    """
    if value is None or isinstance(value, numbers.Real):
        return checked_delay(value, name="RateLimited(retry_after=...)", also=", or a Retry-After header's text")
    text = (value.decode("latin-1") if isinstance(value, bytes) else str(value)).strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = _seconds_until(text, now or dt.datetime.now(dt.timezone.utc))
    if math.isnan(seconds):
        raise ValueError(f"Retry-After must be a number of seconds or an HTTP date, got {text!r}")
    return min(max(seconds, 0.0), sys.float_info.max)


def _seconds_until(http_date: str, now: dt.datetime) -> float:
    import email.utils  # 4 ms at start-up for the rare Retry-After given as a date

    try:
        when = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError, OverflowError):
        raise ValueError(f"Retry-After must be a number of seconds or an HTTP date, got {http_date!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)  # HTTP dates are GMT
    return (when - now).total_seconds()


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped; or an explicit list of delays.

    Attempt ``n`` (1 = the first retry) waits ``uniform(0, min(cap, base * 2**(n-1)))`` seconds
    ("full jitter", https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/),
    or ``delays_s[n-1]`` (the last one repeating) when delays are given. No wait, whoever asks for
    it, is longer than ``max_delay_s``.

    An exception group (``ExceptionGroup``, from ``asyncio.TaskGroup`` say) is retried when every
    exception in it (nested groups flattened) is retryable; it waits the longest delay its ``Retry``
    members ask for, else the backoff.

    Attributes:
        max_retries: retries after the first attempt; 0 disables retrying.
        base_s: the first delay.
        cap_s: the largest delay of the backoff.
        delays_s: explicit delays, overriding base and cap.
        retry_on: exception types retried (matched with isinstance).
        max_delay_s: the longest wait of all, whatever asks for it (``Retry(delay_s=...)``, a
            ``Retry-After``, ``delays_s``): a cool-down as much as a retry delay.
    """

    max_retries: int = 3
    base_s: float = 1.0
    cap_s: float = 60.0
    delays_s: Sequence[float] | None = None
    retry_on: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError)
    max_delay_s: float = 300.0
    jitter: Callable[[float, float], float] = field(default=random.uniform, compare=False, repr=False)
    _warned: set[str] = field(default_factory=set, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_non_negative("max_retries", self.max_retries)
        _check_non_negative("retry_backoff_sec", self.base_s)
        _check_non_negative("retry_backoff_max_sec", self.cap_s)
        _check_non_negative("max_cooldown_sec", self.max_delay_s)
        for delay in self.delays_s or ():
            _check_non_negative("retry_delays_sec", delay, within=self.delays_s)

    @classmethod
    def with_exceptions(cls, policy: RetryPolicy, retry_on: Collection[type[BaseException]]) -> RetryPolicy:
        """A copy of ``policy`` that retries ``retry_on`` (its warnings not given yet: one run's policy)."""
        return dataclasses.replace(policy, retry_on=tuple(retry_on))

    def should_retry(self, exc: BaseException, attempts: int) -> bool:
        """Whether an item that failed its ``attempts``-th attempt with ``exc`` gets another one. Never raises."""
        if attempts > self.max_retries:
            return False
        return is_retryable(exc, self.retry_on)

    @property
    def first_delay_s(self) -> float:
        """The first retry's delay before jitter: what a refusal asking for no wait waits."""
        if self.delays_s:
            return float(self.delays_s[0])
        return backoff_ceiling(self.base_s, self.cap_s, 1)

    def delay_s(self, attempts: int, exc: BaseException | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt: finite, from 0 to ``max_delay_s``, for any input.

        The delay a ``Retry`` asks for, else the backoff. A ``RateLimited`` asking for no wait waits
        ``first_delay_s``. A ``delay_s`` set on an exception after it was built that is no finite
        number (``inf``, ``nan``, text, a property that raises) gets the backoff. A wait above
        ``max_delay_s`` is cut to it, and the first of a run is logged as a warning.
        """
        requested = _requested_delay(exc)
        if requested is None:
            seconds = self._backoff(attempts)
        elif requested == 0 and isinstance(exc, RateLimited):
            seconds = self._floor(exc)
        else:
            seconds = requested
        if seconds > self.max_delay_s:
            self._say_once(
                "capped",
                "%s asks for a wait of %s: waiting %s instead, the longest allowed (max_cooldown_sec)."
                " Later waits cut to it are logged at DEBUG.",
                _asker(exc),
                _duration(seconds),
                _duration(self.max_delay_s),
            )
            return self.max_delay_s
        return seconds

    def _backoff(self, attempts: int) -> float:
        attempts = max(attempts, 1)
        if self.delays_s:
            return float(self.delays_s[min(attempts, len(self.delays_s)) - 1])
        return _finite(self.jitter(0.0, backoff_ceiling(self.base_s, self.cap_s, attempts)))

    def _floor(self, exc: RateLimited) -> float:
        floor = self.first_delay_s
        if floor > 0:
            self._say_once(
                "floored",
                "%s asks for no wait: waiting %s instead (the first retry delay), so that a refused item is not"
                " retried at once, again and again. Later ones are logged at DEBUG.",
                _asker(exc),
                _duration(floor),
            )
        return floor

    def _say_once(self, key: str, message: str, *args: object) -> None:
        """Log ``message`` as a warning the first time in this policy's run, at DEBUG after that."""
        level = logging.DEBUG if key in self._warned else logging.WARNING
        self._warned.add(key)
        logger.log(level, message, *args)


def is_retryable(exc: BaseException, retry_on: Sequence[type[BaseException]]) -> bool:
    """Whether ``exc`` is retried: a ``Retry``, an instance of ``retry_on``, or ``exc.retryable is True``.

    An exception group is, as well, when every exception in it (nested groups flattened) is. An
    error from a worker process that could not travel as itself says whether the worker's Service
    retries it (``backends._worker.RemoteError.retryable``). Never raises: a check that fails (a
    user's property, a group that cannot be walked) means not retryable.
    """
    try:
        if _retryable_leaf(exc, retry_on):
            return True
        leaves = _group_leaves(exc)
        return bool(leaves) and all(_retryable_leaf(leaf, retry_on) for leaf in leaves)
    except Exception:
        return False


def _retryable_leaf(exc: BaseException, retry_on: Sequence[type[BaseException]]) -> bool:
    return isinstance(exc, (Retry, *retry_on)) or _says_retryable(exc)


def _group_leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside an exception group, nested groups flattened; [] for any other exception.

    Raises:
        ValueError: the group holds more than ``_MAX_LEAVES`` exceptions.
    """
    if group_members(exc) is None:
        return []
    leaves: list[BaseException] = []
    pending = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if len(seen) > _MAX_LEAVES:
            raise ValueError("an exception group too large to look at")
        members = group_members(current)
        if members is None:
            leaves.append(current)
        else:
            pending.extend(reversed(members))
    return leaves


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
    """The delay a ``Retry`` asks for (a group: the longest its members ask for), when usable; else None."""
    if exc is None or isinstance(exc, Retry):
        return _usable_delay(exc)
    try:
        asked = [_usable_delay(leaf) for leaf in _group_leaves(exc)]
    except Exception:
        return None
    return max((seconds for seconds in asked if seconds is not None), default=None)


def _usable_delay(exc: BaseException | None) -> float | None:
    """A ``Retry``'s ``delay_s`` when it is a finite number of seconds (a negative one is 0); else None.

    ``Retry()`` checks the number it is given; this guards what was set or computed after that
    (an attribute assigned later, a subclass's property).
    """
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


def _asker(exc: BaseException | None) -> str:
    """Who asked for a delay, for a warning: ``Retry-After '-5'``, ``Retry(delay_s=...)``, or the backoff."""
    if isinstance(exc, RateLimited):
        asked = getattr(exc, "retry_after", None)
        return f"Retry-After {asked!r}" if isinstance(asked, (str, int, float)) else "RateLimited"
    if isinstance(exc, Retry):
        return f"{type(exc).__qualname__}(delay_s=...)"
    if _requested_delay(exc) is not None:
        return f"a Retry inside {type(exc).__qualname__}"
    return "The retry backoff (retry_delays_sec)"


def _duration(seconds: float) -> str:
    """``'300 s'``, ``'1,796,283,000 s (56.9 years)'``: seconds, and a larger unit when it helps."""
    text = f"{seconds:,.0f} s" if seconds < 1e15 and seconds >= 100 else f"{seconds:.3g} s"
    for unit, size in (("years", 365.25 * 86_400), ("days", 86_400), ("h", 3_600)):
        if seconds >= size:
            return f"{text} ({seconds / size:,.1f} {unit})"
    return text


def _finite(seconds: float) -> float:
    """``seconds`` when it is a finite number, zero or more; else 0 (what a broken jitter function gave)."""
    try:
        value = float(seconds)
    except Exception:
        return 0.0
    return value if math.isfinite(value) and value >= 0 else 0.0


def _check_non_negative(name: str, value: float, *, within: Sequence[float] | None = None) -> None:
    """Raise a ParamError naming ``name`` unless ``value`` is a finite number, zero or more."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if number and math.isfinite(value) and value >= 0:
        return
    where = f" (in {name}={','.join(map(str, within))})" if within is not None else ""
    problem = "zero or more" if number and math.isfinite(value) else "a finite number, zero or more"
    raise ParamError(
        f"{name} must be {problem}, got {value!r}{where}.",
        hint=f"Set it with -p {name}=VALUE (or in your config); inf and nan are not accepted.",
        param=name,
    )
