"""The Service base class: what to do with one item."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Collection
from typing import Any, Generic

from batchframe import _types
from batchframe._types import ItemT
from batchframe.errors import UsageError

DEFAULT_RETRYABLE: frozenset[type[BaseException]] = frozenset({TimeoutError, ConnectionError})


class Service(ABC, Generic[ItemT]):
    """Processes one work item at a time. Subclass it and implement ``process``.

    ``process`` may be ``async def`` (runs on the event loop) or a plain ``def`` (runs in a thread
    pool so it does not block the loop). An exception fails the item; exceptions that are instances
    of ``exceptions_to_retry_for`` (a class attribute or a property; default TimeoutError and
    ConnectionError) are retried with backoff first. ``finish()`` is called once at the end;
    ``on_worker_start()`` / ``on_worker_stop()`` once per worker (once per run with the ``asyncio``
    and ``threads`` executors). Every hook may be ``async def``: it runs on the event loop that
    ``process`` runs on, so a client opened in one hook (or in ``__init__``) can be closed in
    another. A public method whose name is close to a hook's (``on_worker_strat``) is reported with
    a warning when the project is loaded.

    Example:
        >>> class Upload(Service[Path]):
        ...     exceptions_to_retry_for = {ConnectionError, TimeoutError}
        ...     async def on_worker_start(self) -> None:
        ...         self.client = httpx.AsyncClient()
        ...     async def process(self, item: Path) -> None:
        ...         response = await self.client.put(f"https://files.example/{item.name}", content=item.read_bytes())
        ...         response.raise_for_status()
        ...     async def on_worker_stop(self) -> None:
        ...         await self.client.aclose()
    """

    exceptions_to_retry_for: Collection[type[BaseException]] = DEFAULT_RETRYABLE

    @abstractmethod
    def process(self, item: ItemT) -> Awaitable[None] | None:
        """Process one item; raise to fail it."""

    def finish(self) -> Awaitable[None] | None:
        """Called once after the last item (success or not). Override to clean up; may be ``async def``.

        In the run's own process (not in worker processes), on the event loop where ``process`` ran
        with the ``asyncio`` and ``threads`` executors. If it raises, the run's exit code is 1. The
        base implementation does nothing.
        """

    def on_worker_start(self) -> Awaitable[None] | None:
        """Called in each worker before its first item, e.g. to open one connection per worker process.

        Once per worker process with the ``processes`` and ``dask`` executors (the Service is built
        in each worker), once per run with ``asyncio`` and ``threads``. May be ``async def``: it runs
        on the loop ``process`` runs on. If it raises, the worker cannot start and the run fails.
        The base implementation does nothing.
        """

    def on_worker_stop(self) -> Awaitable[None] | None:
        """Called in each worker when it stops (after its last item), e.g. to close a connection.

        May be ``async def`` (on the loop ``process`` ran on). If it raises, the error is logged. The
        base implementation does nothing.
        """


SERVICE_HOOKS = ("process", "finish", "on_worker_start", "on_worker_stop")
"""The Service methods batchframe calls by name."""

SERVICE_ATTRIBUTES = ("exceptions_to_retry_for",)
"""The Service attributes batchframe reads by name (a class attribute or a property)."""


def misspelt_hooks(cls: type) -> list[str]:
    """Warnings for the names of a Service class that look like misspelt hooks (``on_worker_strat``)."""
    return _types.misspelt_hooks(cls, Service, methods=SERVICE_HOOKS, attributes=SERVICE_ATTRIBUTES)


def retryable_exceptions(service: Any) -> tuple[type[BaseException], ...]:
    """The Service's ``exceptions_to_retry_for``, checked: exception classes only.

    Raises:
        UsageError: a str, an instance, a non-exception class or anything else; or a property that raises.
    """
    owner = type(service).__qualname__
    try:
        configured = getattr(service, "exceptions_to_retry_for", None)
    except Exception as exc:
        raise UsageError(
            f"{owner}.exceptions_to_retry_for raised {type(exc).__name__}: {exc}.",
            hint="Make it a plain class attribute (a set of exception classes) or a property that returns one.",
        ) from exc
    if configured is None:
        return tuple(DEFAULT_RETRYABLE)
    classes = (configured,) if isinstance(configured, type) else configured
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Collection):
        raise _not_exceptions(owner, configured)
    bad = [entry for entry in classes if not (isinstance(entry, type) and issubclass(entry, BaseException))]
    if bad:
        raise _not_exceptions(owner, bad[0])
    return tuple(classes)


def _not_exceptions(owner: str, value: object) -> UsageError:
    from batchframe._text import safe_repr

    return UsageError(
        f"{owner}.exceptions_to_retry_for must hold exception classes; it has {safe_repr(value)} "
        f"({type(value).__name__}).",
        hint="Write the classes themselves, e.g. exceptions_to_retry_for = {ConnectionError, TimeoutError} "
        "(not their names in quotes, not instances like ConnectionError()).",
    )
