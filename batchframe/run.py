"""One run, end to end: load the project, resolve parameters, create the run folder, execute, summarise.

``run_project()`` is the facade the CLI calls (and tests may call): it returns a ``RunResult`` and
raises ``BatchframeError`` for anything that stops a run before or while it executes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
import shutil
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchframe import summary
from batchframe._console import console
from batchframe._logging import run_logging
from batchframe.configuration import Configuration
from batchframe.container import make_config, wire
from batchframe.errors import RunError, UsageError
from batchframe.executor import Executor, ExecutorSettings, Outcome, Stats
from batchframe.failures import FailedItem, FailureLog
from batchframe.params import (
    ParamSpec,
    merge_specs,
    missing_params,
    missing_params_error,
    params_of_class,
    resolve_values,
    split_assignments,
)
from batchframe.progress import LOG_INTERVAL_S, make_progress
from batchframe.project import Project, load_project, user_frames
from batchframe.retry import RetryPolicy
from batchframe.supervisor import Supervisor

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_DIR = Path("batchframe_outputs")
RUN_DIR_FORMAT = "%Y-%m-%dT%H-%M-%S"

EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_FAILED_ITEMS = 0, 1, 2, 3
EXIT_SIGINT, EXIT_SIGTERM = 130, 143

AskMissing = Callable[[Sequence[ParamSpec]], Mapping[str, Any]]


@dataclass
class RunResult:
    """What a run did.

    Attributes:
        run_dir: the run folder (logs.txt, failed.jsonl, summary.json).
        stats: the final counters.
        outcome: completed, stopped or fatal.
        exit_code: the process exit code for this run (0, 1, 3, 130 or 143).
        failed: every item that did not succeed.
    """

    run_dir: Path
    stats: Stats
    outcome: Outcome
    exit_code: int
    failed: list[FailedItem]


@dataclass
class PreparedRun:
    """A project loaded with its parameters resolved and settings validated; nothing has run yet."""

    project: Project
    specs: dict[str, ParamSpec]
    values: dict[str, Any]
    config: Configuration
    settings: ExecutorSettings


def collect_specs(project: Project) -> dict[str, ParamSpec]:
    """Every BatchframeParam of the project's classes and of its configuration, by name."""
    classes = [project.config_cls, *project.injectables]
    return merge_specs(spec for cls in classes for spec in params_of_class(cls))


def prepare(
    path: str | Path,
    *,
    config: str | None = None,
    params: Sequence[str] = (),
    ask_missing: AskMissing | None = None,
) -> PreparedRun:
    """Load the project and resolve its parameters; raise a UsageError for anything wrong.

    Args:
        path: the project (file, package or directory).
        config: the config name for ``-c``, or None.
        params: ``NAME=VALUE`` strings from ``-p``.
        ask_missing: asks the user for required parameters that have no value (None: error instead).
    """
    given = split_assignments(params)
    project = load_project(path, config)
    specs = collect_specs(project)
    values = resolve_values(specs, given)
    missing = missing_params(specs, values)
    if missing and ask_missing is not None:
        values.update(ask_missing(missing))
        missing = missing_params(specs, values)
    if missing:
        raise missing_params_error(missing, project=str(path))
    config_obj = _make_config(project, values)
    return PreparedRun(project, specs, values, config_obj, settings_from_config(config_obj))


def _make_config(project: Project, values: Mapping[str, Any]) -> Configuration:
    try:
        config = make_config(project.config_cls, values)
    except Exception as exc:
        raise RunError(
            f"Building the configuration {project.config_cls.__qualname__} failed: {type(exc).__name__}: {exc}",
            hint="Fix the configuration class (frames below are from your code).",
            user_traceback=user_frames(exc),
        ) from exc
    if not isinstance(config, Configuration):
        raise UsageError(f"{project.config_cls.__qualname__} is not a batchframe Configuration.")
    return config


def settings_from_config(config: Configuration) -> ExecutorSettings:
    """The executor settings named by the runtime fields of a configuration (validated)."""
    retry = RetryPolicy(
        max_retries=config.max_retries,
        base_s=config.retry_backoff_sec,
        cap_s=config.retry_backoff_max_sec,
        delays_s=config.retry_delays_sec,
    )
    return ExecutorSettings(
        concurrency=config.concurrency,
        queue_size=config.queue_size,
        retry=retry,
        item_timeout_s=config.item_timeout_sec,
        rate_per_s=config.max_per_second,
    )


def create_run_dir(output_dir: Path, started: dt.datetime) -> Path:
    """``output_dir/<start time>``, with a ``-2``, ``-3``... suffix when that second is taken."""
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = started.strftime(RUN_DIR_FORMAT)
    for attempt in range(1, 10_000):
        candidate = output_dir / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise RunError(f"Could not create a run folder in {output_dir}.", hint="Clean up old runs in that folder.")


def run_project(
    path: str | Path,
    *,
    config: str | None = None,
    params: Sequence[str] = (),
    output_dir: Path = DEFAULT_OUTPUT_DIR,
    verbosity: int = 0,
    ask_missing: AskMissing | None = None,
    interactive: bool = False,
    progress_interval_s: float = LOG_INTERVAL_S,
) -> RunResult:
    """Run the project at ``path``: the whole of ``batchframe exec``.

    ``interactive`` (a terminal, input allowed) makes Ctrl-C open the pause shell and a fatal error
    open the emergency shell; otherwise SIGINT and SIGTERM stop the run gracefully. The live progress
    display is used when stderr is a terminal, else a progress log line every ``progress_interval_s``.

    Raises:
        UsageError: a bad path, project, config or parameter (nothing ran; exit code 2).
        RunError: the Service or Source could not be built (exit code 1).
    """
    prepared = prepare(path, config=config, params=params, ask_missing=ask_missing)
    started = dt.datetime.now()
    run_dir = create_run_dir(Path(output_dir), started)
    with run_logging(run_dir / "logs.txt", verbosity=verbosity):
        try:
            return _execute(prepared, run_dir, started, Path(output_dir), interactive, progress_interval_s)
        except UsageError:
            # Nothing ran: do not leave an empty run folder behind for a command-line mistake.
            shutil.rmtree(run_dir, ignore_errors=True)
            raise


def _execute(
    prepared: PreparedRun,
    run_dir: Path,
    started: dt.datetime,
    output_dir: Path,
    interactive: bool,
    progress_interval_s: float,
) -> RunResult:
    statics = {
        "_output_directory": output_dir.resolve(),
        "_current_run_start": started,
        "_current_run_output_dir": run_dir.resolve(),
    }
    wired = _wire(prepared, statics)
    logger.info("Run folder: %s", run_dir)
    failure_log = FailureLog(run_dir / "failed.jsonl")
    executor = Executor(wired.source, wired.service, settings=prepared.settings, on_failure=failure_log.write)
    out = console(stderr=True)
    supervisor = Supervisor(
        executor,
        progress=make_progress(executor.stats, console=out, live=out.is_terminal, interval_s=progress_interval_s),
        interactive=interactive,
        namespace={"source": wired.source, "service": wired.service, "config": wired.config},
    )
    try:
        supervisor.run()
    finally:
        failure_log.close()
    stats = executor.stats
    problems = [*_call_finish(wired.service), *_persist_failed(wired.source, executor.failed)]
    exit_code = _exit_code(executor, problems, supervisor.stopped_by)
    summary.write(run_dir, executor, exit_code=exit_code, problems=problems)
    summary.show(executor, run_dir=run_dir, exit_code=exit_code)
    return RunResult(run_dir, stats, executor.outcome, exit_code, executor.failed)


def _wire(prepared: PreparedRun, statics: Mapping[str, Any]) -> Any:
    project = prepared.project
    try:
        return wire(
            source_cls=project.source_cls,
            service_cls=project.service_cls,
            config=prepared.config,
            injectables=project.injectables,
            param_values=prepared.values,
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
        raise RunError(
            f"Building the project failed: {type(exc).__name__}: {exc}",
            hint="Fix the constructor that raised (frames below are from your code).",
            user_traceback=user_frames(exc),
        ) from exc


def _call_finish(service: Any) -> list[str]:
    try:
        result = service.finish()
        if inspect.isawaitable(result):
            asyncio.run(_await(result))
    except Exception as exc:
        logger.error("%s.finish() raised %s: %s", type(service).__qualname__, type(exc).__name__, exc)
        logger.debug("finish() traceback:\n%s", user_frames(exc))
        return [f"finish() raised {type(exc).__name__}: {exc}"]
    return []


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _persist_failed(source: Any, failed: list[FailedItem]) -> list[str]:
    persist = getattr(source, "persist_failed", None)
    if not failed or persist is None:
        return []
    try:
        persist([record.item for record in failed])
    except Exception as exc:
        logger.error(
            "%s.persist_failed() raised %s: %s; every failed item is still in failed.jsonl.",
            type(source).__qualname__,
            type(exc).__name__,
            exc,
        )
        return [f"persist_failed() raised {type(exc).__name__}: {exc}"]
    return []


def _exit_code(executor: Executor, problems: Sequence[str], stopped_by: signal.Signals | None) -> int:
    if executor.outcome is Outcome.FATAL or problems:
        return EXIT_FATAL
    if executor.outcome is Outcome.STOPPED:
        return EXIT_SIGTERM if stopped_by == signal.SIGTERM else EXIT_SIGINT
    return EXIT_FAILED_ITEMS if executor.stats.failed else EXIT_OK
