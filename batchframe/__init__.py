"""batchframe: run a Source of work items through a Service, with everything around that loop done for you.

Write a ``Source`` (the items) and a ``Service`` (``process(item)``), then run ``batchframe exec PATH``.

The names below are imported on first use (PEP 562), so ``batchframe --help`` does not pay for kink
and asyncio.
"""

from importlib import import_module as _import_module
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:
    from batchframe.configuration import Configuration
    from batchframe.errors import BatchframeError, ConfigError, ParamError, ProjectError, RunError, UsageError
    from batchframe.project.container import inject
    from batchframe.project.params import BatchframeParam
    from batchframe.retry import RateLimited, Retry
    from batchframe.secret import Secret
    from batchframe.service import Service
    from batchframe.source import Source

    __version__: str

_HOMES = {
    "BatchframeError": "batchframe.errors",
    "BatchframeParam": "batchframe.project.params",
    "ConfigError": "batchframe.errors",
    "Configuration": "batchframe.configuration",
    "ParamError": "batchframe.errors",
    "ProjectError": "batchframe.errors",
    "RateLimited": "batchframe.retry",
    "Retry": "batchframe.retry",
    "RunError": "batchframe.errors",
    "Secret": "batchframe.secret",
    "Service": "batchframe.service",
    "Source": "batchframe.source",
    "UsageError": "batchframe.errors",
    "inject": "batchframe.project.container",
}

__all__ = [
    "BatchframeError",
    "BatchframeParam",
    "ConfigError",
    "Configuration",
    "ParamError",
    "ProjectError",
    "RateLimited",
    "Retry",
    "RunError",
    "Secret",
    "Service",
    "Source",
    "UsageError",
    "__version__",
    "inject",
]


def __getattr__(name: str) -> _Any:
    if name == "__version__":
        from batchframe._version import __version__

        return __version__
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'batchframe' has no attribute {name!r}")
    value = getattr(_import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
