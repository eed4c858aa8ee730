from __future__ import annotations

import pytest
from helpers import SIMPLE_PROJECT

from batchframe import ConfigError, Configuration, ProjectError
from batchframe.project.load import load_project

PACKAGE_FILES = {
    "__init__.py": "",
    "source.py": """
        from batchframe import BatchframeParam, Source, inject

        @inject
        class Lines(Source[str]):
            def __init__(self, count: BatchframeParam[int] = 3):
                self.items = iter([f"line {i}" for i in range(count)])
            def next(self):
                return next(self.items)
    """,
    "service.py": """
        from batchframe import Service, inject
        from .config import BaseConfig
        from .source import Lines

        @inject
        class Printer(Service[str]):
            def __init__(self, config: BaseConfig, source: Lines):
                self.config = config
            def process(self, item):
                pass
    """,
    "config/__init__.py": """
        from dataclasses import dataclass
        from batchframe import BatchframeParam, Configuration

        @dataclass
        class BaseConfig(Configuration):
            greeting: BatchframeParam[str] = "hi"
    """,
    "config/config_dev.py": """
        from dataclasses import dataclass
        from . import BaseConfig

        @dataclass
        class Dev(BaseConfig):
            greeting: str = "hello dev"
    """,
    "config/config_prod.py": """
        from . import BaseConfig

        class Prod(BaseConfig):
            concurrency = 32
    """,
}


def test_single_file_project(make_project) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT})
    project = load_project(root / "job.py")
    assert project.source_cls.__name__ == "Numbers"
    assert project.service_cls.__name__ == "Echo"
    assert project.config_cls is Configuration


def test_package_project_with_relative_imports_and_config(make_project) -> None:
    root = make_project(PACKAGE_FILES)
    project = load_project(root, "config_dev")
    assert project.source_cls.__name__ == "Lines"
    assert project.service_cls.__name__ == "Printer"
    assert project.config_cls.__name__ == "Dev"
    assert project.available_configs == ["config_dev", "config_prod"]


def test_config_name_may_end_in_py(make_project) -> None:
    root = make_project(PACKAGE_FILES)
    assert load_project(root, "config_prod.py").config_cls.__name__ == "Prod"


def test_directory_without_init_is_a_namespace_package(make_project) -> None:
    files = {k: v for k, v in PACKAGE_FILES.items() if k != "__init__.py"}
    root = make_project(files)
    project = load_project(root, "config_dev")
    assert project.service_cls.__name__ == "Printer"


def test_config_directory_without_init(make_project) -> None:
    files = dict(PACKAGE_FILES)
    files["base.py"] = files.pop("config/__init__.py")
    files["service.py"] = files["service.py"].replace("from .config import", "from .base import")
    files["config/config_dev.py"] = files["config/config_dev.py"].replace("from . import", "from ..base import")
    del files["config/config_prod.py"]
    root = make_project(files)
    assert load_project(root, "config_dev").config_cls.__name__ == "Dev"


def test_one_file_of_a_directory_project_imports_its_siblings_relatively(make_project) -> None:
    files = {k: v for k, v in PACKAGE_FILES.items() if k != "__init__.py"}
    root = make_project(files)
    project = load_project(root / "service.py", "config_dev")
    assert project.service_cls.__name__ == "Printer"
    assert project.source_cls.__name__ == "Lines"


def test_script_style_sibling_imports_work(make_project) -> None:
    root = make_project(
        {
            "numbers_source.py": SIMPLE_PROJECT.split("@inject\nclass Echo")[0],
            "job.py": """
                from batchframe import Service
                from numbers_source import Numbers

                class Echo(Service[int]):
                    def process(self, item):
                        pass
            """,
        }
    )
    project = load_project(root)
    assert project.source_cls.__name__ == "Numbers"


def test_a_directory_named_like_a_stdlib_module_does_not_shadow_it(make_project) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT}, name="json")
    project = load_project(root)
    import json

    assert hasattr(json, "dumps")
    assert project.package != "json"


def test_missing_path_is_a_usage_error() -> None:
    with pytest.raises(ProjectError) as info:
        load_project("nope/job.py")
    assert info.value.exit_code == 2
    assert "does not exist" in str(info.value)


def test_syntax_error_shows_the_users_line(make_project) -> None:
    root = make_project({"job.py": "x = (1,\ndef broken(:\n"})
    with pytest.raises(ProjectError) as info:
        load_project(root / "job.py")
    message = str(info.value)
    assert "job.py" in message and "line 2" in message and "syntax error" in message


def test_import_error_shows_the_users_frame(make_project) -> None:
    root = make_project({"job.py": "import os\nimport not_a_real_module_xyz\n"})
    with pytest.raises(ProjectError) as info:
        load_project(root / "job.py")
    error = info.value
    assert "ModuleNotFoundError" in error.message
    assert error.user_traceback is not None
    assert "job.py" in error.user_traceback and "line 2" in error.user_traceback
    assert "batchframe/project.py" not in error.user_traceback


def test_runtime_error_at_import_shows_the_users_frame(make_project) -> None:
    root = make_project({"job.py": "def f():\n    return 1 / 0\n\nf()\n"})
    with pytest.raises(ProjectError) as info:
        load_project(root / "job.py")
    assert "ZeroDivisionError" in info.value.message
    assert "return 1 / 0" in (info.value.user_traceback or "")


def test_no_source_is_reported(make_project) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT.split("@inject\nclass Numbers")[0] + "\nx = 1\n"})
    with pytest.raises(ProjectError, match="No Source found"):
        load_project(root / "job.py")


def test_no_service_is_reported(make_project) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT.split("@inject\nclass Echo")[0]})
    with pytest.raises(ProjectError, match="No Service found"):
        load_project(root / "job.py")


def test_two_services_are_reported_by_name(make_project) -> None:
    extra = "\nclass Other(Service[int]):\n    def process(self, item):\n        pass\n"
    root = make_project({"job.py": SIMPLE_PROJECT + extra})
    with pytest.raises(ProjectError) as info:
        load_project(root / "job.py")
    assert "Echo" in str(info.value) and "Other" in str(info.value)


def test_a_base_class_and_its_subclass_are_not_two_candidates(make_project) -> None:
    extra = "\nclass LoudEcho(Echo):\n    pass\n"
    root = make_project({"job.py": SIMPLE_PROJECT + extra})
    assert load_project(root / "job.py").service_cls.__name__ == "LoudEcho"


def test_unknown_config_lists_the_available_ones(make_project) -> None:
    root = make_project(PACKAGE_FILES)
    with pytest.raises(ConfigError) as info:
        load_project(root, "config_staging")
    message = str(info.value)
    assert "config_staging" in message and "config_dev, config_prod" in message
    assert info.value.exit_code == 2


def test_config_option_without_a_config_directory(make_project) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT})
    with pytest.raises(ConfigError, match="no config/ directory"):
        load_project(root / "job.py", "config_dev")


def test_loading_twice_reimports_changed_code(make_project) -> None:
    root = make_project({"job.py": SIMPLE_PROJECT})
    first = load_project(root / "job.py")
    (root / "job.py").write_text(SIMPLE_PROJECT.replace("class Echo", "class Echo2"))
    second = load_project(root / "job.py")
    assert first.service_cls.__name__ == "Echo"
    assert second.service_cls.__name__ == "Echo2"


def test_one_file_that_does_not_import_the_source_finds_it_in_its_directory(make_project) -> None:
    files = {
        "source.py": PACKAGE_FILES["source.py"],
        "service.py": """
            from batchframe import Service, Source, inject

            @inject
            class Printer(Service[str]):
                def __init__(self, source: Source):
                    self.source = source
                def process(self, item):
                    pass
        """,
        "other_tool.py": "VALUE = 1\n",
    }
    root = make_project(files)
    project = load_project(root / "service.py")
    assert project.source_cls.__name__ == "Lines"
    assert project.service_cls.__name__ == "Printer"


def test_a_single_file_in_a_folder_of_scripts_does_not_import_the_others(make_project) -> None:
    other = SIMPLE_PROJECT.replace("class Echo", "class OtherEcho").replace("class Numbers", "class OtherNumbers")
    root = make_project({"job.py": SIMPLE_PROJECT, "other_job.py": other})
    project = load_project(root / "job.py")
    assert (project.source_cls.__name__, project.service_cls.__name__) == ("Numbers", "Echo")
