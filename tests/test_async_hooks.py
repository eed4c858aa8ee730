"""Async resources have a lifecycle: an httpx.AsyncClient opened by one hook, used by process, closed by another.

Every hook may be ``async def`` and runs on the event loop that ``process`` runs on, before that
loop closes, on every back end: the job a user writes against a real (local) HTTP API.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers import EXAMPLES, batchframe_cli, read_jsonl, start_batchframe, wait_until

BACKENDS = ["asyncio", "threads", "processes", "dask", "ray"]


def _load_local_api() -> ModuleType:
    spec = importlib.util.spec_from_file_location("local_api", EXAMPLES / "local_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def api() -> Iterator[tuple[str, Any]]:
    """examples/local_api.py on 127.0.0.1, port 0, with no limit and no failures: (its URL, its store)."""
    local_api = _load_local_api()
    store = local_api.RowStore(limit_per_s=100_000, fail_rate=0.0)
    server = local_api.serve(store)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", store
    finally:
        server.shutdown()
        server.server_close()


def _run_dir(root: Path) -> Path:
    (run_dir,) = (root / "batchframe_outputs").iterdir()
    return run_dir


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_http_push_example_opens_and_closes_a_client_per_worker(
    tmp_path: Path, api: tuple[str, Any], backend: str
) -> None:
    url, store = api
    result = batchframe_cli(
        "exec", EXAMPLES / "http_push.py", "-p", f"url={url}", "-p", "rows=60", "-p", f"executor={backend}",
        "-p", "concurrency=4", cwd=tmp_path, timeout=100,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert store.stats() == {"rows": 60, "stored": 60}
    logs = (_run_dir(tmp_path) / "logs.txt").read_text()
    assert logs.count("Closed the HTTP client.") >= 1
    for problem in ("never awaited", "Event loop is closed", "Unclosed"):
        assert problem not in logs + result.stderr
    assert "Traceback" not in result.stderr  # (logs.txt keeps dask's own records, a closing comm's among them)


PER_RUN_JOB = """
import asyncio, json, os, threading
import httpx
from batchframe import BatchframeParam, Service, Source, inject

EVENTS = os.environ["EVENTS"]

def note(what):
    with open(EVENTS, "a") as out:
        loop = id(asyncio.get_running_loop())
        out.write(json.dumps([what, os.getpid(), loop]) + "\\n")

@inject
class Rows(Source[int]):
    def __iter__(self):
        return iter(range(20))
    async def persist_failed(self, failed):
        note("persist_failed")
        with open(EVENTS + ".failed", "w") as out:
            json.dump(sorted(failed), out)

@inject
class Push(Service[int]):
    def __init__(self, url: BatchframeParam[str]):
        self.client = httpx.AsyncClient(base_url=url)   # opened in __init__, used by process
    async def on_worker_start(self):
        note("on_worker_start")
    async def process(self, item):
        note("process")
        if item == 13:
            raise ValueError("thirteen")
        (await self.client.post("/rows", json={"id": item})).raise_for_status()
    async def on_worker_stop(self):
        note("on_worker_stop")
    async def finish(self):
        note("finish")
        await self.client.aclose()                      # closed in finish, on process's loop
        note("closed" if self.client.is_closed else "still open")
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_client_opened_in_init_is_closed_by_an_async_finish(
    make_project: Any, api: tuple[str, Any], backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, store = api
    # The job reads EVENTS from the environment when it is imported: the workers of a Ray the run starts
    # inherit the driver's environment, those of a running cluster do not (as a remote dask cluster's).
    monkeypatch.delenv("BATCHFRAME_PARAM_SCHEDULER", raising=False)
    project = make_project({"job.py": PER_RUN_JOB})
    events = project / "events.jsonl"
    result = batchframe_cli(
        "exec", "job.py", "-p", f"url={url}", "-p", f"executor={backend}", "-p", "concurrency=3",
        cwd=project, timeout=100, EVENTS=str(events),
    )  # fmt: skip
    assert result.returncode == 3, result.stderr  # item 13 failed: the exit code says so, not 1
    assert store.stats()["rows"] == 19
    assert "raised" not in result.stderr
    seen = [json.loads(line) for line in events.read_text().splitlines()]
    kinds = [kind for kind, _, _ in seen]
    assert kinds.count("process") == 20
    assert kinds.count("finish") == 1 and "closed" in kinds and "still open" not in kinds
    assert kinds.count("persist_failed") == 1
    assert json.loads(Path(f"{events}.failed").read_text()) == [13]
    assert kinds.count("on_worker_start") == kinds.count("on_worker_stop") >= 1
    driver_pid = next(pid for kind, pid, _ in seen if kind == "finish")
    loops_by_pid: dict[int, set[int]] = {}
    for _, pid, loop in seen:
        loops_by_pid.setdefault(pid, set()).add(loop)
    # In each process, every async call of the Service ran on one event loop.
    assert all(len(loops) == 1 for loops in loops_by_pid.values()), loops_by_pid
    if backend in ("asyncio", "threads"):
        assert set(loops_by_pid) == {driver_pid}  # process, the hooks and finish: one loop
    logs = (_run_dir(project) / "logs.txt").read_text()
    for problem in ("never awaited", "Event loop is closed"):
        assert problem not in logs + result.stderr
    assert "Traceback" not in result.stderr  # (logs.txt keeps dask's own records, a closing comm's among them)
    failed = read_jsonl(_run_dir(project) / "failed.jsonl")
    assert [record["item"] for record in failed] == [13]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["asyncio", "threads"])
def test_an_async_finish_that_raises_ends_the_run_with_exit_1_and_says_why(make_project: Any, backend: str) -> None:
    project = make_project(
        {
            "job.py": """
            from batchframe import Service, Source
            class Numbers(Source[int]):
                def __iter__(self):
                    return iter(range(3))
            class Work(Service[int]):
                async def process(self, item):
                    pass
                async def finish(self):
                    raise RuntimeError("could not flush")
            """
        }
    )
    result = batchframe_cli("exec", "job.py", "-p", f"executor={backend}", cwd=project)
    assert result.returncode == 1, result.stderr
    assert "Work.finish() raised RuntimeError: could not flush" in result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads((_run_dir(project) / "summary.json").read_text())
    assert summary["succeeded"] == 3


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("hook", "exit_code"), [("on_worker_start", 1), ("on_worker_stop", 0)])
@pytest.mark.parametrize("kind", ["async def", "def"])
def test_a_worker_hook_that_raises_is_reported_not_ignored(
    make_project: Any, hook: str, exit_code: int, kind: str
) -> None:
    project = make_project(
        {
            "job.py": f"""
            from batchframe import Service, Source
            class Numbers(Source[int]):
                def __iter__(self):
                    return iter(range(3))
            class Work(Service[int]):
                async def process(self, item):
                    pass
                {kind} {hook}(self):
                    raise ConnectionRefusedError("no database")
            """
        }
    )
    result = batchframe_cli("exec", "job.py", cwd=project)
    assert result.returncode == exit_code, result.stderr
    assert f"Work.{hook}() raised ConnectionRefusedError: no database" in result.stderr
    assert "never awaited" not in result.stderr
    assert "batchframe/" not in result.stderr  # the user's frames only (on_worker_start), none of ours


@pytest.mark.timeout(60)
def test_a_second_sigterm_cuts_a_blocked_async_finish_short(make_project: Any) -> None:
    project = make_project(
        {
            "job.py": """
            import asyncio, pathlib
            from batchframe import Service, Source
            class Numbers(Source[int]):
                def __iter__(self):
                    return iter(range(3))
            class Work(Service[int]):
                async def process(self, item):
                    pass
                async def finish(self):
                    pathlib.Path("finishing").touch()
                    try:
                        await asyncio.sleep(3600)
                    finally:
                        pathlib.Path("cancelled").touch()
            """
        }
    )
    process = start_batchframe("exec", "job.py", cwd=project)
    try:
        wait_until((project / "finishing").exists, process)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert process.poll() is None  # the first signal lets finish() go on
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, stderr
    assert "Work.finish() was cut short" in stderr
    assert (project / "cancelled").exists()  # the coroutine was cancelled, not left pending
    assert "Task was destroyed" not in stderr


def test_the_docs_show_the_example_as_it_is() -> None:
    page = (EXAMPLES.parent / "docs" / "writing-a-job.md").read_text(encoding="utf-8")
    section = page.split("\n## Async resources: a client per worker, or per run\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert block.strip() and block in (EXAMPLES / "http_push.py").read_text(encoding="utf-8")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["asyncio", "threads"])
def test_a_second_sigterm_cuts_a_blocked_async_on_worker_stop_short(make_project: Any, backend: str) -> None:
    project = make_project(
        {
            "job.py": """
            import asyncio, pathlib
            from batchframe import Service, Source
            class Numbers(Source[int]):
                def __iter__(self):
                    return iter(range(3))
            class Work(Service[int]):
                async def process(self, item):
                    pass
                async def on_worker_stop(self):
                    pathlib.Path("stopping").touch()
                    await asyncio.sleep(3600)
            """
        }
    )
    process = start_batchframe("exec", "job.py", "-p", f"executor={backend}", cwd=project)
    try:
        wait_until((project / "stopping").exists, process)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # two signals sent at once would be one (signals of a kind do not queue)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, stderr
    assert "cut short by a second stop" in stderr
    summary = json.loads((_run_dir(project) / "summary.json").read_text())
    assert summary["succeeded"] == 3  # the items' records stand
