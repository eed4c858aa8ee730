from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import build_file_tree, ray_head

# pytest started in the background by a non-interactive shell (`pytest &`, some CI runners) inherits
# SIGINT ignored, and so would every process the tests start: a Ctrl-C sent to one would be lost and the
# test would hang. Each xdist worker imports this file, so each one restores Python's own handler.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject.toml): 1.5 workers per core, since the tests wait on their subprocesses much of the time."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(2, cores * 3 // 2)


@pytest.fixture(autouse=True)
def _isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test runs in its own directory, with sys.path and sys.modules restored afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    yield
    sys.path[:] = saved_path
    new = set(sys.modules) - saved_modules
    doomed = {name.split(".")[0] for name in new if _location(sys.modules.get(name)).startswith(str(tmp_path))}
    for name in new:
        if name.split(".")[0] in doomed:
            sys.modules.pop(name, None)


def _location(module: object) -> str:
    try:
        return str(getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", None) or [""]), ""))
    except KeyError:
        return ""


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[tuple[str, str]]:
    """One Ray cluster per test process, started when a test first asks for it (a Ray takes ~3 s to start)."""
    with ray_head() as addresses:
        yield addresses


@pytest.fixture(autouse=True)
def _ray_cases_share_a_cluster(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test parametrized with ``backend="ray"`` runs on the test process's Ray cluster, set as a user
    would (``BATCHFRAME_PARAM_SCHEDULER``): a Ray of each run's own takes ~4 s to start and stop. (A Ray
    of the run's own, what ``-p executor=ray`` alone starts, runs in docs/scaling-out.md's example.)"""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("backend") == "ray":
        monkeypatch.setenv("BATCHFRAME_PARAM_SCHEDULER", request.getfixturevalue("ray_cluster")[0])


@pytest.fixture
def ray_address(ray_cluster: tuple[str, str]) -> str:
    """The head node of the test process's Ray cluster: ``127.0.0.1:PORT``."""
    return ray_cluster[0]


@pytest.fixture
def ray_client_address(ray_cluster: tuple[str, str]) -> str:
    """The same cluster through Ray Client: ``ray://127.0.0.1:PORT``."""
    return ray_cluster[1]


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """Write a user project: ``make_project({"job.py": "..."}, name="proj")`` returns its folder."""

    def make(files: dict[str, str], name: str = "proj") -> Path:
        return build_file_tree(tmp_path / name, files)

    return make


@pytest.fixture
def make_executor() -> Callable[..., object]:
    """Build a Driver over a list (or any source) and a service; keyword overrides go to its settings."""
    from batchframe.retry import RetryPolicy
    from batchframe.run.driver import Driver, DriverSettings

    def make(source: object, service: object, *, retry: dict[str, object] | None = None, **overrides: object):
        policy = RetryPolicy(**{"base_s": 0.001, "cap_s": 0.005, **(retry or {})})  # type: ignore[arg-type]
        settings = DriverSettings(retry=policy, **overrides)  # type: ignore[arg-type]
        failed: list[object] = []
        executor = Driver(source, service, settings=settings, on_failure=failed.append)
        executor.failed = failed  # what the tests inspect: every failure record, in order
        return executor

    return make
