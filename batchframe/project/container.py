"""Dependency injection with kink: ``@inject``, auto-aliasing to parents, and per-run wiring.

batchframe uses kink's global container ``kink.di``. Classes decorated with ``@inject`` are only
*marked* at import time; each run resets the container and registers the marked classes of the
project it loaded, so two runs in one process never see each other's bindings, and annotations that
name classes defined later in a module (or use ``from __future__ import annotations``) resolve.
Because the container is global, building is serialised (a dask worker builds the Services of
several runs, from several threads).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import re
import threading
import types
import typing
from abc import ABC
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, overload

import kink
from kink.errors.execution_error import ExecutionError
from kink.errors.service_error import ServiceError

from batchframe.project.params import is_param_annotation, type_hints

logger = logging.getLogger(__name__)

C = TypeVar("C", bound=type)

_INJECT_ATTR = "__batchframe_inject__"
_WIRED_ATTR = "__batchframe_wired__"
_NEVER_ALIASED = (object, Generic, Protocol, ABC)

# Classes marked with @inject, in the order they were defined. project.py clears it before it
# imports a project, so it holds exactly the classes of the project being run.
_marked: list[type] = []

# Held while the global container is reset, filled and used to build a run's objects.
_building = threading.RLock()


@dataclass(frozen=True)
class _InjectSpec:
    alias: Any = None


@overload
def inject(cls: C, /) -> C: ...
@overload
def inject(cls: None = None, /, *, alias: Any = None) -> Callable[[C], C]: ...
def inject(cls: C | None = None, /, *, alias: Any = None) -> C | Callable[[C], C]:
    """Make a class injectable: its constructor arguments are resolved by batchframe.

    Arguments annotated with a class (``source: Source``, ``config: MyConfig``) receive the instance
    bound to that class; ``BatchframeParam`` arguments receive their ``-p`` value or default; the
    static names ``_output_directory``, ``_current_run_start`` and ``_current_run_output_dir`` receive
    the run's values. The class is also bound to every parent class that has no binding yet.

    Works as ``@inject``, ``@inject()`` and ``@inject(alias=SomeBase)``.

    Example:
        >>> @inject
        ... class Notify(Service[dict]):
        ...     def __init__(self, source: Source[dict], config: ShopConfig) -> None:
        ...         self.source, self.config = source, config  # both given by batchframe
    """

    def mark(klass: C) -> C:
        setattr(klass, _INJECT_ATTR, _InjectSpec(alias))
        _marked.append(klass)
        return klass

    return mark if cls is None else mark(cls)


def clear_marked() -> None:
    """Forget the marked classes (before a project is imported afresh)."""
    _marked.clear()


def marked_classes() -> list[type]:
    """The classes marked with ``@inject`` since the last ``clear_marked()``.

    A module imported again (a test re-importing a project) re-defines its classes: only the
    latest definition of each ``module.qualname`` counts.
    """
    latest = {(cls.__module__, cls.__qualname__): cls for cls in _marked}
    return list(latest.values())


def reset_container() -> kink.Container:
    """Empty kink's global container and return it."""
    container = kink.di
    container.__init__()  # type: ignore[misc]  # kink has no public clear(); this re-creates its maps
    return container


def register(container: kink.Container, cls: type) -> None:
    """Bind ``cls`` as a lazily built singleton whose constructor arguments are resolved."""
    if not cls.__dict__.get(_WIRED_ATTR):
        kink.inject(cls, bind=_bindings(cls), container=container)
        setattr(cls, _WIRED_ATTR, True)
    container[cls] = lambda _container: cls()


def alias_to_parents(container: kink.Container, classes: Iterable[type]) -> None:
    """Bind every parent class without a binding to its first injectable subclass."""
    for cls in classes:
        spec = getattr(cls, _INJECT_ATTR, None)
        if spec is not None and spec.alias is not None and spec.alias not in container:
            container.add_alias(spec.alias, cls)
    for cls in classes:
        for parent in cls.__mro__[1:]:
            if parent not in _NEVER_ALIASED and parent not in container:
                container.add_alias(parent, cls)


def _bindings(cls: type) -> dict[str, Any]:
    """Map each constructor argument to the container key its annotation names.

    kink matches an argument by name, then by its raw annotation; a generic annotation such as
    ``Source[int]`` or ``Optional[MyConfig]`` would not match, so bind the bare class explicitly.
    """
    init = cls.__dict__.get("__init__")
    if init is None:
        return {}
    hints = type_hints(init)
    bindings: dict[str, Any] = {}
    for name in inspect.signature(inspect.unwrap(init)).parameters:
        annotation = hints.get(name)
        if annotation is None or is_param_annotation(annotation):
            continue
        key = _bare_class(annotation)
        if key is not None:
            bindings[name] = key
    return bindings


def _bare_class(annotation: Any) -> type | None:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _bare_class(annotation.__origin__)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _bare_class(members[0]) if len(members) == 1 else None
    if origin is not None:
        return origin if isinstance(origin, type) else None
    return annotation if isinstance(annotation, type) else None


def bind_values(container: kink.Container, values: Mapping[str, Any]) -> None:
    """Bind parameter values and static values by name."""
    for name, value in values.items():
        container[name] = value


def resolve(container: kink.Container, key: type) -> Any:
    """Build (or fetch) the instance bound to ``key``; kink's errors become readable ones.

    Raises:
        LookupError: a constructor argument has nothing bound to it.
    """
    try:
        return container[key]
    except ExecutionError as exc:
        raise LookupError(_describe_unbound(str(exc))) from None
    except ServiceError as exc:
        raise LookupError(f"nothing is bound to {getattr(key, '__qualname__', key)} ({exc})") from None


def _describe_unbound(kink_message: str) -> str:
    """Turn kink's "did you forget to bind `x` inside <function C.__init__>" into plain words."""
    names = re.findall(r"`(\w+)`", kink_message)
    owner = re.search(r"<function ([\w.]+)\.__init__", kink_message)
    who = owner.group(1) if owner else "a constructor"
    listed = ", ".join(names) or "an argument"
    return f"{who}() needs {listed}, but nothing provides a value for it."


@dataclass
class Wired:
    """The objects of one run, built from the project's classes and the parameter values."""

    config: Any
    source: Any
    service: Any


def wire(
    *,
    source_cls: type | None,
    service_cls: type,
    config: Any,
    injectables: Iterable[type],
    param_values: Mapping[str, Any],
    static_values: Mapping[str, Any],
    source: Any = None,
) -> Wired:
    """Reset the container, register the project's classes and values, and build the source and service.

    Args:
        source_cls: the Source class to build, or None when ``source`` is given.
        service_cls: the Service class to build.
        config: the configuration instance (bound to its class and, by aliasing, to its parents).
        injectables: other classes to register.
        param_values: parameter values, bound by name.
        static_values: the run's static values, bound by name.
        source: a ready Source instance, bound to ``Source`` (used by ``batchframe.testing``).

    Raises:
        LookupError: a constructor argument has nothing bound to it (the message names it).
        Exception: whatever the user's constructors raise, unchanged.
    """
    from batchframe.source import Source

    with _building:
        given: dict[type, Any] = {Source: source} if source is not None else {}
        container = _fill(config, [source_cls, service_cls, *injectables], {**static_values, **param_values}, given)
        if source_cls is not None:
            source = resolve(container, source_cls)
        service = resolve(container, service_cls)
    return Wired(config=config, source=source, service=service)


def build_service(
    *,
    service_cls: type,
    config: Any,
    injectables: Iterable[type],
    param_values: Mapping[str, Any],
    static_values: Mapping[str, Any],
) -> Any:
    """Like ``wire``, but build only the Service (what a worker process needs), never the Source.

    The Source class stays registered: a Service whose constructor asks for the Source gets one.

    Raises:
        LookupError: a constructor argument has nothing bound to it (the message names it).
        Exception: whatever the user's constructors raise, unchanged.
    """
    with _building:
        container = _fill(config, [service_cls, *injectables], {**static_values, **param_values})
        return resolve(container, service_cls)


def _fill(
    config: Any, classes: Iterable[type | None], values: Mapping[str, Any], given: Mapping[type, Any] | None = None
) -> kink.Container:
    """Reset the container; register the configuration, ready objects, classes and values (under ``_building``)."""
    container = reset_container()
    config_cls = type(config)
    container[config_cls] = config
    for key, instance in (given or {}).items():
        container[key] = instance
    unique = list(dict.fromkeys(c for c in classes if c is not None))
    for cls in unique:
        register(container, cls)
    bind_values(container, values)
    alias_to_parents(container, [config_cls, *unique])
    return container


def make_config(config_cls: type, values: Mapping[str, Any]) -> Any:
    """Instantiate a configuration, applying the parameter values that are its attributes."""
    from batchframe.project.params import params_of_class

    own = {spec.name for spec in params_of_class(config_cls)}
    fields = dataclasses.fields(config_cls) if dataclasses.is_dataclass(config_cls) else ()
    init_fields = {f.name for f in fields if f.init}
    config = config_cls(**{k: v for k, v in values.items() if k in own and k in init_fields})
    for name in own - init_fields:
        if name in values:
            setattr(config, name, values[name])
    return config
