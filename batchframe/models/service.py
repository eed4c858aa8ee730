"""0.0.1a13's ``batchframe.models.service``: the same ``Service`` as ``from batchframe import Service``."""

from batchframe.service import Service

__all__ = ["Service"]
