"""How a worker process builds a run's Service: the picklable ``ServiceFactory`` the driver makes.

The driver resolves the parameters once (``-p`` text, prompts, defaults) and sends their *values*,
never their text again: a value whose text would not parse back to itself (a prompt's answer, a
path with a comma) reaches the worker unchanged. The values travel pickled as bytes inside the
factory, because unpickling them may need the project's own classes (an Enum of the project's),
which a worker can import only once it has loaded the project.

A worker builds only the Service (``build``), never the Source. For a cluster whose workers may not
have the project's files, the factory also carries the project's folder as a zip
(``ServiceFactory.with_archive``), which a worker extracts into a folder of its own for the run and
imports from.

On a dask worker, which may serve several runs at once, ``build(isolate=True)`` puts the project's
entries in ``sys.path`` and ``sys.modules`` back as they were once the Service is built, so the
next run imports its own copy; the run's items are unpickled with its own modules instead
(``_pickling.RunModules``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import os
import pickle
import shutil
import sys
import threading
import types
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchframe.backends import BackendError
from batchframe.backends._pickling import RunModules, loads
from batchframe.errors import ParamError

if TYPE_CHECKING:
    from batchframe.project.load import Project

ARCHIVE_MAX_BYTES = 50 * 2**20
"""The largest project folder sent to a cluster's workers (its files' total size)."""

SKIPPED_DIRS = frozenset({"__pycache__", "batchframe_outputs", "node_modules", "venv", "env"})
"""Folders never sent to workers (besides hidden ones such as ``.git`` and ``.venv``)."""

_loading = threading.Lock()  # sys.path and sys.modules are the process's: one project load at a time


def python_version() -> str:
    """This interpreter's ``major.minor``."""
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def batchframe_version() -> str:
    """The installed batchframe's version."""
    from batchframe import __version__

    return __version__


@dataclass(frozen=True)
class ProjectArchive:
    """The project's folder, zipped: what a worker imports the project from when it is not on its disk.

    Attributes:
        root: the folder on the driver's machine (its name is the first part of every path in the zip).
        data: the zip.
    """

    root: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class ServiceFactory:
    """Everything a worker process needs to build the run's Service; picklable.

    Attributes:
        run_key: unique per run: what a worker files the built Service under.
        project_path: PATH as the driver loaded it (absolute).
        config: the config file the driver selected, or None.
        values: the resolved parameter values (a pickled dict).
        statics: the run's static values (output folders, start time).
        package: the driver's import name of the project's package.
        root: the project's folder on the driver (``Project.root``).
        batchframe_version: the driver's batchframe.
        python_version: the driver's Python, ``major.minor``.
        archive: the project's folder, for workers that do not have it; or None.
    """

    run_key: str
    project_path: str
    config: str | None
    values: bytes = field(repr=False)
    statics: dict[str, Any]
    package: str
    root: str
    batchframe_version: str
    python_version: str
    archive: ProjectArchive | None = None

    def with_archive(self, *, max_bytes: int = ARCHIVE_MAX_BYTES) -> ServiceFactory:
        """A copy that carries the project's folder (see ``archive_project``)."""
        data = archive_project(Path(self.root), max_bytes=max_bytes)
        return dataclasses.replace(self, archive=ProjectArchive(self.root, data))


def make_factory(
    project: Project, *, values: Mapping[str, Any], statics: Mapping[str, Any], config: str | None
) -> ServiceFactory:
    """The factory of a run (a new run key each call).

    Raises:
        ParamError: a parameter's value cannot be pickled, so it cannot reach a worker process.
    """
    return ServiceFactory(
        run_key=uuid.uuid4().hex,
        project_path=str(project.path),
        config=config,
        values=_pickled_values(values),
        statics=dict(statics),
        package=project.package,
        root=str(project.root),
        batchframe_version=batchframe_version(),
        python_version=python_version(),
    )


def _pickled_values(values: Mapping[str, Any]) -> bytes:
    try:
        return pickle.dumps(dict(values), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass
    for name, value in values.items():
        try:
            pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise ParamError(
                f"The value of {name} ({type(value).__qualname__}) cannot be sent to worker processes: "
                f"it cannot be pickled ({type(exc).__name__}: {exc}).",
                hint="Give it a value that pickles (text, numbers, paths...), or run in this process "
                "with -p executor=asyncio (or threads).",
                param=name,
            ) from None
    raise ParamError("The parameter values cannot be sent to worker processes: they cannot be pickled together.")


# --------------------------------------------------------------------------------- the project's files


def archive_project(root: Path, *, max_bytes: int = ARCHIVE_MAX_BYTES) -> bytes:
    """The project's folder as a zip whose paths start with the folder's name.

    Hidden folders (``.git``, ``.venv``), ``__pycache__``, ``batchframe_outputs`` and the like are
    left out.

    Raises:
        BackendError: its files add up to more than ``max_bytes``.
    """
    buffer = io.BytesIO()
    total, largest = 0, list[tuple[int, Path]]()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, strict_timestamps=False) as archive:
        for path in _project_files(root):
            try:
                size = path.stat().st_size
            except OSError:
                continue  # a file that went away: the worker does without it
            total += size
            largest = sorted([*largest, (size, path)], reverse=True)[:3]
            if total > max_bytes:
                raise _too_large(root, max_bytes, largest)
            with contextlib.suppress(OSError):  # a file we may not read: the worker does without it
                archive.write(path, path.relative_to(root.parent))
    return buffer.getvalue()


def _project_files(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(files):
            path = Path(folder, name)
            if path.is_file():
                yield path


def _too_large(root: Path, max_bytes: int, largest: list[tuple[int, Path]]) -> BackendError:
    biggest = ", ".join(f"{path.relative_to(root)} ({size / 2**20:.1f} MB)" for size, path in largest)
    return BackendError(
        f"The project folder {root} holds more than {max_bytes / 2**20:g} MB of files (the largest: {biggest}); "
        "it is sent to every dask worker with the run.",
        hint="Keep data out of the project folder (let the Source or Service read it from storage the workers "
        "can reach), or put the job's code in a folder of its own.",
    )


def _extracted(factory: ServiceFactory, archive: ProjectArchive, local_dir: str | None) -> tuple[Path, Path]:
    """Extract the project for this run; return the project path there and the run's folder."""
    import tempfile

    workdir = Path(local_dir or tempfile.gettempdir()) / f"batchframe-{factory.run_key}"
    if not workdir.exists():
        partial = workdir.with_name(workdir.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with zipfile.ZipFile(io.BytesIO(archive.data)) as zipped:
            zipped.extractall(partial)  # zipfile drops ".." and absolute parts of member names
        partial.rename(workdir)
    relative = Path(factory.project_path).relative_to(Path(archive.root).parent)
    return workdir / relative, workdir


# ------------------------------------------------------------------------------------ worker side


class VersionMismatch(BackendError):  # noqa: N818 - says what is wrong, like the other errors here
    """A worker runs another batchframe, or another Python (major.minor), than the driver."""


def check_versions(factory: ServiceFactory) -> None:
    """Raise a VersionMismatch naming both sides unless this process runs the driver's versions."""
    here = (batchframe_version(), python_version())
    there = (factory.batchframe_version, factory.python_version)
    if here != there:
        raise VersionMismatch(
            f"A worker runs batchframe {here[0]} on Python {here[1]}, but the driver runs "
            f"batchframe {there[0]} on Python {there[1]}.",
            hint=f"Install batchframe {there[0]} on Python {there[1]} on every worker (pip install "
            f"'batchframe=={there[0]}'), as on the machine that runs batchframe exec.",
        )


@dataclass
class Built:
    """A Service built in a worker, with the modules of its project.

    Attributes:
        service: the Service.
        modules: the run's modules.
        workdir: the folder the project was extracted into (removed when the run ends), or None.
    """

    service: Any
    modules: RunModules
    workdir: Path | None = None


def build(factory: ServiceFactory, *, local_dir: str | None = None, isolate: bool = False) -> Built:
    """Load the project and build its Service from the factory (the Source is not built).

    Args:
        factory: the run's factory.
        local_dir: where to extract a project that travels with the factory (default: the temp folder).
        isolate: afterwards, put ``sys.path`` and the project's ``sys.modules`` entries back as they were,
            so the next run loaded in this process imports its own copy (a dask worker).

    Raises:
        VersionMismatch: this process runs another batchframe or Python than the driver.
        Exception: what loading the project or the user's constructors raised.
    """
    from batchframe.project.compat import sync_aliases
    from batchframe.project.container import build_service, make_config
    from batchframe.project.load import load_project, project_modules

    check_versions(factory)
    path, workdir = Path(factory.project_path), None
    if factory.archive is not None:
        path, workdir = _extracted(factory, factory.archive, local_dir)
    with _loading:
        saved_path, saved_modules = list(sys.path), dict(sys.modules)
        own: dict[str, types.ModuleType] = {}
        try:
            project = load_project(path, factory.config, warn_hooks=False)
            own = project_modules(project.root)
            modules = _run_modules(own, here=project.package, driver=factory.package)
            values = loads(factory.values, modules)
            config = make_config(project.config_cls, values)
            sync_aliases(config)
            service = build_service(
                service_cls=project.service_cls,
                config=config,
                injectables=project.injectables,
                param_values=values,
                static_values=factory.statics,
            )
        finally:
            if isolate:
                _restore(saved_path, saved_modules, own or project_modules(_root_of(path)))
    return Built(service, modules, workdir)


def _root_of(path: Path) -> Path:
    """The project folder of PATH, as ``load_project`` finds it (for a load that failed half-way)."""
    folder = path if path.is_dir() else path.parent
    while (folder / "__init__.py").exists() and (folder.parent / "__init__.py").exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def _run_modules(own: Mapping[str, types.ModuleType], *, here: str, driver: str) -> RunModules:
    """The table of a run's modules; names under this process's package name also under the driver's."""
    by_name = dict(own)
    driver_names = {id(module): name for name, module in own.items()}
    if here != driver:
        for name, module in own.items():
            if name == here or name.startswith(here + "."):
                alias = driver + name[len(here) :]
                by_name.setdefault(alias, module)
                driver_names[id(module)] = alias
    return RunModules(by_name, driver_names)


def _restore(path: list[str], saved: Mapping[str, types.ModuleType], own: Mapping[str, types.ModuleType]) -> None:
    """Put ``sys.path`` and the entries of ``own`` in ``sys.modules`` back as they were."""
    for name in own:
        if name in saved:
            sys.modules[name] = saved[name]
        else:
            sys.modules.pop(name, None)
    sys.path[:] = path
    importlib.invalidate_caches()


def remove_workdir(workdir: Path | None) -> None:
    """Delete a run's extracted project (when the run ends). Never raises."""
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)
