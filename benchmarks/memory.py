"""Streaming memory: peak RSS of a 1,000,000-item run vs a 100,000-item run, each in a fresh process.

Targets: peak RSS for 1,000,000 items under 150 MB, and no more than 20 MB above the 100,000-item run
(the executor never materialises the source).

Usage: python benchmarks/memory.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from _common import report, write_project

PROJECT = """
from batchframe import BatchframeParam, Service, Source

class Items(Source[dict]):
    def __init__(self, count: BatchframeParam[int] = 1000):
        self.count = count

    def __len__(self):
        return self.count

    def __iter__(self):
        for i in range(self.count):
            yield {"id": i, "payload": "x" * 100}

class NoOp(Service[dict]):
    async def process(self, item):
        pass
"""

CHILD = """
import resource, sys
sys.path.insert(0, {bench!r})
from _common import run
result = run(__import__("pathlib").Path({path!r}), "count={count}", "concurrency=64")
assert result.stats.succeeded == {count}
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_rss_mb(path: Path, count: int) -> float:
    code = CHILD.format(bench=str(Path(__file__).parent), path=str(path), count=count)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    path = write_project(PROJECT)
    small = peak_rss_mb(path, 100_000)
    large = peak_rss_mb(path, 1_000_000)
    report(
        "memory: peak RSS of a whole run in a fresh process",
        [
            ("100,000 items", f"{small:.1f} MB"),
            ("1,000,000 items (target < 150 MB)", f"{large:.1f} MB"),
            ("difference (target <= 20 MB)", f"{large - small:+.1f} MB"),
        ],
    )


if __name__ == "__main__":
    main()
