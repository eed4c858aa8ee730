"""0.0.1a13's ``batchframe.models.configuration``.

The same ``Configuration`` as ``from batchframe import Configuration``.
"""

from batchframe.configuration import Configuration

__all__ = ["Configuration"]
