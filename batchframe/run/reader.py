"""Reading a synchronous Source on a thread of its own, so a slow ``next()`` never blocks the event loop.

The thread reads ahead at most ``window`` items into a deque; the loop takes them from there in
chunks (``take``): what crosses from the thread to the loop is a list of the items read since the
last take, and a wake-up crosses only when the loop may be waiting (not once per item). A fast
source then costs about what a plain ``for`` loop costs, and a source that blocks (a queue
consumer) leaves signals, timers and async items running.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

_JOIN_S = 0.2


class ThreadedReader:
    """An async iterator over a sync iterator that is advanced on a background thread.

    Args:
        iterator: the Source's items.
        window: how many items the thread reads ahead of the consumer at most.
    """

    def __init__(self, iterator: Iterator[Any], *, window: int) -> None:
        self._iterator = iterator
        self._window = max(1, window)
        self.filled = False
        """The thread stopped at a full window since ``take`` last had to wait: the Source is fast."""
        self.waited = False
        """The last ``take`` found nothing read and had to wait for the thread."""
        self._items: collections.deque[Any] = collections.deque()
        self._room = threading.Event()
        self._closed = False
        self._finished = False
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._wake_pending = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start reading on the thread (once, from the event loop that will ``take``)."""
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._read, name="batchframe-source", daemon=True)
            self._thread.start()

    async def take(self, most: int) -> list[Any]:
        """Wait for items read ahead; return up to ``most`` of them (at least one), or [] at the end.

        Raises:
            BaseException: what the Source raised, once the items it gave before are taken.
        """
        items = self._items
        self.waited = not items and not self._finished
        while not items:
            if self._finished:
                if self._error is not None:
                    raise self._error
                return []
            assert self._loop is not None
            waiter = self._waiter = self._loop.create_future()
            if not items and not self._finished:  # nothing arrived while we made the future
                await waiter
        if self.waited:
            self.filled = False
        popleft = items.popleft
        chunk = [popleft() for _ in range(max(1, min(most, len(items))))]
        if len(items) <= self._window // 2 and not self._room.is_set():
            self._room.set()
        return chunk

    def close(self) -> tuple[list[Any], bool]:
        """Stop reading; return the items read but not taken, and whether the iterator can go on.

        The iterator cannot go on when the thread is stuck inside ``next()`` (a blocked source) or
        the source ended or raised.
        """
        self._closed = True
        self._room.set()
        if self._thread is not None:
            self._thread.join(_JOIN_S)
        free = self._thread is None or (not self._thread.is_alive() and not self._finished)
        leftovers = list(self._items)
        self._items.clear()
        return leftovers, free

    def widen(self, window: int) -> None:
        """Read up to ``window`` items ahead from now on."""
        self._window = max(self._window, window)
        self._room.set()

    @property
    def exhausted(self) -> bool:
        """The thread read the iterator to its end (not stopped by an error): nothing is left unread."""
        return self._finished and self._error is None

    @property
    def iterator(self) -> Iterator[Any]:
        """The underlying iterator (to read the rest after ``close()`` said it is free)."""
        return self._iterator

    # ------------------------------------------------------------------------------ the thread

    def _read(self) -> None:
        items, iterator = self._items, self._iterator
        try:
            while not self._closed:
                if len(items) >= self._window:
                    self.filled = True
                    self._room.clear()
                    if len(items) >= self._window and not self._closed:
                        self._room.wait()
                    continue
                try:
                    item = next(iterator)
                except StopIteration:
                    self._finished = True
                    return
                items.append(item)
                if not self._wake_pending:
                    self._wake()
        except BaseException as exc:  # the Source's own error, for the loop to report
            self._error = exc
            self._finished = True
        finally:
            self._wake()

    def _wake(self) -> None:
        self._wake_pending = True
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(self._on_wake)

    def _on_wake(self) -> None:
        self._wake_pending = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
