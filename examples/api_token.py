"""Call an API with a secret token, backing off when it says "429 Too Many Requests".

Run it with:  BATCHFRAME_PARAM_API_TOKEN=my-token batchframe exec examples/api_token.py
(or without the variable on a terminal: the token is asked for, hidden).
"""

import asyncio
import hashlib
import logging

from batchframe import BatchframeParam, RateLimited, Secret, Service, Source

logger = logging.getLogger(__name__)


class Customers(Source[int]):
    """Customer ids 1 .. count."""

    def __init__(self, count: BatchframeParam[int] = 30) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(range(1, self.count + 1))


class FakeApi:
    """Stands in for an HTTP API: it refuses a bad token, and asks for a pause once in a while."""

    def __init__(self) -> None:
        self.calls = 0

    async def sync_customer(self, customer: int, token: str) -> str:
        await asyncio.sleep(0.01)
        self.calls += 1
        if not token:
            raise PermissionError("401 Unauthorized: empty token")
        if self.calls == 10:
            raise RateLimited(retry_after="1", reason="429 Too Many Requests")  # the Retry-After header
        return hashlib.sha256(f"{customer}:{token}".encode()).hexdigest()[:8]


class SyncCustomers(Service[int]):
    """Syncs each customer; the token is a Secret: logs, the journal and the summary never hold it."""

    def __init__(self, api_token: BatchframeParam[Secret]) -> None:
        self.api_token = api_token
        self.api = FakeApi()
        logger.info("Syncing with token %s", api_token)  # logs "Syncing with token **********"

    async def process(self, item: int) -> None:
        receipt = await self.api.sync_customer(item, self.api_token.get_secret_value())
        logger.debug("customer %d synced: %s", item, receipt)
