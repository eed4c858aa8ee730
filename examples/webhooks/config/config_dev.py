"""Development: a local endpoint, a few flaky calls, quick retries."""

from dataclasses import dataclass

from . import WebhookConfig


@dataclass
class DevConfig(WebhookConfig):
    """Local settings."""

    endpoint: str = "http://localhost:8080/hook"
    failure_rate: float = 0.1
    concurrency: int = 4
    retry_backoff_sec: float = 0.01
    retry_backoff_max_sec: float = 0.05
    max_retries: int = 5
