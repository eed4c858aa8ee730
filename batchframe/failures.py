"""Failed items: the record kept for each, and ``failed.jsonl`` in the run folder."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

NOT_PROCESSED = "NotProcessed"
"""The error type recorded for items a stopped or crashed run never finished."""


@dataclass(frozen=True, slots=True)
class FailedItem:
    """One item that did not succeed.

    Attributes:
        index: the item's position in the source (0-based).
        item: the item itself.
        error_type: the exception's class name (``NotProcessed`` for items a stopped run never ran).
        message: the exception's message.
        attempts: how many times it was tried.
        traceback: the formatted traceback of the last attempt.
        exception: the exception itself (not serialised).
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
        """Build the record of an item whose last attempt raised ``exc``."""
        return cls(
            index=index,
            item=item,
            error_type=type(exc).__qualname__,
            message=str(exc),
            attempts=attempts,
            traceback=user_traceback(exc),
            exception=exc,
        )

    @classmethod
    def not_processed(cls, index: int, item: Any, attempts: int, why: str) -> FailedItem:
        """Build the record of an item the run stopped before finishing."""
        return cls(index=index, item=item, error_type=NOT_PROCESSED, message=why, attempts=attempts)

    def to_json(self) -> str:
        """One ``failed.jsonl`` line: the item as JSON, or its repr when it is not JSON-serialisable."""
        record = {
            "index": self.index,
            "item": self.item,
            "error_type": self.error_type,
            "message": self.message,
            "attempts": self.attempts,
            "traceback": self.traceback,
        }
        try:
            return json.dumps(record, ensure_ascii=False)
        except (TypeError, ValueError):
            record.update(item=None, item_repr=repr(self.item))
            return json.dumps(record, ensure_ascii=False)


_FRAMEWORK_DIRS = (
    str(Path(__file__).resolve().parent),
    str(Path(asyncio.__file__).resolve().parent),
    str(Path(concurrent.futures.__file__).resolve().parent),
    str(Path(threading.__file__).resolve()),
)


def user_traceback(exc: BaseException) -> str:
    """The traceback of an item's exception with batchframe's and asyncio's own frames left out."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not str(Path(frame.filename).resolve()).startswith(_FRAMEWORK_DIRS)
    ]
    head = ["Traceback (most recent call last):\n"] if frames else []
    return "".join(head + traceback.format_list(frames) + traceback.format_exception_only(type(exc), exc))


class FailureLog:
    """Appends each failed item to ``failed.jsonl`` as it fails, so a crash loses none of them."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def write(self, failed: FailedItem) -> None:
        """Append one record and flush it to the OS."""
        if self.path is None:
            return
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(failed.to_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file (if anything was written)."""
        if self._file is not None:
            self._file.close()
            self._file = None
