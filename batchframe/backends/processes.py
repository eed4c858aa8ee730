"""The ``processes`` back end: worker processes, each with its own Service, for CPU-bound work.

Each worker is a fresh Python process with one pipe to the driver, and runs one item at a time, so
the driver always knows what every worker runs. That is what makes faults in user code cheap to
contain: an item that runs longer than ``item_timeout_s``, or whose call is cancelled, has its
worker killed (a retry never overlaps the abandoned attempt), and a worker that dies fails only its
own item. A killed or dead worker's slot starts a fresh worker when it is next needed.

The pipe carries the worker's log records too, rather than a ``multiprocessing.Queue`` shared by
all workers: killing a process while it writes to a shared queue can break the queue for every
other process (see the warning under "Pipes and Queues" in the ``multiprocessing`` docs), and this
back end kills workers as a matter of course.

Workers are started like ``multiprocessing``'s ``spawn`` (never ``fork`` a process with an event
loop and threads) but without re-running the driver's ``__main__`` and without the current
directory or the project's folder on ``sys.path`` while Python and batchframe are imported: a
project's ``json.py`` or ``random.py`` never shadows the standard library in a worker.

The messages (``_process_worker.serve``) carry batches of items with one outcome per item, so several items
can share a round trip; for now every batch holds one item.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Any

from batchframe.backends import BackendError, ItemCall, ProjectRef, item_timed_out
from batchframe.backends._process_worker import DONE, LOG, READY
from batchframe.backends._worker import Outcome, WorkerDied, describe, pickled, unpack

logger = logging.getLogger(__name__)

STOP_GRACE_S = 2.0
"""How long ``close()`` lets the workers run their stop hooks before it kills them."""

# A worker's first lines: not the current directory on sys.path (it may be the project's, with a
# json.py of its own), but the folder the driver imported batchframe from (last, as a fallback).
_BOOT = (
    "import sys; sys.path[:] = [*filter(None, sys.path), sys.argv[2]]; "
    "from batchframe.backends._process_worker import main; main(int(sys.argv[1]))"
)
_IMPORT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class WorkerStartError(BackendError):
    """A worker process could not build the Service: its constructor or ``on_worker_start`` raised."""


class ProcessBackend:
    """Sends each item to a free worker process; the worker's Service (built there once) processes it.

    Workers (one per core at most) start when the first items need them, each in a session of its
    own: Ctrl-C reaches only the driver (which pauses or stops, and ends workers itself), and killing
    a worker kills what its ``process`` started too (a stuck subprocess).

    Args:
        project: how a worker builds the Service (the project, config and parameters).
        concurrency: how many items run at once (at most one worker per core).
        item_timeout_s: time limit of one attempt, counted from when a worker receives the item; or None.
    """

    def __init__(self, project: ProjectRef, *, concurrency: int, item_timeout_s: float | None = None) -> None:
        self.project = project
        self.workers = max(1, min(concurrency, os.cpu_count() or 1))
        self.item_timeout_s = item_timeout_s
        self._log_level = logging.INFO
        self._free: asyncio.Queue[_Worker | None] | None = None  # None: a slot with no worker yet
        self._workers: list[_Worker] = []  # every worker started and not yet reaped
        self._start_error: str | None = None

    async def start(self) -> ItemCall:
        """Get ready; each worker starts (and builds its Service) when an item first needs it."""
        self._log_level = logging.getLogger().getEffectiveLevel()
        self._free = asyncio.Queue()
        for _ in range(self.workers):
            self._free.put_nowait(None)
        logger.info("Running items in %d worker processes.", self.workers)
        return self._call

    async def _call(self, item: Any) -> None:
        payload = pickled(item)
        worker = await self._take()
        try:
            [outcome] = await self._run(worker, [payload])
        except BaseException:  # timed out, cancelled or died: the item may still be running there
            worker.kill()
            raise
        finally:
            self._give_back(worker)
        if outcome is not None:
            raise outcome

    async def _take(self) -> _Worker:
        """A free worker that has built its Service: waits for one, starting it if its slot is empty."""
        self._check_startable()
        assert self._free is not None
        worker = await self._free.get()
        try:
            self._check_startable()
            if worker is None or worker.gone:
                worker = self._spawn()
            error = await asyncio.shield(worker.started)
            if error is not None:
                raise self._start_failed(worker, error)
        except BaseException:
            self._give_back(worker)
            raise
        return worker

    def _give_back(self, worker: _Worker | None) -> None:
        assert self._free is not None
        self._free.put_nowait(worker)

    async def _run(self, worker: _Worker, batch: list[bytes]) -> list[Outcome]:
        """Send a batch and wait for its outcomes, at most ``item_timeout_s`` per item."""
        reply = worker.send(batch)
        timeout_s = None if self.item_timeout_s is None else self.item_timeout_s * len(batch)
        done, _ = await asyncio.wait((reply,), timeout=timeout_s)
        if not done:
            assert self.item_timeout_s is not None
            raise item_timed_out(self.item_timeout_s)
        outcomes = reply.result()
        if outcomes is None:
            logger.warning(
                "A worker process died (exit code %s); starting a new one. Its item is retried.", worker.exit_code()
            )
            raise WorkerDied(reason="the worker process running this item died (crashed or was killed)")
        return outcomes

    def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair()
        with theirs:
            try:
                process = subprocess.Popen(
                    [sys.executable, "-c", _BOOT, str(theirs.fileno()), _IMPORT_ROOT],
                    pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # Ctrl-C is the driver's; killing the group kills what process() started
                )
            except BaseException:
                ours.close()
                raise
        worker = _Worker(process, Connection(ours.detach()))
        worker.setup(self.project, self._log_level)
        self._workers = [*(w for w in self._workers if w.exit_code(wait_s=0) is None), worker]
        return worker

    def _start_failed(self, worker: _Worker, error: Exception) -> Exception:
        worker.kill()
        if isinstance(error, WorkerDied):  # it ended before it could say why: the next item tries a new one
            return error
        self._start_error = f"A worker process could not start: {describe(error)}"
        return self._cannot_start()

    def _check_startable(self) -> None:
        if self._start_error is not None:  # one worker could not build the Service: no worker will
            raise self._cannot_start()

    def _cannot_start(self) -> WorkerStartError:
        return WorkerStartError(
            f"{self._start_error}",
            hint="The Service's constructor or on_worker_start raised in a worker process "
            "(the traceback is in the run's logs.txt); every item fails until that is fixed.",
        )

    async def close(self) -> None:
        """Ask every worker to stop (each calls ``on_worker_stop``), wait a little, kill those still running."""
        workers, self._workers = self._workers, []
        for worker in workers:
            if not worker.gone:
                worker.ask_to_stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_GRACE_S
        while loop.time() < deadline and not all(worker.gone for worker in workers):
            await asyncio.sleep(0.01)  # each worker's end of file arrives after its last log record
        for worker in workers:
            worker.kill()
            worker.exit_code(wait_s=0.5)  # reap it


class _Worker:
    """One worker process and the driver's end of its pipe; its messages resolve ``started`` and ``reply``."""

    def __init__(self, process: subprocess.Popen[bytes], conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.gone = False
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future[Exception | None] = loop.create_future()
        self.reply: asyncio.Future[list[Outcome] | None] | None = None
        self._fd = conn.fileno()
        loop.add_reader(self._fd, self._receive)

    def setup(self, project: ProjectRef, log_level: int) -> None:
        """Send what the worker needs to build the Service (its first message)."""
        with contextlib.suppress(OSError):  # it has ended already: its end of file will say so
            self.conn.send((project, log_level))

    def send(self, batch: list[bytes]) -> asyncio.Future[list[Outcome] | None]:
        """Send a batch; the future's result is its outcomes, or None if the worker ended first."""
        self.reply = reply = asyncio.get_running_loop().create_future()
        try:
            self.conn.send(batch)
        except OSError:  # the process has ended since its last item
            self.kill()
        return reply

    def ask_to_stop(self) -> None:
        """Ask the worker to call its stop hook and exit (once its current item is done)."""
        try:
            self.conn.send(None)
        except OSError:
            self.kill()

    def exit_code(self, wait_s: float = 0.1) -> int | None:
        """The process's exit code (negative: the signal that ended it), or None if it still runs after ``wait_s``."""
        try:
            return self.process.wait(timeout=wait_s) if wait_s else self.process.poll()
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """End the process now (SIGKILL) if it still runs; whoever waits for it learns it has gone."""
        if self.gone:
            return
        self.gone = True
        asyncio.get_running_loop().remove_reader(self._fd)
        self.conn.close()
        if self.process.poll() is None:  # not reaped yet, so its process group is still its own
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if not self.started.done():
            self.started.set_result(WorkerDied(reason="the worker process ended while it was starting"))
        if self.reply is not None and not self.reply.done():
            self.reply.set_result(None)

    def _receive(self) -> None:
        try:
            kind, body = self.conn.recv()
        except Exception:  # end of file (the process ended), or a message that cannot be read
            self.kill()
            return
        if kind == LOG:
            _handle_log(body)
        elif kind == READY and not self.started.done():
            self.started.set_result(unpack(body))
        elif kind == DONE and self.reply is not None and not self.reply.done():
            self.reply.set_result([unpack(packed) for packed in body])


def _handle_log(data: bytes) -> None:
    """Hand a worker's log record to this process's handlers, as ``QueueListener`` does (logs.txt)."""
    try:
        record: logging.LogRecord = pickle.loads(data)
    except BaseException as exc:  # its extra= attributes may be of classes unknown here
        logger.warning("A log record from a worker process could not be read: %s", describe(exc))
        return
    for handler in logging.getLogger().handlers:
        if record.levelno >= handler.level:
            handler.handle(record)
