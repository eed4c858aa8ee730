"""The forms layer of ``batchframe ui``: a project's parameters as fields, a submitted form as ``-p`` text.

Each ``describe``/``validate`` call starts a child process (~0.4 s), so each test groups its assertions
around one or two calls.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from helpers import batchframe_cli, only_run_dir

from batchframe import Secret
from batchframe.errors import BatchframeError, ParamError, ProjectError
from batchframe.project.load import load_project
from batchframe.project.params import resolve_values
from batchframe.run.prepare import collect_specs
from batchframe.ui import _forms
from batchframe.ui._forms import FieldSpec, FormError, describe, validate, widget_for

MISSING = dataclasses.MISSING

# Every widget, with and without defaults and descriptions; it prints at import (both ways a module
# can) and the form must not care.
KITCHEN_SINK = """
import datetime as dt
import enum
import os
from pathlib import Path
from typing import Annotated, Literal, Optional

from batchframe import BatchframeParam, Service, Source, inject

print("printed at import")
os.write(1, b"written to fd 1 at import\\n")


class Color(enum.Enum):
    RED = "r"
    GREEN = "g"


@inject
class Numbers(Source[int]):
    def __init__(
        self,
        name: Annotated[str, BatchframeParam, "who runs it"],
        count: Annotated[int, BatchframeParam, "how many items"] = 3,
        ratio: BatchframeParam[float] = 0.5,
        loud: BatchframeParam[bool] = True,
        confirm: BatchframeParam[bool] = None,
        day: BatchframeParam[dt.date] = dt.date(2026, 11, 25),
        when: BatchframeParam[dt.datetime] = dt.datetime(2026, 11, 25, 10, 30),
        color: BatchframeParam[Color] = Color.GREEN,
        mode: BatchframeParam[Literal["fast", "slow"]] = "fast",
        out: BatchframeParam[Path] = Path("out/data"),
        sizes: BatchframeParam[list[int]] = [1, 2],
        limit: BatchframeParam[Optional[int]] = 10,
        *,
        start: BatchframeParam[dt.date],
    ):
        self.count = count

    def __iter__(self):
        yield from range(self.count)


@inject
class Echo(Service[int]):
    def process(self, item):
        pass
"""

RUNTIME = [
    "concurrency",
    "queue_size",
    "max_retries",
    "retry_backoff_sec",
    "retry_backoff_max_sec",
    "retry_delays_sec",
    "max_cooldown_sec",
    "item_timeout_sec",
    "max_per_second",
    "max_per_minute",
    "adaptive",
    "executor",
    "scheduler",
    "scheduler_timeout_sec",
    "journal",
    "persist_unread_max",
    "log_levels",
    "metrics_textfile",
    "metrics_pushgateway",
    "notify_url",
]

# What a form left untouched submits: the defaults (as text), ticked checkboxes, nothing for the rest.
UNTOUCHED = {"count": ["3"], "ratio": ["0.5"], "loud": ["on"], "color": ["GREEN"], "sizes": ["1\n2"], "journal": ["on"]}


@pytest.fixture
def sink(make_project: Callable[..., Path]) -> Path:
    return make_project({"job.py": KITCHEN_SINK}) / "job.py"


class Shade(enum.IntEnum):
    DARK = 1
    LIGHT = 2


@pytest.mark.parametrize(
    ("annotation", "default", "expected"),
    [
        (str, MISSING, ("text", (), False)),
        (int, 3, ("int", (), False)),
        (float, MISSING, ("float", (), False)),
        (bool, False, ("bool", (), False)),
        (bool, MISSING, ("select", ("true", "false"), False)),
        (bool | None, None, ("select", ("true", "false"), True)),
        (bool | None, True, ("bool", (), True)),
        (dt.date, MISSING, ("date", (), False)),
        (dt.datetime, MISSING, ("datetime", (), False)),
        (Shade, Shade.DARK, ("select", ("DARK", "LIGHT"), False)),
        (Literal["a", 2], "a", ("select", ("a", "2"), False)),
        (Path, MISSING, ("path", (), False)),
        (list[int], MISSING, ("list", (), False)),
        (tuple[float, ...], (), ("list", (), False)),
        (set[str], MISSING, ("list", (), False)),
        (frozenset[Path], MISSING, ("list", (), False)),
        (int | None, None, ("int", (), True)),
        (list[float] | None, None, ("list", (), True)),
        (int | str, 1, ("text", (), False)),
        (int | str | None, None, ("text", (), True)),
        (dict[str, int], MISSING, ("text", (), False)),
        (Any, MISSING, ("text", (), False)),
        (Secret, MISSING, ("secret", (), False)),
        (Secret[str], "", ("secret", (), False)),
        (Secret | None, None, ("secret", (), True)),
    ],
)
def test_widget_for_each_type(annotation: Any, default: Any, expected: tuple[str, tuple[str, ...], bool]) -> None:
    assert widget_for(annotation, default) == expected


def test_describe_lists_every_field_with_its_widget_default_and_group(sink: Path) -> None:
    form = describe(sink, None)

    assert (form.path, form.config, form.configs) == (str(sink), None, ())
    fields = {field.name: field for field in form.fields}
    names = [field.name for field in form.fields]
    project = ["name", "count", "ratio", "loud", "confirm", "day", "when", "color", "mode", "out", "sizes", "limit"]
    assert names == [*project, "start", *RUNTIME]  # the project's in declaration order, then the runtime's
    assert {fields[n].group for n in [*project, "start"]} == {"project"}
    assert {fields[n].group for n in RUNTIME} == {"runtime"}
    assert fields["name"] == FieldSpec("name", "str", "who runs it", True, "text", owner="Numbers")
    assert fields["count"] == FieldSpec("count", "int", "how many items", False, "int", default="3", owner="Numbers")
    assert (fields["ratio"].widget, fields["ratio"].default) == ("float", "0.5")
    assert (fields["loud"].widget, fields["loud"].default) == ("bool", "true")
    assert (fields["confirm"].widget, fields["confirm"].choices, fields["confirm"].default) == (
        "select",
        ("true", "false"),
        None,
    )
    assert (fields["day"].widget, fields["day"].default) == ("date", "2026-11-25")
    assert (fields["when"].widget, fields["when"].default) == ("datetime", "2026-11-25T10:30:00")
    assert (fields["color"].widget, fields["color"].choices, fields["color"].default) == (
        "select",
        ("RED", "GREEN"),
        "GREEN",
    )
    assert (fields["mode"].type_name, fields["mode"].choices) == ("one of 'fast', 'slow'", ("fast", "slow"))
    assert (fields["out"].widget, fields["out"].default) == ("path", "out/data")
    assert (fields["sizes"].widget, fields["sizes"].type_name, fields["sizes"].default) == ("list", "list[int]", "1\n2")
    assert (fields["limit"].widget, fields["limit"].optional, fields["limit"].default) == ("int", True, "10")
    assert (fields["start"].required, fields["start"].default) == (True, None)
    # The runtime settings: descriptions, defaults, 0.0.1a13 aliases folded away.
    assert fields["concurrency"] == FieldSpec(
        "concurrency",
        "int",
        "number of items processed at the same time",
        False,
        "int",
        default="8",
        group="runtime",
        owner="Configuration",
    )
    assert (fields["queue_size"].optional, fields["queue_size"].default) == (True, None)
    assert (fields["retry_delays_sec"].widget, fields["retry_delays_sec"].optional) == ("list", True)
    assert fields["executor"].choices == ("asyncio", "threads", "processes", "dask", "ray")
    assert not any(name.startswith("executor_") for name in names)


def test_validate_turns_good_values_into_the_assignments_exec_takes(sink: Path) -> None:
    submitted = {
        **UNTOUCHED,
        "csrf": ["token"],  # not a parameter: ignored
        "config": [""],
        "name": "Ada Lovelace",  # a bare string is one value
        "count": ["7"],
        "loud": [],  # unticked, and the default is true
        "confirm": ["false"],
        "day": ["2026-01-31"],
        "when": ["2026-01-31T08:15"],
        "color": ["RED"],
        "mode": ["slow"],
        "out": [""],  # left empty: the default applies
        "sizes": ["4\r\n\r\n 5 \n6\n"],  # one item per non-empty line
        "limit": ["99"],
        "limit__unset": ["on"],  # the unset box wins over the text
        "start": ["2026-02-01"],
        "concurrency": ["2"],
        "retry_delays_sec": ["0.5\n1"],
        "queue_size__unset": ["on"],  # already none by default: nothing to say
        "journal": ["on"],  # ticked, as by default
    }
    assignments, errors, environment = validate(sink, None, submitted)

    assert errors == {} and environment == {}
    assert assignments == [
        "name=Ada Lovelace",
        "count=7",
        "loud=false",
        "confirm=false",
        "day=2026-01-31",
        "when=2026-01-31T08:15",
        "color=RED",
        "mode=slow",
        "sizes=4",
        "sizes=5",
        "sizes=6",
        "limit=none",
        "start=2026-02-01",
        "concurrency=2",
        "retry_delays_sec=0.5",
        "retry_delays_sec=1",
    ]


def test_validate_gives_the_clis_message_for_each_bad_or_missing_value(sink: Path, tmp_path: Path) -> None:
    submitted = {
        **UNTOUCHED,
        "count": ["abc"],
        "day": ["2026-13-01"],
        "color": ["BLUE"],
        "sizes": ["1\n2,3"],
        "start": [" "],
    }
    assignments, errors, _ = validate(sink, None, submitted)

    assert sorted(errors) == ["color", "count", "day", "name", "sizes", "start"]
    specs = collect_specs(load_project(sink))
    for name, raw in [("count", "abc"), ("day", "2026-13-01"), ("color", "BLUE")]:
        with pytest.raises(ParamError) as raised:
            resolve_values(specs, {name: [raw]})
        assert errors[name] == raised.value.message
    assert errors["count"] == "Parameter 'count' expects int, but got 'abc': expected a whole number, e.g. 42."
    assert errors["name"] == "Missing required parameter:\n  - name (str, Numbers): who runs it"
    assert errors["start"] == "Missing required parameter:\n  - start (date, Numbers)"
    assert "'2,3'" in errors["sizes"] and "commas" in errors["sizes"]
    assert assignments == []  # the good fields say nothing: they are the defaults

    cli = batchframe_cli("exec", sink, "-p", "name=x", "-p", "start=2026-01-01", "-p", "count=abc", cwd=tmp_path)
    assert cli.returncode == 2
    assert errors["count"] in cli.stderr


def test_validate_checks_the_settings_as_exec_does(sink: Path) -> None:
    submitted = {**UNTOUCHED, "name": ["x"], "start": ["2026-01-01"], "concurrency": ["0"]}
    assignments, errors, _ = validate(sink, None, submitted)

    assert errors == {"concurrency": "concurrency must be a whole number greater than 0, got 0."}
    assert assignments == ["name=x", "start=2026-01-01", "concurrency=0"]


# A package with a shared config in config/__init__.py, two base configs (abc.ABC, and 0.0.1a13's
# metaclass=ABCMeta) that must not be offered, and two concrete configs.
CONFIGS = {
    "job/__init__.py": "",
    "job/source.py": """
        from batchframe import BatchframeParam, Source, inject

        @inject
        class Numbers(Source[int]):
            def __init__(self, count: BatchframeParam[int] = 3):
                self.count = count

            def __iter__(self):
                yield from range(self.count)
    """,
    "job/service.py": """
        from batchframe import Service, inject

        @inject
        class Echo(Service[int]):
            def process(self, item):
                pass
    """,
    "job/config/__init__.py": """
        from dataclasses import dataclass
        from batchframe import BatchframeParam, Configuration

        @dataclass
        class JobConfig(Configuration):
            region: BatchframeParam[str] = "base"
    """,
    "job/config/abstract_legacy.py": """
        from abc import ABCMeta
        from dataclasses import dataclass
        from . import JobConfig

        @dataclass
        class AbstractLegacy(JobConfig, metaclass=ABCMeta):
            region: str = "legacy"
    """,
    "job/config/config_base.py": """
        import abc
        from dataclasses import dataclass
        from . import JobConfig

        @dataclass
        class BaseConfig(JobConfig, abc.ABC):
            region: str = "abstract"
    """,
    "job/config/config_dev.py": """
        from dataclasses import dataclass
        from .abstract_legacy import AbstractLegacy

        @dataclass
        class DevConfig(AbstractLegacy):
            region: str = "dev"
            executor_consumers: int = 2  # 0.0.1a13's name of concurrency
    """,
    "job/config/config_prod.py": """
        from dataclasses import dataclass
        from batchframe import BatchframeParam
        from . import JobConfig

        @dataclass
        class ProdConfig(JobConfig):
            shards: BatchframeParam[int] = 4
            region: str = "prod"
    """,
}


def test_configs_offer_the_concrete_ones_and_each_has_its_own_form(make_project: Callable[..., Path]) -> None:
    job = make_project(CONFIGS) / "job"

    dev = describe(job, None)  # the CLI would ask for -c: the form starts with the first concrete config
    prod = describe(job, "config_prod")

    assert (dev.config, dev.configs) == ("config_dev", ("config_dev", "config_prod"))
    assert (prod.config, prod.configs) == ("config_prod", ("config_dev", "config_prod"))
    dev_fields = {field.name: field for field in dev.fields}
    prod_fields = {field.name: field for field in prod.fields}
    assert [f.name for f in dev.fields if f.group == "project"] == ["region", "count"]
    assert [f.name for f in prod.fields if f.group == "project"] == ["region", "shards", "count"]
    assert (dev_fields["region"].default, prod_fields["region"].default) == ("dev", "prod")
    assert (prod_fields["shards"].default, prod_fields["shards"].owner) == ("4", "ProdConfig")
    assert (dev_fields["concurrency"].default, prod_fields["concurrency"].default) == ("2", "8")
    assert "executor_consumers" not in dev_fields


@pytest.mark.timeout(60)
def test_validated_assignments_run_with_exec(make_project: Callable[..., Path], tmp_path: Path) -> None:
    job = make_project(CONFIGS) / "job"
    submitted = {"config": ["config_prod"], "count": ["5"], "shards": ["2"], "region": ["eu west"], "journal": []}

    assignments, errors, _ = validate(job, "config_prod", submitted)
    assert errors == {}
    assert assignments == ["region=eu west", "shards=2", "count=5", "journal=false"]

    params = [arg for assignment in assignments for arg in ("-p", assignment)]
    result = batchframe_cli(
        "exec", job, "-c", "config_prod", *params, "-d", tmp_path / "out", "--no-input", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(tmp_path / "out")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["succeeded"] == 5
    assert not (run_dir / "journal.sqlite").exists()


SOURCE_AND_SERVICE = """
from batchframe import Service, Source

class Numbers(Source[int]):
    def __iter__(self):
        yield 1

class Echo(Service[int]):
    def process(self, item):
        pass
"""


@pytest.mark.parametrize(
    ("files", "path", "config"),
    [
        ({"job.py": "def broken(:\n    pass\n"}, "proj/job.py", None),
        ({"job.py": "raise RuntimeError('no database at import')\n" + SOURCE_AND_SERVICE}, "proj/job.py", None),
        ({}, "proj/missing.py", None),
        ({"job.py": SOURCE_AND_SERVICE, "config/config_dev.py": ""}, "proj", "config_typo"),
    ],
    ids=["syntax-error", "raises-at-import", "missing-path", "unknown-config"],
)
def test_a_broken_project_raises_the_clis_error(
    make_project: Callable[..., Path], files: dict[str, str], path: str, config: str | None
) -> None:
    make_project(files)
    with pytest.raises(BatchframeError) as expected:
        load_project(path, config)

    with pytest.raises(FormError) as raised:
        describe(path, config)

    error, cli = raised.value, expected.value
    assert (error.message, error.hint, error.title) == (cli.message, cli.hint, cli.title)
    if isinstance(cli, ProjectError) and cli.user_traceback:
        assert error.user_traceback == cli.user_traceback
        assert "no database at import" in error.user_traceback


def test_a_project_that_kills_its_process_is_reported(make_project: Callable[..., Path]) -> None:
    job = make_project({"job.py": "import sys, os\nprint('bye', file=sys.stderr)\nos._exit(3)\n"}) / "job.py"

    with pytest.raises(FormError, match="stopped the process that loads it") as raised:
        validate(job, None, {})

    assert "bye" in raised.value.message
    assert raised.value.hint == f"Run batchframe params {job} to see what happens."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    # A killed grandchild is reparented; until its new parent reaps it, it is a zombie: dead all the same.
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


@pytest.mark.timeout(30)
def test_a_project_that_blocks_at_import_is_stopped(make_project: Callable[..., Path], tmp_path: Path) -> None:
    blocking = f"""
        import os, subprocess, time
        sleeper = subprocess.Popen(["sleep", "3600"])
        with open({str(tmp_path / "pids")!r}, "w") as pids:
            pids.write(f"{{os.getpid()}} {{sleeper.pid}}")
        time.sleep(3600)
    """
    job = make_project({"job.py": blocking}) / "job.py"

    with pytest.raises(FormError, match="took longer than 2 s to load") as raised:
        describe(job, None, timeout_s=2)

    assert "batchframe params" in (raised.value.hint or "")
    child, grandchild = map(int, (tmp_path / "pids").read_text().split())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)
    assert not _alive(grandchild)


# ------------------------------------------------------------------------------------------ secrets

SECRETS = {
    "job.py": """
        from batchframe import BatchframeParam, Secret, Service, Source

        class Numbers(Source[int]):
            def __init__(
                self,
                spare: BatchframeParam[Secret] = "fallback-spare-0000",
                maybe: BatchframeParam[Secret | None] = None,
                count: BatchframeParam[int] = 2,
                *,
                key: BatchframeParam[Secret],
            ):
                self.count = count

            def __iter__(self):
                yield from range(self.count)

        class Echo(Service[int]):
            def process(self, item):
                pass
    """,
    "config/config_dev.py": """
        from dataclasses import dataclass
        from batchframe import BatchframeParam, Configuration, Secret

        @dataclass
        class Dev(Configuration):
            api_token: BatchframeParam[Secret] = None

            def __post_init__(self):
                if self.api_token is None:
                    return
                if self.api_token.get_secret_value().startswith("revoked-"):
                    raise ValueError(f"the token {self.api_token.get_secret_value()} is revoked")
    """,
}


@pytest.fixture
def secret_job(make_project: Callable[..., Path]) -> Path:
    return make_project(SECRETS) / "job.py"


@pytest.fixture
def child_argv(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The command line of every child that ``describe`` and ``validate`` start."""
    seen: list[list[str]] = []
    real = _forms.subprocess.Popen

    def recording(args: list[str], *rest: Any, **options: Any) -> Any:
        seen.append([str(arg) for arg in args])
        return real(args, *rest, **options)

    monkeypatch.setattr(_forms.subprocess, "Popen", recording)
    return seen


def test_a_secret_is_a_password_field_whose_default_is_never_described(secret_job: Path) -> None:
    form = describe(secret_job, None)

    fields = {field.name: field for field in form.fields}
    assert (fields["spare"].widget, fields["spare"].required, fields["spare"].default) == ("secret", False, None)
    assert (fields["maybe"].widget, fields["maybe"].optional) == ("secret", True)
    assert (fields["key"].widget, fields["key"].required, fields["key"].type_name) == ("secret", True, "Secret")
    assert fields["api_token"].widget == "secret"
    assert "fallback-spare-0000" not in repr(form)


def test_a_secret_comes_back_as_an_environment_variable_never_as_p(
    secret_job: Path, child_argv: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    token, key = "tok-5e5fa1d2-only-in-the-form", "key with spaces, commas = and more"
    submitted = {"key": [key], "api_token": [token], "spare": [""], "maybe": ["  "], "count": ["3"], "journal": ["on"]}

    assignments, errors, environment = validate(secret_job, None, submitted)

    assert errors == {}
    assert assignments == ["count=3"]  # an empty secret is not given: its default applies
    assert environment == {"BATCHFRAME_PARAM_KEY": key, "BATCHFRAME_PARAM_API_TOKEN": token}
    assert child_argv and not any(token in arg or key in arg for argv in child_argv for arg in argv)

    monkeypatch.setenv("BATCHFRAME_PARAM_KEY", "from-the-server")  # the launched run inherits it
    assert validate(secret_job, None, {"key": [""], "journal": ["on"]}) == ([], {}, {})


def test_a_secret_never_comes_back_in_an_error(
    secret_job: Path, child_argv: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    assignments, errors, environment = validate(secret_job, None, {"key": ["  "], "maybe": ["none"], "journal": ["on"]})
    assert errors == {"key": "Missing required parameter:\n  - key (Secret, Numbers)"}  # blank: not given
    assert environment == {} and assignments == ["maybe=none"]  # None is no secret: -p is fine

    revoked = "revoked-77f0c3a9b1"
    with pytest.raises(FormError) as raised:
        validate(secret_job, None, {"key": ["k"], "api_token": [revoked], "journal": ["on"]})

    error = raised.value
    shown = f"{error.message}\n{error.hint}\n{error.user_traceback}"
    assert "is revoked" in shown and "**********" in shown  # the user's own message, the value blanked
    assert revoked not in shown
    assert not any(revoked in arg for argv in child_argv for arg in argv)

    monkeypatch.setenv("BATCHFRAME_PARAM_API_TOKEN", revoked)  # left empty: the server's is checked, masked
    with pytest.raises(FormError, match="is revoked") as raised:
        validate(secret_job, None, {"key": ["k"], "api_token": [""], "journal": ["on"]})
    assert revoked not in f"{raised.value.message}\n{raised.value.user_traceback}"
