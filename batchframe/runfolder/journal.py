"""The run journal: ``journal.sqlite`` in every run folder, the ground truth for ``resume`` and ``retry``.

What it holds:

- ``meta``: the run's project path, config, parameters as given, batchframe version, start and end,
  outcome and exit code, and for a ``retry`` run the run it retries.
- ``done``: the positions (in the source) of the items that succeeded, as half-open ranges. Items
  finish roughly in order, so a million done items take a few hundred rows, not a million.
- ``items``: one row per item that did not succeed (failed, or not processed when a run stopped),
  and per item that has been in flight for a while, with its attempts, error and the item itself,
  pickled (items are arbitrary Python objects; JSON could not bring back a dataclass or a Path).
- ``replay``: a ``retry`` run's own items (pickled, by position), so that it resumes on its own even
  when the run it retries is gone. Empty in other runs (and absent from a journal made before it).

Writes are grouped: completions are buffered and handed to a writer thread once per event-loop
iteration (or every ``group_by`` of them); it commits them (WAL, ``synchronous=NORMAL``) while the
loop goes on, and batches that queue up during a commit go into the next one. ``unsaved`` counts
the outcomes handed in and not yet committed; the driver starts no item while that count and the
items in flight reach two groups (``wait_saved``), so a ``kill -9`` repeats at most that many items
on ``resume``: what was in flight, and what had finished without its outcome written yet.

The writer thread never dies on bad data or a full disk: text is stored with lone surrogates
escaped, and a failed commit is remembered and raised (``RecordError``) by the next write, which
ends the run with a clear error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchframe._text import safe_repr, safe_str, storable_text
from batchframe.errors import RecordError, UsageError
from batchframe.runfolder.failures import NOT_PROCESSED, FailedItem, pickled_item
from batchframe.runfolder.folder import DEFAULT_OUTPUT_DIR, JOURNAL_NAME, LOCK_NAME
from batchframe.secret import redact

if TYPE_CHECKING:
    import asyncio  # at run time only where a loop runs: `batchframe runs` reads journals without one

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
IN_FLIGHT, FAILED, NOT_DONE = 0, 2, 3
_IN_FLIGHT_AFTER_S = 0.5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS done (start INTEGER NOT NULL, stop INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    idx INTEGER PRIMARY KEY,
    state INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    error_type TEXT,
    message TEXT,
    traceback TEXT,
    item_repr TEXT,
    payload BLOB
);
CREATE TABLE IF NOT EXISTS replay (idx INTEGER PRIMARY KEY, payload BLOB NOT NULL);
"""


class JournalError(UsageError):
    """The journal cannot be used: missing, corrupt, from a newer batchframe, or locked."""

    title = "Journal error"


def file_identity(path: Path | None) -> tuple[int, int] | None:
    """The file at ``path`` as (device, inode), or None when there is none. Never raises.

    A file deleted (or replaced) while a run writes to it through an open handle gives no error:
    comparing its identity with the one it had tells.
    """
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return stat.st_dev, stat.st_ino


def _missing_run_dir_hint(run_dir: Path) -> str:
    """What to give instead of a run folder that does not exist.

    A run folder's name alone, as the table of ``batchframe runs`` shows it, is looked for in the
    default output folder (``folder.DEFAULT_OUTPUT_DIR``).
    """
    in_outputs = DEFAULT_OUTPUT_DIR / run_dir
    if len(run_dir.parts) == 1 and in_outputs.is_dir():
        return f"Did you mean {in_outputs}? (batchframe runs lists the runs in {in_outputs.parent} by name.)"
    return "Give a run folder, e.g. batchframe_outputs/<time>."


def ranges_of(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted, coalesced half-open ranges covering ``indices`` (distinct positions)."""
    if not indices:
        return []
    low, high = min(indices), max(indices)
    if high - low + 1 == len(indices):  # the usual case: one contiguous run, found at C speed
        return [(low, high + 1)]
    result: list[tuple[int, int]] = []
    for index in sorted(indices):
        if result and result[-1][1] >= index:
            if result[-1][1] == index:
                result[-1] = (result[-1][0], index + 1)
            continue
        result.append((index, index + 1))
    return result


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Coalesce overlapping or touching half-open ranges."""
    merged: list[tuple[int, int]] = []
    for start, stop in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(stop, merged[-1][1]))
        else:
            merged.append((start, stop))
    return merged


class Journal:
    """Reads and writes one run's journal.

    Use ``Journal.create`` for a new run and ``Journal.open`` to read or resume an existing one.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._db = connection
        self._done: list[int] = []
        self._rows: list[tuple[Any, ...]] = []
        self._deletes: list[tuple[int]] = []
        self._in_flight: Callable[[], list[tuple[int, int, Any]]] = list
        self._recorded: set[int] = set()
        self._seen_in_flight: set[int] = set()
        self._last_scan = time.monotonic()
        self._flush_scheduled = False
        self._batch_items = 64
        self._handed = 0  # outcomes (successes and failures) given to the journal; the writer counts the saved ones
        self._writer = _Writer(connection)
        self._identity = file_identity(path)

    # --------------------------------------------------------------------------------- opening

    @classmethod
    def create(cls, run_dir: Path, meta: dict[str, Any]) -> Journal:
        """A new journal in ``run_dir`` with the run's metadata."""
        path = run_dir / JOURNAL_NAME
        # It holds the parameters and the pickled items: the owner's alone, from the start (SQLite
        # gives the -wal and -shm files the database's mode).
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        journal = cls(path, _connect(path))
        journal._db.executescript(_SCHEMA)
        journal.set_meta(format_version=FORMAT_VERSION, **meta)
        return journal

    @classmethod
    def open(cls, run_dir: Path, *, readonly: bool = False) -> Journal:
        """The journal of an existing run folder, checked before anything is written.

        ``readonly`` is for readers (``runs``, the UI): they never write, not even to compact, so
        they can look at the journal of a live run as often as they like.

        Raises:
            JournalError: no such folder or journal, a corrupt file, or a format from a newer batchframe.
        """
        path = run_dir / JOURNAL_NAME
        if not run_dir.is_dir():
            raise JournalError(f"{run_dir} does not exist.", hint=_missing_run_dir_hint(run_dir))
        if not path.is_file():
            raise JournalError(
                f"{run_dir} is not a batchframe run folder (it has no {JOURNAL_NAME}).",
                hint="List the runs with: batchframe runs",
            )
        try:
            # Check read-only first: a damaged file must not be touched (not even to switch to WAL).
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as reader:
                check = reader.execute("PRAGMA quick_check").fetchone()
                meta = dict(reader.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise JournalError(
                f"{path} is damaged and cannot be read ({exc}).",
                hint="Nothing was changed. The run's failed.jsonl and logs.txt are still there to recover from.",
            ) from None
        if not check or check[0] != "ok":
            raise JournalError(
                f"{path} is damaged ({check[0] if check else 'no answer'}).", hint="Nothing was changed."
            )
        version = int(json.loads(meta.get("format_version", "0")))
        if version > FORMAT_VERSION:
            made_by = json.loads(meta.get("batchframe_version", '"a newer batchframe"'))
            raise JournalError(
                f"{path} was written by batchframe {made_by} (journal format {version}); "
                f"this batchframe reads format {FORMAT_VERSION} or older.",
                hint="Upgrade batchframe (pip install -U batchframe) to resume or retry this run.",
            )
        if readonly:
            return cls(path, _connect(path, mode="ro"), readonly=True)
        return cls(path, _connect(path, mode="rw"))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run's lock: a second process resuming the same run is refused."""
        import filelock

        lock = filelock.FileLock(self.path.with_name(LOCK_NAME), timeout=0, mode=0o600)  # owner-only, as every run file
        try:
            lock.acquire()
        except filelock.Timeout:
            raise JournalError(
                f"{self.path.parent} is in use by another batchframe process (its journal is locked).",
                hint="Wait for that process to finish, or stop it, then try again.",
            ) from None
        try:
            yield
        finally:
            lock.release()

    def lost(self) -> str | None:
        """How the journal's file went since it was opened (deleted, replaced), or None while it is there. Never raises.

        SQLite goes on writing to a deleted file without an error: only this check tells.
        """
        now = file_identity(self.path)
        if now == self._identity:
            return None
        return "was deleted" if now is None else "was replaced by another file"

    def close(self) -> None:
        """Flush what is buffered, compact the done ranges and close the file."""
        self.flush()
        self._writer.stop()
        if not self.readonly:
            self._compact()
        self._db.close()

    def _compact(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            ranges = merge_ranges(self._db.execute("SELECT start, stop FROM done").fetchall())
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM done")
            self._db.executemany("INSERT INTO done VALUES (?, ?)", ranges)
            self._db.execute("COMMIT")

    # ----------------------------------------------------------------------------------- metadata

    def set_meta(self, **values: Any) -> None:
        """Store metadata values (JSON-encoded)."""
        self._writer.drain()
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, json.dumps(v, default=str)) for k, v in values.items()]
        )
        self._db.execute("COMMIT")

    def meta(self) -> dict[str, Any]:
        """All metadata, decoded."""
        self._writer.drain()
        return {key: json.loads(value) for key, value in self._db.execute("SELECT key, value FROM meta")}

    # ------------------------------------------------------------------------------- the hot path

    def watch_in_flight(self, in_flight: Callable[[], list[tuple[int, int, Any]]]) -> None:
        """Where to read the items in flight (position, attempts, item); long-running ones get a row."""
        self._in_flight = in_flight

    def group_by(self, items: int) -> None:
        """Hand completions to the writer every ``items`` of them even within one loop iteration.

        While the writer commits one group the loop fills the next; the driver waits
        (``wait_saved``) only when two groups are unsaved or in flight.
        """
        self._batch_items = max(1, items)

    @property
    def unsaved(self) -> int:
        """Outcomes handed to the journal and not committed yet (what a ``kill -9`` now would lose)."""
        return self._handed - self._writer.saved

    async def wait_saved(self, below: int) -> None:
        """Wait until fewer than ``below`` outcomes are unsaved (at once if a commit failed: the next write raises)."""
        while self.unsaved >= below and self._writer.error is None:
            self.flush()  # what is still buffered must reach the writer, or nothing would wake us
            waiter = self._writer.wake_when_saved(_running_loop())
            if self.unsaved >= below and self._writer.error is None:  # not saved while we made the future
                await waiter

    def succeeded(self, index: int) -> None:
        """An item succeeded.

        Raises:
            RecordError: an earlier commit failed (disk full, read-only): the run must stop.
        """
        if self._writer.error is not None:
            raise self._writer.failure(self.path)
        done = self._done
        done.append(index)
        self._handed += 1
        if self._recorded and index in self._recorded:
            self._recorded.discard(index)
            self._deletes.append((index,))
        if len(done) >= self._batch_items:
            self.flush()
        elif not self._flush_scheduled:
            self._schedule_flush()

    def finished_badly(self, failed: FailedItem, payload: bytes | None) -> None:
        """An item failed for good, or was not processed because the run stopped.

        Args:
            failed: the record.
            payload: the item pickled (None: not picklable; its repr is kept).

        Raises:
            RecordError: an earlier commit failed (disk full, read-only): the run must stop.
        """
        if self._writer.error is not None:
            raise self._writer.failure(self.path)
        self._recorded.discard(failed.index)
        self._handed += 1
        state = NOT_DONE if failed.error_type == NOT_PROCESSED else FAILED
        self._rows.append(
            (
                failed.index,
                state,
                failed.attempts,
                storable_text(failed.error_type),
                storable_text(failed.message),
                storable_text(failed.traceback),
                storable_text(redact(safe_repr(failed.item))),  # the text is for reading: no secret in it
                payload,
            )
        )
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        # Group commit: one transaction per event-loop iteration however many items finished in it.
        if not self._flush_scheduled:
            self._flush_scheduled = True
            try:
                _running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (called from a shell or after the run): write now
                self.flush()

    def commit_now(self) -> None:
        """Write everything buffered and wait until it is committed (before the process must end at once)."""
        self.flush()
        self._writer.drain()

    def flush(self) -> None:
        """Write everything buffered in one transaction."""
        self._flush_scheduled = False
        self._record_long_in_flight()
        if not (self._done or self._rows or self._deletes):
            return
        batch = (self._deletes, self._rows, ranges_of(self._done), self._handed)
        self._done, self._rows, self._deletes = [], [], []
        self._writer.submit(batch)

    def _record_long_in_flight(self) -> None:
        """Items in flight since the last scan (half a second or more) get a row with the item itself."""
        now = time.monotonic()
        if now - self._last_scan < _IN_FLIGHT_AFTER_S:
            return
        self._last_scan = now
        in_flight = {index: (attempts, item) for index, attempts, item in self._in_flight()}
        for index in (in_flight.keys() & self._seen_in_flight) - self._recorded:
            attempts, item = in_flight[index]
            text = storable_text(safe_repr(item))
            self._rows.append((index, IN_FLIGHT, attempts, None, "in flight", None, text, pickled_item(item)))
            self._recorded.add(index)
        self._seen_in_flight = set(in_flight)

    # ------------------------------------------------------------------------------------ reading

    def finished_ranges(self) -> list[tuple[int, int]]:
        """Positions that need no more work (succeeded or failed for good), as merged ranges."""
        self._writer.drain()
        done = self._db.execute("SELECT start, stop FROM done").fetchall()
        failed = [(i, i + 1) for (i,) in self._db.execute("SELECT idx FROM items WHERE state = ?", (FAILED,))]
        return merge_ranges([*done, *failed])

    def counts(self) -> dict[str, int]:
        """Items done, failed, not processed and in flight (at a crash) so far."""
        self._writer.drain()
        ranges = self._db.execute("SELECT start, stop FROM done").fetchall()
        by_state = dict(self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
        return {
            "done": sum(stop - start for start, stop in merge_ranges(ranges)),
            "failed": by_state.get(FAILED, 0),
            "not_processed": by_state.get(NOT_DONE, 0),
            "in_flight": by_state.get(IN_FLIGHT, 0),
            "highest_position": max([stop for _, stop in ranges] + [self._max_item_index() + 1]),
        }

    def _max_item_index(self) -> int:
        value = self._db.execute("SELECT MAX(idx) FROM items").fetchone()[0]
        return -1 if value is None else int(value)

    def failures_by_type(self) -> dict[str, int]:
        """Items that did not succeed, counted by exception type."""
        self._writer.drain()
        rows = self._db.execute(
            "SELECT COALESCE(error_type, 'InFlight'), COUNT(*) FROM items GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
        return dict(rows)

    def unfinished_items(self) -> list[tuple[int, Any]]:
        """(position, item) of every journalled item that did not succeed, in source order.

        Unpickling imports the modules of the items' classes: load the run's project first (a class
        defined in the project's ``job.py`` is found only then).

        Raises:
            JournalError: an item was not picklable, or cannot be unpickled here.
        """
        rows = self.unfinished_payloads()
        items = load_items([payload for _, payload in rows], self.path.parent)
        return [(idx, item) for (idx, _), item in zip(rows, items, strict=True)]

    def unfinished_payloads(self) -> list[tuple[int, bytes]]:
        """(position, pickled item) of every journalled item that did not succeed, in source order.

        Nothing is unpickled: no module of the project is needed.

        Raises:
            JournalError: an item was not picklable and cannot be brought back.
        """
        self._writer.drain()
        rows = self._db.execute("SELECT idx, payload, item_repr FROM items ORDER BY idx").fetchall()
        lost = [repr_ for _, payload, repr_ in rows if payload is None]
        if lost:
            raise JournalError(
                f"{len(lost)} failed item(s) could not be stored (not picklable), e.g. {lost[0]}.",
                hint="Make the items picklable to retry them; failed.jsonl lists them.",
            )
        return [(idx, payload) for idx, payload, _ in rows]

    def store_replay(self, payloads: list[bytes]) -> None:
        """Keep a retry run's items (pickled, in the order it processes them), in one transaction."""
        self._writer.drain()
        self._db.execute("BEGIN")
        self._db.executemany("INSERT INTO replay VALUES (?, ?)", enumerate(payloads))
        self._db.execute("COMMIT")

    def replay_payloads(self) -> list[bytes] | None:
        """A retry run's own items, pickled, in order; None when the journal keeps none (not a retry run)."""
        self._writer.drain()
        has_table = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'replay'").fetchone()
        if not has_table:  # a journal from before the table existed
            return None
        rows = self._db.execute("SELECT payload FROM replay ORDER BY idx").fetchall()
        return [payload for (payload,) in rows] or None

    def forget_unfinished(self) -> None:
        """Drop the rows of items a resume runs again (not processed, in flight at a crash)."""
        self._writer.drain()
        self._db.execute("BEGIN")
        self._db.execute("DELETE FROM items WHERE state IN (?, ?)", (IN_FLIGHT, NOT_DONE))
        self._db.execute("COMMIT")

    def bad_positions(self) -> set[int]:
        """Positions that failed for good (kept when failed.jsonl is rewritten on resume)."""
        self._writer.drain()
        return {idx for (idx,) in self._db.execute("SELECT idx FROM items WHERE state = ?", (FAILED,))}


def load_items(payloads: list[bytes], run_dir: Path) -> list[Any]:
    """The items a run's journal stored, unpickled (the project's modules imported already).

    Raises:
        JournalError: an item cannot be unpickled here (its class was renamed or moved since, say).
    """
    items: list[Any] = []
    for payload in payloads:
        try:
            items.append(pickle.loads(payload))
        except Exception as exc:
            raise JournalError(
                f"An item stored in {run_dir} cannot be loaded: {type(exc).__name__}: {safe_str(exc)}.",
                hint="Its class (or its module) must be importable as it was when the run stored it: undo a "
                "rename or a move in the project, then try again.",
            ) from None
    return items


_Batch = tuple[list[tuple[int]], list[tuple[Any, ...]], list[tuple[int, int]], int]
"""Deletes, item rows, done ranges, and how many outcomes were handed in up to this batch."""


class _Writer:
    """Commits the journal's batches on a thread of its own, so the event loop never waits for SQLite.

    The thread uses the connection while it writes; every other use first calls ``drain()``, which
    returns once everything submitted is committed and the thread is idle. ``submit`` never blocks
    the loop: on a slow disk it is the driver that waits (``Journal.wait_saved``), so what a
    ``kill -9`` would lose stays bounded. A failed commit is kept in ``error``.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._queue: queue.Queue[_Batch | threading.Event | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.saved = 0
        """Outcomes committed: the count handed in with the last committed batch (only this thread writes it)."""
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        self._waiter_lock = threading.Lock()

    def wake_when_saved(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """A future the thread resolves after its next commit (or failed commit); one for all who wait."""
        with self._waiter_lock:
            if self._waiter is None:
                self._waiter = (loop, loop.create_future())
            return self._waiter[1]

    def _wake(self) -> None:
        # After ``saved`` changed: a waiter made before this sees it; one made after re-checks ``saved``.
        # The lock: taking the waiter and clearing it must not drop one set in between.
        with self._waiter_lock:
            waiting, self._waiter = self._waiter, None
        if waiting is not None:
            loop, waiter = waiting
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve, waiter)

    def failure(self, path: Path) -> RecordError:
        """The error to raise once a commit failed."""
        return RecordError(
            f"Could not write the journal {path} ({self.error}).",
            hint=f"Free some space (or make the folder writable), then continue with: batchframe resume {path.parent}",
        )

    def submit(self, batch: _Batch) -> None:
        """Queue a batch (deletes, item rows, done ranges, outcomes so far) for the next commit."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="batchframe-journal", daemon=True)
            self._thread.start()
        self._queue.put(batch)

    def drain(self) -> None:
        """Wait until everything submitted so far is committed."""
        if self._thread is None:
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait()

    def stop(self) -> None:
        """Commit what is queued and end the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            pending = [self._queue.get()]
            while not self._queue.empty():  # what queued up during the last commit joins this one
                pending.append(self._queue.get())
            self._commit([entry for entry in pending if isinstance(entry, tuple)])
            for entry in pending:
                if isinstance(entry, threading.Event):
                    entry.set()
            if None in pending:
                return

    def _commit(self, batches: list[_Batch]) -> None:
        if not batches:
            return
        db = self._db
        try:
            db.execute("BEGIN")
            for deletes, rows, done, _ in batches:  # in order: a row written earlier may be deleted later
                if deletes:
                    db.executemany("DELETE FROM items WHERE idx = ?", deletes)
                if rows:
                    db.executemany("INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                db.executemany("INSERT INTO done VALUES (?, ?)", done)
            db.execute("COMMIT")
        except Exception as exc:  # never let the thread die: drain() and stop() wait for it
            with contextlib.suppress(Exception):
                db.execute("ROLLBACK")
            if self.error is None:
                self.error = exc
                logger.error("Could not write the journal (%s); the run stops.", exc)
        else:
            self.saved = batches[-1][3]
        self._wake()


def _running_loop() -> asyncio.AbstractEventLoop:
    """The running event loop (RuntimeError without one), importing asyncio only when a run needs it."""
    import asyncio

    return asyncio.get_running_loop()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _connect(path: Path, *, mode: str = "rwc") -> sqlite3.Connection:
    connection = sqlite3.connect(f"file:{path}?mode={mode}", uri=True, isolation_level=None, check_same_thread=False)
    if mode == "ro":
        return connection  # the writer chose WAL already
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection
