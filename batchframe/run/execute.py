"""Executing a prepared run in its run folder: wiring, the supervised driver, the end of the run.

``run.py`` decides what to run (a new run, a resume, a retry) and ``testing.run_service`` what to
test; this module runs each of them the same way and reports: the journal, ``failed.jsonl``,
``persist_failed``, ``finish``, ``summary.json`` (all written before anything is printed), the
summary on the console.

The run's event loop outlives the driver: an ``async def`` ``finish`` or ``persist_failed`` runs on
the loop where ``process`` ran (the driver's own loop, or the ``threads`` back end's ``ServiceLoop``),
so it can close the client ``process`` used, before that loop closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import itertools
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from batchframe._console import console, restore_std_streams
from batchframe._text import format_exception, safe_str
from batchframe._types import Finishes, PersistsFailed
from batchframe.backends import WORKER_BACKENDS, Backend, make_backend
from batchframe.backends._loop import ServiceLoop, run_on
from batchframe.errors import BatchframeError
from batchframe.run.driver import Driver
from batchframe.run.notify import notify
from batchframe.run.progress import LOG_INTERVAL_S, ProgressDisplay, make_progress
from batchframe.run.supervisor import Supervisor
from batchframe.runfolder import summary
from batchframe.runfolder.failures import FailedItem
from batchframe.runfolder.live import RunLink
from batchframe.runfolder.logs import FILE_ONLY
from batchframe.runfolder.outcome import (
    EXIT_FAILED_ITEMS,
    EXIT_FATAL,
    EXIT_OK,
    FAILED_TO_START,
    Outcome,
    signal_exit_code,
)
from batchframe.runfolder.records import RunRecords
from batchframe.runfolder.stats import EarlierParts, Stats
from batchframe.source import Source, defines_hook

if TYPE_CHECKING:
    from batchframe.backends._factory import ServiceFactory
    from batchframe.configuration import Configuration
    from batchframe.project.container import Wired
    from batchframe.run.limits import DriverSettings
    from batchframe.run.metrics import RunMetrics
    from batchframe.run.telemetry import RunTelemetry
    from batchframe.runfolder.journal import Journal

logger = logging.getLogger(__name__)


class Buildable(Protocol):
    """What ``execute`` needs to know of a run: its settings and how to build its objects."""

    config: Configuration
    settings: DriverSettings

    def build(self, statics: Mapping[str, Any]) -> Wired:
        """Build the Source and the Service (raises a BatchframeError saying what is wrong)."""

    def service_factory(self, statics: Mapping[str, Any]) -> ServiceFactory | None:
        """How a worker process builds the same Service, or None when it cannot."""


@dataclass
class RunResult:
    """What a run did.

    Attributes:
        run_dir: the run folder (logs.txt, failed.jsonl, summary.json).
        stats: this run's counters (this part of it, for a resumed run).
        outcome: completed, stopped or fatal.
        exit_code: the process exit code for this run (0, 1, 3, 130 or 143), for the whole run.
        failed: the failed items with their exceptions (kept only by ``batchframe.testing``).
        totals: the whole run's counts from the journal (resumed parts included), or None.
    """

    run_dir: Path
    stats: Stats
    outcome: Outcome
    exit_code: int
    failed: list[FailedItem] = field(default_factory=list)
    totals: dict[str, Any] | None = None
    succeeded_positions: list[int] = field(default_factory=list)
    service: Any = None
    fatal_error: BaseException | None = None


@dataclass
class RunPlan:
    """Where and how to execute a prepared run.

    Attributes:
        run_dir: the run folder (new, or the one being resumed).
        output_dir: the folder of run folders.
        started: when this run (or this resumed part of it) started.
        meta: what the run records about itself (project, config, params...), for summary.json.
        interactive: pause shell on Ctrl-C, emergency shell on a fatal error.
        progress_interval_s: seconds between progress log lines off a terminal.
        skip: source positions already finished (a resume), as half-open ranges.
        replay: the items to process instead of iterating the Source (a retry).
        expected_positions: how many items the journal saw in the source before (a resume).
        quiet: no progress and no summary on the console, no files (``batchframe.testing.run_service``).
        keep: keep the failed items with their exceptions in the result (``batchframe.testing``).
        limit: process only the first this many items of the Source (``exec --limit``; a resume
            keeps it); None: all. A retry's replayed items are not limited.
        earlier: what the earlier parts of a resumed run counted (shown with this part's counts).
        log_format: ``text``, or ``json``: every line the run prints is a JSON object (no live display;
            the end-of-run summary is one object too).
        shown_dir: ``run_dir`` as given, for messages (``run_dir`` and ``output_dir`` are made absolute).
    """

    run_dir: Path
    output_dir: Path
    started: dt.datetime
    meta: dict[str, Any] = field(default_factory=dict)
    interactive: bool = False
    progress_interval_s: float = LOG_INTERVAL_S
    skip: list[tuple[int, int]] = field(default_factory=list)
    replay: list[Any] | None = None
    expected_positions: int = 0
    quiet: bool = False
    keep: bool = False
    limit: int | None = None
    earlier: EarlierParts | None = None
    log_format: str = "text"
    shown_dir: Path = field(init=False)
    """The run folder as the user named it (relative, say), for messages; ``run_dir`` itself is absolute."""

    def __post_init__(self) -> None:
        # Every path a run keeps is absolute: user code may os.chdir() while the run writes its files.
        self.shown_dir = self.run_dir
        self.run_dir = self.run_dir.absolute()
        self.output_dir = self.output_dir.absolute()


class _Replay(Source[Any]):
    """A retry run's source: the items that failed before, not the user's Source."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Any:
        return iter(self.items)


class EndingInterrupted(BaseException):
    """A second signal while ``finish()`` or ``persist_failed()`` ran: they are cut short."""


def execute(prepared: Buildable, plan: RunPlan, journal: Journal | None) -> RunResult:
    """Run a prepared project in ``plan.run_dir`` under the supervisor and report the outcome.

    Raises:
        BatchframeError: the run could not start (its objects could not be built, a back end is
            missing); the journal and summary.json record it as ``failed_to_start``.
    """
    statics = {
        "_output_directory": plan.output_dir.resolve(),
        "_current_run_start": plan.started,
        "_current_run_output_dir": plan.run_dir.resolve(),
    }
    records = RunRecords(None if plan.quiet else plan.run_dir, journal, keep=plan.keep)
    with _RunLoops(prepared.config.executor) as loops:
        try:
            wired = prepared.build(statics)
            driver = _driver(prepared, plan, wired, records, statics, loops)
        except BatchframeError as error:
            _failed_to_start(plan, journal, error)
            raise
        if not plan.quiet:
            logger.info("Run folder: %s", plan.shown_dir)
        supervisor = Supervisor(
            driver,
            progress=_progress(driver.stats, plan),
            interactive=plan.interactive,
            namespace={"source": wired.source, "service": wired.service, "config": wired.config},
            link=None if plan.quiet else _linker(plan.run_dir),
            loop=loops.driver,
            flush_records=None if journal is None else journal.commit_now,
        )
        records.on_error = driver.records_failed
        metrics = None if plan.quiet else _metrics(wired.config, driver, plan)
        driver.telemetry = _telemetry(plan, driver)
        try:
            _supervise(supervisor, plan, journal)
        finally:
            _close_records(records, driver)
        try:
            return _end(wired, driver, supervisor, plan, journal, records, loops, metrics)
        finally:
            records.discard()


class _RunLoops:
    """The run's event loops: the driver's, and the ``threads`` back end's ``ServiceLoop`` (None otherwise).

    Both stay open until the end-of-run hooks have run on the one where ``process`` ran.
    """

    def __init__(self, backend: str) -> None:
        self.driver = asyncio.new_event_loop()
        self.service = ServiceLoop("batchframe-service") if backend == "threads" else None

    def __enter__(self) -> _RunLoops:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.service is not None:
            self.service.close()
        loop = self.driver
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def call(self, function: Callable[..., Any], *args: Any) -> None:
        """Call a user hook; an ``async def`` one runs on the loop where ``process`` ran, to its end."""
        result = function(*args)
        if not inspect.isawaitable(result):
            return
        if self.service is not None:
            self.service.run(result)
        else:
            run_on(self.driver, result)


def _driver(
    prepared: Buildable,
    plan: RunPlan,
    wired: Wired,
    records: RunRecords,
    statics: Mapping[str, Any],
    loops: _RunLoops,
) -> Driver:
    source = wired.source if plan.replay is None else _Replay(plan.replay)
    driver = Driver(
        source,
        wired.service,
        settings=prepared.settings,
        on_success=records.on_success,
        on_failure=records.on_failure,
        skip=plan.skip,
        backend=_backend(prepared, wired.service, statics, loops.service),
        limit=plan.limit if plan.replay is None else None,
        paced_start=plan.earlier is not None or plan.replay is not None,
        # A resumed adaptive run goes on from its last limit: starting again at the ceiling would
        # send the burst of 429s it had learned to avoid; it probes up from there as calls succeed.
        start_limit=plan.earlier.limit_per_s if plan.earlier is not None else None,
        saving=records.journal,
    )
    if plan.earlier is not None:
        driver.stats.earlier = plan.earlier
    if records.journal is not None:
        records.journal.watch_in_flight(driver.in_flight_items)
        records.journal.set_meta(total=driver.stats.total)
        driver.on_tune = _tune_recorder(records.journal, driver)
    return driver


def _tune_recorder(journal: Journal, driver: Driver) -> Callable[[list[str]], None]:
    """Each tune goes into the journal's meta: when and what changed (``runs RUN_DIR``), and the values (a resume)."""

    def record(changes: list[str]) -> None:
        try:
            tunes = journal.meta().get("tunes")
            entry = {"at": dt.datetime.now().isoformat(timespec="seconds"), "changes": changes}
            journal.set_meta(tunes=[*(tunes if isinstance(tunes, list) else []), entry], tuned=driver.throttle.tuned)
        except Exception as exc:  # the tune is made; only its record is lost
            logger.warning("Could not record the tune in the journal: %s", safe_str(exc))

    return record


def _telemetry(plan: RunPlan, driver: Driver) -> RunTelemetry | None:
    """OpenTelemetry when the OTEL_ variables (or the program) ask for traces or metrics; else nothing is imported."""
    from batchframe.run import telemetry

    traces, metrics = telemetry.traces_wanted(), telemetry.metrics_wanted()
    if not (traces or metrics):
        return None
    project = Path(str(plan.meta.get("project") or "project")).stem
    return telemetry.RunTelemetry(
        driver.stats, plan.run_dir.name, project=project, config=plan.meta.get("config"), traces=traces, metrics=metrics
    )


def _told_the_outside(
    supervisor: Supervisor, config: Any, report: dict[str, Any], metrics: RunMetrics | None, exit_code: int
) -> list[str]:
    """``_tell_the_outside`` as the end of a run goes: a signal lets it finish, a second one cuts it short."""
    with _signals_while_ending(supervisor):
        try:
            return _tell_the_outside(config, report, metrics, exit_code)
        except EndingInterrupted as exc:
            return [f"The metrics and the notification at the end of the run were cut short ({exc})."]


def _tell_the_outside(config: Any, report: dict[str, Any], metrics: RunMetrics | None, exit_code: int) -> list[str]:
    """The last metrics and the webhook, once the report is made; what failed, as warnings (never a failed run)."""
    warnings = []
    if metrics is not None:
        warnings.append(metrics.finish(exit_code))
    url = getattr(config, "notify_url", None)
    if url:
        warnings.append(notify(url, report))
    return [warning for warning in warnings if warning]


def _metrics(config: Any, driver: Driver, plan: RunPlan) -> RunMetrics | None:
    """The run's Prometheus textfile (written from now on) and Pushgateway, when either is set."""
    textfile, pushgateway = getattr(config, "metrics_textfile", None), getattr(config, "metrics_pushgateway", None)
    if textfile is None and pushgateway is None:
        return None
    from batchframe.run.metrics import RunMetrics  # prometheus_client: only when asked for

    project = Path(str(plan.meta.get("project") or "project")).stem
    metrics = RunMetrics(
        driver.stats, project=project, config=plan.meta.get("config"), textfile=textfile, pushgateway=pushgateway
    )
    metrics.start()
    return metrics


def _linker(run_dir: Path) -> Callable[[Supervisor], RunLink]:
    def link(supervisor: Supervisor) -> RunLink:
        driver = supervisor.driver
        return RunLink(run_dir, driver.stats, state=lambda: driver.state, apply=supervisor.control)

    return link


def _supervise(supervisor: Supervisor, plan: RunPlan, journal: Journal | None) -> None:
    try:
        supervisor.run()
    except BatchframeError as error:
        if supervisor.driver.stats.read == 0:  # e.g. a back end that could not start: nothing ran
            _failed_to_start(plan, journal, error)
        if supervisor.link is not None:
            supervisor.link.finish(Outcome.FATAL.value, error.exit_code)
        raise


def _close_records(records: RunRecords, driver: Driver) -> None:
    """Write the last buffered records; if that fails the run ends as failed, with that error."""
    try:
        records.close()
    except Exception as exc:
        logger.error("%s", safe_str(exc))
        if driver.fatal_error is None:
            driver.fatal_error, driver.outcome = exc, Outcome.FATAL


def _progress(stats: Stats, plan: RunPlan) -> ProgressDisplay:
    if plan.quiet:
        return _NoProgress()
    out = console(stderr=True)
    live = out.is_terminal and plan.log_format != "json"  # JSON lines only: a Progress record every few seconds
    return make_progress(stats, console=out, live=live, interval_s=plan.progress_interval_s)


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def suspend(self) -> None:
        """Nothing to hide."""

    def resume(self) -> None:
        """Nothing to redraw."""


def _backend(
    prepared: Buildable, service: Any, statics: Mapping[str, Any], service_loop: ServiceLoop | None
) -> Backend:
    config = prepared.config
    return make_backend(
        config.executor,
        service=service,
        concurrency=prepared.settings.concurrency,
        factory=prepared.service_factory(statics) if config.executor in WORKER_BACKENDS else None,
        scheduler=config.scheduler,
        connect_timeout_s=config.scheduler_timeout_sec,
        item_timeout_s=prepared.settings.item_timeout_s,
        service_loop=service_loop,
    )


def _failed_to_start(plan: RunPlan, journal: Journal | None, error: BatchframeError) -> None:
    """Record a run that never processed an item: logs.txt, the journal and summary.json say why."""
    trace = f"\n{error.user_traceback}" if error.user_traceback else ""
    logger.error("The run failed to start: %s%s", error.message, trace, extra=FILE_ONLY)
    if plan.quiet:
        return
    ended = dt.datetime.now().isoformat(timespec="seconds")
    if journal is not None:
        with contextlib.suppress(Exception):
            journal.set_meta(ended_at=ended, outcome=FAILED_TO_START, exit_code=error.exit_code, error=error.message)
            journal.close()
    record = {"outcome": FAILED_TO_START, "exit_code": error.exit_code, "error": error.message}
    summary.write_json(plan.run_dir, {**record, "run": {**plan.meta, "ended_at": ended}})


# ---------------------------------------------------------------------------------- the end of a run


def _end(
    wired: Wired,
    driver: Driver,
    supervisor: Supervisor,
    plan: RunPlan,
    journal: Journal | None,
    records: RunRecords,
    loops: _RunLoops,
    metrics: RunMetrics | None = None,
) -> RunResult:
    limit = int(getattr(wired.config, "persist_unread_max", 100_000))
    with _signals_while_ending(supervisor):
        notes = _hand_over_unread(driver, records, limit, wanted=_wants_failed(wired.source))
        raised = [*_call_finish(wired.service, loops), *_persist_failed(wired.source, records, loops)]
    problems = [problem for problem, _ in raised]
    if raised and driver.outcome is not Outcome.FATAL:
        driver.outcome = Outcome.FATAL
        driver.fatal_error = raised[0][1]
    notes += _check_source_length(driver, plan)
    lost = records.lost()  # failed.jsonl or the journal deleted under the run: said, and exit code 1
    for message in lost:
        logger.warning("%s", message, extra=FILE_ONLY)  # the summary shows it on the console
    problems += lost
    totals = _totals(journal, driver)
    exit_code = EXIT_FATAL if lost else _exit_code(driver, totals, supervisor.stopped_by)
    if journal is not None:
        _close_journal(journal, driver, exit_code)
    report = summary.as_dict(
        driver.stats,
        driver.outcome,
        driver.fatal_error,
        exit_code=exit_code,
        problems=problems,
        warnings=notes,
        totals=totals,
        meta=plan.meta,
    )
    if restore_std_streams():
        logger.warning("The run's code closed sys.stdout or sys.stderr; batchframe opened them again for its summary.")
    if driver.telemetry is not None:
        driver.telemetry.end(report["outcome"], exit_code)
    if not plan.quiet:
        summary.write_json(plan.run_dir, report)  # before the notifications: a signal meanwhile loses nothing
        told = _told_the_outside(supervisor, wired.config, report, metrics, exit_code)
        if told:
            report["warnings"] += told
            summary.write_json(plan.run_dir, report)
        if supervisor.link is not None:
            supervisor.link.finish(report["outcome"], exit_code)
        if plan.log_format == "json":  # the summary as one object, on the console and in logs.txt
            logger.info("%s", summary.end_line(report), extra={"summary": {**report, "run_dir": str(plan.shown_dir)}})
        else:
            logger.info("%s", summary.end_line(report), extra=FILE_ONLY)
            summary.show(report, run_dir=plan.shown_dir)
    _close_source(driver)
    kept = records.kept_failures or []
    return RunResult(
        plan.run_dir,
        driver.stats,
        driver.outcome,
        exit_code,
        kept,
        totals,
        records.kept_successes or [],
        wired.service,
        driver.fatal_error,
    )


_SOURCE_CLOSE_WAIT_S = 2.0
_left_running: list[Any] = []  # generators still in their cleanup: never closed again at exit in the main thread


def _close_source(driver: Driver) -> None:
    """Close a generator Source now, waiting at most 2 s for its ``finally``; a cleanup that blocks is left behind.

    Python would otherwise close it whenever the last reference goes (on the main thread, at the
    exit): a ``finally`` that blocks would keep the process alive after its summary.
    """
    iterator = driver.reader.iterator if driver.reader is not None else None
    close = getattr(iterator, "close", None)
    if not callable(close):
        return
    closing = threading.Thread(target=_close_quietly, args=(close,), name="batchframe-source-close", daemon=True)
    closing.start()
    closing.join(_SOURCE_CLOSE_WAIT_S)
    if closing.is_alive():
        _left_running.append(iterator)
        logger.warning(
            "The Source's generator is still running its cleanup (a finally block) %.0f s after the run ended; "
            "batchframe exits without waiting for it.",
            _SOURCE_CLOSE_WAIT_S,
        )


def _close_quietly(close: Callable[[], object]) -> None:
    try:
        close()
    except Exception as exc:  # ValueError "generator already executing": a reader thread is stuck in it
        logger.debug("Closing the Source's generator: %s", safe_str(exc))


def _unread_count(driver: Driver) -> int | None:
    if driver.source_exhausted:  # read to its end: nothing is unread, whatever __len__ says
        return 0
    total = driver.stats.total
    return None if total is None else max(total - driver.positions_read, 0)


def _hand_over_unread(driver: Driver, records: RunRecords, limit: int, *, wanted: bool) -> list[str]:
    """After a stop: hand the unread rest to persist_failed when it is known and small; else say what is left.

    Nothing is read for a Source without its own ``persist_failed``: nobody would receive it.
    """
    if driver.outcome is Outcome.COMPLETED:
        return []
    unread = _unread_count(driver)
    if unread == 0:
        return []
    iterator = driver.unread_iterator
    if not wanted or unread is None or iterator is None or unread > limit:
        count = "An unknown number of" if unread is None else f"{unread:,}"
        return [f"{count} items were not read from the source; batchframe resume continues with them."]
    read = 0
    try:
        for item in itertools.islice(iterator, limit):  # never more than the limit, even if __len__ lied
            records.failed_items.append(item)
            read += 1
    except Exception as exc:
        logger.warning("Reading the rest of the source for persist_failed() failed: %s", safe_str(exc))
    return [f"{read:,} items were not read by the run; persist_failed() gets them too and resume continues with them."]


def _check_source_length(driver: Driver, plan: RunPlan) -> list[str]:
    if driver.outcome is not Outcome.COMPLETED or driver.positions_read >= plan.expected_positions:
        return []
    message = (
        f"The source yielded {driver.positions_read} items, but the journal knows {plan.expected_positions}: "
        "it changed since the run started; the missing positions were not processed."
    )
    logger.warning(message)
    return [message]


def _totals(journal: Journal | None, driver: Driver) -> dict[str, Any] | None:
    """The whole run's counts (every part of a resumed run), from the journal."""
    if journal is None:
        return None
    try:
        journal.flush()
        counts: dict[str, Any] = dict(journal.counts())
        counts["failures_by_type"] = journal.failures_by_type()
    except Exception as exc:
        logger.error("Could not read the journal's totals: %s", safe_str(exc))
        return None
    counts["unread"] = _unread_count(driver)
    return counts


def _close_journal(journal: Journal, driver: Driver, exit_code: int) -> None:
    try:
        journal.set_meta(
            ended_at=dt.datetime.now().isoformat(timespec="seconds"),
            outcome=driver.outcome.value,
            exit_code=exit_code,
            read_upto=driver.positions_read,
            unread=_unread_count(driver),
        )
        journal.close()
    except Exception as exc:
        logger.error("Could not close the journal: %s", safe_str(exc))


@contextlib.contextmanager
def _signals_while_ending(supervisor: Supervisor) -> Iterator[None]:
    """SIGINT/SIGTERM while finish() or persist_failed() run: the first lets them finish, a second cuts them short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)
        supervisor.stopped_by = supervisor.stopped_by or signal.Signals(signum)
        if len(received) == 1:
            logger.warning("Received %s: the end of the run goes on; send it again to cut it short.", signum)
            return
        raise EndingInterrupted(f"received {signal.Signals(signum).name} twice")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


Raised = list[tuple[str, BaseException]]


def _call_finish(service: Any, loops: _RunLoops) -> Raised:
    if not isinstance(service, Finishes):
        return []
    return _guarded(f"{type(service).__qualname__}.finish()", loops.call, service.finish)


def _wants_failed(source: Any) -> bool:
    """Whether the Source has a ``persist_failed`` of its own (the base class's is a no-op)."""
    return isinstance(source, PersistsFailed) and defines_hook(type(source), "persist_failed")


def _persist_failed(source: Any, records: RunRecords, loops: _RunLoops) -> Raised:
    if not len(records.failed_items) or not _wants_failed(source):
        return []  # skip Source's no-op (and reading the failed items back)
    return _guarded(
        f"{type(source).__qualname__}.persist_failed()",
        loops.call,
        source.persist_failed,
        records.failed_items,
        after="" if records.lost() else "; every failed item is still in failed.jsonl",
    )


def _guarded(what: str, call: Any, *args: Any, after: str = "") -> Raised:
    """Call the user's end-of-run hook; anything it raises (SystemExit too) becomes a problem, never a crash."""
    try:
        call(*args)
    except EndingInterrupted as exc:
        logger.error("%s was cut short: %s%s.", what, exc, after)
        return [(f"{what} was cut short ({exc})", exc)]
    except BaseException as exc:
        logger.error("%s raised %s: %s%s.", what, type(exc).__name__, safe_str(exc), after)
        logger.error("%s traceback:\n%s", what, format_exception(exc, headers=False), extra=FILE_ONLY)
        return [(f"{what} raised {type(exc).__name__}: {safe_str(exc)}", exc)]
    return []


def _exit_code(driver: Driver, totals: Mapping[str, Any] | None, stopped_by: signal.Signals | None) -> int:
    if driver.outcome is Outcome.FATAL:
        return EXIT_FATAL
    if driver.outcome is Outcome.STOPPED:
        return signal_exit_code(stopped_by or signal.SIGINT)
    failed = totals["failed"] if totals is not None else driver.stats.failed
    return EXIT_FAILED_ITEMS if failed else EXIT_OK
