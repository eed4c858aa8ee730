"""Executing a prepared run in its run folder: wiring, the supervised executor, the end of the run.

``run.py`` decides what to run (a new run, a resume, a retry); this module runs it the same way
every time and reports: ``failed.jsonl``, the journal, ``persist_failed``, ``finish``, the summary.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchframe import summary
from batchframe._console import console
from batchframe._types import Finishes, PersistsFailed
from batchframe.container import wire
from batchframe.errors import UsageError
from batchframe.executor import Executor
from batchframe.executors import Backend, make_backend
from batchframe.failures import FailedItem, FailureLog
from batchframe.progress import LOG_INTERVAL_S, make_progress
from batchframe.project import user_code_failed, user_frames
from batchframe.source import Source
from batchframe.stats import Outcome, Stats
from batchframe.supervisor import Supervisor

if TYPE_CHECKING:
    from batchframe.journal import Journal
    from batchframe.run import PreparedRun

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_FAILED_ITEMS = 0, 1, 2, 3
EXIT_SIGINT, EXIT_SIGTERM = 130, 143


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
class RunPlan:
    """Where and how to execute a prepared run.

    Attributes:
        run_dir: the run folder (new, or the one being resumed).
        output_dir: the folder of run folders.
        started: when this run (or this resumed part of it) started.
        interactive: pause shell on Ctrl-C, emergency shell on a fatal error.
        progress_interval_s: seconds between progress log lines off a terminal.
        skip: source positions already finished (a resume), as half-open ranges.
        replay: the items to process instead of iterating the Source (a retry).
        expected_positions: how many items the journal saw in the source before (a resume).
    """

    run_dir: Path
    output_dir: Path
    started: dt.datetime
    interactive: bool = False
    progress_interval_s: float = LOG_INTERVAL_S
    skip: list[tuple[int, int]] = field(default_factory=list)
    replay: list[Any] | None = None
    expected_positions: int = 0


class _Replay(Source[Any]):
    """A retry run's source: the items that failed before, not the user's Source."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Any:
        return iter(self.items)


def execute(prepared: PreparedRun, plan: RunPlan, journal: Journal | None) -> RunResult:
    """Run a prepared project in ``plan.run_dir`` under the supervisor and report the outcome."""
    run_dir = plan.run_dir
    statics = {
        "_output_directory": plan.output_dir.resolve(),
        "_current_run_start": plan.started,
        "_current_run_output_dir": run_dir.resolve(),
    }
    wired = _wire(prepared, statics)
    logger.info("Run folder: %s", run_dir)
    failure_log = FailureLog(run_dir / "failed.jsonl")
    source = wired.source if plan.replay is None else _Replay(plan.replay)
    executor = Executor(
        source,
        wired.service,
        settings=prepared.settings,
        on_failure=failure_log.write,
        journal=journal,
        skip=plan.skip,
        backend=_backend(prepared, wired.service, statics),
    )
    out = console(stderr=True)
    supervisor = Supervisor(
        executor,
        progress=make_progress(executor.stats, console=out, live=out.is_terminal, interval_s=plan.progress_interval_s),
        interactive=plan.interactive,
        namespace={"source": wired.source, "service": wired.service, "config": wired.config},
    )
    try:
        supervisor.run()
    finally:
        failure_log.close()
        if journal is not None:
            journal.flush()
    problems = [*_call_finish(wired.service), *_persist_failed(wired.source, executor.failed)]
    warnings = _check_source_length(executor, plan)
    exit_code = _exit_code(executor, problems, supervisor.stopped_by)
    totals = _close_journal(journal, executor, exit_code)
    summary.write(run_dir, executor, exit_code=exit_code, problems=problems, warnings=warnings, totals=totals)
    summary.show(executor, run_dir=run_dir, exit_code=exit_code, warnings=warnings)
    return RunResult(run_dir, executor.stats, executor.outcome, exit_code, executor.failed)


def _backend(prepared: PreparedRun, service: Any, statics: Mapping[str, Any]) -> Backend:
    config = prepared.config
    return make_backend(
        config.executor,
        service=service,
        concurrency=prepared.settings.concurrency,
        project=prepared.project_ref(statics),
        scheduler=config.scheduler,
        connect_timeout_s=config.scheduler_timeout_sec,
    )


def _check_source_length(executor: Executor, plan: RunPlan) -> list[str]:
    if executor.outcome is not Outcome.COMPLETED or executor.positions_read >= plan.expected_positions:
        return []
    message = (
        f"The source yielded {executor.positions_read} items, but the journal knows {plan.expected_positions}: "
        "it changed since the run started; the missing positions were not processed."
    )
    logger.warning(message)
    return [message]


def _close_journal(journal: Journal | None, executor: Executor, exit_code: int) -> dict[str, int] | None:
    if journal is None:
        return None
    journal.set_meta(
        ended_at=dt.datetime.now().isoformat(timespec="seconds"),
        outcome=executor.outcome.value,
        exit_code=exit_code,
    )
    totals = journal.counts()
    journal.close()
    return totals


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
        raise user_code_failed(
            "Building the project", exc, hint="Fix the constructor that raised (frames below are from your code)."
        ) from exc


def _call_finish(service: Any) -> list[str]:
    if not isinstance(service, Finishes):
        return []
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
    if not failed or not isinstance(source, PersistsFailed):
        return []
    try:
        source.persist_failed([record.item for record in failed])
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
