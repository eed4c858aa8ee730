"""The events to send: one per line of a text file (or generated ones when no file is given)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from batchframe import BatchframeParam, Source, inject

logger = logging.getLogger(__name__)


@inject
class EventSource(Source[dict]):
    """Reads events from a file, one JSON object per line.

    Args:
        events_file: a .jsonl file of events; without it, `limit` generated events are sent.
        limit: how many generated events to send when no file is given.
    """

    def __init__(
        self,
        _current_run_output_dir: Path,
        events_file: BatchframeParam[Path | None] = None,
        limit: BatchframeParam[int] = 50,
    ) -> None:
        self.events_file = events_file
        self.limit = limit
        self.failed_path = _current_run_output_dir / "events_to_resend.jsonl"

    def __iter__(self) -> Iterator[dict]:
        if self.events_file is None:
            for number in range(self.limit):
                yield {"id": number, "kind": "signup"}
            return
        with self.events_file.open(encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    yield json.loads(line)

    def persist_failed(self, failed: Sequence[dict]) -> None:
        with self.failed_path.open("w", encoding="utf-8") as out:
            for event in failed:
                out.write(json.dumps(event) + "\n")
        logger.info("Wrote %d events to resend to %s", len(failed), self.failed_path)
