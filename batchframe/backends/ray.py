"""The ``ray`` back end: items run on Ray actors (``pip install batchframe[ray]``).

Each run starts actors of its own (``_Worker``, one CPU each, as many as ``concurrency`` and the
cluster's CPUs allow), each building the run's Service from the run's ``ServiceFactory``: two runs on
one cluster never share a Service, and the actors end with the run. Items travel in batches
(``_batches.Batcher``: about 0.2 s of work per actor call, two calls per actor in flight), each item
with its own outcome, its time limit enforced on the actor (``_worker.run_batch``).

An actor whose process dies fails only its items in flight (``WorkerDied``: the driver retries
them) and is replaced. An actor left running a timed-out item (a thread cannot be stopped) gets no
more batches and is killed once those it holds are answered; a new one takes its place.

Without ``scheduler``, the run starts a local Ray of its own (``address="local"``: never another
run's, even where a cluster runs on this machine), sized by ``concurrency``. With ``scheduler``
(``HOST:PORT`` of a head node, or ``ray://HOST:10001`` for Ray Client), the project's folder travels
zipped in the factory (as for dask) and each actor imports it from a folder of its own; the actors
must run the driver's batchframe and Python (major.minor), checked before anything is sent.

Ray adds the driver's working directory to every worker's ``sys.path``, where a project's
``json.py`` would shadow the standard library's before the worker even starts; the job's
``runtime_env`` gets an empty ``working_dir`` instead, which makes Ray leave it out.

Log records of the run's code on the actors come back with each reply and reach logs.txt; Ray's own
records on this machine go to logs.txt only (``_engine_logs.EngineLogs``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shutil
import socket
import tempfile
from typing import Any

from batchframe._text import format_exception, without_ansi
from batchframe.backends import BackendError, ItemCall
from batchframe.backends import _worker as _worker_module
from batchframe.backends._batches import WINDOW, Batcher, BatchingBackend, BatchReply, BatchSizer
from batchframe.backends._engine_logs import EngineLogs, portable, receive
from batchframe.backends._factory import ServiceFactory, batchframe_version, python_version
from batchframe.backends._worker import NOT_RUN, WorkerDied, describe, run_batch, start_service, stop_service, unpack
from batchframe.runfolder.logs import FILE_ONLY

logger = logging.getLogger(__name__)

RAY_BATCH_S = 0.2
"""How much work one actor call holds, once the item time is known (see ``_batches``)."""

RAY_PORT = 6379
"""A head node's port when the address names none (Ray's default)."""

CLIENT_PORT = 10001
"""A ``ray://`` address's port when it names none (Ray Client's default)."""

NO_WORKER_LEFT = (
    "No Ray worker is left to run this item: the workers started to replace those that died or held "
    "a stuck item could not build the Service (see logs.txt). `batchframe retry` runs it again."
)


class _Worker:
    """The actor: builds the run's Service once, runs batches, hands back the log records of the run's code.

    Nothing it raises while building the Service leaves it (``ready`` reports it): an actor whose
    constructor raises is retried by nobody and explained by a Ray error the user cannot act on.
    """

    def __init__(self, factory: ServiceFactory, log_level: int) -> None:
        self.records: list[bytes] = []
        self.folder = tempfile.mkdtemp(prefix="batchframe-ray-")
        self.key = factory.run_key
        self.failed: tuple[str, str] | None = None
        try:
            start_service(factory, log_level=log_level, local_dir=self.folder, isolate=True, log_sink=self._keep)
        except BaseException as exc:
            self.failed = (describe(exc), format_exception(exc))

    def _keep(self, record: logging.LogRecord) -> None:
        self.records.append(portable(record))

    def ready(self) -> tuple[tuple[str, str], tuple[str, str] | None]:
        """This worker's batchframe and Python (``major.minor``), and how building the Service went.

        The second is None once the Service is built, else what building it raised and its traceback.
        """
        return (batchframe_version(), python_version()), self.failed

    def run(self, payload: bytes, timeout_s: float | None) -> tuple[float, list[Any], list[bytes], bool]:
        """The batch's outcomes and time, the log records since the last call, and whether an item is stuck.

        A timed-out item's thread cannot be stopped: the driver replaces this actor (killing its process).
        """
        busy_s, packed = run_batch(self.key, payload, timeout_s)
        records, self.records = self.records, []
        runner = getattr(_worker_module._here, "runner", None)
        return busy_s, packed, records, bool(runner is not None and runner.abandoned)

    def stop(self) -> list[bytes]:
        """Call the Service's ``on_worker_stop``; the log records since the last call."""
        if self.failed is None:
            stop_service(self.key)
        shutil.rmtree(self.folder, ignore_errors=True)
        records, self.records = self.records, []
        return records


class RayBackend(BatchingBackend):
    """Sends batches of items to run-owned Ray actors (a local Ray started for the run, or a cluster).

    Args:
        factory: how the actors build the Service.
        concurrency: how many actors (items at once): at most one per core of this machine for a
            local Ray, one per CPU of the cluster for a cluster.
        address: a head node's ``HOST:PORT`` or ``ray://HOST:PORT``; None starts a local Ray.
        connect_timeout_s: how long to try to reach the address.
        item_timeout_s: time limit of one attempt, counted on the actor from when the item starts; or None.

    Attributes:
        workers: after ``start()``, how many actors run the items.
        startup_s: after ``start()``, how long Ray and the actors took to get ready.
    """

    def __init__(
        self,
        factory: ServiceFactory,
        *,
        concurrency: int,
        address: str | None,
        connect_timeout_s: float,
        item_timeout_s: float | None = None,
    ) -> None:
        self.factory = factory
        self.address = address
        self.connect_timeout_s = connect_timeout_s
        self.item_timeout_s = item_timeout_s
        concurrency = max(1, concurrency)
        self.workers = min(concurrency, os.cpu_count() or 1) if address is None else concurrency
        self.slots = 0
        self.startup_s = 0.0
        self._ray: Any = None
        self._started_ray = False
        self._logs = EngineLogs()
        self._working_dir: str | None = None
        self._actor_class: Any = None
        self._actors: list[Any] = []
        self._next = itertools.count()
        self._batcher: Batcher | None = None
        self._refs: dict[int, Any] = {}  # a batch's number -> its actor call
        self._out: dict[Any, int] = {}  # an actor -> its batches sent and not answered yet
        self._retiring: set[Any] = set()  # replaced actors, killed once their last batch is answered
        self._checks: set[asyncio.Task[None]] = set()  # replacements being checked (_check_replacement)
        self._level = logging.INFO

    async def start(self) -> ItemCall:
        """Start (or join) Ray, check the workers' versions and start the run's actors.

        Raises:
            BackendError: ray is not installed; Ray cannot start or be reached; the workers run another
                batchframe or Python; an actor cannot build the Service.
        """
        try:
            import ray
        except ImportError:
            raise BackendError(
                "executor=ray needs Ray, which is not installed.",
                hint="Install the extra: pip install 'batchframe[ray]'",
            ) from None
        self._ray = ray
        self._logs.install()
        loop = asyncio.get_running_loop()
        started = loop.time()
        if ray.is_initialized():  # the user's own code started Ray in this process: its Ray is the run's
            logger.info("Using the Ray this process already started.")
        else:
            await self._init(ray)
        if self.address is not None:  # workers elsewhere may not have the project's files
            self.factory = await asyncio.to_thread(self.factory.with_archive)
        self.workers = min(self.workers, await asyncio.to_thread(self._cluster_cpus))
        self._actor_class = ray.remote(num_cpus=1)(_Worker)
        self._level = logging.getLogger().getEffectiveLevel()
        self._actors = [self._new_actor() for _ in range(self.workers)]
        await self._wait_ready()
        self.startup_s = loop.time() - started
        where = f"the cluster at {self.address}" if self.address is not None else "a local Ray"
        logger.info("Ray ready in %.1f s: %s, %d actors (one item at a time each)", self.startup_s, where, self.workers)
        self._batcher = Batcher(
            self._send,
            batches_in_flight=self.workers * WINDOW,
            on_abandoned=self._abandon,
            sizer=BatchSizer(target_s=RAY_BATCH_S),
        )
        self.slots = self._batcher.slots
        return self._batcher.call

    async def _init(self, ray: Any) -> None:
        self._working_dir = tempfile.mkdtemp(prefix="batchframe-ray-job-")
        try:
            await asyncio.to_thread(self._connect, ray, self._working_dir)
        except Exception as exc:
            where = f"reach Ray at {self.address}" if self.address is not None else "start a local Ray"
            raise BackendError(
                f"Could not {where}: {_first_error_line(exc)}",
                hint="Check the address (-p scheduler=HOST:PORT, or ray://HOST:10001 for Ray Client) and that "
                "the cluster runs. No item was processed; run again when it answers."
                if self.address is not None
                else "Ray's own messages are in logs.txt. No item was processed.",
            ) from None
        self._started_ray = True

    def _connect(self, ray: Any, working_dir: str) -> None:
        """``ray.init``: a local Ray of the run's own, or the cluster at ``address``."""
        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,  # the run's records come back with each reply
            "logging_level": logging.WARNING,
            "runtime_env": {"working_dir": working_dir},  # see the module's docstring: no driver folder on sys.path
        }
        if self.address is None:
            ray.init(address="local", num_cpus=self.workers, **options)
            return
        self._check_reachable()
        ray.init(address=self.address, **options)

    def _check_reachable(self) -> None:
        """A TCP connection to the address first: ``ray.init`` retries an unreachable one for minutes.

        Raises:
            OSError: nothing answers there within ``connect_timeout_s``.
        """
        assert self.address is not None
        client = self.address.startswith("ray://")
        host, _, port = self.address.removeprefix("ray://").split("/", 1)[0].rpartition(":")
        if not host:
            host, port = port, ""
        target = (host or "127.0.0.1", int(port) if port else CLIENT_PORT if client else RAY_PORT)
        with socket.create_connection(target, timeout=self.connect_timeout_s):
            pass

    def _cluster_cpus(self) -> int:
        """The cluster's CPUs (at least 1): more actors than that would wait for a CPU with their batches."""
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    async def _wait_ready(self) -> None:
        """Wait for every actor to build the Service; say so when the cluster's CPUs are taken meanwhile.

        Raises:
            BackendError: an actor runs another batchframe or Python than this driver, or cannot load
                batchframe, or cannot build the Service. (On a mismatch the factory itself refuses to
                build; the versions are compared first to say so plainly.)
        """
        ready = asyncio.gather(*(actor.ready.remote() for actor in self._actors))
        try:
            try:
                replies = await asyncio.wait_for(asyncio.shield(ready), self.connect_timeout_s)
            except asyncio.TimeoutError:
                logger.warning(
                    "Waiting for CPUs on the Ray cluster: %d actors asked for, other jobs hold the CPUs.", self.workers
                )
                replies = await ready
        except self._ray.exceptions.RayActorError as exc:  # the actor's class could not even be loaded
            raise BackendError(
                f"A Ray worker could not load batchframe: {_last_error_line(exc)}",
                hint=f"Install batchframe {self.factory.batchframe_version} where the Ray workers run.",
            ) from None
        wanted = (self.factory.batchframe_version, self.factory.python_version)
        for versions, _ in replies:
            if tuple(versions) != wanted:
                raise BackendError(
                    f"The Ray workers must run this driver's batchframe {wanted[0]} on Python {wanted[1]}, "
                    f"but they run batchframe {versions[0]} on Python {versions[1]}.",
                    hint=f"Install batchframe {wanted[0]} (pip install 'batchframe[ray]=={wanted[0]}') on Python "
                    f"{wanted[1]} where the workers run. No item was processed.",
                )
        for _, failure in replies:
            if failure is not None:
                message, trace = failure
                logger.error("A Ray worker could not build the Service:\n%s", trace, extra=FILE_ONLY)
                raise BackendError(
                    f"A Ray worker could not build the Service: {message}",
                    hint="Loading the project, the Service's constructor or on_worker_start raised on the "
                    "worker; its traceback is in logs.txt. No item was processed.",
                )

    def _new_actor(self) -> Any:
        return self._actor_class.remote(self.factory, self._level)

    async def _send(self, number: int, payload: bytes, count: int) -> BatchReply:
        if not self._actors:  # every replacement failed to build the Service (see _check_replacement)
            return BatchReply([RuntimeError(NO_WORKER_LEFT)] * count, 0.0, 0)
        actor = self._actors[next(self._next) % len(self._actors)]
        ref = actor.run.remote(payload, self.item_timeout_s)
        self._refs[number] = ref
        self._out[actor] = self._out.get(actor, 0) + 1
        try:
            busy_s, packed, records, stuck = await ref
        except self._ray.exceptions.RayActorError as exc:  # the actor's process died: its items are retried
            reason = _first_error_line(exc)
            logger.warning("A Ray worker died (%s); its items in flight are retried.", reason)
            self._replace(actor, dead=True)
            return BatchReply([WorkerDied(reason="the Ray worker running this item died")] * count, 0.0, 0)
        except asyncio.CancelledError:
            self._ray.cancel(ref)
            raise
        finally:
            self._refs.pop(number, None)
            self._answered(actor)
        for record in records:
            receive(record, "Ray")
        if stuck:
            logger.warning("A timed-out item is still running on a Ray worker: the worker is replaced.")
            self._replace(actor, dead=False)
        outcomes = [unpack(entry) for entry in packed]
        return BatchReply(outcomes, busy_s, sum(1 for entry in packed if entry != NOT_RUN))

    def _replace(self, actor: Any, *, dead: bool) -> None:
        """A new actor takes ``actor``'s place; ``actor`` gets no more batches.

        It is killed once the batches it holds are answered (a stuck item's thread dies with it; the
        batches queued behind the stuck one run first), or at once when it died.
        """
        if actor not in self._actors:
            return  # replaced already (another of its batches came back first)
        replacement = self._new_actor()
        self._actors[self._actors.index(actor)] = replacement
        self._retiring.add(actor)
        if dead or not self._out.get(actor):
            self._kill(actor)
        check = asyncio.get_running_loop().create_task(self._check_replacement(replacement))
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)

    async def _check_replacement(self, actor: Any) -> None:
        """Take a replacement that could not build the Service out of the run (it would fail every item).

        The items already sent to it come back as ``RunNotStarted`` and are retried on the others.
        """
        try:
            _, failure = await actor.ready.remote()
        except self._ray.exceptions.RayActorError as exc:
            failure = (_last_error_line(exc), "")
        if failure is None or actor not in self._actors:
            return
        message, trace = failure
        self._actors.remove(actor)
        self._ray.kill(actor, no_restart=True)
        left = len(self._actors)
        logger.error("A new Ray worker could not build the Service (%s): the run goes on with %d.", message, left)
        if trace:
            logger.error("The new Ray worker's traceback:\n%s", trace, extra=FILE_ONLY)

    def _answered(self, actor: Any) -> None:
        left = self._out.get(actor)
        if left is None:  # killed already
            return
        self._out[actor] = left - 1
        if left == 1 and actor in self._retiring:
            self._kill(actor)

    def _kill(self, actor: Any) -> None:
        self._retiring.discard(actor)
        self._out.pop(actor, None)
        self._ray.kill(actor, no_restart=True)

    def _abandon(self, number: int) -> None:
        """The driver cancelled an item of batch ``number``: cancel its call (one already running goes on)."""
        ref = self._refs.get(number)
        if ref is not None:
            self._ray.cancel(ref)

    async def close(self) -> None:
        """Run the actors' ``on_worker_stop``, end them, and stop a Ray this run started."""
        ray = self._ray
        if ray is None:
            return
        try:
            if self._batcher is not None:
                self._batcher.hold()
            for check in list(self._checks):
                check.cancel()
            replies = await asyncio.gather(*(a.stop.remote() for a in self._actors), return_exceptions=True)
            for reply in replies:
                for record in reply if isinstance(reply, list) else []:
                    receive(record, "Ray")
            for actor in [*self._actors, *self._retiring]:
                ray.kill(actor, no_restart=True)
        finally:
            if self._started_ray:
                await asyncio.to_thread(ray.shutdown)
            if self._working_dir is not None:
                shutil.rmtree(self._working_dir, ignore_errors=True)
            self._logs.restore()


def _first_error_line(exc: BaseException) -> str:
    """A Ray error's first line: the rest is Ray's account of where the actor or task ran."""
    return _error_lines(exc)[0]


def _last_error_line(exc: BaseException) -> str:
    """The last line of Ray's account of an error: what an import on a worker ended with.

    Such as ``ModuleNotFoundError: No module named 'batchframe'``.
    """
    return _error_lines(exc)[-1]


def _error_lines(exc: BaseException) -> list[str]:
    """The lines of a Ray error, without the colour codes Ray writes into them (at least one line)."""
    return [line.strip() for line in without_ansi(describe(exc)).splitlines() if line.strip()] or [""]
