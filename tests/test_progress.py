from __future__ import annotations

import io
import logging
import threading

import pytest
from rich.console import Console

from batchframe.driver import Stats
from batchframe.progress import LiveProgress, LogProgress, describe, make_progress


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
    logging.getLogger("batchframe.progress").addHandler(flag)
    try:
        with caplog.at_level(logging.INFO, logger="batchframe.progress"), LogProgress(stats, interval_s=0.01):
            assert logged.wait(5)
    finally:
        logging.getLogger("batchframe.progress").removeHandler(flag)
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
