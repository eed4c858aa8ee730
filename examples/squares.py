"""The smallest batchframe job: square some numbers, failing on a few of them.

Run it with:  batchframe exec examples/squares.py -p count=20
"""

import asyncio
import logging
from collections.abc import Sequence

from batchframe import BatchframeParam, Service, Source, inject

logger = logging.getLogger(__name__)


@inject
class Numbers(Source[int]):
    """The numbers 0 .. count-1."""

    def __init__(self, count: BatchframeParam[int] = 10) -> None:
        self.count = count
        self.current = 0

    def __len__(self) -> int:
        return self.count

    def next(self) -> int:
        if self.current >= self.count:
            raise StopIteration
        self.current += 1
        return self.current - 1

    def persist_failed(self, failed: Sequence[int]) -> None:
        logger.warning("These numbers failed: %s", failed)


@inject
class Square(Service[int]):
    """Squares each number; 13 is unlucky and fails."""

    def __init__(self, source: Source[int]) -> None:
        self.source = source
        self.total = 0

    async def process(self, item: int) -> None:
        await asyncio.sleep(0.01)
        if item % 100 == 13:
            raise ValueError(f"{item} is unlucky")
        self.total += item * item

    def finish(self) -> None:
        logger.info("Sum of squares: %d", self.total)
