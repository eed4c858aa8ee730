"""Preparing a run: the project loaded, its parameters resolved (``-p``, environment, defaults, prompts).

Nothing here creates a run folder or runs an item: ``exec --dry-run``, the UI's forms, ``resume`` and
``retry`` prepare a run the same way ``exec`` does.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchframe.configuration import Configuration
from batchframe.errors import UsageError
from batchframe.project.compat import fold_alias_assignments, fold_alias_specs, setting, sync_aliases
from batchframe.project.config_values import check_config_values
from batchframe.project.container import Wired, make_config, wire
from batchframe.project.load import Project, load_project, user_code_failed
from batchframe.project.params import (
    ParamSpec,
    env_values,
    merge_specs,
    missing_params,
    missing_params_error,
    params_of_class,
    resolve_values,
    split_assignments,
)
from batchframe.retry import RetryPolicy
from batchframe.run.limits import DriverSettings
from batchframe.run.metrics import check_metrics
from batchframe.run.notify import check_notify_url
from batchframe.runfolder.logs import FILE_ONLY
from batchframe.secret import Secret, fingerprint_secret, remember_secret

if TYPE_CHECKING:
    from batchframe.backends._factory import ServiceFactory

logger = logging.getLogger(__name__)

__all__ = [
    "AskMissing",
    "PreparedRun",
    "build_config",
    "collect_specs",
    "param_text",
    "prepare",
    "resolve_with_sources",
    "run_meta",
    "settings_from_config",
]

AskMissing = Callable[[Sequence[ParamSpec]], Mapping[str, Any]]


@dataclass
class PreparedRun:
    """A project loaded with its parameters resolved and settings validated; nothing has run yet."""

    project: Project
    specs: dict[str, ParamSpec]
    values: dict[str, Any]
    config: Configuration
    settings: DriverSettings
    given: dict[str, list[str]]
    config_name: str | None
    sources: dict[str, str] = field(default_factory=dict)
    """Where each value not from a default came from: ``-p``, ``BATCHFRAME_PARAM_<NAME>`` or ``prompt``."""
    notices: list[str] = field(default_factory=list)
    """Warnings for the run's log (a secret that changed since the run started)."""

    def recorded_params(self) -> list[str]:
        """``NAME=VALUE`` texts that give this run's values again (for resume), secrets left out.

        ``-p`` values are kept as typed; values from the environment or a prompt are written out.
        """
        recorded: list[str] = []
        for name, source in self.sources.items():
            if self.specs[name].secret:
                continue
            if source == "-p":
                recorded += [f"{name}={raw}" for raw in self.given[name]]
            else:
                recorded.append(f"{name}={param_text(self.values[name])}")
        return recorded

    def secrets(self) -> dict[str, dict[str, str]]:
        """Each secret's name -> where it came from and a salted hash of it (never the value)."""
        return {
            name: {"source": self.sources.get(name, "default"), **fingerprint_secret(value)}
            for name, value in self.values.items()
            if isinstance(value, Secret) and self.specs[name].secret
        }

    def service_factory(self, statics: Mapping[str, Any]) -> ServiceFactory:
        """How a worker process builds the same Service: the project, its config and the resolved values.

        Each call makes a new run key.

        Raises:
            ParamError: a parameter's value cannot be pickled (so it cannot reach a worker).
        """
        from batchframe.backends._factory import make_factory

        return make_factory(self.project, values=self.values, statics=statics, config=self.project.config_name)

    def build(self, statics: Mapping[str, Any]) -> Wired:
        """Build the project's Source and Service.

        Raises:
            UsageError: a constructor argument has nothing bound to it.
            RunError: a constructor of the user's raised (the message shows the user's frames).
        """
        project = self.project
        try:
            return wire(
                source_cls=project.source_cls,
                service_cls=project.service_cls,
                config=self.config,
                injectables=project.injectables,
                param_values=self.values,
                static_values=statics,
            )
        except LookupError as exc:
            configs = project.available_configs
            hint = (
                f"If it is your configuration, select one with -c ({', '.join(configs)})."
                if configs and project.config_name is None
                else "Bind it: decorate its class with @inject, or make it a BatchframeParam."
            )
            raise UsageError(f"Cannot build the project's objects: {exc}", hint=hint) from None
        except Exception as exc:
            raise user_code_failed(
                "Building the project", exc, hint="Fix the constructor that raised (frames below are from your code)."
            ) from exc


def collect_specs(project: Project) -> dict[str, ParamSpec]:
    """Every BatchframeParam of the project's classes and of its configuration, by name."""
    classes = [project.config_cls, *project.injectables]
    return fold_alias_specs(merge_specs(spec for cls in classes for spec in params_of_class(cls)))


def prepare(
    path: str | Path,
    *,
    config: str | None = None,
    params: Sequence[str] = (),
    ask_missing: AskMissing | None = None,
    warn_hooks: bool = True,
    environ: Mapping[str, str] | None = None,
) -> PreparedRun:
    """Load the project and resolve its parameters; raise a UsageError for anything wrong.

    A value comes from ``-p``, else a ``BATCHFRAME_PARAM_<NAME>`` environment variable, else the
    config's default, else a prompt (``ask_missing``).

    Args:
        path: the project (file, package or directory).
        config: the config name for ``-c``, or None.
        params: ``NAME=VALUE`` strings from ``-p``.
        ask_missing: asks the user for required parameters that have no value (None: error instead).
        warn_hooks: log a warning for a method that looks like a misspelt hook (not in worker processes).
        environ: where ``BATCHFRAME_PARAM_<NAME>`` variables are read (default: ``os.environ``).
    """
    given = fold_alias_assignments(split_assignments(params))
    project = load_project(path, config, warn_hooks=warn_hooks)
    specs = collect_specs(project)
    values, sources = resolve_with_sources(specs, given, environ)
    missing = missing_params(specs, values)
    if missing and ask_missing is not None:
        asked = ask_missing(missing)
        values.update(asked)
        sources.update(dict.fromkeys(asked, "prompt"))
        missing = missing_params(specs, values)
    if missing:
        raise missing_params_error(missing, project=str(path))
    for value in values.values():
        if isinstance(value, Secret):
            remember_secret(value)
    config_obj = build_config(project, values, specs)
    settings = settings_from_config(config_obj)
    check_notify_url(config_obj.notify_url)
    check_metrics(config_obj.metrics_textfile, config_obj.metrics_pushgateway)
    return PreparedRun(project, specs, values, config_obj, settings, given, config, sources)


def resolve_with_sources(
    specs: Mapping[str, ParamSpec], given: Mapping[str, list[str]], environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The values of ``-p`` (``given``), else of ``BATCHFRAME_PARAM_<NAME>``, else the defaults.

    Returns:
        name -> value (required parameters without one are absent), and name -> where each value
        not from a default came from (``-p`` or the variable's name).

    Raises:
        ParamError: an unknown ``-p`` name, or a value (given or from the environment) that does not parse.
    """
    values = resolve_values(specs, given)
    from_env, variables = env_values(specs, os.environ if environ is None else environ, skip=given)
    values.update(from_env)
    return values, {**dict.fromkeys(given, "-p"), **variables}


def log_warnings(prepared: PreparedRun) -> None:
    """Misspelt hooks, in logs.txt too (the console showed them when the project was loaded), and notices."""
    for warning in prepared.project.hook_warnings:
        logger.warning("%s", warning, extra=FILE_ONLY)
    for notice in prepared.notices:
        logger.warning("%s", notice)


def param_text(value: Any) -> str:
    """A parameter value as ``-p`` text that parses back to the same value."""
    import enum

    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, Secret):
        return param_text(value.get_secret_value())  # the text it was parsed from, for a child process
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(param_text(v) for v in value)
    return "none" if value is None else str(value)


def build_config(
    project: Project, values: Mapping[str, Any], specs: Mapping[str, ParamSpec] | None = None
) -> Configuration:
    """The project's configuration object with ``values``, its own values checked against their types.

    Raises:
        RunError: the configuration class raised (the message shows the user's frames).
        UsageError: it is not a batchframe Configuration, or a value it sets has the wrong type.
    """
    try:
        config = make_config(project.config_cls, values)
    except Exception as exc:
        raise user_code_failed(
            f"Building the configuration {project.config_cls.__qualname__}",
            exc,
            hint="Fix the configuration class (frames below are from your code).",
        ) from exc
    if not isinstance(config, Configuration):
        raise UsageError(f"{project.config_cls.__qualname__} is not a batchframe Configuration.")
    # A config class's own value of the wrong type ("false" for a bool) is refused, not taken as it is.
    # A required value not given yet (the UI checks a form before the server's environment adds it) is not.
    known = collect_specs(project) if specs is None else specs
    check_config_values(config, {name: spec for name, spec in known.items() if name in values or not spec.required})
    sync_aliases(config)
    return config


def settings_from_config(config: Configuration) -> DriverSettings:
    """The driver settings named by the runtime fields of a configuration (validated)."""
    retry = RetryPolicy(
        max_retries=setting(config, "max_retries"),
        base_s=config.retry_backoff_sec,
        cap_s=config.retry_backoff_max_sec,
        delays_s=setting(config, "retry_delays_sec"),
        max_delay_s=config.max_cooldown_sec,
    )
    return DriverSettings(
        concurrency=setting(config, "concurrency"),
        queue_size=setting(config, "queue_size"),
        retry=retry,
        item_timeout_s=config.item_timeout_sec,
        rate_per_s=config.max_per_second,
        rate_per_minute=config.max_per_minute,
        adaptive=config.adaptive,
    )


def run_meta(
    prepared: PreparedRun,
    *,
    path: str | Path,
    config: str | None,
    output_dir: Path,
    started: dt.datetime,
) -> dict[str, Any]:
    """What the journal records about a run, enough to run it again the same way (secrets excepted)."""
    from batchframe import __version__

    return {
        "kind": "run",
        "project": str(Path(path).resolve()),
        "config": config,
        "params": prepared.recorded_params(),
        "param_sources": dict(prepared.sources),
        "secrets": prepared.secrets(),
        "output_dir": str(output_dir.resolve()),
        "batchframe_version": __version__,
        "started_at": started.isoformat(timespec="seconds"),
        "fingerprint": fingerprint(prepared),
    }


def fingerprint(prepared: PreparedRun) -> dict[str, str]:
    """The resolved parameter values and configuration class: a resume must find the same."""
    values = {name: repr(value) for name, value in sorted(prepared.values.items())}
    return {"config_class": type(prepared.config).__qualname__, **values}
