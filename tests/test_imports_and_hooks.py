"""What ``exec PATH`` imports (and never imports), and the hooks declared on Source and Service."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import get_type_hints

import pytest
from helpers import batchframe_cli, build_file_tree, only_run_dir

from batchframe import ProjectError, Service, Source
from batchframe._types import ItemT
from batchframe.project.load import load_project
from batchframe.service import misspelt_hooks as service_hooks
from batchframe.source import misspelt_hooks as source_hooks

SOURCE = """
from batchframe import Source, inject

@inject
class Numbers(Source[int]):
    def next(self):
        raise StopIteration
"""

SERVICE = """
from batchframe import Service, Source, inject

@inject
class Printer(Service[int]):
    def __init__(self, source: Source):
        self.source = source

    def process(self, item):
        pass
"""


def marker_module(marker: Path) -> str:
    """A module that leaves ``marker`` behind when it is imported (a stand-in for a destructive script)."""
    return f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"


def assert_usage_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------------------- what is imported


@pytest.mark.timeout(60)
def test_a_lone_file_without_a_service_imports_nothing_beside_or_below_it(tmp_path: Path) -> None:
    markers = {name: tmp_path / f"{name}.imported" for name in ("beside", "below", "package_below")}
    root = build_file_tree(
        tmp_path / "scripts",
        {
            "job.py": SOURCE,
            "drop_tables.py": marker_module(markers["beside"]),
            "old/drop_tables.py": marker_module(markers["below"]),
            "lib/__init__.py": marker_module(markers["package_below"]),
        },
    )
    result = batchframe_cli("exec", root / "job.py", "-d", tmp_path / "out", cwd=tmp_path)
    assert_usage_error(result, "No Service found in", "job.py", "not a project", "batchframe exec")
    assert [name for name, marker in markers.items() if marker.exists()] == []
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(60)
def test_a_lone_file_without_source_nor_service_says_both(tmp_path: Path) -> None:
    root = build_file_tree(tmp_path / "scripts", {"job.py": "x = 1\n"})
    result = batchframe_cli("exec", root / "job.py", cwd=tmp_path)
    assert_usage_error(result, "No Source found", "no Service either", "Define the Source and the Service in job.py")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("marks_a_project", ["__init__.py", "config/__init__.py"])
def test_one_file_of_a_project_folder_finds_its_sibling_but_nothing_below(tmp_path: Path, marks_a_project: str) -> None:
    below, package_below = tmp_path / "below.imported", tmp_path / "package_below.imported"
    root = build_file_tree(
        tmp_path / "proj",
        {
            marks_a_project: "",
            "service.py": SERVICE,  # does not import the Source: it is found beside it
            "numbers.py": SOURCE,
            "old/drop_tables.py": marker_module(below),
            "lib/__init__.py": marker_module(package_below),
        },
    )
    result = batchframe_cli("exec", root / "service.py", "-d", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not below.exists() and not package_below.exists()


@pytest.mark.timeout(60)
def test_service_py_in_a_plain_folder_finds_source_py_and_nothing_else(tmp_path: Path) -> None:
    beside = tmp_path / "beside.imported"
    root = build_file_tree(
        tmp_path / "plain",
        {"service.py": SERVICE, "source.py": SOURCE, "drop_tables.py": marker_module(beside)},
    )
    result = batchframe_cli("exec", root / "service.py", "-d", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not beside.exists()


def test_a_file_of_a_project_that_still_lacks_its_source_says_where_it_looked(make_project) -> None:
    root = make_project({"__init__.py": "", "service.py": SERVICE, "helpers.py": "VALUE = 1\n"})
    with pytest.raises(ProjectError) as info:
        load_project(root / "service.py")
    assert "No Source found" in str(info.value) and "other modules of" in str(info.value)


@pytest.mark.timeout(60)
def test_a_directory_project_imports_its_sub_packages_but_not_plain_subfolders(tmp_path: Path) -> None:
    below, package_below = tmp_path / "below.imported", tmp_path / "package_below.imported"
    root = build_file_tree(
        tmp_path / "proj",
        {
            "source.py": SOURCE,
            "service.py": SERVICE,
            "old/drop_tables.py": marker_module(below),
            "lib/__init__.py": "",
            "lib/helpers.py": marker_module(package_below),
        },
    )
    result = batchframe_cli("exec", root, "-d", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not below.exists()
    assert package_below.exists()  # a package's modules are the project's


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/etc", "no Python modules in it"),
        ("/dev", "no Python modules in it"),
        ("/dev/null", "neither a file nor a folder"),
        ("notes.txt", "not a Python file"),
    ],
)
def test_paths_that_are_not_projects_are_usage_errors(tmp_path: Path, path: str, fragment: str) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    result = batchframe_cli("exec", path, "-d", tmp_path / "out", cwd=tmp_path)
    assert_usage_error(result, fragment, "PATH must be a .py file, a package or a project folder")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("path", ["/etc", "/dev", "/dev/null"])
def test_a_path_that_is_not_a_project_imports_nothing(path: str) -> None:
    modules, search_path = set(sys.modules), list(sys.path)
    with pytest.raises(ProjectError):
        load_project(path)
    assert set(sys.modules) - modules == set()
    assert sys.path == search_path


def test_the_python_installation_is_not_a_project() -> None:
    import json

    with pytest.raises(ProjectError, match="part of the Python installation"):
        load_project(Path(json.__file__).parent)


# -------------------------------------------------------------------------------------------------- hooks

HOOKED = """
import logging
from batchframe import Service, Source, inject

log = logging.getLogger("user.hooks")

@inject
class Numbers(Source[int]):
    def __init__(self):
        self.items = iter(range(4))

    def next(self):
        return next(self.items)

    def persist_failed(self, failed):
        log.info("persisted %s of type %s", list(failed), type(failed).__name__)

@inject
class Worker(Service[int]):
    def on_worker_start(self):
        log.info("worker started")

    def process(self, item):
        if item == 2:
            raise ValueError(item)

    def on_worker_stop(self):
        log.info("worker stopped")

    def finish(self):
        log.info("finished")
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("executor", ["asyncio", "threads"])
def test_correctly_spelt_hooks_are_called_and_not_reported(tmp_path: Path, executor: str) -> None:
    root = build_file_tree(tmp_path / "proj", {"job.py": HOOKED})
    result = batchframe_cli("exec", root / "job.py", "-p", f"executor={executor}", "-d", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    logs = (only_run_dir(tmp_path / "out") / "logs.txt").read_text()
    for line in ("worker started", "worker stopped", "finished", "persisted [2] of type FailedItems"):
        assert line in logs
    assert "not a batchframe hook" not in result.stderr + logs


@pytest.mark.timeout(60)
def test_misspelt_hooks_are_reported_once_each(tmp_path: Path) -> None:
    misspelt = (
        HOOKED.replace("def persist_failed", "def persist_faild")
        .replace("def on_worker_start", "def on_worker_strat")
        .replace("def finish", "def finnish")
    )
    root = build_file_tree(tmp_path / "proj", {"job.py": misspelt})
    result = batchframe_cli("exec", root / "job.py", "-d", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    for owner, name, hook in [
        ("Numbers", "persist_faild", "persist_failed"),
        ("Worker", "on_worker_strat", "on_worker_start"),
        ("Worker", "finnish", "finish"),
    ]:
        warning = f"{owner}.{name} is not a batchframe hook, so batchframe ignores it: did you mean {hook}?"
        assert result.stderr.count(warning) == 1, result.stderr
    logs = (only_run_dir(tmp_path / "out") / "logs.txt").read_text()
    assert "persisted" not in logs and "worker started" not in logs and "worker stopped" in logs


def test_names_far_from_hooks_defined_hooks_and_private_names_are_not_reported() -> None:
    class Quiet(Source[int]):
        def __iter__(self):
            yield 1

        def nexts(self):  # next is not needed by an __iter__ source
            pass

        def persist_failed(self, failed: Sequence[int]) -> None:
            pass

        def persist_failures(self):  # close to a hook the class defines: a helper, not a typo
            pass

        def _persist_faild(self):  # private
            pass

        def compute(self):
            pass

    class Legacy(Service[int]):  # 0.0.1a13 style: an (abstract in its own base) property, a private attribute
        _exceptions_to_retry_for = {ValueError}

        @property
        def exceptions_to_retry_for(self):
            return self._exceptions_to_retry_for

        def process(self, item):
            pass

        @property
        def finished(self):  # a property is not a misspelt method hook
            return True

    assert source_hooks(Quiet) == []
    assert service_hooks(Legacy) == []


def test_a_misspelt_retry_attribute_and_a_misspelt_next_are_reported() -> None:
    class Typo(Service[int]):
        exceptions_to_retry = {ValueError}

        def process(self, item):
            pass

    class NoItems(Source[int]):
        def nxt(self):
            return 1

    (warning,) = service_hooks(Typo)
    assert warning.endswith(
        "Typo.exceptions_to_retry is not a batchframe hook, so batchframe ignores it: did you mean "
        "exceptions_to_retry_for? Rename it to exceptions_to_retry_for (or to a name that does not look like a hook)."
    )
    (warning,) = source_hooks(NoItems)
    assert "NoItems.nxt is not a batchframe hook" in warning and "did you mean next?" in warning


@pytest.mark.timeout(60)
def test_an_abstract_service_with_a_misspelt_process_says_so(tmp_path: Path) -> None:
    root = build_file_tree(tmp_path / "proj", {"job.py": HOOKED.replace("def process", "def proces")})
    result = batchframe_cli("exec", root / "job.py", cwd=tmp_path)
    assert_usage_error(result, "No Service found", "Worker subclasses Service but is abstract", "did you mean process?")


def test_the_base_hooks_are_typed_no_ops() -> None:
    # A user's hook may be a plain def or an async def: both override the base's type.
    maybe_async = Awaitable[None] | None
    assert get_type_hints(Source.persist_failed) == {"failed": Sequence[ItemT], "return": maybe_async}
    for hook in (Service.on_worker_start, Service.on_worker_stop, Service.finish):
        assert get_type_hints(hook) == {"return": maybe_async}

    class Minimal(Service[int]):
        def process(self, item: int) -> None:
            pass

    service = Minimal()
    assert service.on_worker_start() is None and service.on_worker_stop() is None and service.finish() is None
    assert Source[int]().persist_failed([1, 2]) is None


def test_the_base_persist_failed_is_not_even_called(monkeypatch: pytest.MonkeyPatch) -> None:
    from batchframe.testing import run_service

    def refuse(self, failed):
        raise AssertionError("the base no-op was called")

    monkeypatch.setattr(Source, "persist_failed", refuse)

    class Failing(Service[int]):
        def process(self, item: int) -> None:
            raise ValueError(item)

    result = run_service(Failing, [1, 2])  # a fatal error (the base raising) would raise here
    assert result.failed_items == [1, 2]


def test_load_project_logs_the_warnings_unless_told_not_to(make_project, caplog: pytest.LogCaptureFixture) -> None:
    root = make_project({"job.py": HOOKED.replace("def on_worker_stop", "def on_worker_stpo")})
    caplog.set_level("WARNING", logger="batchframe.project.load")
    project = load_project(root / "job.py")
    assert [r.getMessage() for r in caplog.records] == project.hook_warnings
    assert len(project.hook_warnings) == 1 and "did you mean on_worker_stop?" in project.hook_warnings[0]
    caplog.clear()
    assert load_project(root / "job.py", warn_hooks=False).hook_warnings == project.hook_warnings
    assert caplog.records == []


@pytest.mark.timeout(120)
def test_mypy_sees_the_hooks_on_the_base_classes(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    import subprocess

    snippet = build_file_tree(
        tmp_path,
        {
            "snippet.py": """
                from collections.abc import Sequence
                from batchframe import Service, Source

                class Good(Source[int]):
                    def persist_failed(self, failed: Sequence[int]) -> None:
                        print(list(failed))

                class Bad(Source[int]):
                    def persist_failed(self, failed: list[int]) -> None:
                        pass

                class Worker(Service[int]):
                    def process(self, item: int) -> None:
                        self.on_worker_start()
                        self.on_worker_strat()
            """
        },
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), "snippet.py"],
        cwd=snippet,
        capture_output=True,
        text=True,
        timeout=110,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 2, result.stdout
    assert (
        errors[0].startswith("snippet.py:9:") and 'supertype defines the argument type as "Sequence[int]"' in errors[0]
    )
    assert errors[1].startswith("snippet.py:15:") and '"Worker" has no attribute "on_worker_strat"' in errors[1]
