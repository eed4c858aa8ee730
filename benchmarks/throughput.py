"""Per-item overhead: 400,000 no-op async items at concurrency 64, batchframe vs a bare asyncio loop.

The baseline is the loop people write by hand: an ``asyncio.Queue`` fed by one task, drained by 64
workers awaiting a no-op coroutine. batchframe runs the same work with its defaults: the journal,
logs.txt, progress and the summary.

Two ratios, each the median of paired runs (the machine's speed drifts between runs, so each
batchframe run is compared with the baseline run just before it):

- whole process: ``python bare_loop.py`` against ``batchframe exec``, start-up and exit included
  (what a user waits for). Target: at least 0.6.
- driver: the bare loop in this process against the run's own ``elapsed_s`` (the per-item path alone).

Usage: python benchmarks/throughput.py [ITEMS] [PAIRS]
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import bare_loop, byte_compile_batchframe, report, run, write_project

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

BARE_SCRIPT = """
import asyncio, sys

async def noop(item):
    pass

async def main(items, concurrency):
    queue = asyncio.Queue(2 * concurrency)

    async def worker():
        while (item := await queue.get()) is not None:
            await noop(item)

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    for item in range(items):
        await queue.put(item)
    for _ in workers:
        await queue.put(None)
    await asyncio.gather(*workers)

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


async def noop(item: int) -> None:
    pass


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    items = int(sys.argv[1]) if len(sys.argv) > 1 else 400_000
    pairs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    byte_compile_batchframe()
    path = write_project(PROJECT)
    bare = path.parent / "bare_loop.py"
    bare.write_text(BARE_SCRIPT)
    executable = str(Path(sys.executable).parent / "batchframe")
    exec_command = [executable, "exec", path.name, "-p", f"count={items}", "-p", f"concurrency={CONCURRENCY}"]
    whole: list[tuple[float, float]] = []
    driver: list[tuple[float, float]] = []
    for _ in range(pairs):
        whole.append((timed([sys.executable, bare.name, str(items), str(CONCURRENCY)], path.parent), 0.0))
        whole[-1] = (whole[-1][0], timed(exec_command, path.parent))
        baseline_s = asyncio.run(bare_loop(items, CONCURRENCY, noop))
        result = run(path, f"count={items}", f"concurrency={CONCURRENCY}")
        assert result.stats.succeeded == items, result.stats
        driver.append((baseline_s, result.stats.elapsed_s))
    whole_ratio = statistics.median(b / f for b, f in whole)
    driver_ratio = statistics.median(b / f for b, f in driver)
    report(
        f"throughput: {items:,} no-op async items, concurrency {CONCURRENCY}, median of {pairs} pairs (journal on)",
        [
            ("bare asyncio loop, whole process", f"{statistics.median(b for b, _ in whole):.2f} s"),
            ("batchframe exec, whole process", f"{statistics.median(f for _, f in whole):.2f} s"),
            ("ratio, whole process (target >= 0.60)", f"{whole_ratio:.2f}"),
            ("bare asyncio loop, in this process", f"{statistics.median(b for b, _ in driver):.2f} s"),
            ("batchframe driver (the run's elapsed_s)", f"{statistics.median(f for _, f in driver):.2f} s"),
            ("ratio, driver", f"{driver_ratio:.2f}"),
        ],
    )


if __name__ == "__main__":
    main()
