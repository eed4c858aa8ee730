"""The back ends on CPU-bound work: 1,000 items of about 5 ms of pure Python each, on this machine's cores.

Targets (2 cores): the whole ``batchframe exec`` run with ``processes`` at least 1.7x faster than with
``asyncio``; with ``dask`` on a local cluster, throughput once the cluster is up at least 1.5x (its
start-up time is reported separately). Also reports the per-item overhead of ``threads`` on no-op items.

Usage: python benchmarks/executors.py [ITEMS]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import report, run, write_project
from throughput import PROJECT as NOOP_PROJECT

REPO = Path(__file__).resolve().parent.parent
PRIMES = REPO / "examples" / "primes.py"


def _count_primes(item: int) -> int:
    return sum(1 for n in range(2, item) if all(n % d for d in range(2, int(n**0.5) + 1)))


def _serial_s(work: list[int]) -> float:
    started = time.perf_counter()
    for item in work:
        _count_primes(item)
    return time.perf_counter() - started


def raw_pool_speedup(items: int) -> float:
    """What this machine's cores give at best: a bare multiprocessing.Pool vs a serial loop, same work."""
    import multiprocessing

    work = [3_500 + i for i in range(items)]
    serial = _serial_s(work)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_count_primes, [10, 10])
        started = time.perf_counter()
        pool.map(_count_primes, work, chunksize=1)
        parallel = time.perf_counter() - started
    return serial / parallel


def raw_dask_speedup(items: int) -> float:
    """The same for dask: client.map on a bare 2-worker LocalCluster vs a serial loop."""
    from distributed import Client, LocalCluster

    work = [3_500 + i for i in range(items)]
    serial = _serial_s(work)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.gather(client.map(_count_primes, [10, 11]))
        started = time.perf_counter()
        client.gather(client.map(_count_primes, work, pure=False))
        parallel = time.perf_counter() - started
    return serial / parallel


def exec_run(executor: str, items: int) -> tuple[float, dict[str, object], str]:
    """Wall time of a whole ``batchframe exec`` process, its summary and its log."""
    output = Path(tempfile.mkdtemp(prefix="batchframe-bench-"))
    command = [str(Path(sys.executable).parent / "batchframe"), "exec", str(PRIMES), "-d", str(output)]
    # 8 items in flight keep 2 workers busy while results travel back; the pools have one worker per core.
    command += ["-p", f"count={items}", "-p", f"executor={executor}", "-p", "concurrency=8"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - started
    run_dir = next(output.iterdir())
    return wall, json.loads((run_dir / "summary.json").read_text()), (run_dir / "logs.txt").read_text()


def main() -> None:
    items = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    machine = raw_pool_speedup(items // 2)
    machine_dask = raw_dask_speedup(items // 2)
    asyncio_wall, asyncio_summary, _ = exec_run("asyncio", items)
    processes_wall, _, _ = exec_run("processes", items)
    dask_wall, dask_summary, dask_log = exec_run("dask", items)
    startup = re.search(r"Dask cluster ready in ([\d.]+) s", dask_log)
    asyncio_rate = items / float(asyncio_summary["duration_s"])  # type: ignore[arg-type]
    dask_rate = items / float(dask_summary["duration_s"])  # type: ignore[arg-type]

    # threads runs plain `def process` in a pool: measure it on a sync no-op, beside asyncio on an async one
    noop_items = 100_000
    async_noop = write_project(NOOP_PROJECT)
    sync_noop = write_project(NOOP_PROJECT.replace("async def process", "def process"))
    local = run(async_noop, f"count={noop_items}", "concurrency=64", "journal=false").stats.elapsed_s
    threads = run(sync_noop, f"count={noop_items}", "concurrency=64", "journal=false", "executor=threads")
    threads_s = threads.stats.elapsed_s
    report(
        f"executors: {items:,} CPU-bound items (~5 ms each), 2 workers",
        [
            ("this machine: bare multiprocessing.Pool(2) vs serial", f"{machine:.2f}x"),
            ("asyncio, whole exec", f"{asyncio_wall:.2f} s"),
            ("processes, whole exec", f"{processes_wall:.2f} s"),
            ("speed-up processes (target >= 1.7x)", f"{asyncio_wall / processes_wall:.2f}x"),
            ("  as a share of the machine's best", f"{asyncio_wall / processes_wall / machine:.0%}"),
            ("this machine: bare dask client.map, 2 workers, vs serial", f"{machine_dask:.2f}x"),
            ("dask, whole exec", f"{dask_wall:.2f} s"),
            ("dask cluster start-up", f"{startup.group(1) if startup else '?'} s"),
            ("dask throughput once up vs asyncio (target >= 1.5x)", f"{dask_rate / asyncio_rate:.2f}x"),
            (
                f"threads (sync no-op) vs asyncio (async no-op), {noop_items:,} items",
                f"{1e6 * threads_s / noop_items:.1f} vs {1e6 * local / noop_items:.1f} us/item",
            ),
        ],
    )


if __name__ == "__main__":
    main()
