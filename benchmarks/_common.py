"""Shared bits of the benchmarks: writing a throwaway project and running it through batchframe."""

from __future__ import annotations

import asyncio
import compileall
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import batchframe
from batchframe.run.commands import run_project
from batchframe.run.execute import RunResult


def byte_compile_batchframe() -> None:
    """Write batchframe's ``.pyc`` files, as installing its wheel does.

    An editable install under ``PYTHONDONTWRITEBYTECODE=1`` (set on these machines) compiles every
    batchframe module from source in every process, which is not what a user's install pays: about
    0.1 s in the driver and again in each worker process.
    """
    compileall.compile_dir(Path(batchframe.__file__).parent, quiet=1)


def write_project(body: str) -> Path:
    """Write a one-file project in a fresh temporary directory and return the file."""
    folder = Path(tempfile.mkdtemp(prefix="batchframe-bench-"))
    path = folder / "bench_job.py"
    path.write_text(textwrap.dedent(body))
    return path


def run(path: Path, *params: str) -> RunResult:
    """Run a project the way ``batchframe exec`` does (logging and progress on), outputs in its folder."""
    return run_project(path, params=list(params), output_dir=path.parent / "out")


def report(title: str, rows: list[tuple[str, str]]) -> None:
    """Print a small aligned table."""
    print(title)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


async def bare_loop(items: int, concurrency: int, process: Callable[[int], Awaitable[None]]) -> float:
    """The loop people write by hand (the baseline): a bounded asyncio.Queue, N workers awaiting ``process``."""
    queue: asyncio.Queue[int | None] = asyncio.Queue(2 * concurrency)

    async def worker() -> None:
        while (item := await queue.get()) is not None:
            await process(item)

    started = time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    for item in range(items):
        await queue.put(item)
    for _ in workers:
        await queue.put(None)
    await asyncio.gather(*workers)
    return time.perf_counter() - started
