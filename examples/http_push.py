"""Push rows to an HTTP API with httpx: one ``AsyncClient`` per worker, opened and closed by the hooks.

In one shell, a local test API (100 requests per sliding second, 2% of calls fail with a 500):
    python examples/local_api.py --port 8765
In another (httpx installed: pip install httpx):
    batchframe exec examples/http_push.py -p url=http://127.0.0.1:8765 -p max_per_second=90
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx

from batchframe import BatchframeParam, RateLimited, Service, Source, inject

logger = logging.getLogger(__name__)


class ServerError(Exception):
    """The API answered 5xx: worth another try."""


@inject
class Rows(Source[dict]):
    """The rows to push.

    Args:
        rows: how many rows.
    """

    def __init__(self, rows: BatchframeParam[int] = 500) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return self.rows

    def __iter__(self) -> Iterator[dict]:
        for number in range(self.rows):
            yield {"id": number, "name": f"row {number}"}


@inject
class Push(Service[dict]):
    """POSTs each row to the API.

    Args:
        url: the API's base address, e.g. http://127.0.0.1:8765.
    """

    exceptions_to_retry_for = {ServerError, httpx.TransportError}

    def __init__(self, url: BatchframeParam[str]) -> None:
        self.url = url
        self.client: httpx.AsyncClient | None = None

    async def on_worker_start(self) -> None:
        # Once per worker: in the run's process with asyncio and threads, in each worker process
        # with processes, dask and ray. It runs on the event loop that process() runs on.
        self.client = httpx.AsyncClient(base_url=self.url, timeout=10)

    async def process(self, row: dict) -> None:
        assert self.client is not None
        response = await self.client.post("/rows", json=row)
        if response.status_code == 429:
            raise RateLimited(retry_after=response.headers.get("Retry-After"))
        if response.status_code >= 500:
            raise ServerError(f"the API answered {response.status_code}")
        response.raise_for_status()

    async def on_worker_stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            logger.info("Closed the HTTP client.")
