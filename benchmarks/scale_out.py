"""Scale-out against doing it by hand: ``processes``, ``dask`` and ``ray`` beside hand-written baselines, in one run.

CPU-bound: 3,000 items of about 3 ms of pure Python each, whole process (start-up included) for
every contestant:
- ``batchframe exec -p executor=processes`` vs ``multiprocessing.Pool(2).imap_unordered(chunksize=8)``
  (target: at least 0.9 of the Pool's speed);
- ``batchframe exec -p executor=dask`` vs dask by hand with 50 items per task on a 2-worker
  LocalCluster (target: at least 0.85);
- ``batchframe exec -p executor=ray`` vs Ray by hand with 50 items per task on a local Ray of 2 CPUs
  (target: at least 0.85).
No-op items: items per second through each back end once started (target: 20,000 each), beside the
same hand-written baselines.

Each CPU-bound figure is the median of three alternating rounds (this machine varies by 20% from
one run to the next).

Usage: python benchmarks/scale_out.py [CPU_ITEMS] [NOOP_ITEMS] [BACK_END,...]   (default: processes,dask,ray)
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import byte_compile_batchframe, report

WORKERS = 2
ROUNDS = 3
BASE = 1_900  # count primes below BASE + a little: about 3 ms of pure Python per item here

COUNT_PRIMES = """
def count_primes(limit):
    return sum(1 for n in range(2, limit) if all(n % d for d in range(2, int(n**0.5) + 1)))
"""
"""The work of one item, the same in the job and in every hand-written baseline."""

WORK_ON_A_BATCH = """
def work(batch):
    for item in batch:
        if item > 100:
            count_primes(item)
    return len(batch)
"""
"""A task of the dask and Ray baselines: a batch of items."""

PROJECT = f"""
from batchframe import BatchframeParam, Service, Source

{COUNT_PRIMES}


class Limits(Source[int]):
    def __init__(self, count: BatchframeParam[int], base: BatchframeParam[int] = 0) -> None:
        self.count = count
        self.base = base

    def __len__(self):
        return self.count

    def __iter__(self):
        for i in range(self.count):
            yield self.base + i % 7 if self.base else 0


class Count(Service[int]):
    def process(self, item):
        if item > 100:
            count_primes(item)
"""

HAND_POOL = f"""
import multiprocessing, sys, time
{COUNT_PRIMES}
def work(item):
    if item > 100:
        count_primes(item)

if __name__ == "__main__":
    items, base = int(sys.argv[1]), int(sys.argv[2])
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool({WORKERS}) as pool:
        ready = time.perf_counter()
        for _ in pool.imap_unordered(work, (base + i % 7 if base else 0 for i in range(items)), chunksize=8):
            pass
    print(time.perf_counter() - ready)
"""

HAND_DASK = f"""
import sys, time
from distributed import Client, LocalCluster
{COUNT_PRIMES}{WORK_ON_A_BATCH}
if __name__ == "__main__":
    items, base, per_task = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    with LocalCluster(n_workers={WORKERS}, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            client.submit(work, [1]).result()
            ready = time.perf_counter()
            work_items = [base + i % 7 if base else 0 for i in range(items)]
            batches = [work_items[i : i + per_task] for i in range(0, items, per_task)]
            assert sum(client.gather(client.map(work, batches, pure=False))) == items
    print(time.perf_counter() - ready)
"""

HAND_RAY = f"""
import sys, time
import ray
{COUNT_PRIMES}{WORK_ON_A_BATCH}
remote_work = ray.remote(work)

if __name__ == "__main__":
    items, base, per_task = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ray.init(address="local", num_cpus={WORKERS}, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.get(remote_work.remote([1]))
    ready = time.perf_counter()
    work_items = [base + i % 7 if base else 0 for i in range(items)]
    batches = [work_items[i : i + per_task] for i in range(0, items, per_task)]
    assert sum(ray.get([remote_work.remote(batch) for batch in batches])) == items
    print(time.perf_counter() - ready)
    ray.shutdown()
"""

BASELINES = {
    "processes": ("hand multiprocessing.Pool imap_unordered(chunksize=8)", "hand_pool.py", HAND_POOL, 0.90),
    "dask": ("hand dask, 50 items per task", "hand_dask.py", HAND_DASK, 0.85),
    "ray": ("hand Ray, 50 items per task", "hand_ray.py", HAND_RAY, 0.85),
}
"""Each back end's hand-written baseline: what it is, its script, and the speed target against it."""

NOOP_PER_TASK = {"processes": "0", "dask": "1000", "ray": "1000"}
"""The no-op baselines' items per task (the Pool's chunksize stays 8; its script takes none)."""


def _script(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - started, done.stdout


def _exec(folder: Path, executor: str, items: int, base: int) -> tuple[float, float]:
    """Whole-process wall time of ``batchframe exec`` and the run's own duration (once started)."""
    output = Path(tempfile.mkdtemp(prefix="batchframe-bench-"))
    command = [str(Path(sys.executable).parent / "batchframe"), "exec", str(folder / "job.py"), "-d", str(output)]
    command += ["-p", f"count={items}", "-p", f"base={base}", "-p", f"executor={executor}"]
    command += ["-p", f"concurrency={WORKERS}"]
    wall, _ = _timed(command)
    summary = json.loads(next(output.iterdir()).joinpath("summary.json").read_text())
    assert summary["succeeded"] == items, summary
    return wall, float(summary["duration_s"])


def main() -> None:
    cpu_items = int(sys.argv[1]) if len(sys.argv) > 1 else 3_000
    noop_items = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    engines = sys.argv[3].split(",") if len(sys.argv) > 3 else list(BASELINES)
    byte_compile_batchframe()
    folder = Path(tempfile.mkdtemp(prefix="batchframe-bench-"))
    _script(folder, "job.py", PROJECT)
    hands = {engine: _script(folder, BASELINES[engine][1], BASELINES[engine][2]) for engine in engines}
    python = sys.executable

    def hand(engine: str, items: int, base: int, per_task: str) -> list[str]:
        return [python, str(hands[engine]), str(items), str(base), *([per_task] if engine != "processes" else [])]

    # A shared 2-core machine varies by 20% from one run to the next: take the median of alternating rounds.
    rounds: dict[str, list[float]] = {f"{engine}{side}": [] for engine in engines for side in ("_hand", "")}
    for _ in range(ROUNDS):
        for engine in engines:
            rounds[f"{engine}_hand"].append(_timed(hand(engine, cpu_items, BASE, "50"))[0])
            rounds[engine].append(_exec(folder, engine, cpu_items, BASE)[0])
    wall = {name: statistics.median(times) for name, times in rounds.items()}

    def rate(seconds: float | str) -> str:
        return f"{noop_items / float(seconds):,.0f} items/s"

    cpu_rows: list[tuple[str, str]] = []
    noop_rows: list[tuple[str, str]] = [(f"no-op items ({noop_items:,}), once started:", "")]
    for engine in engines:
        what, _, _, target = BASELINES[engine]
        cpu_rows += [
            (what, f"{wall[engine + '_hand']:.2f} s"),
            (f"batchframe {engine}", f"{wall[engine]:.2f} s"),
            (f"  {engine} / hand speed (target >= {target:.2f})", f"{wall[engine + '_hand'] / wall[engine]:.2f}"),
        ]
        per_task = NOOP_PER_TASK[engine]
        noop_what = what.replace("50 items", f"{int(per_task):,} items")
        noop_rows += [
            (f"  {noop_what}", rate(_timed(hand(engine, noop_items, 0, per_task))[1])),
            (f"  batchframe {engine} (target >= 20,000/s)", rate(_exec(folder, engine, noop_items, 0)[1])),
        ]
    report(
        f"scale-out, {WORKERS} workers: {cpu_items:,} CPU-bound items (~3 ms), whole process, median of {ROUNDS}",
        cpu_rows + noop_rows,
    )


if __name__ == "__main__":
    main()
