"""Nonsense delays and rich exceptions through the real CLI (issue 22, points 4 and 13).

A server's ``Retry-After`` that makes no sense (an epoch number, a date in 2099, ``0``, ``-5``) neither
cools a run for decades nor spins one item; a programmer's ``Retry(delay_s=inf)`` is refused where it is
written. Each run is the real ``batchframe exec`` under a hard timeout: a hang fails the test.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import pytest
from helpers import batchframe_cli, build_file_tree, only_run_dir, read_jsonl

# Item 1 is refused with RATE_LIMITED `refusals` times (RateLimited(...) or Retry(...)); every attempt is
# written to attempts.txt with its time, so a test can see how the retries were spaced.
REFUSING_JOB = """
import time
from pathlib import Path
from batchframe import BatchframeParam, RateLimited, Retry, Service, Source

class Numbers(Source[int]):
    def __len__(self):
        return 4
    def __iter__(self):
        return iter(range(4))

class Api(Service[int]):
    def __init__(self, ledger: BatchframeParam[str], refusals: BatchframeParam[int] = 1):
        self.ledger = Path(ledger)
        self.refusals = refusals

    def process(self, item):
        if item != 1:
            return
        with self.ledger.open("a") as out:
            out.write(f"{time.monotonic()}\\n")
        if len(self.ledger.read_text().splitlines()) <= self.refusals:
            raise REFUSAL
"""


def _refusing(
    tmp_path: Path, refusal: str, *params: str, timeout: float = 60
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``batchframe exec`` of REFUSING_JOB raising ``refusal``; its result and its run folder."""
    build_file_tree(tmp_path, {"job.py": REFUSING_JOB.replace("REFUSAL", refusal)})
    ledger = f"ledger={tmp_path / 'attempts.txt'}"
    result = batchframe_cli("exec", "job.py", "-d", "out", "-p", ledger, *params, cwd=tmp_path, timeout=timeout)
    return result, only_run_dir(tmp_path / "out")


def _attempt_times(tmp_path: Path) -> list[float]:
    return [float(line) for line in (tmp_path / "attempts.txt").read_text().splitlines()]


def _summary(run_dir: Path) -> dict[str, object]:
    summary: dict[str, object] = json.loads((run_dir / "summary.json").read_text())
    return summary


# ------------------------------------------------------------------------ point 4: Retry-After and delays


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["asyncio", "threads", "processes", "dask"])
def test_an_epoch_retry_after_cools_the_run_for_max_cooldown_sec_not_56_years(tmp_path: Path, backend: str) -> None:
    result, run_dir = _refusing(
        tmp_path, 'RateLimited("1796283000")', "-p", f"executor={backend}", "-p", "concurrency=2",
        "-p", "max_cooldown_sec=0.2", timeout=100,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stderr = result.stderr
    warnings = [line for line in stderr.splitlines() if "asks for a wait of" in line]
    assert len(warnings) == 1, stderr
    assert "Retry-After '1796283000'" in warnings[0] and "1,796,283,000 s (56.9 years)" in warnings[0]
    assert "waiting 0.2 s instead" in warnings[0] and "max_cooldown_sec" in warnings[0]
    assert "no new item starts for 0.2 s" in stderr
    summary = _summary(run_dir)
    assert summary["succeeded"] == 4 and summary["rate_limited"] == 1
    assert 0 < float(summary["cooldown_total_s"]) <= 0.2 + 1e-6  # type: ignore[arg-type]
    assert "asks for a wait of" in (run_dir / "logs.txt").read_text()


@pytest.mark.timeout(60)
def test_a_retry_after_date_in_2099_is_capped_too(tmp_path: Path) -> None:
    result, run_dir = _refusing(
        tmp_path, 'RateLimited("Thu, 01 Jan 2099 00:00:00 GMT")', "-p", "max_cooldown_sec=0.1", "-p", "refusals=2"
    )
    assert result.returncode == 0, result.stderr
    stderr = result.stderr
    warnings = [line for line in stderr.splitlines() if "asks for a wait of" in line]
    assert len(warnings) == 1, stderr  # two refusals, one warning: the second is at DEBUG
    assert "Retry-After 'Thu, 01 Jan 2099 00:00:00 GMT'" in warnings[0] and "years)" in warnings[0]
    assert _summary(run_dir)["succeeded"] == 4 and len(_attempt_times(tmp_path)) == 3


@pytest.mark.timeout(60)
@pytest.mark.parametrize("retry_after", ["0", "-5"])
def test_a_retry_after_of_zero_or_less_waits_the_first_retry_delay(tmp_path: Path, retry_after: str) -> None:
    # Before: 133,245 attempts of one item in 10 s. Now each refusal waits retry_backoff_sec at least.
    result, run_dir = _refusing(
        tmp_path, f'RateLimited("{retry_after}")', "-p", "refusals=3", "-p", "retry_backoff_sec=0.1",
        "-p", "max_retries=0",  # a refusal is no attempt: max_retries does not bound it
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    times = _attempt_times(tmp_path)
    assert len(times) == 4
    assert all(later - earlier >= 0.095 for earlier, later in itertools.pairwise(times)), times
    stderr = result.stderr
    floored = [line for line in stderr.splitlines() if "asks for no wait" in line]
    assert len(floored) == 1 and f"Retry-After '{retry_after}'" in floored[0], stderr
    assert _summary(run_dir)["rate_limited"] == 3
    assert (run_dir / "logs.txt").stat().st_size < 20_000


@pytest.mark.timeout(60)
def test_retry_with_a_delay_of_a_billion_seconds_waits_max_cooldown_sec(tmp_path: Path) -> None:
    result, run_dir = _refusing(tmp_path, "Retry(delay_s=1e9)", "-p", "max_cooldown_sec=0.1")
    assert result.returncode == 0, result.stderr
    stderr = result.stderr
    assert "Retry(delay_s=...) asks for a wait of 1,000,000,000 s (31.7 years): waiting 0.1 s instead" in stderr
    first, second = _attempt_times(tmp_path)
    assert second - first >= 0.095
    assert _summary(run_dir)["succeeded"] == 4


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "refusal",
    ['Retry(delay_s=float("inf"))', 'Retry(delay_s=float("nan"))', "Retry(delay_s=-1)", "RateLimited(-5)"],
)
def test_a_programmers_delay_that_is_no_finite_number_zero_or_more_fails_the_item_clearly(
    tmp_path: Path, refusal: str
) -> None:
    result, run_dir = _refusing(tmp_path, refusal)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    [record] = read_jsonl(run_dir / "failed.jsonl")
    assert record["index"] == 1 and record["error_type"] == "ValueError" and record["attempts"] == 1
    assert "must be a finite number of seconds, zero or more, or None" in record["message"]
    assert f"raise {refusal}" in record["traceback"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_max_cooldown_sec_must_be_a_finite_number(tmp_path: Path, value: str) -> None:
    build_file_tree(tmp_path, {"job.py": REFUSING_JOB.replace("REFUSAL", "Retry()")})
    result = batchframe_cli(
        "exec", "job.py", "-d", "out", "-p", "ledger=x", "-p", f"max_cooldown_sec={value}", cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "max_cooldown_sec must be" in result.stderr and "-p max_cooldown_sec=" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------- point 13: causes, context, notes and groups are kept

RICH_JOB = """
import threading
from pathlib import Path
from batchframe import BatchframeParam, Service, Source

class Items(Source[int]):
    def __len__(self):
        return 5
    def __iter__(self):
        return iter(range(5))

class Unpicklable(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()  # it cannot travel from a worker process as itself

def fetch(item):
    raise ConnectionError(f"down {item}")

class Work(Service[int]):
    def __init__(self, ledger: BatchframeParam[str]):
        self.ledger = Path(ledger)

    def attempts(self, item):
        with self.ledger.open("a") as out:
            out.write(f"{item}\\n")
        return self.ledger.read_text().split().count(str(item))

    def process(self, item):
        if item == 0:  # an explicit cause, and a note
            try:
                fetch(item)
            except ConnectionError as exc:
                error = ValueError("bad answer")
                error.add_note("while reading item 0")
                raise error from exc
        if item == 1:  # an implicit context
            try:
                {}["missing"]
            except KeyError:
                raise RuntimeError("lookup failed")
        if item == 2 and self.attempts(item) <= 2:  # every member retryable: retried, then it succeeds
            raise ExceptionGroup("two calls failed", [ConnectionError("a"), TimeoutError("b")])
        if item == 3:  # one member that is not retryable: the group is not retried
            raise ExceptionGroup("mixed", [ConnectionError("a"), ValueError("c")])
        if item == 4:  # cannot travel as itself: its notes and causes travel as text
            try:
                fetch(item)
            except ConnectionError as exc:
                error = Unpicklable("no pickle")
                error.add_note("a note that travels")
                raise error from exc
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["asyncio", "threads", "processes", "dask", "ray"])
def test_causes_context_notes_and_groups_reach_failed_jsonl(tmp_path: Path, backend: str) -> None:
    build_file_tree(tmp_path, {"job.py": RICH_JOB})
    result = batchframe_cli(
        "exec", "job.py", "-d", "out", "-p", f"ledger={tmp_path / 'ledger.txt'}", "-p", f"executor={backend}",
        "-p", "concurrency=2", "-p", "retry_backoff_sec=0.001", "-p", "max_retries=3", cwd=tmp_path, timeout=100,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    run_dir = only_run_dir(tmp_path / "out")
    records = {record["index"]: record for record in read_jsonl(run_dir / "failed.jsonl")}
    assert sorted(records) == [0, 1, 3, 4]  # item 2's group of ConnectionError and TimeoutError was retried

    caused = records[0]
    assert (caused["error_type"], caused["message"], caused["attempts"]) == (
        "ValueError",
        "bad answer\nwhile reading item 0",
        1,
    )
    trace = caused["traceback"]
    assert trace.index("ConnectionError: down 0") < trace.index("direct cause") < trace.index("ValueError: bad answer")
    assert 'raise ConnectionError(f"down {item}")' in trace and "raise error from exc" in trace
    assert trace.rstrip().endswith("ValueError: bad answer\nwhile reading item 0")
    assert "batchframe/" not in trace and "asyncio/" not in trace and "concurrent/" not in trace

    context = records[1]["traceback"]
    assert "KeyError: 'missing'" in context and "During handling of the above exception" in context
    assert context.rstrip().endswith("RuntimeError: lookup failed")

    group = records[3]
    assert (group["error_type"], group["attempts"]) == ("ExceptionGroup", 1)
    assert group["message"] == "mixed (2 sub-exceptions)"
    for line in ("| ExceptionGroup: mixed (2 sub-exceptions)", "+-+---------------- 1 ----------------",
                 "| ConnectionError: a", "+---------------- 2 ----------------", "| ValueError: c"):  # fmt: skip
        assert line in group["traceback"], group["traceback"]

    travelled = records[4]
    assert (travelled["error_type"], travelled["message"]) == ("Unpicklable", "no pickle\na note that travels")
    assert "ConnectionError: down 4" in travelled["traceback"] and "direct cause" in travelled["traceback"]
    assert travelled["traceback"].rstrip().endswith("Unpicklable: no pickle\na note that travels")

    summary = _summary(run_dir)
    assert summary["succeeded"] == 1 and summary["retries"] == 2
    assert (tmp_path / "ledger.txt").read_text().split().count("2") == 3


PANEL_JOB = """
from batchframe import Service, Source

class Items(Source[int]):
    def __iter__(self):
        return iter(range(3))

def connect():
    raise OSError("connection refused")

class Work(Service[int]):
    def __init__(self):
        try:
            connect()
        except OSError as exc:
            error = RuntimeError("no database")
            error.add_note("host db.internal, port 5432")
            raise error from exc

    def process(self, item):
        pass

    def finish(self):
        raise ExceptionGroup("closing failed", [OSError("disk gone"), ValueError("bad state")])
"""


@pytest.mark.timeout(60)
def test_the_error_panel_shows_the_cause_and_the_note_without_a_traceback_header(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": PANEL_JOB})
    result = batchframe_cli("exec", "job.py", "-d", "out", cwd=tmp_path)
    assert result.returncode != 0
    stderr = result.stderr
    assert "Traceback" not in stderr, stderr  # the user's frames under the panel, not a crash
    frames = stderr.index("OSError: connection refused")
    assert frames < stderr.index("direct cause") < stderr.index("RuntimeError: no database", frames)
    assert "host db.internal, port 5432" in stderr and 'raise OSError("connection refused")' in stderr


@pytest.mark.timeout(60)
def test_logs_txt_keeps_the_members_of_a_group_that_finish_raised(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": PANEL_JOB.replace("            connect()\n", "            pass\n")})
    result = batchframe_cli("exec", "job.py", "-d", "out", cwd=tmp_path)
    assert "finish() raised ExceptionGroup: closing failed (2 sub-exceptions)" in result.stderr, result.stderr
    logs = (only_run_dir(tmp_path / "out") / "logs.txt").read_text()
    for line in (
        "| ExceptionGroup: closing failed (2 sub-exceptions)",
        "| OSError: disk gone",
        "| ValueError: bad state",
    ):
        assert line in logs, logs
