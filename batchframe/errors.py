"""The errors batchframe raises, each with an exit code and a message that says what to do.

The tree::

    BatchframeError (exit 1)
    ├── InternalError          a bug of batchframe's own: the CLI says so instead of a raw traceback
    ├── RunError               fatal failure while running (the Source raised, a Service could not be built)
    │   └── RecordError        the run's records (failed.jsonl, the journal) could not be written
    └── UsageError (exit 2)    the command line or the project is wrong; nothing ran
        ├── ProjectError       PATH missing, import failure, no or ambiguous Source/Service
        ├── ConfigError        ``-c`` names a config that does not exist, or a config is invalid
        └── ParamError         a ``-p`` value that is malformed, unknown, unparsable or missing

The CLI prints ``str(error)`` in one panel and exits with ``error.exit_code``.
"""

from __future__ import annotations

from collections.abc import Sequence

from batchframe.runfolder.outcome import EXIT_FATAL, EXIT_USAGE

__all__ = [
    "BatchframeError",
    "ConfigError",
    "InternalError",
    "ParamError",
    "ProjectError",
    "RecordError",
    "RunError",
    "UsageError",
]


class BatchframeError(Exception):
    """Root of every error batchframe reports to the user.

    Attributes:
        exit_code: the process exit code the CLI uses for this error.
        hint: what the user can do about it (also part of ``str(error)``).
        user_traceback: the formatted frames of the user's own code that led here, if any.
    """

    exit_code: int = EXIT_FATAL
    title: str = "batchframe error"

    def __init__(self, message: str, *, hint: str | None = None, user_traceback: str | None = None) -> None:
        self.message = message
        self.hint = hint
        self.user_traceback = user_traceback
        super().__init__(message if hint is None else f"{message}\n{hint}")


class InternalError(BatchframeError):
    """Something went wrong in batchframe itself (a bug): said in one panel, not a raw traceback."""

    title = "batchframe bug"

    @classmethod
    def from_exception(cls, exc: BaseException) -> InternalError:
        """The panel for ``exc``, an exception no part of batchframe turned into a BatchframeError."""
        from batchframe._text import safe_str  # not at the top: --help imports this module

        return cls(
            f"batchframe failed unexpectedly: {type(exc).__qualname__}: {safe_str(exc)}",
            hint="This is a bug in batchframe, not in your job. Run the command again with -vv for the "
            "traceback and report it; the run folder, if one was made, keeps what was done.",
        )


class RunError(BatchframeError):
    """The run could not go on: the Source raised, or the Service could not be built."""

    title = "Run failed"


class RecordError(RunError, OSError):
    """The run's records (``failed.jsonl``, ``journal.sqlite``) could not be written: disk full, read-only.

    The run stops (exit code 1) after recording what it can; ``batchframe resume`` continues it.
    """

    title = "Could not write the run's records"


class UsageError(BatchframeError):
    """The command line or the project is wrong; nothing was processed."""

    exit_code = EXIT_USAGE
    title = "Usage error"


class ProjectError(UsageError, ImportError):
    """The project at PATH cannot be found, imported, or has no single Source and Service."""

    title = "Project error"


class ConfigError(UsageError, LookupError):
    """The selected configuration does not exist or cannot be used.

    Attributes:
        available: the config names that do exist (may be empty).
    """

    title = "Config error"

    def __init__(self, message: str, *, hint: str | None = None, available: Sequence[str] = ()) -> None:
        self.available = list(available)
        super().__init__(message, hint=hint)


class ParamError(UsageError, ValueError):
    """A parameter given with ``-p`` is malformed, unknown, does not parse, or is missing.

    Attributes:
        param: the parameter name concerned, when there is exactly one.
    """

    title = "Parameter error"

    def __init__(self, message: str, *, hint: str | None = None, param: str | None = None) -> None:
        self.param = param
        super().__init__(message, hint=hint)
