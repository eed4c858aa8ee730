"""Locating and importing the user's project, finding its Source, Service and configuration.

PATH may be a single ``.py`` file, a package directory (with ``__init__.py``) or a plain directory.
Every directory is imported as a package so relative imports work everywhere: a regular package
under its own name (its parent on ``sys.path``), a plain directory as a namespace package registered
under its name (or ``_batchframe_<name>`` when that name is taken by another module). The
directory itself is also put at the end of ``sys.path`` so script-style sibling imports (``from
source import X``) work too; at the end, so the standard library and installed packages win over a
project module of the same name (a project's ``numbers.py`` never breaks ``import numbers``, here or
in the worker processes that inherit this ``sys.path``).

What is imported, and nothing else (a stray ``drop_tables.py`` must never run):

- a directory: its own modules and those of its sub-packages (folders with ``__init__.py``),
  recursively, except ``config/``, ``tests/`` and the like; a directory with no ``.py`` file,
  ``__init__.py`` or ``config/`` (``/etc``) is refused before anything is imported;
- a file: that file (and its package's ``__init__.py``). When it lacks the Source or the Service,
  the other modules directly beside it are imported too if its folder is a project (it has an
  ``__init__.py`` or a ``config/`` folder); in any other folder only the documented counterpart
  (``source.py`` for ``service.py``, and the reverse).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import keyword
import linecache
import logging
import os
import sys
import sysconfig
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from batchframe._text import format_exception
from batchframe.configuration import Configuration
from batchframe.errors import ConfigError, ProjectError, RunError
from batchframe.project.configs import CONFIG_DIR, config_to_load, find_config_dir, list_configs, pick_config
from batchframe.project.container import clear_marked, marked_classes
from batchframe.service import Service
from batchframe.service import misspelt_hooks as service_hook_warnings
from batchframe.source import Source
from batchframe.source import misspelt_hooks as source_hook_warnings

logger = logging.getLogger(__name__)

_SKIPPED_DIRS = frozenset({CONFIG_DIR, "tests", "test", "__pycache__", "venv", "node_modules", "build", "dist"})
# Directories this process imported projects from: their modules may be replaced by a later load.
_loaded_dirs: set[Path] = set()
_SKIPPED_FILES = frozenset({"setup.py", "conftest.py", "noxfile.py", "__main__.py"})
# In a folder that is not a project, `exec service.py` may still find its Source in source.py beside it.
_COUNTERPARTS = {"service.py": "source.py", "source.py": "service.py"}
_PATH_HINT = "PATH must be a .py file, a package or a project folder, e.g. batchframe exec my_job.py"


@dataclass
class Project:
    """A loaded project: what was imported and the classes a run needs.

    Attributes:
        path: PATH as given, resolved.
        package_dir: the directory imported as the project's package.
        package: the import name of that package.
        root: the folder that holds every module of the project: ``package_dir``, or the outermost
            package around it (what a dask cluster's workers receive).
        config_dir: the project's ``config/`` directory, or None.
        source_cls: the Source subclass to run.
        service_cls: the Service subclass to run.
        config_cls: the Configuration class selected (``-c``, the project's only config file, or
            its only concrete Configuration), or the base Configuration.
        config_name: the selected config's file stem, or None when no config file was loaded.
        injectables: every class to register in the container.
        hook_warnings: one line per method of the Source or Service that looks like a misspelt
            hook (``persist_faild``); logged when the project is loaded.
    """

    path: Path
    package_dir: Path
    package: str
    root: Path
    config_dir: Path | None
    source_cls: type[Source[object]]
    service_cls: type[Service[object]]
    config_cls: type[Configuration]
    config_name: str | None
    injectables: list[type] = field(default_factory=list)
    hook_warnings: list[str] = field(default_factory=list)

    @property
    def available_configs(self) -> list[str]:
        """Names usable with ``-c``."""
        return list_configs(self.config_dir)


def load_project(path: str | Path, config: str | None = None, *, warn_hooks: bool = True) -> Project:
    """Import the project at ``path`` and select its classes and configuration.

    A method of the Source or Service that looks like a misspelt hook is kept in
    ``Project.hook_warnings`` and, with ``warn_hooks`` (False in worker processes, which load the
    project again), logged as a warning.

    Raises:
        ProjectError: the path does not exist or is not a .py file, a package or a project folder; a
            module fails to import; or Source/Service is missing or ambiguous.
        ConfigError: ``config`` is a path or names a config that does not exist; or it is None and
            the project has several configs to choose from.
    """
    target = _checked_target(path)
    package_dir = target if target.is_dir() else target.parent
    package, root = _import_package(package_dir)
    clear_marked()
    modules = [_import(name, file) for name, file in _modules_to_import(target, package_dir, package)]
    config_dir = find_config_dir(package_dir)
    config_name = config_to_load(config, config_dir)
    config_module = _import_config(config_name, config_dir, package_dir, package) if config_name else None
    if config_module is not None:
        modules.append(config_module)
    classes = _project_classes(modules, package_dir)
    if target.is_file() and not (_has(classes, Source) and _has(classes, Service)):
        # One file of a directory-style project (`exec my_project/service.py`) that does not import
        # the sibling defining the Source (or Service): look beside it too, never below it.
        modules += [_import(name, file) for name, file in _siblings(target, package_dir, package)]
        classes = _project_classes(modules, package_dir)
        _check_file_has_both(classes, target)
    source_cls = _pick(classes, Source, "Source", target)
    service_cls = _pick(classes, Service, "Service", target)
    check_process(service_cls)
    config_cls = pick_config(classes, config_module, config_name)
    injectables = list(dict.fromkeys([source_cls, service_cls, *marked_classes()]))
    injectables = [cls for cls in injectables if not issubclass(cls, Configuration)]
    hook_warnings = [*source_hook_warnings(source_cls), *service_hook_warnings(service_cls)]
    for warning in hook_warnings if warn_hooks else ():
        logger.warning("%s", warning)
    return Project(
        path=target,
        package_dir=package_dir,
        package=package,
        root=root,
        config_dir=config_dir,
        source_cls=source_cls,
        service_cls=service_cls,
        config_cls=config_cls,
        config_name=config_name,
        injectables=injectables,
        hook_warnings=hook_warnings,
    )


def _checked_target(path: str | Path) -> Path:
    """PATH resolved, once it is known to be a .py file or a folder worth importing (nothing imported yet).

    Raises:
        ProjectError: it does not exist; is not a regular .py file or a folder (``/dev/null``); is a
            folder with no .py file, ``__init__.py`` or ``config/`` in it (``/etc``); or is part of
            the Python installation.
    """
    target = Path(path).expanduser().resolve()
    if not target.exists():
        raise ProjectError(
            f"Project path {str(path)!r} does not exist.",
            hint="Give a .py file, a package directory or a directory of modules, e.g. batchframe exec my_job.py",
        )
    if _installed(target):
        raise ProjectError(
            f"Project path {str(path)!r} is part of the Python installation ({target}), not a project.",
            hint=_PATH_HINT,
        )
    if target.is_dir():
        if not _is_project_dir(target) and not any(_py_files(target)):
            raise ProjectError(
                f"Project path {str(path)!r} is a folder with no Python modules in it "
                f"(no .py file, no __init__.py, no {CONFIG_DIR}/ folder). {_PATH_HINT}."
            )
        return target
    if not target.is_file():
        raise ProjectError(f"Project path {str(path)!r} is neither a file nor a folder. {_PATH_HINT}.")
    if target.suffix != ".py":
        raise ProjectError(f"Project path {str(path)!r} is not a Python file. {_PATH_HINT}.")
    return target


def _is_project_dir(directory: Path) -> bool:
    """A package, or a directory-style project: it has an ``__init__.py`` or a ``config/`` folder."""
    return (directory / "__init__.py").is_file() or (directory / CONFIG_DIR).is_dir()


def _py_files(directory: Path) -> list[Path]:
    """The regular ``.py`` files directly in ``directory``, sorted.

    Raises:
        ProjectError: the folder cannot be read.
    """
    try:
        return sorted(p for p in directory.iterdir() if p.suffix == ".py" and p.is_file())
    except OSError as exc:
        raise ProjectError(f"Cannot read the folder {directory}: {exc.strerror or exc}.", hint=_PATH_HINT) from None


def _check_file_has_both(classes: list[type], target: Path) -> None:
    """Raise a ProjectError saying what ``target`` lacks and how to fix it, if it lacks the Source or Service."""
    bases = [base for base in (Source, Service) if not _has(classes, base)]
    if not bases:
        return
    first = bases[0].__name__
    either = ", and no Service either" if len(bases) == 2 else ""
    notes = "".join(_abstract_note(classes, base) for base in bases)
    folder = target.parent
    if _is_project_dir(folder):
        raise ProjectError(
            f"No {first} found in {target} or in the other modules of {folder}{either}.{notes}",
            hint=f"Define a class that subclasses batchframe.{first} in the project (see the README's example).",
        )
    things, them = ("the Source and the Service", "them") if either else (f"the {first}", "it")
    raise ProjectError(
        f"No {first} found in {target}{either}.{notes} Its folder is not a project (no __init__.py, no "
        f"{CONFIG_DIR}/ folder), so batchframe imports only this file, not the other files beside it.",
        hint=(
            f"Define {things} in {target.name}, or import {them} there (from my_module import My{first}); "
            f"or, if every .py file in that folder belongs to this job, run the folder: batchframe exec {folder}"
        ),
    )


# --------------------------------------------------------------------------------------------- imports


def _import_package(package_dir: Path) -> tuple[str, Path]:
    """Make ``package_dir`` importable as a package; return its import name and the project's root folder."""
    _forget_modules_under(package_dir)
    if (package_dir / "__init__.py").exists():
        top = package_dir
        while (top.parent / "__init__.py").exists() and top.parent != top:
            top = top.parent
        _claim_name(top.name, top)
        _append_sys_path(top.parent)
        _check_found_here(top)
        name = ".".join(package_dir.relative_to(top.parent).parts)
        _import(name, package_dir / "__init__.py")
    else:
        top = package_dir
        name = _namespace_name(package_dir)
        _claim_name(name, package_dir)
        module = types.ModuleType(name)
        module.__path__ = [str(package_dir)]
        module.__package__ = name
        module.__file__ = None
        sys.modules[name] = module
    _append_sys_path(package_dir)
    _loaded_dirs.add(package_dir)
    return name, top


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


def _append_sys_path(directory: Path) -> None:
    """Put ``directory`` last on ``sys.path``: never before the standard library or installed packages."""
    entry = str(directory)
    if entry not in sys.path:
        sys.path.append(entry)


def _check_found_here(top: Path) -> None:
    """Raise a ProjectError when ``import <top's name>`` finds another package first (an installed one).

    The project's folder is last on ``sys.path``, so a package of the same name installed in the
    environment would be imported instead of the project's.
    """
    if top.name in sys.modules:
        return  # _claim_name checked it is this project's
    try:
        spec = importlib.util.find_spec(top.name)
    except (ImportError, ValueError):
        spec = None
    origin = getattr(spec, "origin", None)
    if origin is None or Path(origin).resolve() == (top / "__init__.py").resolve():
        return  # this project's package (or nothing found: importing it says why)
    raise ProjectError(
        f"The project's package is named {top.name!r}, which is also the name of an installed module.",
        hint=f"Rename the directory {top} so it does not shadow that module.",
    )


def project_modules(root: Path) -> dict[str, types.ModuleType]:
    """The modules this process imported from the project folder ``root``, by import name."""
    return {name: module for name, module in list(sys.modules.items()) if _in_project(module, root)}


def _forget_modules_under(directory: Path) -> None:
    """Drop modules imported from ``directory`` before, so a second run in one process re-imports them."""
    stale = [name for name, module in list(sys.modules.items()) if _in_project(module, directory)]
    for name in stale:
        del sys.modules[name]
    importlib.invalidate_caches()


def _module_dir(module: types.ModuleType | None) -> Path | None:
    file = getattr(module, "__file__", None)
    if file:
        return _resolved(os.path.dirname(file))
    try:
        paths = list(getattr(module, "__path__", None) or [])
    except KeyError:  # a namespace sub-package whose parent was dropped from sys.modules
        return None
    return _resolved(paths[0]) if paths else None


@functools.lru_cache(maxsize=4096)
def _resolved(directory: str) -> Path:
    # Hundreds of modules share a few dozen folders, and resolving each file was a tenth of start-up.
    return Path(directory).resolve()


def _installation_dirs() -> tuple[Path, ...]:
    """Where Python and its libraries live: never the user's project (not ``sys.base_prefix``: it may be /usr)."""
    paths = sysconfig.get_paths()
    dirs = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    if sys.prefix != sys.base_prefix:  # a virtual environment
        dirs.add(sys.prefix)
    dirs.add(str(Path(__file__).parent.parent))  # batchframe itself
    return tuple(Path(d).resolve() for d in dirs)


_NOT_PROJECT = _installation_dirs()


def _installed(directory: Path) -> bool:
    text = str(directory)
    if "site-packages" in text or "dist-packages" in text:
        return True
    return any(directory.is_relative_to(d) for d in _NOT_PROJECT)


def _in_project(module: types.ModuleType | None, root: Path) -> bool:
    """Whether a module was loaded from a file of the project (not an installed library under it)."""
    directory = _module_dir(module)
    if directory is None or not directory.is_relative_to(root):
        return False
    return not _installed(directory)


def _modules_to_import(target: Path, package_dir: Path, package: str) -> Iterator[tuple[str, Path]]:
    """The modules of PATH: a file itself; a folder's own modules and its sub-packages', recursively."""
    if target.is_file():
        if target.name != "__init__.py":
            yield f"{package}.{target.stem}", target
        return
    yield from _package_modules(package_dir, package)


def _package_modules(directory: Path, name: str) -> Iterator[tuple[str, Path]]:
    """``directory``'s modules, then its sub-packages' (folders with ``__init__.py``; not config/, tests/...)."""
    for file in _py_files(directory):
        if _importable(file) and file.name != "__init__.py":
            yield f"{name}.{file.stem}", file
    try:
        folders = sorted(p for p in directory.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError as exc:
        raise ProjectError(f"Cannot read the folder {directory}: {exc.strerror or exc}.", hint=_PATH_HINT) from None
    for folder in folders:
        if folder.name in _SKIPPED_DIRS or folder.name.startswith(".") or not folder.name.isidentifier():
            continue
        if (folder / "__init__.py").is_file():
            yield f"{name}.{folder.name}", folder / "__init__.py"
            yield from _package_modules(folder, f"{name}.{folder.name}")


def _siblings(target: Path, package_dir: Path, package: str) -> Iterator[tuple[str, Path]]:
    """The modules directly beside ``target`` (a project's folder), or its documented counterpart (any other)."""
    if _is_project_dir(package_dir):
        files = [f for f in _py_files(package_dir) if _importable(f) and f.name != "__init__.py"]
    else:
        counterpart = package_dir / _COUNTERPARTS.get(target.name, "")
        files = [counterpart] if target.name in _COUNTERPARTS and counterpart.is_file() else []
    for file in files:
        if file != target:
            yield f"{package}.{file.stem}", file


def _importable(file: Path) -> bool:
    """A module of the project: not a test, a build script or a name Python cannot import."""
    if file.name in _SKIPPED_FILES or file.name.startswith("test_") or file.stem.endswith("_test"):
        return False
    return file.stem.isidentifier()


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
        from batchframe._text import safe_str

        frames = format_exception(exc, headers=False, exclude=(Path(__file__).parent.parent,))
        raise ProjectError(
            f"Importing {file.name} failed with {type(exc).__name__}: {safe_str(exc)}",
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
    from batchframe._text import safe_str

    return RunError(
        f"{what} failed: {type(exc).__name__}: {safe_str(exc)}",
        hint=hint,
        user_traceback=format_exception(exc, headers=False),
    )


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
            f"No {label} found in {target}.{_abstract_note(classes, base)}",
            hint=f"Define a class that subclasses batchframe.{label} in the project (see the README's example).",
        )
    names = ", ".join(f"{c.__qualname__} ({c.__module__})" for c in leaves)
    raise ProjectError(
        f"Found {len(leaves)} {label} classes, expected one: {names}.",
        hint=f"Keep one concrete {label}: make the others abstract (abc.ABC) or move them out of the project.",
    )


def check_process(service_cls: type) -> None:
    """Refuse a Service whose ``process`` is a generator function (sync or async).

    Calling one runs none of its body: it returns a generator, which batchframe would count as the
    item's success, so every item would "succeed" unprocessed, on every back end.

    Raises:
        ProjectError: ``process`` contains ``yield`` (the message says what to write instead).
    """
    process = getattr(service_cls, "process", None)
    asyncgen = inspect.isasyncgenfunction(process)
    if not (asyncgen or inspect.isgeneratorfunction(process)):
        return
    kind = "an async generator (async def with yield)" if asyncgen else "a generator (def with yield)"
    name = f"{service_cls.__qualname__}.process"
    raise ProjectError(
        f"{name} is {kind}: calling it runs none of its body, so every item would count as processed "
        "without being processed.",
        hint=f"Write {name} without yield: do the work for the item and return (or raise) once, as "
        "async def process(self, item) or def process(self, item). To produce several results per "
        "item, collect them in a list or write each one out from inside process.",
    )


def _abstract_note(classes: list[type], base: type) -> str:
    """Why the project's subclasses of ``base`` cannot run: the abstract methods they lack, probable typos."""
    abstract = [c for c in classes if issubclass(c, base) and c is not base and inspect.isabstract(c)]
    abstract = [c for c in abstract if not any(o is not c and issubclass(o, c) for o in abstract)]
    check = source_hook_warnings if base is Source else service_hook_warnings
    notes = [
        f" {c.__qualname__} subclasses {base.__name__} but is abstract: it does not define "
        f"{', '.join(sorted(getattr(c, '__abstractmethods__', ())))}." + "".join(f" {w}" for w in check(c))
        for c in abstract
    ]
    return "".join(notes)


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
