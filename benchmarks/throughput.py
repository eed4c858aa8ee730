"""Per-item overhead: 400,000 no-op async items at concurrency 64, batchframe vs a bare asyncio loop.

The baseline is the loop people write by hand: an ``asyncio.Queue`` fed by one task, drained by 64
workers awaiting a no-op coroutine. batchframe runs the same work through ``run_project`` with its
default logging and progress. Target: batchframe's throughput is at least 50% of the baseline's.

Usage: python benchmarks/throughput.py [ITEMS]
"""

from __future__ import annotations

import asyncio
import sys
import time

from _common import bare_loop, report, run, write_project

CONCURRENCY = 64

PROJECT = """
from batchframe import BatchframeParam, Service, Source

class Items(Source[int]):
    def __init__(self, count: BatchframeParam[int] = 1000):
        self.count = count

    def __len__(self):
        return self.count

    def __iter__(self):
        return iter(range(self.count))

class NoOp(Service[int]):
    async def process(self, item):
        pass
"""


async def noop(item: int) -> None:
    pass


def main() -> None:
    items = int(sys.argv[1]) if len(sys.argv) > 1 else 400_000
    path = write_project(PROJECT)
    baseline_s = executor_s = whole_s = float("inf")
    for _ in range(3):  # interleaved, best of three: this machine's speed drifts between runs
        baseline_s = min(baseline_s, asyncio.run(bare_loop(items, CONCURRENCY, noop)))
        started = time.perf_counter()
        result = run(path, f"count={items}", f"concurrency={CONCURRENCY}")
        whole_s = min(whole_s, time.perf_counter() - started)
        executor_s = min(executor_s, result.stats.elapsed_s)
        assert result.stats.succeeded == items, result.stats
    ratio = baseline_s / executor_s
    report(
        f"throughput: {items:,} no-op async items, concurrency {CONCURRENCY}, best of 3 (journal on)",
        [
            ("bare asyncio.Queue loop", f"{items / baseline_s:>12,.0f} items/s  ({baseline_s:.2f} s)"),
            ("batchframe executor", f"{items / executor_s:>12,.0f} items/s  ({executor_s:.2f} s)"),
            ("batchframe whole run", f"{items / whole_s:>12,.0f} items/s  ({whole_s:.2f} s, incl. import and setup)"),
            ("ratio (target >= 0.50)", f"{ratio:.2f}"),
        ],
    )


if __name__ == "__main__":
    main()
