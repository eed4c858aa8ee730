from __future__ import annotations

import io
import logging
import threading
import time

import pytest
from rich.console import Console

from batchframe.run.driver import Stats
from batchframe.run.progress import LiveProgress, LogProgress, describe, make_progress


def test_describe_with_total() -> None:
    stats = Stats(total=200, succeeded=90, failed=10, retrying=3, in_flight=8)
    line = describe(stats)
    assert "100/200 done (50%)" in line
    assert "90 succeeded, 10 failed, 3 retrying, 8 in flight" in line


def test_describe_without_total_has_no_eta() -> None:
    line = describe(Stats(succeeded=5))
    assert "5 done:" in line and "ETA" not in line


def test_log_progress_logs_periodically(caplog: pytest.LogCaptureFixture) -> None:
    stats = Stats(total=10, succeeded=4)
    logged = threading.Event()

    class Flag(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.set()

    flag = Flag()
    logging.getLogger("batchframe.run.progress").addHandler(flag)
    try:
        with caplog.at_level(logging.INFO, logger="batchframe.run.progress"), LogProgress(stats, interval_s=0.01):
            assert logged.wait(5)
    finally:
        logging.getLogger("batchframe.run.progress").removeHandler(flag)
    assert any("Progress: 4/10 done" in r.getMessage() for r in caplog.records)


def test_live_progress_draws_the_counters() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    stats = Stats(total=50, succeeded=20, failed=5, retrying=2, in_flight=3)
    with LiveProgress(stats, console, refresh_per_s=20):
        stats.succeeded = 30
    text = out.getvalue()
    assert "35/50" in text
    assert "30 ok" in text and "5 failed" in text and "2 retrying" in text and "3 in flight" in text


def test_make_progress_picks_by_terminal() -> None:
    console = Console(file=io.StringIO())
    assert isinstance(make_progress(Stats(), console=console, live=True), LiveProgress)
    assert isinstance(make_progress(Stats(), console=console, live=False), LogProgress)


def test_live_progress_without_a_total_shows_no_eta() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    stats = Stats(total=None, succeeded=12)
    with LiveProgress(stats, console, refresh_per_s=20):
        pass
    text = out.getvalue()
    assert "12 done" in text
    assert "ETA" not in text
    assert "12/?" not in text  # no "of an unknown total"


def test_a_cooldown_shows_its_seconds_left_and_the_line_still_fits_80_columns() -> None:
    from batchframe.run.progress import live_line

    cooling = Stats(total=300, succeeded=100, failed=13, retrying=2, in_flight=8)
    cooling.cooldown_until = time.monotonic() + 11.5
    for state in ("running", "paused"):
        line = live_line(cooling, width=80, state=state, spinner="⠋").plain
        assert len(line) <= 80, line
        assert "cooling down 12 s" in line and "113/300" in line and "38%" in line and "ETA" in line, line
    assert describe(cooling).endswith("; cooling down 12 s")
    huge = Stats(total=3_000_000, succeeded=1_234_567, failed=12_345, retrying=1_234, in_flight=512)
    huge.cooldown_until = time.monotonic() + 125
    for width in (80, 60):  # big numbers: the short form, and failed/retrying give way before the rest
        line = live_line(huge, width=width, state="pausing", spinner="⠋").plain
        assert len(line) <= width, line
        assert "cooling 125s" in line and "1,246,912/3,000,000 42%" in line and "ETA" in line, line
    cooling.cooldown_until = time.monotonic() - 1  # over
    assert "cooling" not in live_line(cooling, width=80).plain and "cooling" not in describe(cooling)


def test_off_a_terminal_a_cooldown_is_logged_when_it_begins(caplog: pytest.LogCaptureFixture) -> None:
    stats = Stats(total=10, succeeded=4)
    with caplog.at_level(logging.INFO, logger="batchframe.run.progress"), LogProgress(stats, interval_s=60):
        time.sleep(0.3)  # longer than a poll: nothing to say before the interval
        assert not caplog.records
        stats.cooldown_until = time.monotonic() + 3
        deadline = time.monotonic() + 5
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.02)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("Progress: 4/10 done") and "; cooling down 3 s" in lines[0]
