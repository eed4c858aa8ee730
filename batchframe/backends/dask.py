"""The ``dask`` back end: items run on a dask.distributed cluster (``pip install batchframe[dask]``)."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from batchframe.backends import BackendError, ItemCall, ProjectRef, item_timed_out
from batchframe.backends._worker import init_worker, pickled, run_item, teardown_worker

try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # without the extra, start() explains what to install
    WorkerPlugin = object  # type: ignore[misc,assignment]

logger = logging.getLogger(__name__)


class DaskBackend:
    """Submits each item to a dask cluster, where a worker plugin built the Service once per worker.

    Args:
        project: how workers rebuild the Service (they need batchframe and the project's files).
        concurrency: the local cluster's number of workers (at most one per core).
        item_timeout_s: time limit of one attempt (queued time on the cluster included), or None.
        scheduler: a scheduler address such as ``tcp://10.0.0.5:8786``; None starts a LocalCluster.
        connect_timeout_s: how long to try to reach the scheduler.
    """

    def __init__(
        self,
        project: ProjectRef,
        *,
        concurrency: int,
        scheduler: str | None,
        connect_timeout_s: float,
        item_timeout_s: float | None = None,
    ) -> None:
        self.project = project
        self.item_timeout_s = item_timeout_s
        self.scheduler = scheduler
        self.connect_timeout_s = connect_timeout_s
        self.workers = max(1, min(concurrency, os.cpu_count() or 1))
        self._cluster: Any = None
        self._client: Any = None
        self.startup_s = 0.0

    async def start(self) -> ItemCall:
        """Connect (or start a local cluster) and install the Service on every worker."""
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise BackendError(
                "executor=dask needs dask.distributed, which is not installed.",
                hint="Install the extra: pip install 'batchframe[dask]'",
            ) from None
        loop = asyncio.get_running_loop()
        started = loop.time()
        if self.scheduler is None:
            self._cluster = await LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=self.workers,
                threads_per_worker=1,
                processes=True,
                asynchronous=True,
                dashboard_address=None,
            )
            address = self._cluster
        else:
            address = self.scheduler
        self._client = await self._connect(Client, address)
        await self._client.register_plugin(ServicePlugin(self.project), name="batchframe-service")
        self.startup_s = loop.time() - started
        logger.info("Dask cluster ready in %.1f s: %s", self.startup_s, self._client.dashboard_link or address)
        return self._call

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

    async def _call(self, item: Any) -> None:
        # run_item returns the item's failure instead of raising it: dask logs no "Compute Failed" per item.
        future = self._client.submit(run_item, pickled(item), pure=False)
        if self.item_timeout_s is None:
            outcome = await future
        else:
            # dask gives no signal when a task starts: here the limit also counts time queued on the cluster.
            try:
                outcome = await asyncio.wait_for(asyncio.shield(future), self.item_timeout_s)
            except asyncio.TimeoutError:
                await future.cancel()
                raise item_timed_out(self.item_timeout_s) from None
        if outcome is not None:
            raise outcome

    async def close(self) -> None:
        """Disconnect; a local cluster is shut down (its workers' stop hooks run in the plugin teardown)."""
        if self._client is not None:
            await self._client.close()
        if self._cluster is not None:
            await self._cluster.close()


class ServicePlugin(WorkerPlugin):
    """A dask worker plugin: build the Service when a worker starts, call its stop hook when it stops."""

    name = "batchframe-service"

    def __init__(self, project: ProjectRef) -> None:
        self.project = project

    def setup(self, worker: Any) -> None:
        """Build the worker's Service."""
        init_worker(self.project)

    def teardown(self, worker: Any) -> None:
        """Call the Service's stop hook."""
        teardown_worker()
