"""Turning command-line text into typed values: the types a BatchframeParam may have."""

from __future__ import annotations

import datetime as dt
import enum
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any, Literal, Union

from batchframe.secret import Secret

_NONE_WORDS = frozenset({"none", "null"})
_TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "off"})


def type_name(annotation: Any) -> str:
    """A short name for a type, for messages and tables."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin is Secret and typing.get_args(annotation) == (str,):
        return "Secret"
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join("..." if a is Ellipsis else type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def shown_value(value: Any) -> str:
    """A value for tables and prompts: an Enum member by the name ``-p`` takes, anything else by its repr.

    A Secret's repr is its mask.
    """
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (list, tuple, set, frozenset)) and any(isinstance(v, enum.Enum) for v in value):
        return ", ".join(shown_value(v) for v in value)
    return repr(value)


def parse_value(annotation: Any, raw: str | Sequence[str]) -> Any:
    """Turn command-line text into a value of ``annotation``.

    ``raw`` is a list when the parameter was given more than once (only valid for collections).

    Raises:
        ValueError: the text does not parse; the message says what was expected.
    """
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType) and not isinstance(raw, str):
        members = [m for m in typing.get_args(annotation) if m is not type(None)]
        if len(members) == 1:
            return parse_value(members[0], raw)
    if origin in (list, tuple, set, frozenset, Sequence, Iterable):
        return _parse_collection(annotation, raw)
    if not isinstance(raw, str):
        raise ValueError("given more than once, but it takes a single value")
    if annotation is Secret or origin is Secret:
        return Secret(raw)
    return _parse_scalar(annotation, raw)


def value_choices(annotation: Any) -> list[str] | None:
    """The texts a parameter of ``annotation`` accepts when they are few (Enum, Literal, bool), else None.

    For shell completion: an optional type (``Mode | None``) also accepts ``none``.
    """
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [m for m in typing.get_args(annotation) if m is not type(None)]
        choices = value_choices(members[0]) if len(members) == 1 else None
        return [*choices, "none"] if choices is not None else None
    if origin is Literal:
        return [str(choice) for choice in typing.get_args(annotation)]
    if annotation is bool:
        return ["true", "false"]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [member.name for member in annotation]
    return None


def _parse_collection(annotation: Any, raw: str | Sequence[str]) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    parts = [raw] if isinstance(raw, str) else list(raw)
    pieces = [piece.strip() for part in parts for piece in part.split(",") if piece.strip()]
    if origin is tuple and args and (len(args) != 2 or args[1] is not Ellipsis):
        if len(pieces) != len(args):
            raise ValueError(f"expected {len(args)} comma-separated values, got {len(pieces)}")
        return tuple(_parse_scalar(a, p) for a, p in zip(args, pieces, strict=True))
    item_type = args[0] if args else str
    values = [_parse_scalar(item_type, p) for p in pieces]
    if origin in (set, frozenset):
        return origin(values)
    return tuple(values) if origin is tuple else values


def _parse_scalar(annotation: Any, raw: str) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is Any or annotation is str:
        return raw
    if origin in (Union, types.UnionType):
        return _parse_union(typing.get_args(annotation), raw)
    if origin is Literal:
        return _parse_literal(typing.get_args(annotation), raw)
    if annotation is bool:
        return _parse_bool(raw)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _parse_enum(annotation, raw)
    if annotation in _EXAMPLES:
        return _parse_builtin(annotation, raw)
    if annotation is type(None):
        if raw.lower() in _NONE_WORDS:
            return None
        raise ValueError("expected none")
    if isinstance(annotation, type):
        # int, float, Path, Decimal and any class whose constructor takes one string
        return annotation(raw)
    raise ValueError(f"batchframe cannot parse values of type {type_name(annotation)}")


_EXAMPLES: dict[Any, str] = {
    int: "a whole number, e.g. 42",
    float: "a number, e.g. 2.5",
    dt.datetime: "an ISO date and time, e.g. 2026-11-25T10:30:00",
    dt.date: "an ISO date, e.g. 2026-11-25",
}


def _parse_builtin(annotation: Any, raw: str) -> Any:
    try:
        return annotation.fromisoformat(raw) if annotation in (dt.datetime, dt.date) else annotation(raw)
    except ValueError as exc:
        if annotation in (dt.datetime, dt.date) and not str(exc).startswith("Invalid isoformat"):
            # The format is right but the date is not (2026-13-45, 2026-02-30): datetime says which part is wrong.
            raise ValueError(str(exc)) from None
        raise ValueError(f"expected {_EXAMPLES[annotation]}") from None


def _parse_union(members: tuple[Any, ...], raw: str) -> Any:
    if type(None) in members and raw.lower() in _NONE_WORDS | {""}:
        return None
    errors = []
    for member in members:
        if member is type(None):
            continue
        try:
            return parse_value(member, raw)
        except (ValueError, TypeError) as exc:
            errors.append(str(exc))
    raise ValueError("; ".join(errors) or "no type accepts it")


def _parse_literal(choices: tuple[Any, ...], raw: str) -> Any:
    for choice in choices:
        if str(choice) == raw or (isinstance(choice, str) and choice.lower() == raw.lower()):
            return choice
    raise ValueError("expected one of " + ", ".join(str(c) for c in choices))


def _parse_bool(raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError("expected true or false (also yes/no, on/off, 1/0)")


def _parse_enum(enum_cls: type[enum.Enum], raw: str) -> enum.Enum:
    for member in enum_cls:
        if raw in (member.name, str(member.value)) or raw.lower() == member.name.lower():
            return member
    raise ValueError("expected one of " + ", ".join(m.name for m in enum_cls))
