"""The Source base class and the adapter that iterates any of the three source styles."""

from __future__ import annotations

import logging
import operator
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Generic

from batchframe._types import ItemT

logger = logging.getLogger(__name__)


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
    """``len(source)`` when the Source defines a working ``__len__``, else None (length unknown).

    A ``__len__`` that raises, or returns a negative number or something other than an int, logs one
    warning and the run goes on without a total.
    """
    if not hasattr(type(source), "__len__"):
        return None
    try:
        result = _as_length(type(source).__len__(source))  # type: ignore[attr-defined]
    except Exception as exc:
        result = f"raised {type(exc).__name__}: {_text(exc, str)}"
    if isinstance(result, int):
        return result
    logger.warning(
        "%s.__len__() %s; the length of the source is treated as unknown (no total, no ETA). "
        "Make __len__ return the number of items (an int, zero or more), or remove it.",
        type(source).__qualname__,
        result,
    )
    return None


def _as_length(value: object) -> int | str:
    """``value`` as a length (an int, zero or more), or what is wrong with it. Never raises."""
    if isinstance(value, bool):
        return f"returned {value!r} (bool), not an int"
    try:
        length = operator.index(value)  # type: ignore[arg-type]
    except Exception:
        return f"returned {_text(value, repr)} ({type(value).__name__}), not an int"
    return length if length >= 0 else f"returned {length}, a negative number"


def _text(value: object, render: Callable[[object], str]) -> str:
    """``render(value)`` (``str`` or ``repr``), shortened; a placeholder when the user's method raises."""
    try:
        text = render(value)
    except Exception:
        return f"<unprintable {type(value).__qualname__}>"
    return text if len(text) <= 200 else text[:197] + "..."


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
