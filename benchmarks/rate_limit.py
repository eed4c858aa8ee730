"""A rate limit against an API that enforces it: batchframe at max_per_second=95 vs aiometer at 95/s.

The API (Starlette under uvicorn, in its own process) admits 100 requests in any sliding second and
answers 429 with ``Retry-After: 1`` beyond that; it fails 2% of admitted calls with a 500 (seeded).
Each client POSTs every row once, retries 500s with backoff and waits out 429s:

- batchframe: a job run with the real ``batchframe exec`` CLI (``-p max_per_second=95``), a 500 is
  retried through ``exceptions_to_retry_for``, a 429 raises ``RateLimited(retry_after=...)``;
- aiometer (the baseline): ``aiometer.run_all`` with ``max_per_second=95``, retries by hand.

The server counts the 429s (it is the judge) and the rows delivered. Target: no 429 for either, and a
wall-time ratio (aiometer / batchframe) near 1.

Usage: python benchmarks/rate_limit.py [--rows 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import byte_compile_batchframe, report, write_project

RATE_PER_S = 95
WINDOW_CAPACITY = 100  # what the API admits in any sliding second
FAILURE_RATE = 0.02
SEED = 21
CONCURRENCY = 32

PROJECT = """
import httpx
from batchframe import BatchframeParam, RateLimited, Service, Source

class Rows(Source[int]):
    def __init__(self, rows: BatchframeParam[int] = 1000):
        self.rows = rows

    def __len__(self):
        return self.rows

    def __iter__(self):
        return iter(range(self.rows))

class ServerError(Exception):
    pass

class Post(Service[int]):
    exceptions_to_retry_for = {ServerError}

    def __init__(self, url: BatchframeParam[str] = ""):
        self.url = url
        self.client = None

    async def on_worker_start(self):
        self.client = httpx.AsyncClient()

    async def on_worker_stop(self):
        await self.client.aclose()

    async def process(self, row):
        response = await self.client.post(self.url, json={"row": row})
        if response.status_code == 429:
            raise RateLimited(retry_after=response.headers["Retry-After"])
        if response.status_code >= 500:
            raise ServerError(response.status_code)
        response.raise_for_status()
"""


# ----------------------------------------------------------------------------------------- the API


class Api:
    """The API's state: a sliding window of admitted calls, its counters, the seeded 500s.

    Args:
        capacity: the calls admitted in any sliding second, given the seconds since the first call
            (``benchmarks/adaptive.py`` changes it during the run).
        failure_rate: the share of admitted calls answered 500.
    """

    def __init__(
        self, capacity: Callable[[float], int] = lambda elapsed_s: WINDOW_CAPACITY, failure_rate: float = FAILURE_RATE
    ) -> None:
        self.capacity = capacity
        self.failure_rate = failure_rate
        self.reset()

    def reset(self) -> None:
        self.admitted: collections.deque[float] = collections.deque()
        self.counts = {"200": 0, "429": 0, "500": 0}
        self.delivered: set[int] = set()
        self.random = random.Random(SEED)
        self.first: float | None = None

    def answer(self, row: int) -> int:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        while self.admitted and self.admitted[0] <= now - 1.0:
            self.admitted.popleft()
        if len(self.admitted) >= self.capacity(now - self.first):
            status = 429
        else:
            self.admitted.append(now)  # an admitted call counts in the window, whatever its answer
            status = 500 if self.random.random() < self.failure_rate else 200
        self.counts[str(status)] += 1
        if status == 200:
            self.delivered.add(row)
        return status


def serve(api: Any) -> None:
    """Run ``api`` (``answer(row)``, ``counts``, ``delivered``, ``reset()``) on 127.0.0.1, a free port.

    The port is printed on stdout once listening (``start_api`` reads it).
    """
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def rows(request: Request) -> Response:
        status = api.answer(int((await request.json())["row"]))
        return Response(status_code=status, headers={"Retry-After": "1"} if status == 429 else None)

    async def stats(request: Request) -> Response:
        return JSONResponse({**api.counts, "delivered": len(api.delivered)})

    async def reset(request: Request) -> Response:
        api.reset()
        return Response(status_code=204)

    app = Starlette(
        routes=[
            Route("/rows", rows, methods=["POST"]),
            Route("/stats", stats),
            Route("/reset", reset, methods=["POST"]),
        ]
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def start_api(script: str = __file__) -> tuple[subprocess.Popen[str], str]:
    """Run ``script --serve`` (this benchmark's API, or another's) and wait until it listens."""
    process = subprocess.Popen([sys.executable, script, "--serve"], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    base = f"http://127.0.0.1:{int(process.stdout.readline())}"
    _wait_listening(base)
    return process, base


def _wait_listening(base: str) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{base}/stats")
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _api_stats(base: str) -> dict[str, int]:
    import httpx

    counts: dict[str, int] = httpx.get(f"{base}/stats").json()
    httpx.post(f"{base}/reset")
    return counts


# ------------------------------------------------------------------------------------- the clients


def run_batchframe(base: str, rows: int, *params: str) -> dict[str, Any]:
    """``batchframe exec`` on the job with ``params``: whole-process wall time, the run's own duration,
    its cool-downs and its limits at the end."""
    path = write_project(PROJECT)
    output = Path(tempfile.mkdtemp(prefix="batchframe-bench-"))
    command = [str(Path(sys.executable).parent / "batchframe"), "exec", str(path), "-d", str(output)]
    for param in (f"rows={rows}", f"url={base}/rows", f"concurrency={CONCURRENCY}", *params):
        command += ["-p", param]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall_s = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    summary = json.loads(next(output.iterdir()).joinpath("summary.json").read_text())
    cooldowns = sum("Rate limited" in line for line in done.stderr.splitlines())
    return {
        "wall_s": wall_s,
        "run_s": float(summary["duration_s"]),
        "cooldowns": cooldowns,
        "limits": summary["limits"],
    }


async def aiometer_rows(base: str, rows: int, rate: float = RATE_PER_S) -> float:
    """aiometer.run_all at ``rate``: each task waits out its 429s and retries its 500s by hand; the wall time."""
    import aiometer
    import httpx

    backoff = random.Random(SEED)

    async def post(client: httpx.AsyncClient, row: int) -> None:
        attempt = 0
        while True:
            response = await client.post(f"{base}/rows", json={"row": row})
            if response.status_code == 429:
                await asyncio.sleep(float(response.headers["Retry-After"]))
                continue
            if response.status_code >= 500 and attempt < 3:
                attempt += 1  # batchframe's default policy: full jitter from 1 s, doubling
                await asyncio.sleep(backoff.uniform(0, min(60.0, 2.0 ** (attempt - 1))))
                continue
            response.raise_for_status()
            return

    started = time.perf_counter()
    async with httpx.AsyncClient() as client:
        jobs = [functools.partial(post, client, row) for row in range(rows)]
        await aiometer.run_all(jobs, max_at_once=CONCURRENCY, max_per_second=rate)
    return time.perf_counter() - started


def run_aiometer(base: str, rows: int) -> dict[str, Any]:
    """The baseline, in this process (the API runs in its own)."""
    return {"wall_s": asyncio.run(aiometer_rows(base, rows))}


# -------------------------------------------------------------------------------------------- main


def _row(label: str, result: dict[str, Any], counts: dict[str, int], rows: int) -> tuple[str, str]:
    extra = f", run {result['run_s']:.2f} s, {result['cooldowns']} cool-downs" if "run_s" in result else ""
    return (
        label,
        f"{result['wall_s']:6.2f} s{extra}; 429s {counts['429']:>4}, 500s {counts['500']:>3}, "
        f"rows delivered {counts['delivered']:,}/{rows:,}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Api())
        return
    byte_compile_batchframe()
    api, base = start_api()
    try:
        ours = run_batchframe(base, args.rows, f"max_per_second={RATE_PER_S}")
        ours_counts = _api_stats(base)
        time.sleep(1.1)  # the API's window empties between the runs
        theirs = run_aiometer(base, args.rows)
        theirs_counts = _api_stats(base)
    finally:
        api.terminate()
        api.wait()
    report(
        f"rate limit: {args.rows:,} rows POSTed at {RATE_PER_S}/s to an API admitting {WINDOW_CAPACITY} "
        f"in any sliding second, 2% 500s",
        [
            _row("batchframe exec (whole process)", ours, ours_counts, args.rows),
            _row("aiometer.run_all (baseline)", theirs, theirs_counts, args.rows),
            ("ratio of wall times (aiometer / batchframe)", f"{theirs['wall_s'] / ours['wall_s']:.2f}"),
        ],
    )


if __name__ == "__main__":
    main()
