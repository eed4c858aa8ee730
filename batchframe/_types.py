"""Type variables and small protocols shared across the package."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar, runtime_checkable

ItemT = TypeVar("ItemT")


@runtime_checkable
class PersistsFailed(Protocol):
    """A Source that wants the failed items at the end of a run."""

    def persist_failed(self, failed: list[Any]) -> None:
        """Store the items that failed (called once, at the end of the run)."""


@runtime_checkable
class Finishes(Protocol):
    """A Service with a ``finish()`` hook, called once after the last item."""

    def finish(self) -> object:
        """Release resources, flush buffers: called once at the end of the run (may be ``async def``)."""


__all__ = ["Finishes", "ItemT", "PersistsFailed"]
