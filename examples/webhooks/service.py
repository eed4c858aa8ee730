"""Posting one event (simulated: this example makes no network calls)."""

from __future__ import annotations

import asyncio
import logging
import random

from batchframe import Service, inject

from .config import WebhookConfig
from .source import EventSource

logger = logging.getLogger(__name__)


@inject
class WebhookSender(Service[dict]):
    """Sends each event to the configured endpoint; flaky calls raise ConnectionError and are retried."""

    exceptions_to_retry_for = {ConnectionError, TimeoutError}

    def __init__(self, config: WebhookConfig, source: EventSource) -> None:
        self.config = config
        self.source = source
        self.random = random.Random(42)
        self.sent = 0

    async def process(self, item: dict) -> None:
        await asyncio.sleep(0.005)
        if self.random.random() < self.config.failure_rate:
            raise ConnectionError(f"{self.config.endpoint} did not answer")
        self.sent += 1
        logger.debug("sent event %s to %s", item["id"], self.config.endpoint)

    def finish(self) -> None:
        logger.info("Sent %d events to %s", self.sent, self.config.endpoint)
