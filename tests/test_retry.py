from __future__ import annotations

import json
import math
import sys

import pytest
from helpers import batchframe_cli, only_run_dir, read_jsonl

from batchframe import ParamError, Retry
from batchframe.retry import RetryPolicy, backoff_ceiling


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
