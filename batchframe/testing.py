"""Helpers for testing your batchframe project with pytest (or any test runner).

``run_service`` runs your Service over a list of items in-process, with your configuration and
parameters, and tells you which items succeeded and which failed (with their exceptions)::

    from batchframe.testing import run_service
    from myjob.config.config_dev import DevConfig
    from myjob.service import MyService

    def test_bad_rows_fail():
        result = run_service(MyService, [{"email": "a@example.com"}, {"email": "nope"}], config=DevConfig)
        assert result.succeeded == [{"email": "a@example.com"}]
        assert result.failed[0].error_type == "ValueError"

``run_project`` runs a whole project as ``batchframe exec`` would, without a terminal. Neither
leaves files behind unless you pass ``output_dir``.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchframe.configuration import Configuration
from batchframe.project.container import Wired, make_config, marked_classes, wire
from batchframe.project.params import (
    ParamSpec,
    merge_specs,
    missing_params,
    missing_params_error,
    params_of_class,
    resolve_values,
    unknown_param_error,
)
from batchframe.run.commands import run_project as _run_project
from batchframe.run.execute import RunPlan, RunResult, execute
from batchframe.run.limits import DriverSettings
from batchframe.run.prepare import param_text, settings_from_config
from batchframe.runfolder.failures import FailedItem
from batchframe.runfolder.outcome import Outcome
from batchframe.runfolder.stats import Stats
from batchframe.source import Source

if TYPE_CHECKING:
    from batchframe.backends._factory import ServiceFactory

__all__ = ["ServiceResult", "run_project", "run_service"]


@dataclass
class ServiceResult:
    """What ``run_service`` did.

    Attributes:
        succeeded: the items that succeeded, in the order they finished.
        failed: the items that failed, each with ``item``, ``error_type``, ``message``, ``attempts``
            and ``exception``.
        stats: the driver's counters.
        service: the Service instance that processed the items (inspect its state).
        config: the configuration instance used.
    """

    succeeded: list[Any]
    failed: list[FailedItem]
    stats: Stats
    service: Any
    config: Configuration

    @property
    def failed_items(self) -> list[Any]:
        """Just the items that failed."""
        return [record.item for record in self.failed]


class _ListSource(Source[Any]):
    def __init__(self, items: Iterable[Any]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Any:
        return iter(self.items)


def run_service(
    service_cls: type,
    items: Iterable[Any],
    *,
    config: type[Configuration] | Configuration | None = None,
    params: Mapping[str, Any] | None = None,
    output_dir: Path | None = None,
) -> ServiceResult:
    """Run ``service_cls`` over ``items`` in-process and return what succeeded and what failed.

    The Service is built as in a real run: its constructor arguments are injected (``source`` is a
    Source over ``items``, ``config`` the configuration), retries and timeouts follow the
    configuration. ``finish()`` is called at the end; exceptions from it propagate.

    Args:
        service_cls: your Service class.
        items: the work items.
        config: a Configuration class (built with ``params``) or a ready instance; default the base one.
        params: parameter values by name; typed values as they are, strings parsed as ``-p`` would.
        output_dir: where ``_output_directory``/``_current_run_output_dir`` point (default: a temporary
            directory, removed afterwards).

    Raises:
        ParamError: an unknown parameter, a value that does not parse, or a missing required one.
    """
    config_cls = config if isinstance(config, type) else type(config) if config is not None else Configuration
    injectables = _related_injectables(service_cls)
    specs = merge_specs(spec for cls in (config_cls, service_cls, *injectables) for spec in params_of_class(cls))
    values = _resolve(specs, params or {})
    config_obj = config if isinstance(config, Configuration) else make_config(config_cls, values)
    items = list(items)
    under_test = _ServiceUnderTest(service_cls, injectables, config_obj, values, _ListSource(items))
    with tempfile.TemporaryDirectory(prefix="batchframe-test-") as scratch:
        run_dir = Path(output_dir) if output_dir is not None else Path(scratch)
        plan = RunPlan(run_dir, run_dir, dt.datetime.now(), quiet=True, keep=True)
        result = execute(under_test, plan, None)
    if result.outcome is Outcome.FATAL and result.fatal_error is not None:
        raise result.fatal_error  # finish() raised, or the run could not go on: the test sees why
    succeeded = [items[index] for index in result.succeeded_positions]
    return ServiceResult(succeeded, result.failed, result.stats, result.service, config_obj)


@dataclass
class _ServiceUnderTest:
    """What ``execute`` runs for ``run_service``: the user's Service over a list of items."""

    service_cls: type
    injectables: list[type]
    config: Configuration
    values: dict[str, Any]
    source: Source[Any]
    settings: DriverSettings = field(init=False)

    def __post_init__(self) -> None:
        self.settings = settings_from_config(self.config)

    def build(self, statics: Mapping[str, Any]) -> Wired:
        return wire(
            source_cls=None,
            service_cls=self.service_cls,
            config=self.config,
            injectables=self.injectables,
            param_values=self.values,
            static_values=statics,
            source=self.source,
        )

    def service_factory(self, statics: Mapping[str, Any]) -> ServiceFactory | None:
        return None  # the Service under test is built here only: worker back ends need a project


def run_project(
    path: str | Path,
    *,
    config: str | None = None,
    params: Mapping[str, Any] | None = None,
    output_dir: Path | None = None,
) -> RunResult:
    """Run a whole project as ``batchframe exec PATH -c CONFIG -p ...`` would, off a terminal.

    Args:
        path: the project (file, package or directory).
        config: the config name, e.g. ``"config_dev"``.
        params: parameter values by name (turned into ``-p NAME=VALUE``).
        output_dir: where the run folder goes (default: a temporary directory, removed afterwards;
            pass pytest's ``tmp_path`` to inspect ``failed.jsonl`` and friends).
    """
    assignments = [f"{name}={param_text(value)}" for name, value in (params or {}).items()]
    if output_dir is not None:
        return _run_project(path, config=config, params=assignments, output_dir=Path(output_dir), keep=True)
    with tempfile.TemporaryDirectory(prefix="batchframe-test-") as scratch:
        return _run_project(path, config=config, params=assignments, output_dir=Path(scratch), keep=True)


def _related_injectables(service_cls: type) -> list[type]:
    """The @inject classes of the Service's own package, except Sources (the items replace them)."""
    package = service_cls.__module__.split(".")[0]
    return [
        cls
        for cls in marked_classes()
        if cls.__module__.split(".")[0] == package
        and not issubclass(cls, (Source, Configuration))
        and (cls.__module__, cls.__qualname__) != (service_cls.__module__, service_cls.__qualname__)
    ]


def _resolve(specs: Mapping[str, ParamSpec], params: Mapping[str, Any]) -> dict[str, Any]:
    for name in params:
        if name not in specs:
            raise unknown_param_error(name, specs)
    values = resolve_values(specs, {k: [v] for k, v in params.items() if isinstance(v, str)})
    values.update({k: v for k, v in params.items() if not isinstance(v, str)})
    missing: Sequence[ParamSpec] = missing_params(specs, values)
    if missing:
        raise missing_params_error(missing)
    return values
