from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import build_file_tree


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


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """Write a user project: ``make_project({"job.py": "..."}, name="proj")`` returns its folder."""

    def make(files: dict[str, str], name: str = "proj") -> Path:
        return build_file_tree(tmp_path / name, files)

    return make


@pytest.fixture
def make_executor() -> Callable[..., object]:
    """Build a Driver over a list (or any source) and a service; keyword overrides go to its settings."""
    from batchframe.driver import Driver, ExecutorSettings
    from batchframe.retry import RetryPolicy

    def make(source: object, service: object, *, retry: dict[str, object] | None = None, **overrides: object):
        policy = RetryPolicy(**{"base_s": 0.001, "cap_s": 0.005, **(retry or {})})  # type: ignore[arg-type]
        settings = ExecutorSettings(retry=policy, **overrides)  # type: ignore[arg-type]
        failed: list[object] = []
        executor = Driver(source, service, settings=settings, on_failure=failed.append)
        executor.failed = failed  # what the tests inspect: every failure record, in order
        return executor

    return make
