"""batchframe: run a Source of work items through a Service, with everything around that loop done for you.

Write a ``Source`` (the items) and a ``Service`` (``process(item)``), then run ``batchframe exec PATH``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from batchframe.configuration import Configuration
from batchframe.container import inject
from batchframe.errors import BatchframeError, ConfigError, ParamError, ProjectError, RunError, UsageError
from batchframe.params import BatchframeParam
from batchframe.retry import Retry
from batchframe.service import Service
from batchframe.source import Source

try:
    __version__ = version("batchframe")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "BatchframeError",
    "BatchframeParam",
    "ConfigError",
    "Configuration",
    "ParamError",
    "ProjectError",
    "Retry",
    "RunError",
    "Service",
    "Source",
    "UsageError",
    "__version__",
    "inject",
]
