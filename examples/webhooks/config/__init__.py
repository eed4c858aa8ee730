"""The project's abstract configuration; config_dev.py and config_prod.py subclass it."""

from dataclasses import dataclass
from typing import Annotated

from batchframe import BatchframeParam, Configuration


@dataclass
class WebhookConfig(Configuration):
    """Settings shared by every environment.

    Args:
        endpoint: where the webhooks go.
        failure_rate: share of calls that fail with a ConnectionError (to show retries).
    """

    endpoint: Annotated[str, BatchframeParam, "URL the webhooks are posted to"] = "https://example.invalid/hook"
    failure_rate: Annotated[float, BatchframeParam, "simulated share of failing calls"] = 0.0
