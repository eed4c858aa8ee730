"""0.0.1a13's ``batchframe.models.batchframe_param``.

The same ``BatchframeParam`` as ``from batchframe import BatchframeParam``.
"""

from batchframe.project.params import BatchframeParam

__all__ = ["BatchframeParam"]
