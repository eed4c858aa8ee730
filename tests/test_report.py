"""The run's report: latency percentiles, a timeline, top errors and attempts, in constant memory; shown and saved."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from helpers import batchframe_cli, build_file_tree, only_run_dir, read_jsonl

from batchframe.runfolder.report import MOST_GROUPS, MOST_POINTS, ErrorGroups, Latency, Timeline, message_pattern
from batchframe.ui._report_view import throughput_svg


def test_latency_percentiles_are_within_the_histogram_s_precision() -> None:
    rng = random.Random(7)
    durations = [rng.uniform(0.001, 2.0) for _ in range(20_000)] + [rng.expovariate(50) for _ in range(20_000)]
    latency = Latency()
    for seconds in durations:
        latency.add(seconds)
    exact = sorted(durations)
    for share in (0.5, 0.95, 0.99):
        measured = latency.percentile(share)
        assert measured is not None
        assert measured == pytest.approx(exact[int(share * len(exact)) - 1], rel=0.07)
    assert latency.max_s == max(durations)
    assert latency.as_dict()["count"] == 40_000
    assert len(latency.buckets) == 512  # constant memory, whatever the number of attempts


def test_latency_of_nothing_and_of_extremes() -> None:
    latency = Latency()
    assert latency.as_dict() == {"count": 0, "mean_s": None, "p50_s": None, "p95_s": None, "p99_s": None, "max_s": None}
    for seconds in (0.0, 1e-9, 86_400.0 * 365):  # an instant, a nanosecond, a year
        latency.add(seconds)
    assert latency.percentile(1.0) == 86_400.0 * 365
    assert latency.percentile(0.3) is not None and latency.percentile(0.3) < 1e-5


def test_the_timeline_stays_bounded_and_adds_up() -> None:
    timeline = Timeline()
    finished = failed = 0
    for tick in range(50_000):  # a long run: 50,000 ticks of the first interval
        finished += 3
        failed += tick % 2
        timeline.sample(finished, failed, 0)
    assert MOST_POINTS // 2 <= len(timeline.points) <= MOST_POINTS + 1
    shown = timeline.as_dict(last=(finished + 5, failed, 0))
    assert sum(shown["finished"]) == finished + 5
    assert sum(shown["failed"]) == failed
    assert shown["interval_s"] > 0.05
    assert len(shown["rate_per_s"]) == len(shown["finished"])


def test_message_patterns_mask_numbers_and_ids() -> None:
    message = "item 12 at 0x7f3a failed for user 3fa85f64-5717-4562-b3fc-2c963f66afa6 after 1.5 s\nmore"
    assert message_pattern(message) == "item <n> at <hex> failed for user <uuid> after <n> s"
    assert message_pattern("") == ""
    assert message_pattern("x" * 500).endswith("...")


def test_error_groups_are_bounded_and_keep_every_count() -> None:
    groups = ErrorGroups()
    words = [f"code{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(200)]  # 200 patterns, no digits
    for index, word in enumerate(words * 3):
        groups.add("ValueError", f"failed with {word}", index)
    top = groups.top(most=1000)
    assert len(top) <= MOST_GROUPS + 1
    assert sum(group["count"] for group in top) == 600
    assert top[0]["count"] >= top[-1]["count"]


JOB = """
import asyncio

from batchframe import Retry, Service, Source


class Rows(Source[int]):
    def __iter__(self):
        return iter(range(200))

    def __len__(self):
        return 200


class Push(Service[int]):
    def __init__(self):
        self.tried = set()

    async def process(self, row):
        await asyncio.sleep(0.002)
        if row % 10 == 3 and row not in self.tried:
            self.tried.add(row)
            raise Retry(delay_s=0.001, reason="try again")  # a second attempt succeeds
        if row % 25 == 0:
            raise KeyError(f"no customer {row * 1000}")
        if row % 40 == 7:
            raise ValueError(f"bad row {row}: checksum 0x{row:04x}")
"""


@pytest.mark.timeout(120)
def test_a_run_reports_latency_attempts_timeline_and_top_errors(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": JOB})
    result = batchframe_cli("exec", "job.py", "-d", "out", cwd=tmp_path, COLUMNS="80")
    assert result.returncode == 3, result.stderr
    assert "latency" in result.stderr and "p95" in result.stderr  # the end-of-run summary
    run_dir = only_run_dir(tmp_path / "out")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["schema_version"] == 2
    report = summary["report"]
    assert report["latency"]["count"] == 200 + 20  # every attempt: 20 rows tried twice
    assert 0.002 <= report["latency"]["p50_s"] <= report["latency"]["p95_s"] <= report["latency"]["max_s"]
    assert report["attempts"] == {"1": 180, "2": 20}
    timeline = report["timeline"]
    assert sum(timeline["finished"]) == 200 and sum(timeline["failed"]) == summary["failed"]
    top = report["top_errors"]
    assert [(error["type"], error["pattern"], error["count"]) for error in top] == [
        ("KeyError", "'no customer <n>'", 8),
        ("ValueError", "bad row <n>: checksum <hex>", 5),
    ]
    failed = {record["index"]: record for record in read_jsonl(run_dir / "failed.jsonl")}
    assert failed[top[0]["example_index"]]["error_type"] == "KeyError"

    shown = batchframe_cli("runs", run_dir, cwd=tmp_path, COLUMNS="80")
    assert shown.returncode == 0
    lines = [line for line in shown.stdout.splitlines() if not line.startswith(("Run folder:", "Project:"))]
    assert max(len(line) for line in lines) <= 80  # paths aside: they are printed whole, on lines of their own
    text = shown.stdout
    assert "latency" in text and "p95" in text
    assert "attempts" in text and "180 x 1, 20 x 2" in text
    assert "rate over time" in text
    assert "Top errors" in text and "'no customer <n>'" in text


def test_the_throughput_chart_is_an_inline_svg_of_the_timeline() -> None:
    svg = throughput_svg({"interval_s": 0.5, "rate_per_s": [0.0, 40.0, 80.0, 20.0]})
    assert svg is not None
    assert svg.startswith('<svg class="chart"') and "style" not in svg and "<script" not in svg  # within the CSP
    points = svg.split('<polyline points="')[1].split('"')[0].split()
    assert len(points) == 4
    heights = [float(point.split(",")[1]) for point in points]
    assert heights[2] == min(heights) and heights[0] == max(heights)  # the peak at the top, zero at the bottom
    assert ">80/s</text>" in svg and ">2 s</text>" in svg
    assert throughput_svg({"interval_s": 0.5, "rate_per_s": [3.0]}) is None  # one point is no line
    assert throughput_svg({"interval_s": "x", "rate_per_s": [1, 2]}) is None
