from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
from pathlib import Path
from typing import Annotated, Literal, Optional

import pytest

from batchframe import BatchframeParam, Configuration, ParamError
from batchframe.errors import ConfigError
from batchframe.project.params import (
    merge_specs,
    missing_params,
    missing_params_error,
    params_of_class,
    parse_value,
    resolve_values,
    split_assignments,
)


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@pytest.mark.parametrize(
    ("annotation", "raw", "expected"),
    [
        (str, "hello world", "hello world"),
        (int, "42", 42),
        (int, "-3", -3),
        (float, "2.5", 2.5),
        (bool, "true", True),
        (bool, "No", False),
        (bool, "1", True),
        (bool, "off", False),
        (dt.datetime, "2026-11-25T10:30:00", dt.datetime(2026, 11, 25, 10, 30)),
        (dt.date, "2026-11-25", dt.date(2026, 11, 25)),
        (Path, "data/in.csv", Path("data/in.csv")),
        (Color, "RED", Color.RED),
        (Color, "green", Color.GREEN),
        (Literal["fast", "slow"], "slow", "slow"),
        (Literal[1, 2], "2", 2),
        (Optional[int], "7", 7),  # noqa: UP045
        (Optional[int], "none", None),  # noqa: UP045
        (int | None, "", None),
        (list[int], "1,2, 3", [1, 2, 3]),
        (list[int], ["1", "2,3"], [1, 2, 3]),
        (tuple[float, ...], "1,2.5", (1.0, 2.5)),
        (tuple[int, str], "1,a", (1, "a")),
        (set[str], "a,b,a", {"a", "b"}),
        (list[Path] | None, "a,b", [Path("a"), Path("b")]),
    ],
)
def test_parse_value_casts_each_supported_type(annotation, raw, expected) -> None:
    assert parse_value(annotation, raw) == expected


@pytest.mark.parametrize(
    ("annotation", "raw"),
    [
        (int, "abc"),
        (float, "fast"),
        (bool, "maybe"),
        (dt.date, "25/11/2026"),
        (Color, "BLUE"),
        (Literal["a", "b"], "c"),
        (list[int], "1,x"),
        (tuple[int, int], "1"),
        (int, ["1", "2"]),
    ],
)
def test_parse_value_rejects_bad_text(annotation, raw) -> None:
    with pytest.raises(ValueError):
        parse_value(annotation, raw)


@pytest.mark.parametrize(
    ("annotation", "raw", "message"),
    [
        (dt.date, "2026-13-45", "month must be in 1..12"),
        (dt.date, "2026-02-30", "day is out of range for month"),
        (dt.datetime, "2026-11-25T25:00", "hour must be in 0..23"),
        (dt.date, "25/11/2026", "expected an ISO date, e.g. 2026-11-25"),
    ],
)
def test_a_date_in_the_right_format_says_what_is_wrong_with_it(annotation, raw, message) -> None:
    with pytest.raises(ValueError, match=rf"^{re.escape(message)}$"):
        parse_value(annotation, raw)


def test_p_with_an_impossible_date_names_the_problem() -> None:
    specs = {s.name: s for s in params_of_class(Job)}
    with pytest.raises(ParamError, match="day is out of range for month"):
        resolve_values(specs, {"when": ["2026-02-30"]})


def test_split_assignments_groups_repeats_and_keeps_equals_in_values() -> None:
    assert split_assignments(["a=1", "b=x=y", "a=2", "c="]) == {"a": ["1", "2"], "b": ["x=y"], "c": [""]}


def test_split_assignments_without_equals_shows_the_right_spelling() -> None:
    with pytest.raises(ParamError) as info:
        split_assignments(["count"])
    assert "NAME=VALUE" in str(info.value)
    assert "-p count=VALUE" in str(info.value)
    assert info.value.exit_code == 2


class Job:
    def __init__(
        self,
        other: object = None,
        count: BatchframeParam[int] = 10,
        when: BatchframeParam[dt.date] = dt.date(2026, 1, 1),
        name: Annotated[str, BatchframeParam, "who to greet"] = "x",
        must: BatchframeParam[Path] = ...,  # type: ignore[assignment]
    ) -> None: ...


class Required:
    def __init__(self, token: BatchframeParam[str], retries: BatchframeParam[int]) -> None: ...


def test_params_of_class_finds_only_marked_arguments_with_defaults_and_descriptions() -> None:
    specs = {s.name: s for s in params_of_class(Job)}
    assert list(specs) == ["count", "when", "name", "must"]
    assert specs["count"].type is int and specs["count"].default == 10 and not specs["count"].required
    assert specs["name"].description == "who to greet"
    assert specs["when"].owner is Job
    required = params_of_class(Required)
    assert [s.required for s in required] == [True, True]


def test_configuration_params_include_runtime_fields_and_subclass_overrides() -> None:
    @dataclasses.dataclass
    class Mine(Configuration):
        api_key: BatchframeParam[str] = "k"
        plain: str = "not a param"

    class Override(Mine):  # a plain class attribute overrides a default, no @dataclass needed
        concurrency = 3
        extra: BatchframeParam[int] = 5

    specs = {s.name: s for s in params_of_class(Override)}
    assert specs["concurrency"].default == 3
    assert specs["concurrency"].owner is Configuration
    assert specs["api_key"].owner is Mine
    assert specs["extra"].default == 5
    assert "plain" not in specs
    assert {"max_retries", "retry_backoff_sec", "item_timeout_sec", "executor"} <= set(specs)


class OtherJob:
    def __init__(self, count: BatchframeParam[int] = 1) -> None: ...


class SubJob(Job):
    def __init__(self, count: BatchframeParam[int] = 99) -> None: ...


def test_merge_specs_rejects_the_same_name_on_two_unrelated_classes() -> None:
    with pytest.raises(ParamError) as info:
        merge_specs([*params_of_class(Job), *params_of_class(OtherJob)])
    message = str(info.value)
    assert "'count'" in message and "Job" in message and "OtherJob" in message
    assert info.value.exit_code == 2


def test_merge_specs_lets_a_subclass_redeclare_a_parameter() -> None:
    merged = merge_specs([*params_of_class(Job), *params_of_class(SubJob)])
    assert merged["count"].default == 99


def test_resolve_values_parses_given_and_fills_defaults() -> None:
    specs = merge_specs(params_of_class(Job))
    values = resolve_values(specs, {"count": ["5"]})
    assert values["count"] == 5
    assert values["when"] == dt.date(2026, 1, 1)


def test_unknown_parameter_suggests_the_closest_name() -> None:
    specs = merge_specs(params_of_class(Job))
    with pytest.raises(ParamError) as info:
        resolve_values(specs, {"cuont": ["5"]})
    assert "Did you mean 'count'?" in str(info.value)


def test_bad_value_names_the_parameter_the_type_and_the_value() -> None:
    specs = merge_specs(params_of_class(Job))
    with pytest.raises(ParamError) as info:
        resolve_values(specs, {"count": ["lots"]})
    message = str(info.value)
    assert "'count'" in message and "int" in message and "'lots'" in message


def test_missing_params_error_lists_every_missing_one_with_type() -> None:
    specs = merge_specs(params_of_class(Required))
    missing = missing_params(specs, resolve_values(specs, {}))
    assert [s.name for s in missing] == ["token", "retries"]
    message = str(missing_params_error(missing, project="job.py"))
    assert "token (str" in message and "retries (int" in message
    assert "-p token=... -p retries=..." in message


class GoogleDoc:
    """Does things.

    Args:
        count: how many things
            to do, at most.
        ignored: not a param.
    """

    def __init__(
        self, count: BatchframeParam[int] = 1, label: Annotated[str, BatchframeParam, "from Annotated"] = ""
    ) -> None:
        pass


class NumpyInitDoc:
    def __init__(self, when: BatchframeParam[dt.date], size: BatchframeParam[float] = 1.0) -> None:
        """Set up.

        Parameters
        ----------
        when : date
            the day to process
        size : float
            batch size in MB
        """


class AnnotatedWins:
    """Doc.

    Args:
        label: from the docstring
    """

    def __init__(self, label: Annotated[str, BatchframeParam, "from Annotated"] = "") -> None:
        pass


def test_descriptions_from_google_style_class_docstring() -> None:
    specs = {s.name: s for s in params_of_class(GoogleDoc)}
    assert specs["count"].description == "how many things to do, at most."
    assert specs["label"].description == "from Annotated"


def test_descriptions_from_numpy_style_init_docstring() -> None:
    specs = {s.name: s for s in params_of_class(NumpyInitDoc)}
    assert specs["when"].description == "the day to process"
    assert specs["size"].description == "batch size in MB"


def test_annotated_description_wins_over_the_docstring() -> None:
    assert params_of_class(AnnotatedWins)[0].description == "from Annotated"


def test_configuration_fields_take_descriptions_from_attributes_sections() -> None:
    @dataclasses.dataclass
    class Documented(Configuration):
        """My settings.

        Attributes:
            region: the cloud region to use
        """

        region: BatchframeParam[str] = "eu"

    specs = {s.name: s for s in params_of_class(Documented)}
    assert specs["region"].description == "the cloud region to use"
    assert specs["concurrency"].description == "number of items processed at the same time"


def test_parse_errors_say_what_was_expected() -> None:
    with pytest.raises(ValueError, match="a whole number"):
        parse_value(int, "abc")
    with pytest.raises(ValueError, match="ISO date"):
        parse_value(dt.date, "tomorrow")


# ------------------------------------------------------------------------- defaults from default_factory


def test_a_default_factory_beats_the_parents_plain_default_at_every_level() -> None:
    @dataclasses.dataclass
    class Base(Configuration):
        sizes: BatchframeParam[list[int] | None] = None

    @dataclasses.dataclass
    class Dev(Base):
        retry_delays_sec: list[float] | None = dataclasses.field(default_factory=lambda: [0.01, 0.02])
        sizes: BatchframeParam[list[int] | None] = dataclasses.field(default_factory=lambda: [4, 5])

    class Plain(Dev):  # no @dataclass: field(...) stays a class attribute
        max_retries = 7
        tags: BatchframeParam[list[str]] = dataclasses.field(default_factory=lambda: ["a"])

    class Later(Plain):  # a plain attribute below a factory wins
        sizes = [9]

    specs = {s.name: s for s in params_of_class(Plain)}
    assert specs["retry_delays_sec"].default == [0.01, 0.02]
    assert specs["sizes"].default == [4, 5]
    assert specs["tags"].default == ["a"] and not specs["tags"].required
    assert specs["max_retries"].default == 7
    assert {s.name: s for s in params_of_class(Later)}["sizes"].default == [9]
    assert {s.name: s for s in params_of_class(Base)}["sizes"].default is None


def test_a_default_factory_that_raises_is_a_config_error_naming_the_field() -> None:
    def broken() -> list[int]:
        raise RuntimeError("no network")

    @dataclasses.dataclass
    class Broken(Configuration):
        sizes: BatchframeParam[list[int]] = dataclasses.field(default_factory=broken)

    with pytest.raises(ConfigError, match=r"default_factory of .*Broken\.sizes raised RuntimeError: no network"):
        params_of_class(Broken)


FACTORY_JOB = """
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from batchframe import BatchframeParam, Configuration, Service, Source

@dataclass
class Settings(Configuration):
    retry_backoff_sec: float = 3600.0  # what a retry waits if the factory's delays are ignored
    {delays}: list[float] = field(default_factory=lambda: [0.01, 0.01])
    sizes: BatchframeParam[list[int]] = field(default_factory=lambda: [1, 2, 3])

class One(Source[int]):
    def __len__(self):
        return 1
    def __iter__(self):
        return iter([0])

class Flaky(Service[int]):
    starts = []
    def __init__(self, config: Settings):
        self.config = config
    def process(self, item):
        Flaky.starts.append(time.monotonic())
        if len(Flaky.starts) <= 2:
            raise ConnectionError("flaky")
        gaps = [b - a for a, b in zip(Flaky.starts, Flaky.starts[1:])]
        seen = {{"sizes": self.config.sizes, "delays": self.config.retry_delays_sec, "gaps": gaps}}
        Path("seen.json").write_text(json.dumps(seen))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["retry_delays_sec", "executor_backoff_times_sec"])
def test_default_factories_are_shown_and_used_by_the_cli(make_project, name: str) -> None:
    import json

    from helpers import batchframe_cli, only_run_dir

    project = make_project({"job.py": FACTORY_JOB.format(delays=name)})
    listed = batchframe_cli("params", "job.py", cwd=project, COLUMNS="250")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split("│")[1].strip(): line for line in listed.stdout.splitlines() if line.count("│") > 3}
    assert "[0.01, 0.01]" in rows["retry_delays_sec"]
    assert "[1, 2, 3]" in rows["sizes"]

    # Ignoring the factory, a retry waits up to an hour (retry_backoff_sec): the timeout fails the test.
    result = batchframe_cli("exec", "job.py", "-d", "out", cwd=project, timeout=60)
    assert result.returncode == 0, result.stderr
    seen = json.loads((project / "seen.json").read_text())
    assert seen["sizes"] == [1, 2, 3] and seen["delays"] == [0.01, 0.01]
    assert len(seen["gaps"]) == 2 and all(gap >= 0.009 for gap in seen["gaps"])  # the delays were waited
    fingerprint = json.loads((only_run_dir(project / "out") / "summary.json").read_text())["run"]["fingerprint"]
    assert fingerprint["retry_delays_sec"] == "[0.01, 0.01]"
