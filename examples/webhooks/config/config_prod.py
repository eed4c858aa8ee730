"""Production: the real endpoint, more workers, patient retries."""

from dataclasses import dataclass

from . import WebhookConfig


@dataclass
class ProdConfig(WebhookConfig):
    """Production settings."""

    endpoint: str = "https://hooks.example.invalid/v1/events"
    concurrency: int = 32
    max_retries: int = 5
