"""Type variables and small protocols shared across the package."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

ItemT = TypeVar("ItemT")
ExceptionTypes = "frozenset[type[BaseException]] | set[type[BaseException]] | tuple[type[BaseException], ...]"


@runtime_checkable
class PersistsFailed(Protocol):
    """A Source that wants the failed items at the end of a run."""

    def persist_failed(self, failed: list[Any]) -> None:
        """Store the items that failed (called once, at the end of the run)."""


@runtime_checkable
class Finishes(Protocol):
    """A Service with a ``finish()`` hook, called once after the last item."""

    def finish(self) -> None:
        """Release resources, flush buffers: called once at the end of the run."""


__all__ = ["ExceptionTypes", "Finishes", "ItemT", "PersistsFailed", "Sequence"]
