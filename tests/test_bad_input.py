"""Bad input through the real CLI: each is one clear paragraph, a usage exit code and no traceback.

Covers the choice of configuration without ``-c``, ``-c`` given a path, non-finite retry delays and
limits, and a Source whose ``__len__`` is broken (a warning, and the run goes on without a total).
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from helpers import SIMPLE_PROJECT, batchframe_cli, only_run_dir

# A package with an abstract base config in config/__init__.py and one file per environment.
CONFIG_PACKAGE = {
    "job/__init__.py": "",
    "job/source.py": """
        from batchframe import Source, inject

        @inject
        class Numbers(Source[int]):
            def __iter__(self):
                yield from range(3)
    """,
    "job/service.py": """
        from batchframe import Service, inject
        from .config import JobConfig

        @inject
        class Echo(Service[int]):
            def __init__(self, config: JobConfig):
                self.config = config

            def process(self, item):
                pass

            def finish(self):
                print("CONFIG", type(self.config).__name__, self.config.region)
    """,
    "job/config/__init__.py": """
        from dataclasses import dataclass
        from batchframe import BatchframeParam, Configuration

        @dataclass
        class JobConfig(Configuration):
            region: BatchframeParam[str] = "base"
    """,
    "job/config/config_dev.py": """
        from dataclasses import dataclass
        from . import JobConfig

        @dataclass
        class DevConfig(JobConfig):
            region: str = "dev"
    """,
    "job/config/config_prod.py": """
        from dataclasses import dataclass
        from . import JobConfig

        @dataclass
        class ProdConfig(JobConfig):
            region: str = "prod"
    """,
}

# A single-file project whose Service prints the configuration it was given.
CONFIG_REPORTER = """
from dataclasses import dataclass
from batchframe import Configuration

@inject
class Reporter(Echo):
    def __init__(self, source: Source[int], config: Configuration):
        super().__init__(source)
        self.config = config

    def finish(self):
        print("CONFIG", type(self.config).__name__)
"""

TWO_CONCRETE_CONFIGS = """
@dataclass
class DevConfig(Configuration):
    concurrency: int = 2

@dataclass
class ProdConfig(Configuration):
    concurrency: int = 16
"""


def exec_project(root: Path, *args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``batchframe exec ROOT ARGS`` with its run folders in ``tmp_path/out``."""
    return batchframe_cli("exec", root, *args, "-d", tmp_path / "out", cwd=tmp_path)


def assert_usage_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def assert_ran_with(result: subprocess.CompletedProcess[str], config_class: str) -> None:
    assert result.returncode == 0, result.stderr
    assert f"CONFIG {config_class}" in result.stdout, result.stdout


# ------------------------------------------------------------------------------- choosing a config


@pytest.mark.timeout(60)
def test_two_config_files_without_c_is_an_error_that_lists_them(make_project, tmp_path: Path) -> None:
    root = make_project(CONFIG_PACKAGE)
    result = exec_project(root / "job", tmp_path=tmp_path)
    assert_usage_error(result, "Config error", "config_dev, config_prod", "Choose one with -c NAME")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.timeout(60)
def test_two_concrete_configs_in_one_file_without_c_is_an_error(make_project, tmp_path: Path) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT + CONFIG_REPORTER + TWO_CONCRETE_CONFIGS})
    result = exec_project(root / "job.py", tmp_path=tmp_path)
    assert_usage_error(result, "2 concrete Configuration classes", "DevConfig", "ProdConfig", "-c NAME")


@pytest.mark.timeout(60)
def test_two_concrete_configs_in_config_init_without_config_files_is_an_error(make_project, tmp_path: Path) -> None:
    files = {k: v for k, v in CONFIG_PACKAGE.items() if not k.startswith("job/config/config_")}
    extra = "\n@dataclass\nclass OtherConfig(JobConfig):\n    region: str = 'x'\n"
    extra += "\n@dataclass\nclass ThirdConfig(JobConfig):\n    region: str = 'y'\n"
    files["job/config/__init__.py"] = textwrap.dedent(files["job/config/__init__.py"]) + extra
    root = make_project(files)
    result = exec_project(root / "job", tmp_path=tmp_path)
    assert_usage_error(result, "2 concrete Configuration classes", "OtherConfig", "ThirdConfig")


@pytest.mark.timeout(60)
def test_one_concrete_config_in_one_file_is_used_without_c(make_project, tmp_path: Path) -> None:
    one_config = TWO_CONCRETE_CONFIGS.split("@dataclass\nclass ProdConfig")[0]
    root = make_project({"job.py": SIMPLE_PROJECT + CONFIG_REPORTER + one_config})
    assert_ran_with(exec_project(root / "job.py", tmp_path=tmp_path), "DevConfig")


@pytest.mark.timeout(60)
def test_an_abstract_config_does_not_count_as_a_choice(make_project, tmp_path: Path) -> None:
    configs = TWO_CONCRETE_CONFIGS.replace("class DevConfig(Configuration)", "class DevConfig(Configuration, abc.ABC)")
    root = make_project({"job.py": "import abc\n" + SIMPLE_PROJECT + CONFIG_REPORTER + configs})
    assert_ran_with(exec_project(root / "job.py", tmp_path=tmp_path), "ProdConfig")


@pytest.mark.timeout(60)
def test_a_project_without_configs_uses_the_base_configuration(make_project, tmp_path: Path) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT + CONFIG_REPORTER})
    assert_ran_with(exec_project(root / "job.py", tmp_path=tmp_path), "Configuration")


@pytest.mark.timeout(60)
def test_only_the_shared_config_is_used_without_c(make_project, tmp_path: Path) -> None:
    files = {k: v for k, v in CONFIG_PACKAGE.items() if not k.startswith("job/config/config_")}
    root = make_project(files)
    assert_ran_with(exec_project(root / "job", tmp_path=tmp_path), "JobConfig base")


@pytest.mark.timeout(60)
def test_the_only_config_file_is_used_without_c(make_project, tmp_path: Path) -> None:
    files = {k: v for k, v in CONFIG_PACKAGE.items() if k != "job/config/config_prod.py"}
    root = make_project(files)
    assert_ran_with(exec_project(root / "job", tmp_path=tmp_path), "DevConfig dev")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["config_prod", "config_prod.py"])
def test_c_takes_the_config_name_with_or_without_py(make_project, tmp_path: Path, name: str) -> None:
    root = make_project(CONFIG_PACKAGE)
    assert_ran_with(exec_project(root / "job", "-c", name, tmp_path=tmp_path), "ProdConfig prod")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("given", ["config/config_dev", "../other/config_x.py", "ABSOLUTE", "config\\config_dev.py"])
def test_c_with_a_directory_part_asks_for_just_the_name(make_project, tmp_path: Path, given: str) -> None:
    root = make_project(CONFIG_PACKAGE)
    given = str(root / "job" / "config" / "config_dev.py") if given == "ABSOLUTE" else given
    result = exec_project(root / "job", "-c", given, tmp_path=tmp_path)
    assert_usage_error(result, "is a path", "just the config's name", "config_dev, config_prod", "-c config_")


# ---------------------------------------------------------------------------- non-finite numbers


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("retry_delays_sec", "1,inf"),
        ("retry_delays_sec", "nan"),
        ("retry_backoff_sec", "nan"),
        ("retry_backoff_sec", "inf"),
        ("retry_backoff_max_sec", "inf"),
        ("retry_backoff_max_sec", "nan"),
    ],
)
def test_retry_delays_must_be_finite(make_project, tmp_path: Path, param: str, value: str) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT})
    result = exec_project(root / "job.py", "-p", f"{param}={value}", tmp_path=tmp_path)
    bad = value.split(",")[-1]
    assert_usage_error(result, "Parameter error", f"{param} must be a finite number", f"got {bad}", f"-p {param}=")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("param", "value"),
    [("item_timeout_sec", "inf"), ("item_timeout_sec", "nan"), ("max_per_second", "inf"), ("max_per_second", "nan")],
)
def test_limits_must_be_finite_and_suggest_none(make_project, tmp_path: Path, param: str, value: str) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT})
    result = exec_project(root / "job.py", "-p", f"{param}={value}", tmp_path=tmp_path)
    assert_usage_error(result, "Parameter error", f"{param} must be a finite number", f"got {value}")
    assert f"-p {param}=none for no limit" in result.stderr


# ------------------------------------------------------------------------------ a broken __len__


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("raise RuntimeError('count query failed')", "raised RuntimeError: count query failed"),
        ("raise TypeError('no length')", "raised TypeError: no length"),
        ("return -1", "returned -1, a negative number"),
        ("return '5'", "returned '5' (str), not an int"),
        ("return 2.5", "returned 2.5 (float), not an int"),
        ("return None", "returned None (NoneType), not an int"),
    ],
)
def test_a_broken_len_warns_once_and_the_run_goes_on(make_project, tmp_path: Path, body: str, problem: str) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT.replace("return self.count", body)})
    result = exec_project(root / "job.py", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    logs = (only_run_dir(tmp_path / "out") / "logs.txt").read_text(encoding="utf-8")
    assert logs.count("__len__()") == 1, logs
    assert f"Numbers.__len__() {problem}" in logs
    assert "treated as unknown" in logs


def test_a_working_len_is_the_total() -> None:
    from batchframe.source import Source, source_length

    class Sized(Source[int]):
        def __len__(self) -> int:
            return 7

    class Unsized(Source[int]):
        pass

    assert source_length(Sized()) == 7
    assert source_length(Unsized()) is None
