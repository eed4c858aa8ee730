"""Choosing a project's configuration: ``config/`` files, ``-c NAME``, or the one class the project defines.

``-c NAME`` (with or without ``.py``, never a path) picks ``config/NAME.py``. Without ``-c``, a
project with one config file uses it, one with several is an error that lists them; a project
without config files uses its one concrete Configuration class, else the base ``Configuration``.
"""

from __future__ import annotations

import abc
import inspect
import types
from pathlib import Path

from batchframe.configuration import Configuration
from batchframe.errors import ConfigError

CONFIG_DIR = "config"

__all__ = ["CONFIG_DIR", "config_to_load", "find_config_dir", "list_configs", "pick_config"]


def find_config_dir(package_dir: Path) -> Path | None:
    """The project's ``configs/`` folder, or None when it has none."""
    candidate = package_dir / CONFIG_DIR
    return candidate if candidate.is_dir() else None


def list_configs(config_dir: Path | None) -> list[str]:
    """The config names in ``config_dir`` usable with ``-c``."""
    if config_dir is None:
        return []
    return sorted(p.stem for p in config_dir.glob("*.py") if p.name != "__init__.py" and p.stem.isidentifier())


def config_to_load(config: str | None, config_dir: Path | None) -> str | None:
    """The config file to load: the one ``-c`` names, else the project's only one, else None.

    Raises:
        ConfigError: ``config`` has a directory part, or it is None and there are several configs.
    """
    available = list_configs(config_dir)
    if config:
        return _config_name(config, available)
    if len(available) > 1:
        raise ConfigError(
            f"The project has {len(available)} configs ({', '.join(available)}) and no -c option says which to use.",
            hint=f"Choose one with -c NAME, e.g. -c {available[0]}.",
            available=available,
        )
    # A single config file is the project's only concrete configuration: there is nothing to choose.
    return available[0] if available else None


def _config_name(config: str, available: list[str]) -> str:
    """The name given with ``-c`` (``config_dev`` or ``config_dev.py``) without its ``.py``.

    Raises:
        ConfigError: ``config`` is a path (``config/config_dev``, ``../x.py``, ``/abs/x.py``).
    """
    if "/" not in config and "\\" not in config:
        return config.removesuffix(".py")
    stem = Path(config.replace("\\", "/")).name.removesuffix(".py")
    example = stem if stem in available else (available[0] if available else "config_dev")
    listing = ", ".join(available) if available else f"none (the project has no {CONFIG_DIR}/ files)"
    raise ConfigError(
        f"-c {config!r} is a path, but -c takes the name of a config file in the project's {CONFIG_DIR}/ "
        f"folder. Available configs: {listing}.",
        hint=f"Give just the config's name, e.g. -c {example}.",
        available=available,
    )


def pick_config(
    classes: list[type], config_module: types.ModuleType | None, config_name: str | None
) -> type[Configuration]:
    """The loaded config file's Configuration, else the one the project defines, else the base.

    Raises:
        ConfigError: the config file does not define exactly one Configuration, or (no config file)
            the project defines several concrete ones.
    """
    if config_module is not None:
        return _config_of_module(classes, config_module, config_name)
    # No config files: a config the project defines elsewhere, e.g. in a single file, or the shared
    # one in config/__init__.py of a project that has no per-environment configs.
    leaves = _leaves([c for c in _configs(classes) if not _is_abstract(c) and not _in_config_file(c)])
    if len(leaves) > 1:
        names = ", ".join(f"{c.__qualname__} ({c.__module__})" for c in leaves)
        raise ConfigError(
            f"Found {len(leaves)} concrete Configuration classes, expected at most one: {names}.",
            hint=(
                "Keep one concrete Configuration (make the others abstract with abc.ABC), or move each into "
                f"{CONFIG_DIR}/config_NAME.py and choose one with -c NAME."
            ),
        )
    return leaves[0] if leaves else Configuration


def _config_of_module(
    classes: list[type], config_module: types.ModuleType, config_name: str | None
) -> type[Configuration]:
    leaves = _leaves([c for c in _configs(classes) if c.__module__ == config_module.__name__])
    if len(leaves) != 1:
        found = "no Configuration subclass" if not leaves else f"{len(leaves)} Configuration subclasses"
        raise ConfigError(
            f"Config {config_name!r} ({config_module.__file__}) defines {found}; expected exactly one.",
            hint="Define one class in it that subclasses your project's Configuration.",
        )
    return leaves[0]


def _configs(classes: list[type]) -> list[type[Configuration]]:
    return [c for c in classes if issubclass(c, Configuration) and c is not Configuration]


def _leaves(classes: list[type[Configuration]]) -> list[type[Configuration]]:
    """The classes none of the others subclasses (a base and its subclass are one candidate)."""
    return [c for c in classes if not any(o is not c and issubclass(o, c) for o in classes)]


def _is_abstract(cls: type) -> bool:
    """Abstract methods, or ``abc.ABC`` among its direct bases (a base config with no abstract method)."""
    return inspect.isabstract(cls) or abc.ABC in cls.__bases__


def _in_config_file(cls: type) -> bool:
    parts = cls.__module__.split(".")
    return len(parts) >= 2 and parts[-2] == CONFIG_DIR and parts[-1].startswith("config_")
