"""0.0.1a13's ``batchframe.models.source``: the same ``Source`` as ``from batchframe import Source``."""

from batchframe.source import Source

__all__ = ["Source"]
