"""CPU-bound work: count the primes below a number, in pure Python (about 5 ms per item at the default size).

Switch the executor with one parameter and change nothing else:

    batchframe exec examples/primes.py -p count=200                        # asyncio (threads, one core)
    batchframe exec examples/primes.py -p count=200 -p executor=processes  # one worker process per core
    batchframe exec examples/primes.py -p count=200 -p executor=dask       # a local dask cluster
"""

import logging
import os

from batchframe import BatchframeParam, Service, Source

logger = logging.getLogger(__name__)


class Limits(Source[int]):
    """The numbers to count primes below.

    Args:
        count: how many items
        size: the upper limit for each item (bigger is slower)
    """

    def __init__(self, count: BatchframeParam[int] = 100, size: BatchframeParam[int] = 3_500) -> None:
        self.count = count
        self.size = size

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        for i in range(self.count):
            yield self.size + i


class CountPrimes(Service[int]):
    """Counts primes with trial division: deliberately CPU-bound."""

    def __init__(self) -> None:
        self.worker = None

    def on_worker_start(self) -> None:
        # Called once in each worker process (processes, dask), or once here for asyncio/threads:
        # the place to open a connection per worker.
        self.worker = os.getpid()
        logger.debug("worker %s ready", self.worker)

    def process(self, item: int) -> None:
        found = sum(1 for n in range(2, item) if all(n % d for d in range(2, int(n**0.5) + 1)))
        if found <= 0:
            raise ValueError(f"no primes below {item}?")

    def on_worker_stop(self) -> None:
        logger.debug("worker %s done", self.worker)
