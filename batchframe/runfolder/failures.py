"""Failed items: the record of each, ``failed.jsonl``, and the spool that feeds ``persist_failed``.

Everything here formats user data (items, exceptions) and must never raise on it: an exception
whose ``__str__`` raises, an item whose ``__repr__`` raises or recurses, lone surrogates from
``os.listdir``, NaN. Each has a fallback (the text helpers and the one traceback formatter are in
``_text``), so recording a failure cannot break a run.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import pickle
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from batchframe._text import (
    error_type_of,
    exception_message,
    format_exception,
    safe_repr,
)
from batchframe.errors import RecordError
from batchframe.secret import redact

NOT_PROCESSED = "NotProcessed"
"""The error type recorded for items a stopped or crashed run never finished."""

_REPR_ITEMS = 100


def pickled_item(item: Any) -> bytes | None:
    """The item pickled, or None when it cannot be (a lambda, a lock, a recursion too deep)."""
    try:
        return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return None


@dataclass(frozen=True, slots=True)
class FailedItem:
    """One item that did not succeed.

    Attributes:
        index: the item's position in the source (0-based).
        item: the item itself.
        error_type: the exception's class name (``NotProcessed`` for items a stopped run never ran).
        message: the exception's message, and its notes (``add_note``) below it.
        attempts: how many times it was tried.
        traceback: the formatted traceback of the last attempt (the user's frames, with the exception's
            causes, context, notes and group members).
        exception: the exception itself (not serialised, not kept by a run: for ``run_service``).
    """

    index: int
    item: Any
    error_type: str
    message: str
    attempts: int
    traceback: str = ""
    exception: BaseException | None = None

    @classmethod
    def from_exception(cls, index: int, item: Any, exc: BaseException, attempts: int) -> FailedItem:
        """Build the record of an item whose last attempt raised ``exc``. Never raises."""
        return cls(
            index=index,
            item=item,
            error_type=error_type_of(exc),
            message=redact(exception_message(exc)),  # the user's message may quote a secret parameter
            attempts=attempts,
            traceback=redact(format_exception(exc)),
            exception=exc,
        )

    @classmethod
    def not_processed(cls, index: int, item: Any, attempts: int, why: str) -> FailedItem:
        """Build the record of an item the run stopped before finishing."""
        return cls(index=index, item=item, error_type=NOT_PROCESSED, message=why, attempts=attempts)

    def to_json(self) -> str:
        r"""One ``failed.jsonl`` line: the item as JSON, or ``item_repr`` when it is not JSON. Never raises.

        The line may hold lone surrogates; ``FailureLog`` writes them as ``\\udcxx`` escapes, which
        keeps the line valid JSON.
        """
        record = {
            "index": self.index,
            "item": self.item,
            "error_type": self.error_type,
            "message": self.message,
            "attempts": self.attempts,
            "traceback": self.traceback,
        }
        try:
            return json.dumps(record, ensure_ascii=False, allow_nan=False)
        except Exception:
            # Sets, bytes, NaN, deep nesting, odd keys; and anything the item's own methods raise while
            # the encoder walks it (a dict subclass whose items() raises, a list whose __iter__ does).
            pass
        record.update(item=None, item_repr=safe_repr(self.item))
        try:
            return json.dumps(record, ensure_ascii=False)
        except Exception:  # the other fields are ours and plain: a last resort all the same
            return json.dumps({"index": None, "item": None, "item_repr": record["item_repr"]})


class FailureLog:
    """Appends failed items to ``failed.jsonl``: lines are buffered and written together by ``flush()``.

    The run flushes once per event-loop iteration (as the journal commits), so a crash loses what
    the journal loses, and a thousand failures cost a few writes, not a thousand. Each flush is one
    ``write`` of whole lines; if the disk is full (or the folder read-only) the file is cut back to
    its last complete line and ``RecordError`` is raised: never a torn line.
    """

    _FLUSH_BYTES = 1 << 20

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fd: int | None = None
        self._size = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def write(self, failed: FailedItem) -> None:
        """Buffer one record (written at once when the buffer is large).

        Raises:
            RecordError: the file could not be written.
        """
        if self.path is None:
            return
        data = (redact(failed.to_json()) + "\n").encode("utf-8", "backslashreplace")  # a secret inside an item too
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= self._FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the buffered lines.

        Raises:
            RecordError: the file could not be written (the lines are dropped: the journal has them).
        """
        if not self._pending or self.path is None:
            return
        data = b"".join(self._pending)
        self._pending, self._pending_bytes = [], 0
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                self._size = os.fstat(self._fd).st_size
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            self._cut_back()
            raise RecordError(
                f"Could not write {self.path} ({exc.strerror or exc}).",
                hint="Free some space (or make the folder writable), then continue with: "
                f"batchframe resume {self.path.parent}",
            ) from exc
        self._size += len(data)

    def _cut_back(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):  # if even this fails, resume skips a torn last line
                os.ftruncate(self._fd, self._size)

    def close(self) -> None:
        """Write what is buffered and close the file.

        Raises:
            RecordError: the last lines could not be written.
        """
        try:
            self.flush()
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class FailedItems(Sequence[Any]):
    """The items that did not succeed, spooled to a temporary file: memory stays flat however many fail.

    This is what ``Source.persist_failed`` receives: a read-only sequence (``len``, iteration and
    indexing; ``list(failed)`` makes a real list). Items that cannot be pickled are kept as they are.
    """

    def __init__(self) -> None:
        self._file: Any = None
        self._offsets = array.array("q")
        self._kept: dict[int, Any] = {}
        self._end = 0
        self._moved = False

    def append(self, item: Any, payload: bytes | None = None) -> None:
        """Add an item (``payload``: the item already pickled, when the caller has it)."""
        if payload is None:
            payload = pickled_item(item)
        if payload is None:
            self._kept[len(self._offsets)] = item
            self._offsets.append(-1)
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="batchframe-failed-")  # noqa: SIM115 - closed by close()
        if self._moved:  # a read moved the position: write at the end we know
            self._file.seek(self._end)
            self._moved = False
        self._offsets.append(self._end)
        record = len(payload).to_bytes(8, "little") + payload
        self._file.write(record)
        self._end += len(record)

    def __len__(self) -> int:
        return len(self._offsets)

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        position = range(len(self))[index]  # IndexError for us, negative indices too
        offset = self._offsets[position]
        if offset < 0:
            return self._kept[position]
        self._moved = True
        self._file.seek(offset)
        size = int.from_bytes(self._file.read(8), "little")
        return pickle.loads(self._file.read(size))

    def __iter__(self) -> Iterator[Any]:
        for position in range(len(self)):
            yield self[position]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple, FailedItems)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        # Printed like the list it stands for (users log it); a long one is cut, not read whole.
        if len(self) <= _REPR_ITEMS:
            return repr(list(self))
        head = ", ".join(safe_repr(item) for item in self[:_REPR_ITEMS])
        return f"[{head}, ... ({len(self):,} items)]"

    def close(self) -> None:
        """Delete the spool file."""
        if self._file is not None:
            self._file.close()
            self._file = None
