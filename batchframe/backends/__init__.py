"""Execution back ends: where one item's ``process`` call runs.

The driver (``batchframe.run.driver.Driver``) owns everything else (the queue, retries, timeouts,
the rate limit, progress, the journal, failed items, pause and stop), so every back end behaves the
same; a back end only turns ``item`` into an awaitable call of the Service's ``process``:

- ``asyncio`` (default): ``async def process`` on the event loop, a plain ``def`` in a thread pool.
- ``threads``: every call in a thread pool of ``concurrency`` threads (an async ``process`` and
  async hooks run on one event loop of the run's, ``_loop.ServiceLoop``).
- ``processes``: a pool of worker processes (as many as ``concurrency``, at most one per core); the
  Service is built in each worker from the run's ``ServiceFactory`` (the project, config and resolved
  parameter values), so it need not be picklable; items and exceptions must be.
- ``dask``: a ``dask.distributed`` cluster: the scheduler at ``scheduler``, or a local cluster; the
  project's folder travels with the run to a remote cluster's workers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from batchframe.errors import ParamError, RunError

if TYPE_CHECKING:
    from batchframe.backends._factory import ServiceFactory
    from batchframe.backends._loop import ServiceLoop

ExecutorName = Literal["asyncio", "threads", "processes", "dask", "ray"]
"""The back ends ``-p executor=`` takes (the type of ``Configuration.executor``): a new one is added here."""
BACKENDS: tuple[str, ...] = get_args(ExecutorName)
WORKER_BACKENDS = ("processes", "dask", "ray")

MAX_BATCH = 256
"""The largest batch a worker back end sends: enough to make a round trip negligible for items that take no time."""
"""The back ends that build the Service again in worker processes (from a ``ServiceFactory``)."""

ItemCall = Callable[[Any], Awaitable[Any]]
"""Processes one item: what a back end gives the driver."""


def item_timed_out(timeout_s: float) -> TimeoutError:
    """The error an attempt that ran longer than ``item_timeout_sec`` fails with (the builtin, retryable)."""
    return TimeoutError(f"item took longer than item_timeout_sec={timeout_s:g}")


class NotStarted(Exception):  # noqa: N818 - an outcome, not an error
    """A back end gave the item back without running it (a pause or a stop, or its worker ended first).

    It is not an attempt: the driver hands the item out again, or records it as not processed when stopping.
    """


NOT_STARTED = NotStarted("the item was given back without being run")


class BackendError(RunError):
    """A back end could not start (e.g. a dask scheduler that does not answer)."""

    title = "Executor error"


class Backend(Protocol):
    """What the driver needs of a back end.

    The per-item call may raise ``NotStarted`` for an item it gives back without running it.
    """

    slots: int
    """How many items the driver keeps in flight (read after ``start()``)."""

    async def start(self) -> ItemCall:
        """Get ready (start pools or connect) and return the per-item call."""

    def hold(self) -> None:
        """Start no more items (a pause or a stop); items waiting to be sent are given back as ``NotStarted``."""

    def release(self) -> None:
        """Start items again after ``hold()``."""

    async def close(self) -> None:
        """Release pools, clusters and connections; run the workers' teardown hooks."""


def make_backend(
    name: str,
    *,
    service: Any,
    concurrency: int,
    factory: ServiceFactory | None = None,
    scheduler: str | None = None,
    connect_timeout_s: float = 10.0,
    item_timeout_s: float | None = None,
    service_loop: ServiceLoop | None = None,
) -> Backend:
    """The back end called ``name``.

    ``service_loop`` is where ``threads`` runs the Service's async code (the caller closes it after
    ``finish``, which runs there too).

    A back end enforces ``item_timeout_s`` itself: it measures an item's own running time (never
    time spent waiting for a free worker) and fails the attempt with ``item_timed_out(...)``.

    Raises:
        ParamError: an unknown name (the message lists the valid ones), or a back end that builds
            the Service in worker processes without a ``factory`` to build it from.
    """
    if name not in BACKENDS:
        raise ParamError(
            f"Unknown executor {name!r}. Valid executors: {', '.join(BACKENDS)}.",
            hint="Set it with -p executor=NAME or in your configuration.",
            param="executor",
        )
    if name in ("asyncio", "threads"):
        from batchframe.backends.local import LocalBackend

        return LocalBackend(
            service,
            concurrency=concurrency,
            all_in_threads=name == "threads",
            item_timeout_s=item_timeout_s,
            service_loop=service_loop,
        )
    if factory is None:
        raise ParamError(
            f"executor={name} builds the Service again in each worker, which needs a project path.",
            hint="Run it with batchframe exec PATH (batchframe.testing.run_service runs in-process only).",
            param="executor",
        )
    if name == "processes":
        from batchframe.backends.processes import ProcessBackend

        return ProcessBackend(factory, concurrency=concurrency, item_timeout_s=item_timeout_s)
    if name == "ray":
        from batchframe.backends.ray import RayBackend

        return RayBackend(
            factory,
            concurrency=concurrency,
            address=scheduler,
            connect_timeout_s=connect_timeout_s,
            item_timeout_s=item_timeout_s,
        )
    from batchframe.backends.dask import DaskBackend

    return DaskBackend(
        factory,
        concurrency=concurrency,
        scheduler=scheduler,
        connect_timeout_s=connect_timeout_s,
        item_timeout_s=item_timeout_s,
    )
