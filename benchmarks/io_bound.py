"""I/O-bound work: 2,000 items that each sleep 20 ms, at concurrency 100. The ideal is 0.4 s.

Target: batchframe's executor wall time within 10% of the ideal. Also reports the drain time of a
10-item run (target: well under 100 ms), which shows there is no polling sleep at the end of a run.

Usage: python benchmarks/io_bound.py
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from _common import bare_loop, report, run, write_project

PROJECT = """
import asyncio
from batchframe import BatchframeParam, Service, Source

class Items(Source[int]):
    def __init__(self, count: BatchframeParam[int] = 2000):
        self.count = count

    def __len__(self):
        return self.count

    def __iter__(self):
        return iter(range(self.count))

class Sleeper(Service[int]):
    def __init__(self, sleep_s: BatchframeParam[float] = 0.02):
        self.sleep_s = sleep_s

    async def process(self, item):
        if self.sleep_s:
            await asyncio.sleep(self.sleep_s)
"""


def sleeper(sleep_s: float) -> Callable[[int], Awaitable[None]]:
    async def process(item: int) -> None:
        await asyncio.sleep(sleep_s)

    return process


def main() -> None:
    path = write_project(PROJECT)
    items, concurrency, sleep_s = 2000, 100, 0.02
    ideal_s = items / concurrency * sleep_s
    result = run(path, f"count={items}", f"concurrency={concurrency}", f"sleep_s={sleep_s}")
    wall_s = result.stats.elapsed_s
    bare_s = asyncio.run(bare_loop(items, concurrency, sleeper(sleep_s)))
    drain = run(path, "count=10", "sleep_s=0")
    report(
        "I/O bound and drain",
        [
            ("2,000 x sleep(0.02) at concurrency 100", f"{wall_s:.3f} s (ideal {ideal_s:.3f} s)"),
            ("over the ideal (target <= 10%)", f"{100 * (wall_s / ideal_s - 1):.1f}%"),
            ("bare asyncio.Queue loop, same work", f"{bare_s:.3f} s ({100 * (bare_s / ideal_s - 1):.1f}% over)"),
            ("10 no-op items, executor part (target << 100 ms)", f"{1000 * drain.stats.elapsed_s:.2f} ms"),
        ],
    )


if __name__ == "__main__":
    main()
