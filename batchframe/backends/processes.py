"""The ``processes`` back end: worker processes, each with its own Service, for CPU-bound work.

Items travel in batches (``_batches.Batcher``: sized to the measured item time, a window of two
batches per worker so a worker never waits for the pipe). Each worker is a fresh Python process with
one pipe to the driver and a few bytes of shared memory saying which item it runs since when
(``_process_worker.Progress``). That is what keeps faults in user code cheap to contain:

- an item that runs longer than ``item_timeout_s`` (timed from its own start) has its worker killed;
  the item fails with ``TimeoutError`` (a retry never overlaps the abandoned attempt);
- a worker that dies fails only the item it was running (``WorkerDied``, retried); the items of its
  batches that finished keep their outcomes and those that never started are handed out again;
- a cancelled item (a second Ctrl-C) has its worker killed, as nothing else stops it.
A killed or dead worker's place starts a fresh worker when it is next needed.

The pipe carries the worker's log records too, rather than a ``multiprocessing.Queue`` shared by
all workers: killing a process while it writes to a shared queue can break the queue for every
other process (see the warning under "Pipes and Queues" in the ``multiprocessing`` docs), and this
back end kills workers as a matter of course.

Workers are started like ``multiprocessing``'s ``spawn`` (never ``fork`` a process with an event
loop and threads) but without re-running the driver's ``__main__`` and without the current
directory or the project's folder on ``sys.path`` while Python and batchframe are imported: a
project's ``json.py`` or ``random.py`` never shadows the standard library in a worker.
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
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from batchframe.backends import NOT_STARTED, BackendError, ItemCall, item_timed_out
from batchframe.backends._batches import WINDOW, Batcher, BatchingBackend, BatchReply
from batchframe.backends._factory import ServiceFactory
from batchframe.backends._process_worker import DONE, FAILED, LOG, PROGRESS_SIZE, READY, Progress
from batchframe.backends._worker import WorkerDied, describe, unpack

logger = logging.getLogger(__name__)

STOP_GRACE_S = 2.0
"""How long ``close()`` lets the workers run their stop hooks before it kills them."""

KILL_GRACE_S = 1.0
"""How long a killed worker's pipe may stay open (a child of the worker holding it) before we close it."""

# A worker's first lines: not the current directory on sys.path (it may be the project's, with a
# json.py of its own), but the folder the driver imported batchframe from (last, as a fallback).
_BOOT = (
    "import sys; sys.path[:] = [*filter(None, sys.path), sys.argv[2]]; "
    "from batchframe.backends._process_worker import main; main(int(sys.argv[1]), int(sys.argv[3]))"
)
_IMPORT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class WorkerStartError(BackendError):
    """A worker process could not build the Service: its constructor or ``on_worker_start`` raised."""


class ProcessBackend(BatchingBackend):
    """Sends batches of items to worker processes; each worker's Service (built there once) processes them.

    Workers (``concurrency`` of them, at most one per core) start when the first items need them,
    each in a session of its own: Ctrl-C reaches only the driver (which pauses or stops, and ends
    workers itself), and killing a worker kills what its ``process`` started too (a stuck subprocess).

    Args:
        project: how a worker builds the Service (the project, config and parameters).
        concurrency: how many worker processes (at most one per core).
        item_timeout_s: time limit of one attempt, counted from when the worker starts the item; or None.
    """

    def __init__(self, project: ServiceFactory, *, concurrency: int, item_timeout_s: float | None = None) -> None:
        self.project = project
        self.workers = max(1, min(concurrency, os.cpu_count() or 1))
        self.item_timeout_s = item_timeout_s
        self.slots = 0
        self._log_level = logging.INFO
        self._places: list[_Worker | None] = []  # None: a place with no worker yet
        self._unreaped: list[_Worker] = []  # every worker started whose exit has not been collected
        self._start_error: str | None = None
        self._batcher: Batcher | None = None
        self._watchdog: asyncio.Task[None] | None = None

    async def start(self) -> ItemCall:
        """Get ready; each worker starts (and builds its Service) when a batch first needs it."""
        self._log_level = logging.getLogger().getEffectiveLevel()
        self._places = [None] * self.workers
        self._batcher = Batcher(self._send, batches_in_flight=self.workers * WINDOW, on_abandoned=self._abandon)
        self.slots = self._batcher.slots
        if self.item_timeout_s is not None:
            self._watchdog = asyncio.ensure_future(self._watch(self.item_timeout_s))
        logger.info("Running items in %d worker processes.", self.workers)
        return self._batcher.call

    # ----------------------------------------------------------------------------------- batches

    async def _send(self, number: int, payload: bytes, count: int) -> BatchReply:
        if self._start_error is not None:  # one worker could not build the Service: no worker will
            raise self._cannot_start()
        place = self._least_busy()
        worker = self._places[place]
        if worker is None or worker.gone:
            worker = self._places[place] = self._spawn()
        batch = worker.send(number, payload, count)
        error = await asyncio.shield(worker.started)
        if error is not None:
            worker.kill()
            if not isinstance(error, WorkerDied):
                self._start_error = f"A worker process could not start: {describe(error)}"
            raise self._cannot_start() if self._start_error is not None else error
        return await batch.reply

    def _least_busy(self) -> int:
        """The place whose worker has the fewest batches (an empty or dead place first)."""

        def load(place: int) -> int:
            worker = self._places[place]
            return -1 if worker is None or worker.gone else len(worker.batches)

        return min(range(len(self._places)), key=load)

    def _abandon(self, number: int) -> None:
        """The driver cancelled an item of batch ``number``: nothing but killing its worker stops it."""
        for worker in self._places:
            if worker is not None and number in worker.batches:
                logger.info("Killing a worker process to cancel the items it runs.")
                worker.kill()

    async def _watch(self, timeout_s: float) -> None:
        """Kill a worker whose current item has run longer than ``timeout_s``; that item fails with TimeoutError."""
        tick = min(max(timeout_s / 10, 0.005), 0.25)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for worker in self._places:
                if worker is not None and not worker.gone:
                    worker.check_timeout(now, timeout_s)

    def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair()
        try:
            with tempfile.TemporaryFile() as progress_file, theirs:  # both processes keep the file mapped
                progress_fd = progress_file.fileno()
                os.ftruncate(progress_fd, PROGRESS_SIZE)
                process = subprocess.Popen(
                    [sys.executable, "-c", _BOOT, str(theirs.fileno()), _IMPORT_ROOT, str(progress_fd)],
                    pass_fds=[theirs.fileno(), progress_fd],
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # Ctrl-C is the driver's; killing the group kills what process() started
                )
                worker = _Worker(process, Connection(ours.detach()), Progress(progress_fd))
        except BaseException:
            ours.close()
            raise
        worker.setup(self.project, self._log_level)
        self._unreaped = [*(w for w in self._unreaped if w.exit_code(wait_s=0) is None), worker]
        return worker

    def _cannot_start(self) -> WorkerStartError:
        return WorkerStartError(
            f"{self._start_error}",
            hint="The Service's constructor or on_worker_start raised in a worker process "
            "(the traceback is in the run's logs.txt); every item fails until that is fixed.",
        )

    async def close(self) -> None:
        """Ask every worker to stop (each calls ``on_worker_stop``), wait a little, kill those still running."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        workers, self._unreaped, self._places = self._unreaped, [], []
        for worker in workers:
            if not worker.gone:
                worker.ask_to_stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_GRACE_S
        while loop.time() < deadline and not all(worker.gone for worker in workers):
            await asyncio.sleep(0.01)  # each worker's end of file arrives after its last log record
        for worker in workers:
            worker.kill()
            worker.closed()
            worker.exit_code(wait_s=0.5)  # reap it
        if self._batcher is not None:
            await self._batcher.close()


@dataclass
class _Sent:
    """A batch sent to a worker: how many items, the failures reported so far, the reply to come."""

    count: int
    reply: asyncio.Future[BatchReply]
    failures: dict[int, Exception] = field(default_factory=dict)


class _Worker:
    """One worker process, the driver's end of its pipe and its shared progress; its messages resolve its batches."""

    def __init__(self, process: subprocess.Popen[bytes], conn: Connection, progress: Progress) -> None:
        self.process = process
        self.conn = conn
        self.progress = progress
        self.gone = False
        self.batches: dict[int, _Sent] = {}  # in the order sent, which is the order the worker runs them
        self._timed_out: tuple[int, int, float] | None = None  # batch, item, the limit it ran over
        self._loop = asyncio.get_running_loop()
        self.started: asyncio.Future[Exception | None] = self._loop.create_future()
        self._fd = conn.fileno()
        self._reading = True
        self._loop.add_reader(self._fd, self._receive)

    def setup(self, project: ServiceFactory, log_level: int) -> None:
        """Send what the worker needs to build the Service (its first message)."""
        with contextlib.suppress(OSError):  # it has ended already: its end of file will say so
            self.conn.send((project, log_level))

    def send(self, number: int, payload: bytes, count: int) -> _Sent:
        """Send a batch; its ``reply`` resolves when the worker is done with it (or has gone)."""
        sent = _Sent(count, self._loop.create_future())
        if self.gone:
            sent.reply.set_result(BatchReply([NOT_STARTED] * count, 0.0, 0))
            return sent
        self.batches[number] = sent
        try:
            self.conn.send((number, payload))
        except OSError:  # the process has ended: its end of file settles the batch
            self.kill()
        return sent

    def ask_to_stop(self) -> None:
        """Ask the worker to call its stop hook and exit (once its batches are done)."""
        try:
            self.conn.send(None)
        except OSError:
            self.kill()

    def check_timeout(self, now: float, timeout_s: float) -> None:
        """Kill the worker if the item it runs started more than ``timeout_s`` ago."""
        number, index, done, started_at = self.progress.read()
        if number in self.batches and done <= index and now - started_at > timeout_s:
            self._timed_out = (number, index, timeout_s)
            self.kill()

    def exit_code(self, wait_s: float = 0.1) -> int | None:
        """The process's exit code (negative: the signal that ended it), or None if it still runs after ``wait_s``."""
        try:
            return self.process.wait(timeout=wait_s) if wait_s else self.process.poll()
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """End the process now (SIGKILL) if it still runs. Its end of file then settles its batches."""
        if self.gone:
            return
        self.gone = True
        if self.process.poll() is None:  # not reaped yet, so its process group is still its own
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        # Normally the end of file follows at once; a child of the worker that escaped its group may hold the pipe.
        self._loop.call_later(KILL_GRACE_S, self.closed)

    def closed(self) -> None:
        """Stop reading the pipe; settle every batch still out."""
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)
            self.conn.close()
        self.gone = True
        if not self.started.done():
            self.started.set_result(WorkerDied(reason="the worker process ended while it was starting"))
        if not self.progress.closed:
            self._settle()
            self.progress.close()

    def _receive(self) -> None:
        try:
            kind, body = self.conn.recv()
        except Exception:  # end of file (the process ended), or a message that cannot be read
            self.kill()
            self.closed()
            return
        if kind == FAILED:
            number, index, packed = body
            sent = self.batches.get(number)
            if sent is not None:
                sent.failures[index] = unpack(packed)  # type: ignore[assignment]
        elif kind == DONE:
            number, busy_s, packed = body
            sent = self.batches.pop(number, None)
            if sent is not None and not sent.reply.done():
                error = unpack(packed)
                outcomes: list[Exception | None] = (
                    [error] * sent.count if error is not None else _outcomes(sent, sent.count)
                )
                sent.reply.set_result(BatchReply(outcomes, busy_s, 0 if error is not None else sent.count))
        elif kind == LOG:
            _handle_log(body)
        elif kind == READY and not self.started.done():
            self.started.set_result(unpack(body))

    def _settle(self) -> None:
        """The worker has gone: each batch still out learns which items finished, which ran, which never started."""
        if not self.batches:
            return
        number_running, index, done, _ = self.progress.read()
        exit_code = self.exit_code(wait_s=0)
        for number, sent in list(self.batches.items()):
            del self.batches[number]
            if sent.reply.done():
                continue
            if number != number_running:  # the worker never reached it
                sent.reply.set_result(BatchReply([NOT_STARTED] * sent.count, 0.0, 0))
                continue
            outcomes = _outcomes(sent, done)
            if done <= index < sent.count:
                outcomes.append(self._why_ended(number, index, exit_code))
            outcomes += [NOT_STARTED] * (sent.count - len(outcomes))
            sent.reply.set_result(BatchReply(outcomes, 0.0, 0))

    def _why_ended(self, number: int, index: int, exit_code: int | None) -> Exception:
        if self._timed_out is not None and self._timed_out[:2] == (number, index):
            return item_timed_out(self._timed_out[2])
        logger.warning("A worker process died (exit code %s); its item is retried.", exit_code)
        return WorkerDied(reason="the worker process running this item died (crashed or was killed)")


def _outcomes(sent: _Sent, done: int) -> list[Exception | None]:
    """The outcomes of the first ``done`` items of a batch: None, or the failure the worker reported."""
    failures = sent.failures
    if not failures:
        return [None] * done
    return [failures.get(index) for index in range(done)]


def _handle_log(data: bytes) -> None:
    """Hand a worker's log record to this process's handlers, as ``QueueHandler`` does (logs.txt)."""
    try:
        record: logging.LogRecord = pickle.loads(data)
    except BaseException as exc:  # its extra= attributes may be of classes unknown here
        logger.warning("A log record from a worker process could not be read: %s", describe(exc))
        return
    for handler in logging.getLogger().handlers:
        if record.levelno >= handler.level:
            handler.handle(record)
