"""A ``processes`` worker: a fresh Python process serving the driver over one pipe (see ``serve``).

Besides the pipe, the worker shares a few bytes of memory with the driver (``Progress``): which item
of which batch it is running and since when. Writing them costs a fraction of a microsecond per
item, and it is what lets the driver time each item out from its own start and, when a worker dies
or is killed mid-batch, tell the items that finished from the one that was running (retried) and
those that never started (handed out again, not counted as attempts).
"""

from __future__ import annotations

import logging
import mmap
import os
import pickle
import struct
import threading
import time
from typing import TYPE_CHECKING, Any

from batchframe._text import format_exception
from batchframe.backends._worker import (
    describe,
    load_items,
    pack,
    run_one,
    start_service,
    stop_service,
    transportable,
)
from batchframe.runfolder.logs import FILE_ONLY

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

logger = logging.getLogger(__name__)

READY, FAILED, DONE, LOG = "ready", "failed", "done", "log"
"""The kinds of message a worker sends (see ``serve``)."""

PROGRESS_SIZE = 32


class Progress:
    """The worker's progress in memory shared with the driver: batch, item started, items done, start time.

    The worker writes it; the driver reads it (a slightly stale read only makes a timeout fire a
    moment late). Times are ``time.monotonic()``, one clock for every process of the machine.
    """

    _LAYOUT = struct.Struct("<qqqd")

    def __init__(self, fd: int) -> None:
        self._memory = mmap.mmap(fd, PROGRESS_SIZE)
        self.closed = False

    def starting(self, batch: int, index: int) -> None:
        """Item ``index`` of batch ``batch`` starts now (the items before it are done)."""
        self._LAYOUT.pack_into(self._memory, 0, batch, index, index, time.monotonic())

    def finished(self, batch: int, index: int, started_at: float) -> None:
        """Item ``index`` of batch ``batch`` is done."""
        self._LAYOUT.pack_into(self._memory, 0, batch, index, index + 1, started_at)

    def read(self) -> tuple[int, int, int, float]:
        """(batch, index of the item started last, how many items of the batch are done, when it started)."""
        batch, started, done, at = self._LAYOUT.unpack_from(self._memory, 0)
        return int(batch), int(started), int(done), float(at)

    def close(self) -> None:
        """Unmap the memory."""
        self.closed = True
        self._memory.close()


class Channel:
    """The worker's end of its pipe: whole messages, from any thread; the log handler's queue too."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def send(self, kind: str, body: Any) -> None:
        """Send one ``(kind, body)`` message."""
        with self._lock:
            self._conn.send((kind, body))

    def put_nowait(self, record: logging.LogRecord) -> None:
        """Send a log record (what ``QueueHandler`` calls)."""
        self.send(LOG, pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL))


def main(fd: int, progress_fd: int) -> None:
    """A worker's entry point: serve the driver over the socket ``fd``, with its progress in ``progress_fd``."""
    from multiprocessing.connection import Connection

    guard = threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="batchframe-guard", daemon=True)
    guard.start()
    serve(Connection(fd), Progress(progress_fd))


def _exit_with_parent(parent: int) -> None:
    """End this worker once the driver has gone (``kill -9``), even while an item blocks forever."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def serve(conn: Connection, progress: Progress) -> None:
    """Build the Service, then process the batches the driver sends until it says stop.

    The driver sends ``(project, log_level)`` first, then batches ``(number, items pickled one by one)``,
    then None (stop). The worker answers ``(READY, None)`` once the Service is built, or
    ``(READY, error)`` and exits when it cannot be; ``(FAILED, (number, index, error))`` as soon as
    an item fails; ``(DONE, (number, busy_s, error))`` when a batch is over (``error``: why none of
    its items could be run, or None); and ``(LOG, record)`` at any time. Errors travel packed
    (``pack``) and log records pickled, so the driver can always read a message, even when it cannot
    unpickle what is inside.
    """
    channel = Channel(conn)
    try:
        factory, log_level = conn.recv()
        key = start_service(factory, channel, log_level)
    except BaseException as exc:  # each item's failure says why on the console; the traceback goes to logs.txt
        text = format_exception(exc)
        logger.error("A worker process could not build the Service:\n%s", text, extra=FILE_ONLY)
        channel.send(READY, pack(transportable(exc)))
        return
    channel.send(READY, None)
    try:
        while (batch := _next_batch(conn)) is not None:
            number, payload = batch
            channel.send(DONE, _run_batch(key, number, payload, channel, progress))
    finally:
        try:
            stop_service(key)
        except BaseException as exc:
            logger.error("on_worker_stop raised %s", describe(exc), exc_info=True)


def _run_batch(key: str, number: int, payload: bytes, channel: Channel, progress: Progress) -> tuple[int, float, Any]:
    started = time.perf_counter()
    try:
        items = load_items(key, payload)
    except BaseException as exc:  # the payload itself (an item that cannot be unpickled fails alone, in run_one)
        return (number, 0.0, pack(transportable(exc)))
    for index, item in enumerate(items):
        progress.starting(number, index)
        item_started = time.monotonic()
        outcome = run_one(key, item)
        if outcome is not None:  # sent before the item counts as done, so a dying worker loses no failure
            channel.send(FAILED, (number, index, pack(outcome, key)))
        progress.finished(number, index, item_started)
    return (number, time.perf_counter() - started, None)


def _next_batch(conn: Connection) -> tuple[int, bytes] | None:
    try:
        batch: tuple[int, bytes] | None = conn.recv()
    except EOFError:  # the driver has gone
        return None
    return batch
