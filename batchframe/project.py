"""Locating and importing the user's project, finding its Source, Service and configuration.

PATH may be a single ``.py`` file, a package directory (with ``__init__.py``) or a plain directory.
Every directory is imported as a package so relative imports work everywhere: a regular package
under its own name (its parent on ``sys.path``), a plain directory as a namespace package registered
under its name (or ``_batchframe_<name>`` when that name is taken by another module). The
directory itself is also put on ``sys.path`` so script-style sibling imports (``from source import X``)
work too.
"""

from __future__ import annotations

import abc
import importlib
import importlib.util
import inspect
import keyword
import linecache
import logging
import sys
import traceback
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from batchframe.configuration import Configuration
from batchframe.container import clear_marked, marked_classes
from batchframe.errors import ConfigError, ProjectError, RunError
from batchframe.service import Service
from batchframe.source import Source

logger = logging.getLogger(__name__)

CONFIG_DIR = "config"
_SKIPPED_DIRS = frozenset({CONFIG_DIR, "tests", "test", "__pycache__", "venv", "node_modules", "build", "dist"})
# Directories this process imported projects from: their modules may be replaced by a later load.
_loaded_dirs: set[Path] = set()
_SKIPPED_FILES = frozenset({"setup.py", "conftest.py", "noxfile.py", "__main__.py"})


@dataclass
class Project:
    """A loaded project: what was imported and the classes a run needs.

    Attributes:
        path: PATH as given, resolved.
        package_dir: the directory imported as the project's package.
        package: the import name of that package.
        config_dir: the project's ``config/`` directory, or None.
        source_cls: the Source subclass to run.
        service_cls: the Service subclass to run.
        config_cls: the Configuration class selected (``-c``, the project's only config file, or
            its only concrete Configuration), or the base Configuration.
        config_name: the selected config's file stem, or None when no config file was loaded.
        injectables: every class to register in the container.
    """

    path: Path
    package_dir: Path
    package: str
    config_dir: Path | None
    source_cls: type[Source[object]]
    service_cls: type[Service[object]]
    config_cls: type[Configuration]
    config_name: str | None
    injectables: list[type] = field(default_factory=list)

    @property
    def available_configs(self) -> list[str]:
        """Names usable with ``-c``."""
        return list_configs(self.config_dir)


def load_project(path: str | Path, config: str | None = None) -> Project:
    """Import the project at ``path`` and select its classes and configuration.

    Raises:
        ProjectError: the path does not exist, a module fails to import, or Source/Service is
            missing or ambiguous.
        ConfigError: ``config`` is a path or names a config that does not exist; or it is None and
            the project has several configs to choose from.
    """
    target = Path(path).expanduser().resolve()
    if not target.exists():
        raise ProjectError(
            f"Project path {str(path)!r} does not exist.",
            hint="Give a .py file, a package directory or a directory of modules, e.g. batchframe exec my_job.py",
        )
    if target.is_file() and target.suffix != ".py":
        raise ProjectError(f"Project path {str(path)!r} is not a Python file.", hint="Give a .py file or a directory.")
    package_dir = target if target.is_dir() else target.parent
    package = _import_package(package_dir)
    clear_marked()
    modules = [_import(name, file) for name, file in _modules_to_import(target, package_dir, package)]
    config_dir = _find_config_dir(package_dir)
    config_name = _config_to_load(config, config_dir)
    config_module = _import_config(config_name, config_dir, package_dir, package) if config_name else None
    classes = _project_classes(modules + ([config_module] if config_module else []), package_dir)
    if target.is_file() and not (_has(classes, Source) and _has(classes, Service)):
        # One file of a directory-style project (`exec my_project/service.py`) that does not import
        # the sibling defining the Source (or Service): look in the rest of its directory too.
        modules += [_import(name, file) for name, file in _modules_to_import(package_dir, package_dir, package)]
        classes = _project_classes(modules + ([config_module] if config_module else []), package_dir)
    source_cls = _pick(classes, Source, "Source", target)
    service_cls = _pick(classes, Service, "Service", target)
    config_cls = _pick_config(classes, config_module, config_name)
    injectables = list(dict.fromkeys([source_cls, service_cls, *marked_classes()]))
    injectables = [cls for cls in injectables if not issubclass(cls, Configuration)]
    return Project(
        path=target,
        package_dir=package_dir,
        package=package,
        config_dir=config_dir,
        source_cls=source_cls,
        service_cls=service_cls,
        config_cls=config_cls,
        config_name=config_name,
        injectables=injectables,
    )


# --------------------------------------------------------------------------------------------- imports


def _import_package(package_dir: Path) -> str:
    """Make ``package_dir`` importable as a package and return its import name."""
    _forget_modules_under(package_dir)
    if (package_dir / "__init__.py").exists():
        top = package_dir
        while (top.parent / "__init__.py").exists() and top.parent != top:
            top = top.parent
        _claim_name(top.name, top)
        _prepend_sys_path(top.parent)
        name = ".".join(package_dir.relative_to(top.parent).parts)
        _import(name, package_dir / "__init__.py")
    else:
        name = _namespace_name(package_dir)
        _claim_name(name, package_dir)
        module = types.ModuleType(name)
        module.__path__ = [str(package_dir)]
        module.__package__ = name
        module.__file__ = None
        sys.modules[name] = module
    _prepend_sys_path(package_dir, after_first=True)
    _loaded_dirs.add(package_dir)
    return name


def _claim_name(name: str, directory: Path) -> None:
    """Free the import name ``name`` for ``directory``: drop an earlier project's modules of that name.

    Raises:
        ProjectError: the name belongs to an installed module, which the project would shadow.
    """
    existing = sys.modules.get(name)
    if existing is None or _module_dir(existing) == directory:
        return
    if _module_dir(existing) not in _loaded_dirs:
        raise ProjectError(
            f"The project's package is named {name!r}, which is also the name of an installed module.",
            hint=f"Rename the directory {directory} so it does not shadow that module.",
        )
    for module_name in [n for n in sys.modules if n == name or n.startswith(name + ".")]:
        del sys.modules[module_name]


def _namespace_name(package_dir: Path) -> str:
    stem = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in package_dir.name) or "project"
    if stem.isidentifier() and not keyword.iskeyword(stem) and not _name_taken(stem):
        return stem
    return f"_batchframe_{stem}"


def _name_taken(name: str) -> bool:
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return True


def _prepend_sys_path(directory: Path, *, after_first: bool = False) -> None:
    entry = str(directory)
    if entry in sys.path:
        sys.path.remove(entry)
    sys.path.insert(1 if after_first and sys.path else 0, entry)


def _forget_modules_under(directory: Path) -> None:
    """Drop modules imported from ``directory`` before, so a second run in one process re-imports them."""
    stale = [name for name, module in list(sys.modules.items()) if _in_project(module, directory)]
    for name in stale:
        del sys.modules[name]
    importlib.invalidate_caches()


def _module_dir(module: types.ModuleType | None) -> Path | None:
    file = getattr(module, "__file__", None)
    if file:
        return Path(file).resolve().parent
    try:
        paths = list(getattr(module, "__path__", None) or [])
    except KeyError:  # a namespace sub-package whose parent was dropped from sys.modules
        return None
    return Path(paths[0]).resolve() if paths else None


_NOT_PROJECT = tuple(
    str(Path(p).resolve()) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(__file__).parent)}
)


def _in_project(module: types.ModuleType | None, root: Path) -> bool:
    """Whether a module was loaded from a file of the project (not an installed library under it)."""
    directory = _module_dir(module)
    if directory is None or not directory.is_relative_to(root):
        return False
    text = str(directory)
    return not text.startswith(_NOT_PROJECT) and "site-packages" not in text and "dist-packages" not in text


def _modules_to_import(target: Path, package_dir: Path, package: str) -> Iterator[tuple[str, Path]]:
    if target.is_file():
        if target.name != "__init__.py":
            yield f"{package}.{target.stem}", target
        return
    for file in sorted(package_dir.rglob("*.py")):
        relative = file.relative_to(package_dir)
        if any(part in _SKIPPED_DIRS or part.startswith(".") for part in relative.parts[:-1]):
            continue
        if file.name in _SKIPPED_FILES or file.name.startswith("test_") or file.stem.endswith("_test"):
            continue
        if not all(part.isidentifier() for part in (*relative.parts[:-1], file.stem)):
            continue
        parts = relative.parts[:-1] if file.name == "__init__.py" else (*relative.parts[:-1], file.stem)
        if parts:
            yield ".".join((package, *parts)), file


def _import(name: str, file: Path) -> types.ModuleType:
    """Import a module of the user's project; any failure becomes a ProjectError showing their frame."""
    try:
        return importlib.import_module(name)
    except SyntaxError as exc:
        raise ProjectError(
            f"{exc.filename or file}, line {exc.lineno}: syntax error: {exc.msg}\n{_caret(exc)}",
            hint="Fix the syntax error and run again.",
        ) from exc
    except Exception as exc:
        frames = user_frames(exc, exclude=(Path(__file__).parent,))
        raise ProjectError(
            f"Importing {file.name} failed with {type(exc).__name__}: {exc}",
            hint="Fix the error in your code (the frames below are from your files) and run again.",
            user_traceback=frames,
        ) from exc


def _caret(exc: SyntaxError) -> str:
    line = exc.text if exc.text is not None else linecache.getline(exc.filename or "", exc.lineno or 0)
    if not line:
        return ""
    stripped = line.rstrip("\n")
    indent = len(stripped) - len(stripped.lstrip())
    offset = max((exc.offset or 1) - 1 - indent, 0)
    return f"    {stripped.strip()}\n    {' ' * offset}^"


def user_code_failed(what: str, exc: BaseException, *, hint: str) -> RunError:
    """A RunError for an exception raised by the user's own code, showing the user's frames."""
    return RunError(f"{what} failed: {type(exc).__name__}: {exc}", hint=hint, user_traceback=user_frames(exc))


def user_frames(exc: BaseException, *, exclude: tuple[Path, ...] = ()) -> str:
    """Format the traceback of ``exc`` keeping only frames outside batchframe and importlib."""
    skip = tuple(str(p) for p in (*exclude, Path(__file__).parent))
    summary = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith(skip) and "importlib" not in frame.filename
    ]
    lines = traceback.format_list(summary) + traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip()


# ------------------------------------------------------------------------------------------- discovery


def _project_classes(modules: list[types.ModuleType], package_dir: Path) -> list[type]:
    """Classes defined in the project's files (including sibling modules imported by absolute name)."""
    seen: dict[tuple[str, str], type] = {}
    for module in [*modules, *_loaded_under(package_dir)]:
        for value in vars(module).values():
            if not inspect.isclass(value):
                continue
            defined_in = sys.modules.get(value.__module__)
            if not _in_project(defined_in, package_dir):
                continue
            # A module imported twice (as pkg.source and as source) defines two equal classes: keep one.
            key = (getattr(defined_in, "__file__", None) or value.__module__, value.__qualname__)
            seen.setdefault(key, value)
    return list(seen.values())


def _loaded_under(root: Path) -> list[types.ModuleType]:
    return [m for m in list(sys.modules.values()) if _in_project(m, root)]


def _has(classes: list[type], base: type) -> bool:
    return any(issubclass(c, base) and c is not base and not inspect.isabstract(c) for c in classes)


def _pick(classes: list[type], base: type, label: str, target: Path) -> type:
    concrete = [c for c in classes if issubclass(c, base) and c is not base and not inspect.isabstract(c)]
    leaves = [c for c in concrete if not any(o is not c and issubclass(o, c) for o in concrete)]
    if len(leaves) == 1:
        return leaves[0]
    if not leaves:
        raise ProjectError(
            f"No {label} found in {target}.",
            hint=f"Define a class that subclasses batchframe.{label} in the project (see the README's example).",
        )
    names = ", ".join(f"{c.__qualname__} ({c.__module__})" for c in leaves)
    raise ProjectError(
        f"Found {len(leaves)} {label} classes, expected one: {names}.",
        hint=f"Keep one concrete {label}: make the others abstract (abc.ABC) or move them out of the project.",
    )


# ------------------------------------------------------------------------------------------ configs


def _find_config_dir(package_dir: Path) -> Path | None:
    candidate = package_dir / CONFIG_DIR
    return candidate if candidate.is_dir() else None


def list_configs(config_dir: Path | None) -> list[str]:
    """The config names in ``config_dir`` usable with ``-c``."""
    if config_dir is None:
        return []
    return sorted(p.stem for p in config_dir.glob("*.py") if p.name != "__init__.py" and p.stem.isidentifier())


def _config_to_load(config: str | None, config_dir: Path | None) -> str | None:
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


def _import_config(name: str, config_dir: Path | None, package_dir: Path, package: str) -> types.ModuleType:
    available = list_configs(config_dir)
    if config_dir is None or name not in available:
        where = f" in {config_dir}" if config_dir else f" (no {CONFIG_DIR}/ directory next to {package_dir})"
        listing = ", ".join(available) if available else "none"
        raise ConfigError(
            f"Config {name!r} not found{where}. Available configs: {listing}.",
            hint="Pick one of them with -c NAME, or create one with: batchframe new-config NAME",
            available=available,
        )
    return _import(f"{package}.{CONFIG_DIR}.{name}", config_dir / f"{name}.py")


def _pick_config(
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
