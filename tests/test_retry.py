from __future__ import annotations

import pytest

from batchframe import ParamError, Retry
from batchframe.retry import RetryPolicy


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
