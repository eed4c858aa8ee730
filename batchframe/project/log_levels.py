"""Which log records a run keeps: the ``log_levels`` setting, and the loggers that are libraries'.

By default logs.txt keeps every record from INFO (DEBUG with ``-v``), and the console shows
batchframe's and the project's records from INFO but other libraries' (httpx, urllib3, asyncio...)
only from WARNING, unless ``-v``. A logger is a library's when its top-level name is a module
installed with Python: the standard library, site-packages, the virtual environment. The project's
own modules, ``__main__``, the root logger and names that are no module at all (``getLogger("job")``)
are the project's.

``-p log_levels=httpx:DEBUG,my_job:WARNING`` (a ``LogLevels``) gives a logger, and the loggers below
it, its own level for logs.txt and the console alike. ``root`` names the level of every logger not
named (INFO by default).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

LEVEL_NAMES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
EXPECTED = (
    "LOGGER:LEVEL pairs separated by commas, e.g. httpx:WARNING,my_job:DEBUG "
    "(LEVEL: DEBUG, INFO, WARNING, ERROR, CRITICAL or a number)"
)
"""The form of a ``log_levels`` value, for error messages."""
ROOT = "root"
"""The name that sets the level of every logger not named."""
_OURS = frozenset({"batchframe", "__main__", ROOT, ""})


def parse_level(text: str) -> int:
    """A level from its name (any case) or its number.

    Raises:
        ValueError: not one of the five names, nor a whole number above 0.
    """
    word = text.strip()
    if word.upper() in LEVEL_NAMES:
        return int(getattr(logging, word.upper()))
    if word.isdigit() and int(word) > 0:
        return int(word)
    raise ValueError(f"unknown level {word!r}" if word else "a level is missing")


def level_text(level: int) -> str:
    """``DEBUG`` for 10; a level without one of the five names as its number."""
    name = logging.getLevelName(level)
    return name if name in LEVEL_NAMES else str(level)


class LogLevels(Mapping[str, int]):
    """Levels by logger name, parsed from ``httpx:DEBUG,my_job:WARNING`` or given as a mapping.

    Immutable and hashable (a dataclass default may be one). A name's level applies to the loggers
    below it too (``httpx`` covers ``httpx._client``), as in ``logging``.

    Raises:
        ValueError: an entry without a colon, an empty logger name, or an unknown level; the message
            shows the expected form.
    """

    __slots__ = ("_levels",)

    def __init__(self, levels: str | Mapping[str, int | str] = "") -> None:
        entries = levels.items() if isinstance(levels, Mapping) else _entries(str(levels))
        parsed: dict[str, int] = {}
        for name, level in entries:
            logger = str(name).strip()
            if not logger:
                raise ValueError(f"a logger name is missing; expected {EXPECTED}")
            try:
                parsed[logger] = level if type(level) is int and level > 0 else parse_level(str(level))
            except ValueError as exc:
                raise ValueError(f"{exc} for {logger}; expected {EXPECTED}") from None
        self._levels = parsed

    def __getitem__(self, name: str) -> int:
        return self._levels[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._levels)

    def __len__(self) -> int:
        return len(self._levels)

    def __hash__(self) -> int:
        return hash(frozenset(self._levels.items()))

    def __str__(self) -> str:
        return ",".join(f"{name}:{level_text(level)}" for name, level in self._levels.items())

    def __repr__(self) -> str:
        return f"LogLevels({str(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (LogLevels, (dict(self._levels),))

    def level_of(self, name: str) -> int | None:
        """The level named for logger ``name`` or the nearest logger above it (``root`` aside), or None."""
        while True:
            level = self._levels.get(name)
            if level is not None:
                return level
            name, dot, _ = name.rpartition(".")
            if not dot:
                return None


def _entries(text: str) -> Iterator[tuple[str, str]]:
    for entry in text.split(","):
        if not entry.strip():
            continue  # "httpx:DEBUG," and an empty value
        name, colon, level = entry.partition(":")
        if not colon:
            raise ValueError(f"{entry.strip()!r} has no colon; expected {EXPECTED}")
        yield name, level


class RunLogLevel(int):
    """The driver's log level, carrying the levels of the loggers ``log_levels`` names.

    The driver's root logger is set to one. Every back end gives its workers the root logger's level
    (``getEffectiveLevel()``); this way the named levels travel with it, and
    ``backends/_worker_logs`` applies them where the records are made.
    """

    loggers: LogLevels

    def __new__(cls, level: int, loggers: LogLevels) -> RunLogLevel:
        """The level number, carrying the per-logger levels it was parsed with."""
        made = super().__new__(cls, level)
        made.loggers = loggers
        return made

    def __reduce__(self) -> tuple[Any, ...]:
        return (RunLogLevel, (int(self), self.loggers))

    def __repr__(self) -> str:
        return f"RunLogLevel({int(self)}, {self.loggers!r})"


NO_LEVELS = LogLevels()


def named_levels(level: int) -> LogLevels:
    """The loggers' own levels that a level from the driver carries (none for a plain int)."""
    loggers = getattr(level, "loggers", NO_LEVELS)
    return loggers if isinstance(loggers, LogLevels) else NO_LEVELS


def is_library(name: str) -> bool:
    """Whether logger ``name`` belongs to a library installed with Python (not batchframe, not the project)."""
    return _is_installed_module(name.partition(".")[0])


@functools.lru_cache(maxsize=1024)
def _is_installed_module(top: str) -> bool:
    if top in _OURS:
        return False
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: nothing is imported
    except Exception:  # a name that is no module name; a module without a __spec__ (the project's)
        return False
    if spec is None:
        return False
    if spec.origin in ("built-in", "frozen"):
        return True
    if spec.has_location and spec.origin:
        places = [os.path.dirname(spec.origin)]
    else:
        places = list(spec.submodule_search_locations or [])
    from batchframe.project.load import _installed  # the one rule of what is installed (not the project)

    return bool(places) and all(_installed(Path(place).resolve()) for place in places)
