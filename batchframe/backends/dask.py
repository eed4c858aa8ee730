"""The ``dask`` back end: items run on a dask.distributed cluster (``pip install batchframe[dask]``).

Each run installs a worker plugin named after its run key (``ServicePlugin``): every worker, and
every worker that joins later, builds the run's Service from the run's ``ServiceFactory`` and
files it under the key, so several runs can share one cluster. Each task carries the run key.
Unregistering the plugin at the end of the run calls the Service's ``on_worker_stop`` on each worker.

A remote cluster's workers get the project's folder with the run (zipped in the factory) and
import it from a folder of their own; they must run the driver's batchframe and Python (major.minor),
which is checked before anything is sent. A local cluster's workers import the project from where
it is.

Items travel in batches (``_batches.Batcher``: one task per batch of about 0.1 s of work, two
batches per worker thread in flight), each item with its own outcome.

Log records of the run's code on the workers reach the run's logs.txt (as dask events on a topic
named after the run key). dask's own records go to logs.txt only, not the console (``-v`` shows
them): on this machine (the local cluster's scheduler and nannies) and, for a local cluster, its
workers' warnings and errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import traceback
from typing import Any

from batchframe.backends import BackendError, ItemCall
from batchframe.backends._batches import WINDOW, Batcher, BatchingBackend, BatchReply, BatchSizer
from batchframe.backends._dask_plugin import ServicePlugin, WorkerSetupError, log_topic
from batchframe.backends._engine_logs import EngineLogs, receive
from batchframe.backends._factory import ServiceFactory
from batchframe.backends._worker import NOT_RUN, describe, run_batch, unpack
from batchframe.runfolder.logs import FILE_ONLY

logger = logging.getLogger(__name__)

DASK_BATCH_S = 0.3
"""How much work one task holds, once the item time is known (see ``_batches``)."""

UNREGISTER_TIMEOUT_S = 60.0
"""How long the end of a run waits for the workers' ``on_worker_stop`` hooks."""


class DaskBackend(BatchingBackend):
    """Submits batches of items to a dask cluster, where a run-keyed worker plugin built the Service once per worker.

    Args:
        factory: how workers build the Service.
        concurrency: a local cluster's number of workers (at most one per core); a remote cluster's
            workers are all used, every thread of each.
        item_timeout_s: time limit of one attempt, counted on the worker from when the item starts; or None.
        scheduler: a scheduler address such as ``tcp://10.0.0.5:8786``; None starts a LocalCluster.
        connect_timeout_s: how long to try to reach the scheduler.

    Attributes:
        threads: after ``start()``, how many items the cluster's workers run at once (their threads).
        startup_s: after ``start()``, how long the cluster took to get ready.
    """

    def __init__(
        self,
        factory: ServiceFactory,
        *,
        concurrency: int,
        scheduler: str | None,
        connect_timeout_s: float,
        item_timeout_s: float | None = None,
    ) -> None:
        self.factory = factory
        self.item_timeout_s = item_timeout_s
        self.scheduler = scheduler
        self.connect_timeout_s = connect_timeout_s
        self.workers = max(1, min(concurrency, os.cpu_count() or 1))
        self.slots = 0
        self.threads = 0
        self.startup_s = 0.0
        self._cluster: Any = None
        self._client: Any = None
        self._plugin: str | None = None
        self._topic: str | None = None
        self._logs = EngineLogs()
        self._cancels: set[asyncio.Task[Any]] = set()
        self._batcher: Batcher | None = None
        self._futures: dict[int, Any] = {}  # a batch's number -> its dask future

    async def start(self) -> ItemCall:
        """Connect (or start a local cluster), check the workers' versions and install the Service on them.

        Raises:
            BackendError: dask is not installed; the cluster cannot start or be reached; a worker runs
                another batchframe or Python; the project is too large to send; a worker cannot build
                the Service.
        """
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise BackendError(
                "executor=dask needs dask.distributed, which is not installed.",
                hint="Install the extra: pip install 'batchframe[dask]'",
            ) from None
        self._logs.install()
        loop = asyncio.get_running_loop()
        started = loop.time()
        address = self.scheduler
        if address is None:
            self._cluster = await _local_cluster(LocalCluster, self.workers)
        self._client = await self._connect(Client, self._cluster if address is None else address)
        await self._check_versions()
        factory = self.factory
        if address is not None:  # workers elsewhere may not have the project's files
            factory = await asyncio.to_thread(factory.with_archive)
        await self._install(factory)
        self.threads = sum((await self._client.nthreads()).values())
        self.startup_s = loop.time() - started
        self._log_ready(address)
        # Workers that join later are used too: dask queues the tasks beyond the window on the scheduler.
        batches = max(self.threads, self.workers if address is None else 1) * WINDOW
        # A task costs a few hops through the scheduler: batches of more work than processes' keep workers busy.
        sizer = BatchSizer(target_s=DASK_BATCH_S)
        self._batcher = Batcher(self._send, batches_in_flight=batches, on_abandoned=self._abandon, sizer=sizer)
        self.slots = self._batcher.slots
        return self._batcher.call

    async def _connect(self, client_cls: Any, address: Any) -> Any:
        try:
            return await asyncio.wait_for(
                client_cls(address, asynchronous=True, timeout=self.connect_timeout_s),
                self.connect_timeout_s + 5,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise BackendError(
                f"Could not reach the dask scheduler at {address} within {self.connect_timeout_s:g} s ({exc}).",
                hint="Check the address (-p scheduler=tcp://HOST:8786) and that the scheduler runs. "
                "No item was processed; run again when it answers.",
            ) from None

    async def _check_versions(self) -> None:
        """Raise a BackendError naming the workers that run another batchframe or Python than this driver."""
        versions = await self._client.get_versions(packages=["batchframe"])
        wanted = (self.factory.batchframe_version, self.factory.python_version)
        wrong = []
        for address, info in sorted(versions.get("workers", {}).items()):
            found = (info.get("packages", {}).get("batchframe"), _major_minor(info.get("host", {}).get("python")))
            if found != wanted:
                wrong.append(f"{address} runs batchframe {found[0] or '(not installed)'} on Python {found[1] or '?'}")
        if wrong:
            raise BackendError(
                f"The dask workers must run this driver's batchframe {wanted[0]} on Python {wanted[1]}, but "
                + "; ".join(wrong[:5])
                + (f" (and {len(wrong) - 5} more)" if len(wrong) > 5 else "")
                + ".",
                hint=f"Install batchframe {wanted[0]} (pip install 'batchframe[dask]=={wanted[0]}') on Python "
                f"{wanted[1]} where the workers run, then start them again. No item was processed.",
            )

    async def _install(self, factory: ServiceFactory) -> None:
        """Subscribe to the run's worker logs and register the run's plugin (every worker builds the Service)."""
        key = factory.run_key
        self._topic = log_topic(key)
        self._client.subscribe_topic(self._topic, _receive_log)
        level = logging.getLogger().getEffectiveLevel()
        plugin = ServicePlugin(factory, level, dask_warnings=self._cluster is not None)
        self._plugin = plugin.name
        try:
            await self._client.register_plugin(plugin, name=plugin.name)
        except WorkerSetupError as exc:
            what, trace = [*map(str, exc.args), "", ""][:2]
            logger.error("A dask worker could not build the Service:\n%s", trace, extra=FILE_ONLY)
            raise BackendError(
                f"A dask worker could not build the Service: {what}",
                hint="Loading the project, the Service's constructor or on_worker_start raised on a worker "
                "(the traceback is in the run's logs.txt). No item was processed.",
            ) from None
        except Exception as exc:
            raise BackendError(
                f"Could not install the Service on the dask workers: {describe(exc)}",
                hint="Check the cluster (its dashboard or logs); no item was processed.",
            ) from None

    def _log_ready(self, address: str | None) -> None:
        link = self._client.dashboard_link if address is None and _has_bokeh() else None
        workers = f"{self.threads} worker threads" if self.threads else "no workers yet (items wait for one)"
        where = f"the scheduler at {address}" if address is not None else "a local cluster"
        dashboard = f"; dashboard: {link}" if link else ""
        logger.info("Dask cluster ready in %.1f s: %s, %s%s", self.startup_s, where, workers, dashboard)

    async def _send(self, number: int, payload: bytes, count: int) -> BatchReply:
        future = self._client.submit(run_batch, self.factory.run_key, payload, self.item_timeout_s, pure=False)
        self._futures[number] = future
        try:
            busy_s, packed = await future  # a RemoteError: the batch could not be loaded on the worker
        except asyncio.CancelledError:
            self._cancel(future)
            raise
        finally:
            self._futures.pop(number, None)
        outcomes = [unpack(entry) for entry in packed]
        return BatchReply(outcomes, busy_s, sum(1 for entry in packed if entry != NOT_RUN))

    def _abandon(self, number: int) -> None:
        """The driver cancelled an item of batch ``number``: cancel its task (one already running goes on)."""
        future = self._futures.get(number)
        if future is not None:
            self._cancel(future)

    def _cancel(self, future: Any) -> None:
        """Cancel a submitted task in the background (a task already running goes on until it returns)."""
        task = asyncio.ensure_future(future.cancel())
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    async def close(self) -> None:
        """Run the workers' stop hooks (unregister the run's plugin), disconnect, shut a local cluster down."""
        try:
            if self._batcher is not None:
                self._batcher.hold()
            if self._client is not None:
                await self._uninstall()
                await self._client.close()
            if self._cluster is not None:
                await self._cluster.close()
        finally:
            self._logs.restore()

    async def _uninstall(self) -> None:
        if self._plugin is not None:
            try:
                await asyncio.wait_for(self._client.unregister_worker_plugin(self._plugin), UNREGISTER_TIMEOUT_S)
            except Exception as exc:
                logger.warning("Could not run on_worker_stop on every dask worker: %s", describe(exc))
            await asyncio.sleep(0.1)  # the stop hooks' log records travel through the scheduler too
        if self._topic is not None:
            with contextlib.suppress(Exception):
                self._client.unsubscribe_topic(self._topic)


async def _local_cluster(cluster_cls: Any, workers: int) -> Any:
    """A LocalCluster of ``workers`` single-threaded worker processes; a BackendError naming the cause if it fails."""
    dashboard = _has_bokeh()
    try:
        return await cluster_cls(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            asynchronous=True,
            silence_logs=logging.CRITICAL,  # its workers' stderr is our console: their warnings come as records
            dashboard_address="127.0.0.1:0" if dashboard else None,
            # Without a dashboard the scheduler still serves /health on 8787: a second local run would warn.
            scheduler_kwargs=None if dashboard else {"dashboard_address": "127.0.0.1:0"},
        )
    except Exception as exc:
        cause = _root_cause(exc)
        trace = "".join(traceback.format_exception(exc))
        logger.error("The local dask cluster could not start:\n%s", trace, extra=FILE_ONLY)
        dask_said = f" (dask: {describe(exc)})" if cause is not exc else ""
        raise BackendError(
            f"Could not start a local dask cluster: {describe(cause)}{dask_said}",
            hint="dask's own messages are in the run's logs.txt. Check that dask workers can start in this "
            "environment, or use a running cluster with -p scheduler=tcp://HOST:8786.",
        ) from None


def _root_cause(exc: BaseException) -> BaseException:
    seen = {id(exc)}
    while (nxt := exc.__cause__ or exc.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        exc = nxt
    return exc


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def _major_minor(version: Any) -> str | None:
    """``3.11`` from ``3.11.7.final.0``."""
    return ".".join(str(version).split(".")[:2]) if version else None


def _receive_log(event: tuple[float, Any]) -> None:
    """Hand a worker's log record (a dask event) to this process's handlers: logs.txt and the console."""
    receive(event[1], "dask")
