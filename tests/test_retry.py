from __future__ import annotations

import json
import logging
import math
import pickle
import sys

import pytest
from helpers import batchframe_cli, only_run_dir, read_jsonl

from batchframe import ParamError, RateLimited, Retry
from batchframe.retry import RetryPolicy, backoff_ceiling, parse_retry_after


def upper_bound(low: float, high: float) -> float:
    return high


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(base_s=0.5, cap_s=3.0, jitter=upper_bound)
    assert [policy.delay_s(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_full_jitter_stays_between_zero_and_the_ceiling() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=8.0)
    delays = [policy.delay_s(3) for _ in range(200)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 1  # really jittered


def test_explicit_delays_override_and_the_last_repeats() -> None:
    policy = RetryPolicy(delays_s=[1, 5, 30], base_s=100)
    assert [policy.delay_s(n) for n in range(1, 6)] == [1, 5, 30, 30, 30]


def test_retry_exception_sets_its_own_delay_and_always_retries() -> None:
    policy = RetryPolicy(max_retries=2, retry_on=())
    assert policy.should_retry(Retry(delay_s=7), attempts=1)
    assert policy.delay_s(1, Retry(delay_s=7)) == 7
    assert not policy.should_retry(Retry(), attempts=3)


def test_should_retry_matches_subclasses_and_counts_attempts() -> None:
    policy = RetryPolicy(max_retries=2, retry_on=(ConnectionError,))
    assert policy.should_retry(ConnectionResetError(), attempts=2)
    assert not policy.should_retry(ConnectionResetError(), attempts=3)
    assert not policy.should_retry(ValueError(), attempts=1)


@pytest.mark.parametrize("field", ["max_retries", "base_s", "cap_s"])
def test_negative_values_are_rejected(field: str) -> None:
    with pytest.raises(ParamError):
        RetryPolicy(**{field: -1})


def test_negative_explicit_delay_is_rejected() -> None:
    with pytest.raises(ParamError, match="retry_delays_sec"):
        RetryPolicy(delays_s=[1, -2])


@pytest.mark.parametrize("attempts", [1024, 1025, 1026, 5_000, 10**9, 10**30])
def test_any_attempt_number_gets_the_cap_without_overflowing(attempts: int) -> None:
    policy = RetryPolicy(base_s=0.5, cap_s=3.0, jitter=upper_bound)
    assert policy.delay_s(attempts) == 3.0
    assert 0.0 <= RetryPolicy(base_s=0.5, cap_s=3.0).delay_s(attempts) <= 3.0  # with the real jitter


@pytest.mark.parametrize(
    ("base_s", "cap_s", "attempts", "expected"),
    [
        (0.5, 3.0, 0, 0.5),  # attempt numbers below 1 count as the first
        (0.5, 3.0, -7, 0.5),
        (5e-324, 1e308, 1_500, math.ldexp(5e-324, 1_499)),  # far below the cap after 1499 doublings
        (5e-324, 1e308, 3_000, 1e308),
        (0.0, 3.0, 10**6, 0.0),
        (2.0, 1.0, 1, 1.0),  # a base above the cap is capped
        (1.0, math.inf, 10**6, sys.float_info.max),  # guarded, although the policy rejects inf
        (math.inf, 3.0, 1, 3.0),
        (math.nan, 3.0, 5, 0.0),
        (1.0, math.nan, 5, 0.0),
    ],
)
def test_backoff_ceiling_is_finite_for_any_input(base_s: float, cap_s: float, attempts: int, expected: float) -> None:
    ceiling = backoff_ceiling(base_s, cap_s, attempts)
    assert math.isfinite(ceiling) and ceiling == expected


@pytest.mark.parametrize("requested", [math.inf, -math.inf, math.nan, "soon", object()])
def test_a_retry_asking_for_a_delay_that_is_no_finite_number_gets_the_policys(requested: object) -> None:
    policy = RetryPolicy(base_s=0.5, cap_s=3.0, jitter=upper_bound)
    exc = Retry()
    exc.delay_s = requested  # type: ignore[assignment]
    assert policy.delay_s(2, exc) == 1.0


def test_a_retry_delay_property_that_raises_gets_the_policys() -> None:
    class Odd(Retry):
        @property  # type: ignore[override]
        def delay_s(self) -> float:
            raise RuntimeError("no")

        @delay_s.setter
        def delay_s(self, value: float | None) -> None:
            pass

    assert RetryPolicy(base_s=0.5, jitter=upper_bound).delay_s(1, Odd()) == 0.5


ALWAYS_DOWN = """
from batchframe import Service, Source

class Two(Source[str]):
    def __len__(self):
        return 2
    def __iter__(self):
        return iter(["down", "fine"])

class Api(Service[str]):
    async def process(self, item):
        if item == "down":
            raise ConnectionError("always down")
"""


@pytest.mark.timeout(120)
def test_two_thousand_retries_end_with_the_item_in_failed_jsonl(make_project) -> None:
    project = make_project({"job.py": ALWAYS_DOWN})
    result = batchframe_cli(
        "exec", "job.py", "-d", "out", "-p", "max_retries=2000", "-p", "retry_backoff_sec=0.0001",
        "-p", "retry_backoff_max_sec=0.0001", cwd=project, timeout=90,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr and "OverflowError" not in result.stdout + result.stderr
    run_dir = only_run_dir(project / "out")
    [failed] = read_jsonl(run_dir / "failed.jsonl")
    assert failed["item"] == "down" and failed["attempts"] == 2001 and failed["error_type"] == "ConnectionError"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["succeeded"], summary["failed"], summary["outcome"]) == (1, 1, "completed")


def test_a_retryable_attribute_that_raises_means_not_retryable() -> None:
    class Odd(Exception):
        @property
        def retryable(self) -> bool:
            raise RuntimeError("no")

    assert not RetryPolicy(retry_on=()).should_retry(Odd(), attempts=1)


# ------------------------------------------------ delays asked for: checked, clamped, floored, capped


@pytest.mark.parametrize("delay", [math.inf, -math.inf, math.nan, -1, -0.5, 10**400])
def test_retry_refuses_a_delay_that_is_no_finite_number_zero_or_more(delay: float) -> None:
    with pytest.raises(ValueError, match=r"Retry\(delay_s=\.\.\.\) must be a finite number of seconds, zero or more"):
        Retry(delay_s=delay)


@pytest.mark.parametrize("delay", ["5", True, object()])
def test_retry_refuses_a_delay_that_is_no_number(delay: object) -> None:
    with pytest.raises(TypeError, match="must be a number of seconds or None"):
        Retry(delay_s=delay)  # type: ignore[arg-type]


@pytest.mark.parametrize("retry_after", [math.inf, math.nan, -5, -0.1])
def test_rate_limited_refuses_a_programmers_number_that_is_no_finite_number_zero_or_more(retry_after: float) -> None:
    with pytest.raises(ValueError, match=r"RateLimited\(retry_after=\.\.\.\) must be a finite number"):
        RateLimited(retry_after)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("0", 0.0), ("-5", 0.0), ("  12 ", 12.0), ("1796283000", 1796283000.0), ("inf", sys.float_info.max), (b"3", 3.0)],
)
def test_a_headers_text_is_clamped_never_refused(header: str, seconds: float) -> None:
    assert parse_retry_after(header) == seconds
    assert RateLimited(header).delay_s == seconds


def test_a_headers_text_that_is_no_number_nor_date_is_refused() -> None:
    with pytest.raises(ValueError, match="number of seconds or an HTTP date"):
        RateLimited("nan")


def test_zero_and_negative_retry_after_wait_the_first_retry_delay() -> None:
    policy = RetryPolicy(base_s=0.5, cap_s=3.0, jitter=upper_bound)
    past = "Thu, 01 Jan 2015 00:00:00 GMT"
    assert [policy.delay_s(1, RateLimited(value)) for value in ("0", "-5", past, 0)] == [0.5] * 4
    assert RetryPolicy(delays_s=[2, 5]).delay_s(3, RateLimited("0")) == 2.0
    assert policy.delay_s(1, Retry(delay_s=0)) == 0.0  # a programmer's explicit "no wait" (it counts as an attempt)


@pytest.mark.parametrize(
    "exc",
    [RateLimited("1796283000"), RateLimited("Thu, 01 Jan 2099 00:00:00 GMT"), RateLimited("inf"), Retry(delay_s=1e9)],
)
def test_any_wait_is_capped_by_max_delay(exc: Retry) -> None:
    assert RetryPolicy(max_delay_s=10.0).delay_s(1, exc) == 10.0


def test_the_backoff_and_explicit_delays_are_capped_too() -> None:
    assert RetryPolicy(delays_s=[1, 50], max_delay_s=10.0).delay_s(2) == 10.0
    assert RetryPolicy(base_s=40, cap_s=100, max_delay_s=10.0, jitter=upper_bound).delay_s(3) == 10.0
    assert RetryPolicy(max_delay_s=0.0).delay_s(1, RateLimited("0")) == 0.0  # a floor above the cap: the cap


def test_the_first_capped_wait_of_a_run_is_one_warning_naming_both_delays(caplog: pytest.LogCaptureFixture) -> None:
    policy = RetryPolicy.with_exceptions(RetryPolicy(max_delay_s=300.0), [ConnectionError])
    caplog.set_level(logging.DEBUG, logger="batchframe.retry")
    for _ in range(3):
        assert policy.delay_s(1, pickle.loads(pickle.dumps(RateLimited("1796283000")))) == 300.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "Retry-After '1796283000' asks for a wait of 1,796,283,000 s (56.9 years): waiting 300 s instead, "
        "the longest allowed (max_cooldown_sec). Later waits cut to it are logged at DEBUG."
    ]
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG]) == 2
    caplog.clear()
    RetryPolicy.with_exceptions(policy, []).delay_s(1, Retry(delay_s=400))  # another run's policy warns again
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


@pytest.mark.parametrize("value", [-1.0, math.inf, math.nan, "300"])
def test_max_delay_must_be_a_finite_number_zero_or_more(value: object) -> None:
    with pytest.raises(ParamError, match="max_cooldown_sec must be") as info:
        RetryPolicy(max_delay_s=value)  # type: ignore[arg-type]
    assert info.value.param == "max_cooldown_sec"


def test_a_rate_limited_from_a_worker_keeps_what_was_asked() -> None:
    travelled = pickle.loads(pickle.dumps(RateLimited("-5", "429", counts_as_attempt=True)))
    assert (travelled.delay_s, travelled.retry_after, str(travelled), travelled.counts_as_attempt) == (
        0.0,
        "-5",
        "429",
        True,
    )


def test_the_configuration_caps_waits_at_300_seconds_by_default() -> None:
    from batchframe.configuration import Configuration
    from batchframe.run.prepare import settings_from_config

    assert Configuration().max_cooldown_sec == 300.0
    assert settings_from_config(Configuration(max_cooldown_sec=5.0)).retry.max_delay_s == 5.0


class TwoArgs(Retry):
    def __init__(self, seconds: float, why: str) -> None:
        super().__init__(delay_s=seconds, reason=why)
        self.why = why


def test_a_retry_from_a_worker_keeps_its_delay_reason_and_attributes() -> None:
    for sent in (Retry(delay_s=5, reason="again"), Retry(), TwoArgs(3, "busy")):
        travelled = pickle.loads(pickle.dumps(sent))
        assert (type(travelled), travelled.delay_s, str(travelled)) == (type(sent), sent.delay_s, str(sent))
    assert travelled.why == "busy"


# ------------------------------------------------------------------------------------ exception groups

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup, ExceptionGroup

    class BadMembers(ExceptionGroup):  # type: ignore[type-arg]
        @property
        def exceptions(self) -> tuple[BaseException, ...]:  # type: ignore[override]
            raise RuntimeError("no members")

    class OddRetryable(Exception):
        @property
        def retryable(self) -> bool:
            raise RuntimeError("no")

    GROUPS_RETRIED = [
        ExceptionGroup("calls", [ConnectionError("a"), ConnectionResetError("b"), TimeoutError("c")]),
        ExceptionGroup("nested", [ConnectionError("a"), ExceptionGroup("inner", [TimeoutError("b")])]),
        ExceptionGroup("asked", [ConnectionError("a"), Retry(), RateLimited("3")]),
        BaseExceptionGroup("base", [ConnectionError("a")]),
    ]
    GROUPS_NOT_RETRIED = [
        ExceptionGroup("mixed", [ConnectionError("a"), ValueError("b")]),
        ExceptionGroup("nested", [ConnectionError("a"), ExceptionGroup("inner", [KeyError("b")])]),
        BaseExceptionGroup("interrupted", [ConnectionError("a"), KeyboardInterrupt()]),
        ExceptionGroup("odd", [OddRetryable()]),
        BadMembers("unreadable", [ConnectionError("a")]),
    ]
else:  # pragma: no cover - exception groups are Python 3.11+
    GROUPS_RETRIED = GROUPS_NOT_RETRIED = []


@pytest.mark.parametrize("group", GROUPS_RETRIED, ids=str)
def test_a_group_is_retried_when_every_member_is(group: BaseException) -> None:
    policy = RetryPolicy(max_retries=2, retry_on=(ConnectionError, TimeoutError))
    assert policy.should_retry(group, attempts=1)
    assert not policy.should_retry(group, attempts=3)  # it counts as an attempt like any other


@pytest.mark.parametrize("group", GROUPS_NOT_RETRIED, ids=str)
def test_a_group_with_a_member_that_is_not_retryable_is_not_retried(group: BaseException) -> None:
    assert not RetryPolicy(retry_on=(ConnectionError, TimeoutError)).should_retry(group, attempts=1)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups are Python 3.11+")
def test_a_group_type_in_retry_on_retries_any_group_and_a_huge_group_is_looked_at_without_raising() -> None:
    mixed = ExceptionGroup("mixed", [ValueError("a")])
    assert RetryPolicy(retry_on=(ExceptionGroup,)).should_retry(mixed, attempts=1)
    leaf: BaseException = ConnectionError("leaf")
    for _ in range(40):  # one object shared at every level: 2**40 leaves walked as a tree, 41 objects
        leaf = ExceptionGroup("level", [leaf, leaf])
    assert RetryPolicy().should_retry(leaf, attempts=1)
    huge = ExceptionGroup("huge", [ConnectionError(i) for i in range(20_000)])
    assert not RetryPolicy().should_retry(huge, attempts=1)  # beyond what is looked at: not retried


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups are Python 3.11+")
def test_a_group_waits_the_longest_delay_its_members_ask_for_else_the_backoff() -> None:
    policy = RetryPolicy(base_s=0.5, cap_s=3.0, jitter=upper_bound, max_delay_s=60.0)
    asking = ExceptionGroup("asked", [Retry(delay_s=2), ConnectionError(), ExceptionGroup("in", [Retry(delay_s=7)])])
    assert policy.delay_s(1, asking) == 7.0
    assert policy.delay_s(2, ExceptionGroup("plain", [ConnectionError()])) == 1.0
    assert policy.delay_s(1, ExceptionGroup("long", [Retry(delay_s=600)])) == 60.0
