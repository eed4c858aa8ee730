"""Compatibility with batchframe 0.0.1a13: its configuration field names as aliases of the current ones.

0.0.1a13 called the runtime settings ``executor_consumers``, ``executor_work_queue_size``,
``executor_max_retries`` and ``executor_backoff_times_sec``. A project written for it overrides them
in its config and sets them with ``-p``; both keep working. Each alias is folded into its current
parameter: ``batchframe params`` shows one parameter with its old name, a value given under the old
name (in the config or with ``-p``) becomes the current one's, and the config object answers to both.
Giving both names different values at the same level (both in the config, or both with ``-p``) is a
usage error; ``-p`` beats a config value, whichever name each uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from batchframe.errors import ConfigError, ParamError

ALIASES: dict[str, str] = {
    "executor_consumers": "concurrency",
    "executor_work_queue_size": "queue_size",
    "executor_max_retries": "max_retries",
    "executor_backoff_times_sec": "retry_delays_sec",
}
"""0.0.1a13 name -> current name."""


def fold_alias_specs(specs: dict[str, Any]) -> dict[str, Any]:
    """Drop the alias parameters from ``specs``; a config default given under an old name moves to the new one.

    Raises:
        ConfigError: a config sets both names of one setting to different values.
    """
    from batchframe.configuration import Configuration

    base_defaults = {f.name: f.default for f in dataclasses.fields(Configuration)}
    folded = {name: spec for name, spec in specs.items() if name not in ALIASES}
    for old, new in ALIASES.items():
        alias = specs.get(old)
        current = folded.get(new)
        if alias is None or current is None:
            continue
        folded[new] = dataclasses.replace(current, aliases=(*current.aliases, old))
        if alias.default is None:
            continue
        if current.default != base_defaults[new] and current.default != alias.default:
            raise ConfigError(
                f"{alias.owner.__qualname__} sets both {old}={alias.default!r} (the 0.0.1a13 name) and "
                f"{new}={current.default!r}: they are the same setting.",
                hint=f"Keep one of them (preferably {new}).",
            )
        folded[new] = dataclasses.replace(folded[new], default=alias.default)
    return folded


def fold_alias_assignments(given: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """``-p`` values given under an old name, renamed to the current one.

    Raises:
        ParamError: both names of one setting given with different values.
    """
    folded: dict[str, list[str]] = {}
    for name, values in given.items():
        new = ALIASES.get(name, name)
        if new in folded and folded[new] != values:
            old = name if name in ALIASES else next(o for o, n in ALIASES.items() if n == new)
            raise ParamError(
                f"-p {old} and -p {new} name the same setting ({old} is its 0.0.1a13 name) with different values.",
                hint=f"Give it once, e.g. -p {new}={values[-1]}.",
                param=new,
            )
        folded[new] = values
    return folded


def setting(config: Any, name: str) -> Any:
    """A runtime setting of ``config``, honouring a value set only under its 0.0.1a13 name.

    For a config built by ``batchframe exec`` both names already agree; this serves configs built
    elsewhere (``batchframe.testing``, a ready instance).
    """
    from batchframe.configuration import Configuration

    value = getattr(config, name)
    old = next((o for o, n in ALIASES.items() if n == name), None)
    legacy = getattr(config, old, None) if old else None
    base = next(f.default for f in dataclasses.fields(Configuration) if f.name == name)
    return legacy if legacy is not None and value == base else value


def sync_aliases(config: Any) -> None:
    """Let the config object answer to the old names with the values in force."""
    for old, new in ALIASES.items():
        if hasattr(config, new):
            object.__setattr__(config, old, getattr(config, new))
