"""Helpers for writing user projects inline and running the CLI for real."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def build_file_tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``{relative path: text}`` under ``root`` (text is dedented) and return ``root``."""
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return root


def batchframe_cli(
    *args: str | os.PathLike[str], cwd: Path, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the real ``batchframe`` console script in a subprocess (no terminal)."""
    executable = Path(sys.executable).parent / "batchframe"
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "batchframe"]
    full_env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **env}
    return subprocess.run(
        [*command, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        stdin=subprocess.DEVNULL,
    )


def start_batchframe(*args: str | os.PathLike[str], cwd: Path, **env: str) -> subprocess.Popen[str]:
    """Start the real ``batchframe`` console script in the background (no terminal; output piped)."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "batchframe"), *map(str, args)],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200", **env},
    )


def wait_until(ready: Callable[[], bool], process: subprocess.Popen[str], timeout: float = 30) -> None:
    """Wait until ``ready()`` holds; the test fails if ``process`` ends first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"{process.args} never got ready"
        assert process.poll() is None, process.communicate()
        time.sleep(0.005)


def signal_when_ready(
    *args: str, cwd: Path, ready: Callable[[], bool], signum: int, timeout: float = 30
) -> tuple[int | None, str, str]:
    """Start ``batchframe ARGS`` (no terminal), send it ``signum`` once ``ready()`` holds, and wait for its end.

    Returns:
        Its exit code, stdout and stderr. The test fails when the process ends before ``ready()``
        holds, or ``ready()`` does not hold within ``timeout`` seconds.
    """
    process = start_batchframe(*args, cwd=cwd)
    try:
        wait_until(ready, process, timeout)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stdout, stderr


def service_factory(path: str | os.PathLike[str], *params: str, statics: dict[str, Any] | None = None) -> Any:
    """The ServiceFactory that ``batchframe exec PATH -p PARAM...`` gives its worker processes (a new run key)."""
    from batchframe.run.prepare import prepare

    return prepare(path, params=list(params)).service_factory(statics or {})


def only_run_dir(output_dir: Path) -> Path:
    """The single run folder inside ``output_dir``."""
    runs = sorted(p for p in output_dir.iterdir() if p.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a .jsonl file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


SIMPLE_PROJECT = """
import logging
from batchframe import BatchframeParam, Service, Source, inject

@inject
class Numbers(Source[int]):
    def __init__(self, count: BatchframeParam[int] = 5):
        self.it = iter(range(count))
        self.count = count
        self.failed = None

    def __len__(self):
        return self.count

    def next(self):
        return next(self.it)

    def persist_failed(self, failed):
        self.failed = failed

@inject
class Echo(Service[int]):
    def __init__(self, source: Source[int]):
        self.source = source
        self.seen = []

    async def process(self, item):
        logging.getLogger("user.code").info("processing %s", item)
        self.seen.append(item)
"""


def cooling_job(items: int, refused: int, retry_after_s: float) -> str:
    """A project of ``items`` numbers whose item ``refused`` gets ``RateLimited(retry_after_s)`` once (a 429)."""
    return f"""
import asyncio
from batchframe import RateLimited, Service, Source

class Numbers(Source[int]):
    def __len__(self):
        return {items}
    def __iter__(self):
        return iter(range({items}))

class Api(Service[int]):
    refused = False
    async def process(self, item):
        await asyncio.sleep(0.01)
        if item == {refused} and not Api.refused:
            Api.refused = True
            raise RateLimited({retry_after_s})
"""


def free_port() -> int:
    """A TCP port nothing listens on at the moment, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def ray_head(num_cpus: int = 2) -> Iterator[tuple[str, str]]:
    """A Ray cluster (``ray start --head --block``) on 127.0.0.1; yields its address and its Ray Client address.

    Stopped through its process group with SIGINT (its raylet and GCS outlive the ``ray start``
    process; SIGTERM takes ~20 s, SIGINT ~1.5 s), then SIGKILL if it lingers.
    """
    port, client_port = free_port(), free_port()
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", f"--ray-client-server-port={client_port}", f"--num-cpus={num_cpus}",
         "--include-dashboard=false", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=tempfile.gettempdir(),
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:  # the GCS port answers first; a run's ray.init waits for the rest of the head
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if head.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ray start --head did not come up (exit {head.poll()})") from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}"
    finally:
        os.killpg(head.pid, signal.SIGINT)
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
