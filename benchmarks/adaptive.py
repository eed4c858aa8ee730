"""The adaptive limit against an API whose capacity changes during the run, side by side with fixed limits.

The API (Starlette under uvicorn, in its own process) admits a hidden number of requests in any
sliding second: 100/s for the first 10 s of a client's run, then 40/s for 10 s, then 150/s; past
that it answers 429 with ``Retry-After: 1``. Each client POSTs the same rows and waits out 429s:

- batchframe ``-p adaptive=true -p max_per_second=150`` (the ceiling a user would set: the API's
  documented top rate);
- batchframe at a fixed ``max_per_second`` of 150, and of 40 (the rate that never gets a 429);
- aiometer at 95/s (the hand-written baseline), each 429 waited out by its own task.

For each: the wall time against the capacity-limited ideal (the time the rows take at exactly the
capacity of each moment), and the share of requests answered 429 (the server counts them). Targets
for adaptive: within 1.3x of the ideal, at most 5% of requests answered 429.

Usage: python benchmarks/adaptive.py [--rows 2500]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _common import byte_compile_batchframe, report
from rate_limit import Api, _api_stats, aiometer_rows, run_batchframe, serve, start_api

PHASES = ((10.0, 100), (10.0, 40), (None, 150))
"""(seconds, capacity per sliding second) from a client's first request; the last phase lasts."""
CONCURRENCY = 32
AIOMETER_RATE = 95


def capacity_at(elapsed_s: float) -> int:
    """The API's capacity ``elapsed_s`` after the client's first request."""
    start = 0.0
    for length, capacity in PHASES:
        if length is None or elapsed_s < start + length:
            return capacity
        start += length
    raise AssertionError("the last phase lasts")


def ideal_s(rows: int) -> float:
    """The wall time of ``rows`` requests sent at exactly the capacity of each moment."""
    elapsed, left = 0.0, float(rows)
    for length, capacity in PHASES:
        if length is None or left <= capacity * length:
            return elapsed + left / capacity
        elapsed, left = elapsed + length, left - capacity * length
    raise AssertionError("the last phase lasts")


def _row(label: str, wall_s: float, counts: dict[str, int], rows: int, extra: str = "") -> tuple[str, str]:
    requests = counts["200"] + counts["429"]
    share = counts["429"] / requests if requests else 0.0
    return (
        label,
        f"{wall_s:6.2f} s = {wall_s / ideal_s(rows):4.2f}x ideal; 429s {counts['429']:>4} "
        f"({share:5.1%} of {requests:,} requests); delivered {counts['delivered']:,}/{rows:,}{extra}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2500)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Api(capacity=capacity_at, failure_rate=0.0))
        return
    byte_compile_batchframe()
    api, base = start_api(__file__)
    rows: list[tuple[str, str]] = []
    try:
        clients = {
            "batchframe adaptive (ceiling 150/s)": ("adaptive=true", "max_per_second=150"),
            "batchframe max_per_second=150": ("max_per_second=150",),
            "batchframe max_per_second=40": ("max_per_second=40",),
        }
        for label, params in clients.items():
            result = run_batchframe(base, args.rows, *params)
            limits = result["limits"]
            extra = (
                f"; limit lowered {limits['lowered']}x, lowest {limits['lowest_per_second']:.0f}/s, "
                f"mean {limits['mean_per_second']:.0f}/s"
                if limits["adaptive"]
                else ""
            )
            rows.append(_row(label, result["wall_s"], _api_stats(base), args.rows, extra))
            time.sleep(1.1)  # the API's window empties between the runs
        wall_s = asyncio.run(aiometer_rows(base, args.rows, AIOMETER_RATE))
        rows.append(_row(f"aiometer at {AIOMETER_RATE}/s (baseline)", wall_s, _api_stats(base), args.rows))
    finally:
        api.terminate()
        api.wait()
    report(
        f"adaptive limit: {args.rows:,} rows POSTed to an API admitting 100/s for 10 s, then 40/s for 10 s, "
        f"then 150/s (429 + Retry-After: 1 past that); ideal {ideal_s(args.rows):.2f} s",
        rows,
    )
    print("  targets for adaptive: <= 1.3x ideal, <= 5% of requests answered 429")


if __name__ == "__main__":
    main()
