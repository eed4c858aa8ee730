"""A ``processes`` worker: a fresh Python process serving the driver over one pipe (see ``serve``)."""

from __future__ import annotations

import logging
import os
import pickle
import threading
import time
from typing import TYPE_CHECKING, Any

from batchframe._logging import FILE_ONLY
from batchframe.backends._worker import (
    describe,
    init_worker,
    pack,
    run_item,
    teardown_worker,
    traceback_text,
    transportable,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

logger = logging.getLogger(__name__)

READY, DONE, LOG = "ready", "done", "log"
"""The kinds of message a worker sends (see ``serve``)."""


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


def main(fd: int) -> None:
    """A ``processes`` worker's entry point: serve the driver over the socket it passed as file descriptor ``fd``."""
    from multiprocessing.connection import Connection

    guard = threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="batchframe-guard", daemon=True)
    guard.start()
    serve(Connection(fd))


def _exit_with_parent(parent: int) -> None:
    """End this worker once the driver has gone (``kill -9``), even while an item blocks forever."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def serve(conn: Connection) -> None:
    """Build the Service, then process what the driver sends until it says stop.

    The driver sends ``(project, log_level)`` first, then batches (lists of pickled items), then None
    (stop). The worker answers ``(READY, None)`` once the Service is built, or ``(READY, error)`` and
    exits when it cannot be; ``(DONE, outcomes)`` for each batch, one outcome per item; and
    ``(LOG, record)`` at any time. Errors travel packed (``pack``) and log records pickled, so the
    driver can always read a message, even when it cannot unpickle what is inside.
    """
    channel = Channel(conn)
    try:
        project, log_level = conn.recv()
        init_worker(project, channel, log_level)
    except BaseException as exc:  # each item's failure says why on the console; the traceback goes to logs.txt
        text = traceback_text(exc)
        logger.error("A worker process could not build the Service:\n%s", text, extra=FILE_ONLY)
        channel.send(READY, pack(transportable(exc)))
        return
    channel.send(READY, None)
    try:
        while (batch := _next_batch(conn)) is not None:
            channel.send(DONE, [pack(run_item(payload)) for payload in batch])
    finally:
        try:
            teardown_worker()
        except BaseException as exc:
            logger.error("on_worker_stop raised %s", describe(exc), exc_info=True)


def _next_batch(conn: Connection) -> list[bytes] | None:
    try:
        batch: list[bytes] | None = conn.recv()
    except EOFError:  # the driver has gone
        return None
    return batch
