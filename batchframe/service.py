"""The Service base class: what to do with one item."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Collection
from typing import Generic

from batchframe._types import ItemT

DEFAULT_RETRYABLE: frozenset[type[BaseException]] = frozenset({TimeoutError, ConnectionError})


class Service(ABC, Generic[ItemT]):
    """Processes one work item at a time. Subclass it and implement ``process``.

    ``process`` may be ``async def`` (runs on the event loop) or a plain ``def`` (runs in a thread
    pool so it does not block the loop). An exception fails the item; exceptions that are instances
    of ``exceptions_to_retry_for`` (a class attribute or a property; default TimeoutError and
    ConnectionError) are retried with backoff first. ``finish()`` is called once at the end.
    """

    exceptions_to_retry_for: Collection[type[BaseException]] = DEFAULT_RETRYABLE

    @abstractmethod
    def process(self, item: ItemT) -> Awaitable[None] | None:
        """Process one item; raise to fail it."""

    def finish(self) -> None:
        """Called once after the last item (success or not). Override to clean up."""
