"""The Source base class and the adapter that iterates any of the three source styles."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic

from batchframe._types import ItemT


class Source(Generic[ItemT]):
    """Where the work items come from. Subclass it and implement one of three styles.

    - ``def next(self) -> T``: return the next item, raise ``StopIteration`` at the end.
    - ``def __iter__(self)``: a generator that yields the items.
    - ``async def __aiter__(self)``: an async generator that yields the items.

    Optional hooks: ``__len__`` (gives progress a total) and ``persist_failed(failed: list[T])``,
    called once at the end with the items that failed (batchframe also keeps its own copy in the
    run folder, so a missing or broken ``persist_failed`` loses nothing).

    Example:
        >>> class Numbers(Source[int]):
        ...     def __init__(self, count: BatchframeParam[int] = 10):
        ...         self.items = iter(range(count))
        ...     def next(self) -> int:
        ...         return next(self.items)
    """

    def next(self) -> ItemT:
        """Return the next item; raise ``StopIteration`` when there are no more."""
        raise NotImplementedError(
            f"{type(self).__qualname__} must define next(), __iter__() or __aiter__() to produce items"
        )


def _overrides(source: object, name: str) -> bool:
    return any(name in vars(klass) for klass in type(source).__mro__ if klass is not Source)


def source_length(source: object) -> int | None:
    """``len(source)`` when the Source defines ``__len__`` and it works, else None."""
    if not hasattr(type(source), "__len__"):
        return None
    try:
        return len(source)  # type: ignore[arg-type]
    except TypeError:
        return None


def is_async_source(source: object) -> bool:
    """Whether the source yields its items through ``__aiter__``."""
    return _overrides(source, "__aiter__")


def iter_sync_source(source: Source[Any]) -> Iterator[Any]:
    """Iterate a ``__iter__``-style or ``next()``-style source."""
    if _overrides(source, "__iter__"):
        return iter(source)  # type: ignore[call-overload,no-any-return]
    if not _overrides(source, "next"):
        raise TypeError(
            f"{type(source).__qualname__} defines none of next(), __iter__() or __aiter__(), so it yields no items"
        )
    return _call_next(source)


def _call_next(source: Source[Any]) -> Iterator[Any]:
    next_item = source.next
    while True:
        try:
            item = next_item()
        except StopIteration:
            return
        yield item


def iter_async_source(source: object) -> AsyncIterator[Any]:
    """Iterate an ``__aiter__``-style source."""
    return source.__aiter__()  # type: ignore[attr-defined,no-any-return]
