"""The values a config class sets itself, checked against their annotations (``-p`` values are parsed already)."""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar, Union

from batchframe._text import shortened, unprintable
from batchframe.configuration import Configuration
from batchframe.errors import ConfigError, ParamError
from batchframe.project.log_levels import LogLevels
from batchframe.project.params import ParamSpec
from batchframe.project.parsing import shown_value
from batchframe.secret import MASK

__all__ = ["check_config_values", "value_matches"]

_ALSO_ACCEPTED: dict[Any, tuple[type, ...]] = {LogLevels: (str, Mapping)}
"""Types whose value a config class may also give in another form, documented and converted later."""


def check_config_values(config: object, specs: Mapping[str, ParamSpec]) -> None:
    """Every BatchframeParam field of a configuration (its base's included) holds a value of its type.

    ``-p`` and ``BATCHFRAME_PARAM_<NAME>`` values are parsed into their type already; a config class
    is Python code, and a value it sets of another type (``max_retries = "2"``, ``journal = "false"``)
    would otherwise be taken as it is (``"false"`` is true) or fail later with a raw ``TypeError``.

    Args:
        config: the configuration, built.
        specs: the run's parameters by name (a 0.0.1a13 name folded into the current one's ``aliases``).

    Raises:
        ConfigError: naming the class, each field (as the class wrote it), its value and the type expected.
    """
    cls = type(config)
    own = _own_settings()
    wrong = [
        (spec, value)
        for spec in specs.values()
        if isinstance(config, spec.owner)
        and not value_matches(spec.type, value := getattr(config, spec.name, None))
        # A field of the user's own declared ``x: T = None`` means "not set" (PEP 484's implicit Optional).
        and not (value is None and spec.default is None and spec.name not in own)
    ]
    if not wrong:
        return
    lines = []
    for spec, value in wrong:
        owner, name = _set_by(cls, (*spec.aliases, spec.name), value)
        lines.append(
            f"  {owner.__qualname__}.{name} = {_shown(spec, value)} ({type(value).__qualname__}), "
            f"expected {spec.type_name}"
        )
    plural = "s" if len(wrong) > 1 else ""
    raise ConfigError(
        f"The configuration {cls.__qualname__} sets {len(wrong)} field{plural} to a value of the wrong type:\n"
        + "\n".join(lines),
        hint="Give each field a value of its annotated type in the class (e.g. max_retries = 2, journal = False, "
        "retry_delays_sec = [1.0, 2.0]); -p NAME=VALUE takes text and converts it.",
    )


def _own_settings() -> frozenset[str]:
    """The names of batchframe's own settings (``Configuration``'s fields): their types are batchframe's."""
    return frozenset(field.name for field in dataclasses.fields(Configuration))


def _set_by(cls: type, names: Sequence[str], value: Any) -> tuple[type, str]:
    """The class of ``cls``'s MRO that sets ``value`` under one of ``names`` (an old name first), and that name.

    ``(cls, names[-1])`` when no class does (a ``default_factory``, a value set in ``__post_init__``).
    """
    for klass in cls.__mro__:
        for name in names:
            if name in vars(klass) and vars(klass)[name] is value:
                return klass, name
    return cls, names[-1]


def _shown(spec: ParamSpec, value: Any) -> str:
    if spec.secret:
        return MASK
    try:
        text = shown_value(value)
    except Exception:
        return unprintable(value)
    return shortened(text, 80)


def value_matches(annotation: Any, value: Any) -> bool:
    """Whether ``value`` is of type ``annotation``, as far as it can be told at run time. Never raises.

    ``int`` is not met by a bool, ``float`` is met by an int (the numeric tower), collections are
    checked item by item, ``Literal`` by equality of value and type. A type batchframe cannot check
    (a ``TypeVar``, a ``Protocol``, a forward reference it could not resolve) is met by anything.
    """
    try:
        return _matches(annotation, value)
    except Exception:  # an isinstance() that raises, a user's __eq__: nothing to say about it
        return True


def _matches(annotation: Any, value: Any) -> bool:  # noqa: C901 - one branch per kind of type, flat
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is object or isinstance(annotation, (str, TypeVar)):
        return True
    if origin is Annotated:
        return _matches(args[0], value)
    if origin in (Union, types.UnionType):
        return any(_matches(member, value) for member in args)
    if origin is Literal:
        return any(value == choice and type(value) is type(choice) for choice in args)
    if annotation is None or annotation is type(None):
        return value is None
    if annotation in _ALSO_ACCEPTED and isinstance(value, _ALSO_ACCEPTED[annotation]):
        return True
    if annotation is float or annotation is complex:
        numbers = (int, float) if annotation is float else (int, float, complex)
        return isinstance(value, numbers) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hasattr(annotation, "__supertype__"):  # typing.NewType
        return _matches(annotation.__supertype__, value)
    if isinstance(origin, type):
        return isinstance(value, origin) and _members_match(origin, args, value)
    if isinstance(annotation, type) and not _is_protocol(annotation):
        return isinstance(value, annotation)
    return True


def _members_match(origin: type, args: tuple[Any, ...], value: Any) -> bool:
    """The members of a collection value against the arguments of its generic type (``list[float]``)."""
    if not args:
        return True
    if issubclass(origin, tuple):
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(args[0], member) for member in value)
        return len(value) == len(args) and all(_matches(a, member) for a, member in zip(args, value, strict=True))
    if issubclass(origin, collections.abc.Mapping):
        key_type, value_type = (*args, Any, Any)[:2]
        return all(_matches(key_type, k) and _matches(value_type, v) for k, v in value.items())
    if issubclass(origin, (collections.abc.Collection, collections.abc.Iterator)) and not issubclass(origin, str):
        if issubclass(origin, collections.abc.Iterator):
            return True  # reading it would use it up
        return all(_matches(args[0], member) for member in value)
    return True  # type[X], Callable[...], a user's generic class: its arguments say nothing checkable


def _is_protocol(cls: type) -> bool:
    return bool(getattr(cls, "_is_protocol", False))


def check_http_url(name: str, url: str | None, example: str) -> None:
    """Refuse a URL setting (``notify_url``, ``metrics_pushgateway``) that is not http(s) with a host.

    Raises:
        ParamError: another scheme (``ftp://``), no host, or not a URL at all.
    """
    if url is None:
        return
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ParamError(
            f"{name} must be an http:// or https:// URL with a host, got {url!r}.",
            hint=f"Set it with -p {name}={example} (or in your config).",
            param=name,
        )
