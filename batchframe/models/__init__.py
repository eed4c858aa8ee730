"""The import paths of batchframe 0.0.1a13 (``batchframe.models.*``), kept working.

They give the same classes as the current paths: ``from batchframe import Source, Service,
Configuration, BatchframeParam`` (the current spelling, see docs/migrating.md).
"""

from batchframe.configuration import Configuration
from batchframe.project.params import BatchframeParam
from batchframe.service import Service
from batchframe.source import Source

__all__ = ["BatchframeParam", "Configuration", "Service", "Source"]
