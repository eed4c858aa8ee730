"""Failure cost: 300,000 items with 30% failing vs 300,000 no-ops, time and peak memory, each in its own process.

Failed items are streamed out (journal, failed.jsonl, logs.txt, a temporary spool for persist_failed),
never kept in memory with their exceptions. Targets: failing run within 4x the no-op run's time, and
peak RSS under 100 MB.

Usage: python benchmarks/failures.py [ITEMS]
"""

from __future__ import annotations

import subprocess
import sys

from _common import report, write_project

PROJECT = """
from batchframe import BatchframeParam, Service, Source

class Items(Source[int]):
    def __init__(self, count: BatchframeParam[int] = 1000):
        self.count = count

    def __len__(self):
        return self.count

    def __iter__(self):
        return iter(range(self.count))

    def persist_failed(self, failed):
        self.persisted = sum(1 for _ in failed)

class MaybeFail(Service[int]):
    def __init__(self, fail_percent: BatchframeParam[int] = 0):
        self.fail_percent = fail_percent

    async def process(self, item):
        if item % 100 < self.fail_percent:
            raise ValueError(f"item {item} is bad")
"""

MEASURE = """
import resource, sys, time
from batchframe.run.commands import run_project
started = time.perf_counter()
result = run_project(sys.argv[1], params=sys.argv[3:], output_dir=sys.argv[2])
elapsed = time.perf_counter() - started
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(elapsed, peak_mb, result.stats.failed)
"""


def measure(path: str, items: int, fail_percent: int) -> tuple[float, float, int]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, path, path + ".out", f"count={items}", f"fail_percent={fail_percent}",
         "concurrency=64"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    elapsed, peak, failed = out.stdout.split()[-3:]
    return float(elapsed), float(peak), int(failed)


def main() -> None:
    items = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    path = str(write_project(PROJECT))
    best_ok = best_bad = float("inf")
    peak_ok = peak_bad = 0.0
    for _ in range(2):  # interleaved, best of two: this machine's speed drifts between runs
        elapsed, peak, _ = measure(path, items, 0)
        best_ok, peak_ok = min(best_ok, elapsed), max(peak_ok, peak)
        elapsed, peak, failed = measure(path, items, 30)
        best_bad, peak_bad = min(best_bad, elapsed), max(peak_bad, peak)
        assert failed == items * 30 // 100, failed
    report(
        f"failure cost: {items:,} items, concurrency 64, whole run in-process (journal, logs, failed.jsonl on)",
        [
            ("no-op items", f"{best_ok:.2f} s, peak RSS {peak_ok:.0f} MB"),
            ("30% failing", f"{best_bad:.2f} s, peak RSS {peak_bad:.0f} MB"),
            ("time ratio (target <= 4)", f"{best_bad / best_ok:.2f}"),
            ("peak RSS (target < 100 MB)", f"{peak_bad:.0f} MB"),
        ],
    )


if __name__ == "__main__":
    main()
