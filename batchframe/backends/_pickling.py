"""Pickling with a run's own modules: a worker serving several runs keeps each project's modules apart.

A dask worker may serve two runs whose projects both have a ``job.py``. After building a run's
Service there, the project's entries in ``sys.modules`` are put back as they were, so the next run
imports its own copy; a run's items are then unpickled with the run's module table (``loads``), and
its errors pickled with it (``dumps``): a class of the run's modules travels under the driver's name
for it, and the driver finds it by import as usual.
"""

from __future__ import annotations

import importlib
import io
import itertools
import pickle
import sys
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_GLOBAL = "batchframe-global"


@dataclass(frozen=True)
class RunModules:
    """A run's own modules: what its items are unpickled with, and its errors pickled with.

    Attributes:
        by_name: the modules by import name, under the driver's names too when they differ here.
        driver_names: the driver's import name of each module (by ``id``).
    """

    by_name: Mapping[str, types.ModuleType] = field(default_factory=dict)
    driver_names: Mapping[int, str] = field(default_factory=dict)

    def find(self, module: str, qualname: str) -> Any:
        """The object ``module.qualname`` of this run; AttributeError/KeyError when it has none."""
        return _lookup(self.by_name[module], qualname)

    def global_name(self, obj: Any) -> tuple[str, str] | None:
        """``(module, qualname)`` as the driver names it, for a class or function of this run's modules.

        None when ``obj`` is not one, or when a plain pickle finds it anyway (its module is imported).
        """
        name = getattr(obj, "__module__", None)
        if not isinstance(name, str):
            return None
        module = self.by_name.get(name)
        if module is None or sys.modules.get(name) is module:
            return None
        qualname = getattr(obj, "__qualname__", "")
        try:
            if _lookup(module, qualname) is not obj:
                return None
        except AttributeError:
            return None
        return self.driver_names.get(id(module), module.__name__), qualname


def _lookup(module: types.ModuleType, qualname: str) -> Any:
    value: Any = module
    for part in qualname.split("."):
        value = getattr(value, part)
    return value


class _Pickler(pickle.Pickler):
    """Pickles classes and functions of a run's modules by the driver's name, even when not in ``sys.modules``."""

    def __init__(self, file: io.BytesIO, modules: RunModules) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._modules = modules

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, (type, types.FunctionType)):
            name = self._modules.global_name(obj)
            if name is not None:
                return (_GLOBAL, *name)
        return None


class _Unpickler(pickle.Unpickler):
    """Finds classes in a run's own modules first, then by import as pickle does."""

    def __init__(self, file: io.BytesIO, modules: RunModules | None) -> None:
        super().__init__(file)
        self._modules = modules

    def find_class(self, module: str, name: str) -> Any:
        if self._modules is not None and module in self._modules.by_name:
            try:
                return self._modules.find(module, name)
            except AttributeError:
                pass
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 3 and pid[0] == _GLOBAL):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        _, module, qualname = pid
        if self._modules is not None and module in self._modules.by_name:
            return self._modules.find(module, qualname)
        return _lookup(importlib.import_module(module), qualname)


def dumps(obj: Any, modules: RunModules | None = None) -> bytes:
    """Pickle ``obj``; with a run's modules, its classes pickle even when they are not in ``sys.modules``."""
    if modules is None or not modules.by_name:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    buffer = io.BytesIO()
    _Pickler(buffer, modules).dump(obj)
    return buffer.getvalue()


def loads(data: bytes, modules: RunModules | None = None) -> Any:
    """Unpickle ``data``, finding classes in a run's own modules first (``modules``), else by import."""
    return _Unpickler(io.BytesIO(data), modules).load()


def dumps_each(pickled: Sequence[bytes]) -> bytes:
    """Objects pickled one by one (``dumps``), as one payload for ``loads_each``: they are unpickled one by one too."""
    ends = list(itertools.accumulate(map(len, pickled)))
    return pickle.dumps((ends, b"".join(pickled)), protocol=pickle.HIGHEST_PROTOCOL)


def loads_each(payload: bytes, modules: RunModules | None = None) -> Iterator[tuple[Any, BaseException | None]]:
    """Unpickle each object of a ``dumps_each`` payload on its own: ``(object, None)``, or ``(None, error)``.

    One object that cannot be unpickled here (its class unknown, its ``__setstate__`` raising) gives
    its own error and the next one is read from where it starts. One unpickler reads them all while
    none fails: a fresh one per object would cost four times as much.

    Raises:
        Exception: the payload itself is not one of ``dumps_each`` (a bug, not an object's fault).
    """
    ends, blob = pickle.loads(payload)
    stream = io.BytesIO(blob)
    unpickler: _Unpickler | None = None
    start = 0
    for end in ends:
        if unpickler is None or stream.tell() != start:  # after a failure the unpickler may hold a torn frame
            stream.seek(start)
            unpickler = _Unpickler(stream, modules)
        try:
            obj = unpickler.load()
        except BaseException as exc:  # unpickling runs the class's code, which may raise anything
            unpickler = None
            yield None, exc
        else:
            yield obj, None
        start = end
