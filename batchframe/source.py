"""The Source base class and the adapter that iterates any of the three source styles."""

from __future__ import annotations

import inspect
import itertools
import logging
import operator
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, Generic

from batchframe import _types
from batchframe._types import ItemT
from batchframe.errors import ProjectError, UsageError

logger = logging.getLogger(__name__)


class Source(Generic[ItemT]):
    """Where the work items come from. Subclass it and implement one of three styles.

    - ``def next(self) -> T``: return the next item, raise ``StopIteration`` at the end.
    - ``def __iter__(self)``: a generator that yields the items.
    - ``async def __aiter__(self)``: an async generator that yields the items.

    ``next`` and ``__iter__`` are called as plain functions: written ``async def`` (or yielding
    coroutines) they are refused with an error that says to write ``__aiter__`` instead.

    Optional hooks: ``__len__`` (gives progress a total) and ``persist_failed(failed)``, called once
    at the end with the items that failed (batchframe also keeps its own copy in the run folder, so
    a missing or broken ``persist_failed`` loses nothing). A public method whose name is close to a
    hook's (``persist_faild``) is reported with a warning when the project is loaded.

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

    def persist_failed(self, failed: Sequence[ItemT]) -> Awaitable[None] | None:
        """Optional: store the items that did not succeed, e.g. to re-send them later.

        Called once at the end of the run when some items failed (not called when none did, nor when
        a Source does not override it). ``failed`` is a read-only sequence (``len``, ``for``,
        indexing) read back from a temporary file, so a million failures are not held in memory;
        ``list(failed)`` makes a real list. It may be ``async def``. If it raises, the run's exit code
        is 1 and every failed item is still in ``failed.jsonl``. The base implementation does nothing.
        """


SOURCE_HOOKS = ("next", "persist_failed")
"""The Source methods batchframe calls by name (besides ``__len__``, ``__iter__`` and ``__aiter__``)."""


def misspelt_hooks(cls: type) -> list[str]:
    """Warnings for the methods of a Source class that look like misspelt hooks (``persist_faild``)."""
    iterates = defines_hook(cls, "__iter__") or defines_hook(cls, "__aiter__")
    hooks = [hook for hook in SOURCE_HOOKS if not (hook == "next" and iterates)]
    return _types.misspelt_hooks(cls, Source, methods=hooks)


def defines_hook(cls: type, name: str) -> bool:
    """Whether a Source class has its own ``name`` (not the base class's no-op)."""
    return _types.defines(cls, name, Source)


def _overrides(source: object, name: str) -> bool:
    return defines_hook(type(source), name)


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
    from batchframe._text import shortened, unprintable

    try:
        text = render(value)
    except Exception:
        return unprintable(value)
    return shortened(text, 200)


def is_async_source(source: object) -> bool:
    """Whether the source yields its items through ``__aiter__``."""
    return _overrides(source, "__aiter__")


def check_source(source: object) -> None:
    """Refuse a Source whose item method is written ``async def`` where batchframe calls a plain one.

    ``async def next()`` returns a coroutine per call and never raises ``StopIteration``, so a run
    would "process" coroutines forever; ``async def __iter__`` returns a coroutine, not an iterator.
    Checked on the class, before a single item is read.

    Raises:
        ProjectError: the method batchframe would call is a coroutine or async generator function.
    """
    cls = type(source)
    method = _item_method(cls)
    if method is None:
        return
    function = getattr(cls, method, None)
    asyncgen = inspect.isasyncgenfunction(function)
    if inspect.iscoroutinefunction(function) or (asyncgen and method != "__aiter__"):
        raise _async_misuse(cls, method, asyncgen=asyncgen)


def _item_method(cls: type) -> str | None:
    """The method that produces a Source's items, in the order batchframe looks for them; None: none."""
    for name in ("__aiter__", "__iter__", "next"):
        if defines_hook(cls, name):
            return name
    return None


def _async_misuse(cls: type, method: str, *, asyncgen: bool) -> ProjectError:
    name = cls.__qualname__
    if method == "__aiter__":
        return ProjectError(
            f"{name}.__aiter__() is async def without a yield: batchframe iterates what it returns with "
            "async for, and a coroutine cannot be iterated.",
            hint="Make __aiter__ an async generator: async def __aiter__(self): ... yield item.",
        )
    returns = "an async generator" if asyncgen else "a coroutine"
    call = "calls it as a plain function, once per item" if method == "next" else "calls it as a plain function"
    return ProjectError(
        f"{name}.{method}() is async def: batchframe {call}, so it gets {returns}, not "
        f"{'an item' if method == 'next' else 'an iterator of items'}.",
        hint=f"Write async def __aiter__(self) (an async generator that yields the items) instead, "
        f"or make {method}() a plain def.",
    )


def _awaitable_item(cls: type, method: str, item: object) -> TypeError:
    """The error for an item that is a coroutine (or any awaitable): ``method`` is not meant to be async."""
    if inspect.iscoroutine(item):
        item.close()  # never awaited: no "coroutine was never awaited" warning on top of this error
    produced = "returned" if method == "next" else "yielded"
    return TypeError(
        f"{cls.__qualname__}.{method}() {produced} an awaitable ({type(item).__qualname__}) as an item: batchframe "
        "does not await items; write async def __aiter__(self) (an async generator that awaits and yields "
        "the items) instead"
    )


def iter_sync_source(source: Source[Any]) -> Iterator[Any]:
    """Iterate a ``__iter__``-style or ``next()``-style source.

    The first item is checked (an awaitable is a TypeError naming the method); the rest go through
    without a check, at the Source's own speed.

    Raises:
        ProjectError: the method is ``async def`` (see ``check_source``).
        TypeError: the Source defines no item method.
    """
    check_source(source)
    if _overrides(source, "__iter__"):
        return _first_checked(source, iter(source))  # type: ignore[call-overload]
    if not _overrides(source, "next"):
        raise TypeError(
            f"{type(source).__qualname__} defines none of next(), __iter__() or __aiter__(), so it yields no items"
        )
    return _call_next(source)


def _call_next(source: Source[Any]) -> Iterator[Any]:
    next_item = source.next
    try:
        item = next_item()
    except StopIteration:
        return
    if inspect.isawaitable(item):
        raise _awaitable_item(type(source), "next", item)
    yield item
    while True:
        try:
            item = next_item()
        except StopIteration:
            return
        yield item


def _first_checked(source: object, iterator: Iterator[Any]) -> Iterator[Any]:
    """``iterator`` with its first item checked when it is read; the rest pass through a C-level chain.

    Lazy: nothing is read here (the first ``next()`` may block, and runs on the reader's thread).
    """
    return _Rest(_checked_head(source, iterator), iterator, source_iterator=iterator)


def _checked_head(source: object, iterator: Iterator[Any]) -> Iterator[Any]:
    """The first item of ``iterator``, checked (an awaitable is a TypeError naming ``__iter__``)."""
    for item in iterator:
        if inspect.isawaitable(item):
            raise _awaitable_item(type(source), "__iter__", item)
        yield item
        return


class _Rest(itertools.chain):  # type: ignore[type-arg]
    """The first item again, then the rest; ``close()`` reaches the Source's generator (its ``finally``)."""

    source_iterator: Iterator[Any]

    def __new__(cls, *iterables: Any, source_iterator: Iterator[Any]) -> _Rest:
        chained = super().__new__(cls, *iterables)
        chained.source_iterator = source_iterator
        return chained

    def close(self) -> None:
        """Close the Source's own generator, if it is one."""
        close = getattr(self.source_iterator, "close", None)
        if callable(close):
            close()


def iter_async_source(source: object) -> AsyncIterator[Any]:
    """Iterate an ``__aiter__``-style source."""
    return source.__aiter__()  # type: ignore[attr-defined,no-any-return]


MAX_LIMIT = min(2**63 - 1, sys.maxsize)
"""The largest ``--limit``: what the journal's INTEGER holds and ``itertools.islice`` takes."""


def check_limit(limit: int | None) -> None:
    """Refuse a ``--limit`` that is not a whole number from 1 to ``MAX_LIMIT``, before anything is created.

    Raises:
        UsageError: with the bounds.
    """
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise UsageError(
            f"--limit {_text(limit, str)} is out of range: it takes a whole number from 1 to {MAX_LIMIT:,}.",
            hint="Give a smaller N, or leave --limit out to process every item.",
        )


async def first_async_items(items: AsyncIterator[Any], limit: int) -> AsyncIterator[Any]:
    """The first ``limit`` items of an async source (``--limit``); the next one is never asked for."""
    if limit <= 0:
        return
    taken = 0
    async for item in items:
        yield item
        taken += 1
        if taken >= limit:
            return
