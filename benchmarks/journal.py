"""The journal's cost: 400,000 no-op async items at concurrency 64 with the journal on vs off.

Targets: throughput with the journal on at least 75% of the same run with it off; the journal of a
1,000,000-item run under 60 MB. Each configuration runs three times, interleaved; the best counts.

Usage: python benchmarks/journal.py [ITEMS]
"""

from __future__ import annotations

import sys

from _common import report, run, write_project
from throughput import CONCURRENCY, PROJECT


def main() -> None:
    items = int(sys.argv[1]) if len(sys.argv) > 1 else 400_000
    path = write_project(PROJECT)
    best = {"on": float("inf"), "off": float("inf")}
    for _ in range(3):
        for mode in ("off", "on"):
            result = run(path, f"count={items}", f"concurrency={CONCURRENCY}", f"journal={mode == 'on'}")
            assert result.stats.succeeded == items
            best[mode] = min(best[mode], result.stats.elapsed_s)
    big = run(path, "count=1000000", f"concurrency={CONCURRENCY}")
    size_mb = (big.run_dir / "journal.sqlite").stat().st_size / 1e6
    report(
        f"journal: {items:,} no-op async items, concurrency {CONCURRENCY}, best of 3",
        [
            ("journal off", f"{items / best['off']:>10,.0f} items/s"),
            ("journal on", f"{items / best['on']:>10,.0f} items/s"),
            ("ratio on/off (target >= 0.75)", f"{best['off'] / best['on']:.2f}"),
            ("journal.sqlite, 1,000,000 done items (target < 60 MB)", f"{size_mb:.3f} MB"),
        ],
    )


if __name__ == "__main__":
    main()
