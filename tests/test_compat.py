"""Projects written for batchframe 0.0.1a13 run unchanged: its import paths, config names and CLI forms."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import batchframe_cli, build_file_tree, only_run_dir

# A project exactly in 0.0.1a13's style (its README): a package whose __init__ imports its classes,
# config/ with an abstract config and config_dev.py, imports from batchframe.models.*, executor_* fields,
# an abstract-property exceptions_to_retry_for, a finish(), a next()-style Source with persist_failed.
LEGACY = {
    "legacy/__init__.py": """
from .source import NumbersSource
from .service import SquareService
""",
    "legacy/config/abstract_custom_config.py": """
from abc import ABCMeta
from dataclasses import dataclass
from batchframe.models.configuration import Configuration

@dataclass()
class AbstractCustomConfig(Configuration, metaclass=ABCMeta):
    env: str = "PLACEHOLDER"
""",
    "legacy/config/config_dev.py": """
from dataclasses import dataclass, field
from batchframe import inject
from .abstract_custom_config import AbstractCustomConfig

@inject
@dataclass()
class CustomDevConfig(AbstractCustomConfig):
    env: str = "DEV"
    executor_consumers: int = 2
    executor_work_queue_size: int = 4
    executor_max_retries: int = 2
    executor_backoff_times_sec: list[float] = field(default_factory=lambda: [0.01, 0.02])
""",
    "legacy/service.py": """
import asyncio
import logging
from batchframe import inject
from batchframe.models.service import Service
from batchframe.models.source import Source
from batchframe.models.configuration import Configuration

@inject
class SquareService(Service):
    source: Source
    _exceptions_to_retry_for = {ValueError}

    @property
    def exceptions_to_retry_for(self) -> set[type[Exception]]:
        return self._exceptions_to_retry_for

    def __init__(self, source: Source, config: Configuration) -> None:
        self.source = source
        self.config = config

    async def process(self, input: int):
        await asyncio.sleep(0.001)
        logging.info("square %s consumers=%s env=%s", input * input, self.config.executor_consumers, self.config.env)

    def finish(self):
        logging.info("I could do some cleanup here...")
""",
    "legacy/source.py": """
import logging
from batchframe import inject
from batchframe.models.source import Source
from batchframe.models.batchframe_param import BatchframeParam

@inject
class NumbersSource(Source[int]):
    def __init__(self, count: BatchframeParam[int] = 10):
        self._count = count
        self._curr = 0

    def __len__(self) -> int:
        return self._count

    def next(self) -> int:
        self._curr += 1
        if self._curr <= self._count:
            return self._curr
        raise StopIteration()

    def persist_failed(self, failed: list[int]):
        logging.error(f"Oh no! {failed} did not compute!")
""",
}


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    return build_file_tree(tmp_path, LEGACY)


def settings_used(run_dir: Path) -> str:
    return (run_dir / "logs.txt").read_text()


@pytest.mark.timeout(60)
def test_a_legacy_project_runs_with_todays_cli_form(legacy: Path) -> None:
    result = batchframe_cli("exec", "legacy", "-c", "config_dev", "-d", "out", cwd=legacy)
    assert result.returncode == 0, result.stderr
    logs = settings_used(only_run_dir(legacy / "out"))
    assert "square 100 consumers=2 env=DEV" in logs  # executor_consumers from the config, seen under its old name
    assert "I could do some cleanup here..." in logs


@pytest.mark.timeout(60)
def test_a_legacy_project_runs_with_0_0_1a13s_cli_form(legacy: Path) -> None:
    result = batchframe_cli(
        "-v", "-d", "old_out", "exec", "legacy", "--configuration", "config_dev", "--param", "count=3", cwd=legacy
    )
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(legacy / "old_out")
    assert "square 9 consumers=2 env=DEV" in settings_used(run_dir)
    assert "DEBUG" in settings_used(run_dir)  # the global -v reached the run
    assert json.loads((run_dir / "summary.json").read_text())["succeeded"] == 3


@pytest.mark.timeout(60)
def test_global_vv_and_output_dir_work_for_runs_too(legacy: Path) -> None:
    assert batchframe_cli("-d", "elsewhere", "exec", "legacy", "-c", "config_dev", cwd=legacy).returncode == 0
    listed = batchframe_cli("-d", "elsewhere", "runs", cwd=legacy)
    assert listed.returncode == 0 and only_run_dir(legacy / "elsewhere").name in listed.stdout
    # -vv before the command: a usage error shows its traceback; without it, the panel alone.
    quiet = batchframe_cli("-d", "elsewhere", "runs", "no-such-run", cwd=legacy)
    loud = batchframe_cli("-vv", "-d", "elsewhere", "runs", "no-such-run", cwd=legacy)
    assert quiet.returncode == loud.returncode == 2
    assert "does not exist" in quiet.stderr and "Traceback" not in quiet.stderr
    assert "does not exist" in loud.stderr and "Traceback (most recent call last)" in loud.stderr


@pytest.mark.timeout(60)
def test_old_config_names_are_p_names_and_conflicts_are_usage_errors(legacy: Path) -> None:
    result = batchframe_cli("exec", "legacy", "-c", "config_dev", "-p", "executor_consumers=3", "-d", "a", cwd=legacy)
    assert result.returncode == 0, result.stderr
    assert "consumers=3" in settings_used(only_run_dir(legacy / "a"))
    clash = batchframe_cli(
        "exec", "legacy", "-c", "config_dev", "-p", "executor_consumers=3", "-p", "concurrency=4", cwd=legacy
    )
    assert clash.returncode == 2 and "same setting" in clash.stderr and "Traceback" not in clash.stderr
    same = batchframe_cli(
        "exec", "legacy", "-c", "config_dev", "-p", "executor_max_retries=1", "-p", "max_retries=1", "-d", "b",
        cwd=legacy,
    )  # fmt: skip
    assert same.returncode == 0, same.stderr


@pytest.mark.timeout(60)
def test_a_config_that_sets_both_names_differently_is_a_usage_error(legacy: Path) -> None:
    path = legacy / "legacy" / "config" / "config_dev.py"
    path.write_text(
        path.read_text().replace(
            "    executor_consumers: int = 2", "    executor_consumers: int = 2\n    concurrency: int = 5"
        )
    )
    result = batchframe_cli("exec", "legacy", "-c", "config_dev", cwd=legacy)
    assert result.returncode == 2 and "executor_consumers" in result.stderr and "concurrency" in result.stderr


@pytest.mark.timeout(60)
def test_params_shows_old_names_as_aliases_not_as_parameters(legacy: Path) -> None:
    result = batchframe_cli("params", "legacy", "-c", "config_dev", cwd=legacy, COLUMNS="250")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "executor_consumers" in line]
    assert len(rows) == 1 and "concurrency" in rows[0]  # one row: concurrency, with its old name
    assert not any(line.strip("│ ").startswith("executor_") for line in result.stdout.splitlines())


def test_the_old_import_paths_give_the_same_classes_silently() -> None:
    code = (
        "import batchframe, batchframe.models.source as s, batchframe.models.service as v, "
        "batchframe.models.configuration as c, batchframe.models.batchframe_param as p\n"
        "assert s.Source is batchframe.Source and v.Service is batchframe.Service\n"
        "assert c.Configuration is batchframe.Configuration and p.BatchframeParam is batchframe.BatchframeParam\n"
    )
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_run_service_honours_old_names_on_a_config_instance() -> None:
    from batchframe import Configuration, Service
    from batchframe.testing import run_service

    attempts: list[int] = []

    class Flaky(Service[int]):
        exceptions_to_retry_for = {ConnectionError}

        def process(self, item: int) -> None:
            attempts.append(item)
            raise ConnectionError("down")

    config = Configuration(executor_max_retries=1, executor_backoff_times_sec=[0.001])
    result = run_service(Flaky, [7], config=config)
    assert attempts == [7, 7] and result.failed[0].attempts == 2
