"""The three ways to run: ``run_project`` (``exec``), ``resume_run`` (``resume``) and ``retry_run`` (``retry``).

Each prepares the run (``prepare``), gets its run folder ready (a new one, or the resumed one with
its journal) and hands it to ``execute``. They return a ``RunResult`` and raise ``BatchframeError``
for anything that stops a run before or while it executes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from batchframe.configuration import Configuration
from batchframe.errors import ParamError, UsageError
from batchframe.project.params import (
    ParamSpec,
    missing_params_error,
)
from batchframe.run.execute import RunPlan, RunResult, execute
from batchframe.run.prepare import (
    AskMissing,
    PreparedRun,
    fingerprint,
    log_warnings,
    prepare,
    run_meta,
)
from batchframe.run.progress import LOG_INTERVAL_S
from batchframe.run.throttle import tuned_settings
from batchframe.runfolder.folder import (
    DEFAULT_OUTPUT_DIR,
    FAILED_NAME,
    JOURNAL_NAME,
    LOG_NAME,
    create_run_dir,
    keep_final_failures,
    refuse_odd_files,
)
from batchframe.runfolder.journal import Journal, JournalError, load_items
from batchframe.runfolder.live import read_status
from batchframe.runfolder.logs import checked_log_format, run_logging
from batchframe.runfolder.outcome import FAILED_TO_START, RESUMED, finished_every_item
from batchframe.runfolder.stats import EarlierParts
from batchframe.secret import Secret, secret_changed
from batchframe.source import check_limit

logger = logging.getLogger(__name__)

__all__ = ["AlreadyFinished", "RunResult", "resume_run", "retry_run", "run_project"]


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
    log_format: str = "text",
    keep: bool = False,
    limit: int | None = None,
) -> RunResult:
    """Run the project at ``path``: the whole of ``batchframe exec``.

    ``interactive`` (a terminal, input allowed) makes Ctrl-C open the pause shell and a fatal error
    open the emergency shell; otherwise SIGINT and SIGTERM stop the run gracefully. The live progress
    display is used when stderr is a terminal, else a progress log line every ``progress_interval_s``.
    ``limit`` (``--limit N``): only the first N items of the Source; the journal records it, so a
    resume keeps it.

    Raises:
        UsageError: a bad path, project, config or parameter (nothing ran; exit code 2).
        RunError: the Service or Source could not be built (exit code 1).
    """
    check_limit(limit)  # before anything is created
    checked_log_format(log_format)
    prepared = prepare(path, config=config, params=params, ask_missing=ask_missing)
    started = dt.datetime.now()
    output = Path(output_dir)
    run_dir = create_run_dir(output, started)
    meta = run_meta(prepared, path=path, config=config, output_dir=output, started=started)
    if limit is not None:
        meta["limit"] = limit
    plan = RunPlan(
        run_dir,
        output,
        started,
        meta,
        interactive=interactive,
        progress_interval_s=progress_interval_s,
        keep=keep,
        limit=limit,
        log_format=checked_log_format(log_format),
    )
    try:
        return _execute_new(prepared, plan, verbosity=verbosity)
    except UsageError:
        # Nothing ran: do not leave an empty run folder behind for a command-line mistake.
        shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _execute_new(
    prepared: PreparedRun, plan: RunPlan, *, verbosity: int, replay_payloads: list[bytes] | None = None
) -> RunResult:
    """The one way a new run folder (``exec``, ``retry``) is filled: logs, journal, lock, execute.

    ``replay_payloads``: a retry run's items, pickled, kept in its own journal (it resumes without its parent).
    """
    with run_logging(
        plan.run_dir / LOG_NAME,
        verbosity=verbosity,
        levels=prepared.config.log_levels,
        log_format=plan.log_format,
        run_id=plan.run_dir.name,
    ):
        log_warnings(prepared)
        journal = _new_journal(prepared, plan.run_dir, plan.meta)
        if journal is not None and replay_payloads:
            journal.store_replay(replay_payloads)
        with _holding(journal):
            return execute(prepared, plan, journal)


@contextlib.contextmanager
def _holding(journal: Journal | None) -> Iterator[None]:
    if journal is None:
        yield
        return
    with journal.locked():
        yield


def _new_journal(prepared: PreparedRun, run_dir: Path, meta: dict[str, Any]) -> Journal | None:
    if not prepared.config.journal:
        return None
    return Journal.create(run_dir, meta)


# ---------------------------------------------------------------------------------- resume and retry


class AlreadyFinished(Exception):  # noqa: N818 - not an error: the CLI reports it and exits 0
    """``resume`` of a run that has nothing left to do."""


def resume_run(
    run_dir: Path,
    *,
    verbosity: int = 0,
    interactive: bool = False,
    progress_interval_s: float = LOG_INTERVAL_S,
    log_format: str = "text",
    ask_missing: AskMissing | None = None,
) -> RunResult:
    """Continue a stopped or killed run in its own folder: skip what is finished, process the rest.

    Secret parameters are not stored: they come from ``BATCHFRAME_PARAM_<NAME>`` again, else from
    ``ask_missing``, else the run stops with a ParamError that says how to give them.

    Raises:
        AlreadyFinished: the run completed; nothing to resume (see ``retry_run`` for its failures).
        JournalError: no journal, a damaged one, a newer format, or another process holds it.
        UsageError: the project's parameters or configuration changed since the run started.
    """
    if Path(run_dir).exists():  # absolute: user code may os.chdir() while the run writes (a bad path keeps its hint)
        run_dir = Path(run_dir).absolute()
    refuse_odd_files(run_dir)
    journal = Journal.open(run_dir)
    meta = journal.meta()
    counts = journal.counts()
    if finished_every_item(meta, counts):
        journal.close()
        raise AlreadyFinished(
            f"{run_dir} finished already ({counts['done']} done, {counts['failed']} failed); nothing to resume."
            + (f" Re-run the failed items with: batchframe retry {run_dir}" if counts["failed"] else "")
        )
    with journal.locked():
        prepared = _prepare_again(run_dir, meta, ask_missing)
        _check_unchanged(meta.get("fingerprint", {}), fingerprint(prepared))
        prepared.settings = tuned_settings(prepared.settings, meta.get("tuned"))  # a tune outlives a kill
        replay = _replay_items(run_dir, journal, meta)
        keep_final_failures(run_dir, journal.bad_positions())
        journal.forget_unfinished()
        earlier = _earlier_parts(run_dir, journal, counts)
        started = dt.datetime.now()
        plan = RunPlan(
            run_dir,
            Path(meta["output_dir"]),
            started,
            meta,
            interactive=interactive,
            progress_interval_s=progress_interval_s,
            skip=journal.finished_ranges(),
            replay=replay,
            expected_positions=counts["highest_position"],
            limit=meta.get("limit"),  # a limited run stays limited: only its first N items are finished
            earlier=earlier,
            log_format=checked_log_format(log_format),
        )
        resumes = [*meta.get("resumed_at", []), started.isoformat(timespec="seconds")]
        journal.set_meta(resumed_at=resumes, exit_code=None, outcome=RESUMED, ended_at=None)
        with run_logging(
            run_dir / LOG_NAME,
            verbosity=verbosity,
            levels=prepared.config.log_levels,
            log_format=plan.log_format,
            run_id=run_dir.name,
        ):
            log_warnings(prepared)
            logger.info(
                "Resuming %s: %d items finished before are skipped.", run_dir, counts["done"] + counts["failed"]
            )
            return execute(prepared, plan, journal)


def _earlier_parts(run_dir: Path, journal: Journal, counts: Mapping[str, int]) -> EarlierParts:
    """What the run counted before this resume: items from the journal, retries and refusals from its last status.

    The status is at most half a second old at a ``kill -9``; a run without one counts them from 0.
    """
    status = read_status(run_dir)
    return EarlierParts(
        succeeded=counts["done"],
        failed=counts["failed"],
        failures_by_type=journal.failures_by_type(),
        retries=(status and status.retries) or 0,
        rate_limited=(status and status.rate_limited) or 0,
        cooldown_total_s=(status and status.cooldown_total_s) or 0.0,
        limit_per_s=status.limit_per_s if status is not None else None,
    )


def retry_run(
    run_dir: Path,
    *,
    verbosity: int = 0,
    interactive: bool = False,
    progress_interval_s: float = LOG_INTERVAL_S,
    log_format: str = "text",
    ask_missing: AskMissing | None = None,
) -> RunResult:
    """A new run (new folder) over the items that did not succeed in ``run_dir``; the Source is not iterated.

    Raises:
        AlreadyFinished: every item of that run succeeded.
        JournalError: no usable journal in ``run_dir``, or failed items that could not be stored.
    """
    if Path(run_dir).exists():  # absolute: user code may os.chdir() while the run writes (a bad path keeps its hint)
        run_dir = Path(run_dir).absolute()
    refuse_odd_files(run_dir)
    _check_finished(run_dir)
    meta, payloads = _unfinished_payloads(run_dir)
    if not payloads:
        raise AlreadyFinished(f"Every item of {run_dir} succeeded; nothing to retry.")
    prepared = _prepare_again(run_dir, meta, ask_missing)
    items = load_items(payloads, run_dir)  # after the project is loaded: an item's class may be defined in it
    started = dt.datetime.now()
    output = Path(meta["output_dir"])
    new_dir = create_run_dir(output, started)
    new_meta = {
        **run_meta(
            prepared,
            path=meta["project"],
            config=meta.get("config"),
            output_dir=output,
            started=started,
        ),
        "kind": "retry",
        "retry_of": str(Path(run_dir).resolve()),
    }
    plan = RunPlan(
        new_dir,
        output,
        started,
        new_meta,
        interactive=interactive,
        progress_interval_s=progress_interval_s,
        log_format=checked_log_format(log_format),
    )
    plan.replay = items
    logger.info("Retrying %d items that did not succeed in %s.", len(items), run_dir)
    return _execute_new(prepared, plan, verbosity=verbosity, replay_payloads=payloads)


def _prepare_again(run_dir: Path, meta: Mapping[str, Any], ask_missing: AskMissing | None) -> PreparedRun:
    """The run's project and parameters again; its secrets from the environment, a prompt, or an error."""

    def ask(missing: Sequence[ParamSpec]) -> Mapping[str, Any]:
        if ask_missing is not None:
            return ask_missing(missing)
        raise _secrets_needed(run_dir, missing)

    prepared = prepare(meta["project"], config=meta.get("config"), params=meta.get("params", []), ask_missing=ask)
    for name, recorded in (meta.get("secrets") or {}).items():
        value = prepared.values.get(name)
        if isinstance(value, Secret) and secret_changed(recorded, value):
            prepared.notices.append(
                f"The secret parameter {name} is not the value the run started with "
                f"(it came from {recorded.get('source', 'somewhere else')}); the rest of the run uses the new one."
            )
    return prepared


def _secrets_needed(run_dir: Path, missing: Sequence[ParamSpec]) -> ParamError:
    if not all(spec.secret for spec in missing):
        return missing_params_error(missing, project=str(run_dir))
    names = ", ".join(spec.name for spec in missing)
    variables = " and ".join(spec.env_variable for spec in missing)
    return ParamError(
        f"{run_dir} needs its secret parameter{'s' if len(missing) > 1 else ''} {names} again: "
        "batchframe never stores a secret's value in the run folder.",
        hint=f"Set {variables} in the environment and run the command again, or run it on a terminal to be asked.",
        param=missing[0].name,
    )


def _check_finished(run_dir: Path) -> None:
    """``retry`` re-runs the failures of a run that ended; a stopped or killed one must be resumed first."""
    journal = Journal.open(run_dir)
    try:
        meta, counts = journal.meta(), journal.counts()
    finally:
        journal.close()
    if finished_every_item(meta, counts):
        return
    state = "was stopped" if meta.get("outcome") else "did not finish (it is still running, or was killed)"
    if meta.get("outcome") == FAILED_TO_START:
        state = "failed to start"
    raise UsageError(
        f"{run_dir} {state}, so some of its items were never tried; retry re-runs only failed items.",
        hint=f"Continue it first with: batchframe resume {run_dir}",
    )


def _replay_items(run_dir: Path, journal: Journal, meta: Mapping[str, Any]) -> list[Any] | None:
    """A retry run's items, from its own journal; None for a run that is no retry.

    A retry run made by an older batchframe kept none: its items come from the run it retries (whose
    journal does not change), if that folder is still there.

    Raises:
        JournalError: an item cannot be unpickled, or an older retry run's parent is gone.
    """
    own = journal.replay_payloads()
    if own is not None:
        return load_items(own, run_dir)
    parent = meta.get("retry_of")
    if not parent:
        return None
    if not (Path(parent) / JOURNAL_NAME).is_file():
        raise JournalError(
            f"{run_dir} is a retry of {parent}, which is gone; this run was made by a batchframe that kept its "
            "items only there, so its pending items cannot be brought back.",
            hint=f"What it finished is in its journal and {run_dir / FAILED_NAME}; start a new run for the rest.",
        )
    return _unfinished_items(Path(parent))[1]


def _unfinished_items(run_dir: Path) -> tuple[dict[str, Any], list[Any]]:
    """A run's metadata and the items that did not succeed in it, in source order (the project loaded first)."""
    meta, payloads = _unfinished_payloads(run_dir)
    return meta, load_items(payloads, run_dir)


def _unfinished_payloads(run_dir: Path) -> tuple[dict[str, Any], list[bytes]]:
    """A run's metadata and the items that did not succeed in it, still pickled, in source order."""
    journal = Journal.open(run_dir)
    try:
        return journal.meta(), [payload for _, payload in journal.unfinished_payloads()]
    finally:
        journal.close()


def _check_unchanged(before: Mapping[str, str], now: Mapping[str, str]) -> None:
    # A setting of batchframe's own that the run's version did not have yet is no change of the job.
    added_since = {field.name for field in dataclasses.fields(Configuration)} - set(before)
    changed = [
        f"  {key}: {before.get(key, '(none)')} -> {now.get(key, '(none)')}"
        for key in sorted(set(before) | set(now))
        if before.get(key) != now.get(key) and key not in added_since
    ]
    if changed:
        raise UsageError(
            "The project's parameters or configuration changed since this run started, "
            "so resuming it could mix two different jobs:\n" + "\n".join(changed),
            hint="Undo the change to resume, or start a new run with batchframe exec "
            "(batchframe retry re-runs only the failed items).",
        )
