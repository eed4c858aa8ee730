"""BatchframeParam: discovery on the user's classes, and turning ``-p NAME=VALUE`` text into typed values."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, TypeVar

from batchframe.errors import ConfigError, ParamError
from batchframe.project.parsing import parse_value, type_name
from batchframe.secret import MASK, Secret, is_secret_type, secret_argument_problem

__all__ = [
    "ENV_PREFIX",
    "BatchframeParam",
    "ParamSpec",
    "class_default",
    "docstring_descriptions",
    "env_values",
    "env_variable",
    "is_param_annotation",
    "merge_specs",
    "missing_params",
    "missing_params_error",
    "params_of_class",
    "parse_value",
    "resolve_values",
    "split_assignments",
    "type_hints",
    "type_name",
    "unknown_param_error",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class _ParamMarker:
    """The metadata object that marks an annotation as a BatchframeParam."""

    def __repr__(self) -> str:
        return "BatchframeParam"


_MARKER = _ParamMarker()

BatchframeParam = Annotated[T, _MARKER]
"""Marks a constructor argument (or a Configuration field) as a parameter settable with ``-p NAME=VALUE``.

``count: BatchframeParam[int] = 10`` is an optional parameter with a default; without a default it is
required. A description can be attached with ``Annotated[int, BatchframeParam, "how many items"]``.
"""

_NOTHING: Any = dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One parameter: where it is declared, its type and its default.

    Attributes:
        name: the argument or field name, as given to ``-p``.
        type: the annotation with BatchframeParam stripped (e.g. ``int``, ``list[Path]``).
        default: the default value, or ``dataclasses.MISSING`` when the parameter is required.
        owner: the class that declares it.
        description: text from ``Annotated[..., "description"]``, or empty.
        aliases: other names ``-p`` accepts for it (batchframe 0.0.1a13's names).
    """

    name: str
    type: Any
    default: Any
    owner: type
    description: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        """True when the parameter has no default."""
        return self.default is _NOTHING

    @property
    def type_name(self) -> str:
        """A short human-readable name for the type, e.g. ``list[int]`` or ``Color``."""
        return type_name(self.type)

    @property
    def secret(self) -> bool:
        """True for a ``Secret`` parameter: its value is never shown or stored."""
        return is_secret_type(self.type)

    @property
    def env_variable(self) -> str:
        """The environment variable that sets it: ``BATCHFRAME_PARAM_<NAME>``."""
        return env_variable(self.name)


def is_param_annotation(annotation: Any) -> bool:
    """Whether an annotation (already evaluated, with extras) is a BatchframeParam."""
    if typing.get_origin(annotation) is not Annotated:
        return False
    return any(meta is _MARKER or meta is BatchframeParam for meta in annotation.__metadata__)


def _split_annotation(annotation: Any) -> tuple[Any, str]:
    """Return the bare type and the description of a BatchframeParam annotation."""
    description = " ".join(m for m in annotation.__metadata__ if isinstance(m, str))
    return annotation.__origin__, description


def type_hints(obj: Any) -> dict[str, Any]:
    """``get_type_hints`` with extras, tolerant of names that cannot be resolved."""
    target = inspect.unwrap(obj) if callable(obj) and not isinstance(obj, type) else obj
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # an unresolvable forward reference: keep what evaluates
        logger.debug("could not resolve all annotations of %r", obj, exc_info=True)
        return {k: v for k, v in getattr(target, "__annotations__", {}).items() if not isinstance(v, str)}


def params_of_class(cls: type) -> list[ParamSpec]:
    """The BatchframeParams a class declares: ``__init__`` arguments, or dataclass fields."""
    if _is_configuration(cls):
        return _config_params(cls)
    init = cls.__dict__.get("__init__")
    if init is None:
        return []
    hints = type_hints(init)
    documented = docstring_descriptions(cls)
    specs = []
    for name, parameter in inspect.signature(inspect.unwrap(init)).parameters.items():
        annotation = hints.get(name)
        if annotation is not None and is_param_annotation(annotation):
            bare, description = _split_annotation(annotation)
            default = _NOTHING if parameter.default is inspect.Parameter.empty else parameter.default
            specs.append(ParamSpec(name, bare, default, cls, description or documented.get(name, "")))
    return specs


def docstring_descriptions(cls: type) -> dict[str, str]:
    """Argument descriptions from the docstrings of ``cls`` and its ``__init__`` (Google or NumPy style).

    Reads "Args:"/"Parameters" and "Attributes:" sections; ``__init__``'s docstring wins over the
    class's. Descriptions are folded to one line.
    """
    import docstring_parser

    descriptions: dict[str, str] = {}
    init = cls.__dict__.get("__init__")
    for doc in (cls.__dict__.get("__doc__"), getattr(init, "__doc__", None)):
        if not doc:
            continue
        try:
            parsed = docstring_parser.parse(doc)
        except docstring_parser.ParseError:
            logger.debug("could not parse the docstring of %r", cls, exc_info=True)
            continue
        for param in parsed.params:
            if param.description:
                descriptions[param.arg_name.split()[0]] = " ".join(param.description.split())
    return descriptions


def _is_configuration(cls: type) -> bool:
    from batchframe.configuration import Configuration

    return issubclass(cls, Configuration)


def _config_params(cls: type) -> list[ParamSpec]:
    """Attributes annotated BatchframeParam anywhere in the MRO; defaults from the most derived class.

    Configurations are dataclasses, but a subclass may override a default with a plain class
    attribute (``concurrency = 2``) or add annotated attributes without ``@dataclass``: both count.
    """
    names = dict.fromkeys(name for klass in reversed(cls.__mro__) for name in getattr(klass, "__annotations__", {}))
    documented = {k: v for klass in reversed(cls.__mro__) for k, v in docstring_descriptions(klass).items()}
    hints = {klass: type_hints(klass) for klass in cls.__mro__ if vars(klass).get("__annotations__")}
    specs = []
    for name in names:
        annotation, owner = _param_annotation_in_mro(cls, name, hints)
        if annotation is None or owner is None:
            continue
        bare, description = _split_annotation(annotation)
        default = class_default(cls, name)
        specs.append(ParamSpec(name, bare, default, owner, description or documented.get(name, "")))
    return specs


def _param_annotation_in_mro(cls: type, name: str, hints: dict[type, dict[str, Any]]) -> tuple[Any, type | None]:
    """The BatchframeParam annotation of ``name`` in the most derived class that declares one (``hints``: per class)."""
    annotation: Any = None
    owner: type | None = None
    for klass in reversed(cls.__mro__):
        hint = hints[klass].get(name) if name in vars(klass).get("__annotations__", {}) else None
        if hint is not None and is_param_annotation(hint):
            annotation, owner = hint, klass
    return annotation, owner


def class_default(cls: type, name: str) -> Any:
    """The default of attribute ``name`` as seen on ``cls``: the most derived class that sets it wins.

    Each class of the MRO, most derived first, may set the default three ways: a plain class attribute
    (``concurrency = 2``; a dataclass field ``= value`` leaves one too), a dataclass field with
    ``field(default_factory=...)`` (the dataclass removes that class attribute, so a parent's must not
    show through), or a ``field(...)`` assigned in a class that is not a dataclass. A factory is
    called here, once per call.

    Returns:
        The default, or ``dataclasses.MISSING`` when no class gives one.

    Raises:
        ConfigError: a ``default_factory`` raised.
    """
    for klass in cls.__mro__:
        own = vars(klass)
        if name in own:
            value = own[name]
            return _field_default(klass, name, value) if isinstance(value, dataclasses.Field) else value
        declared = own.get("__dataclass_fields__", {}).get(name)
        if declared is not None and declared.default_factory is not dataclasses.MISSING:
            return _field_default(klass, name, declared)
    return _NOTHING


def _field_default(owner: type, name: str, field: dataclasses.Field[Any]) -> Any:
    """The default a ``field(...)`` gives: its ``default``, or what its ``default_factory`` returns.

    Raises:
        ConfigError: the factory raised.
    """
    if field.default_factory is dataclasses.MISSING:
        return field.default
    try:
        return field.default_factory()
    except Exception as exc:
        raise ConfigError(
            f"The default_factory of {owner.__qualname__}.{name} raised {type(exc).__name__}: {_safe_str(exc)}",
            hint=f"Fix that factory, or give {name} a plain default.",
        ) from exc


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "(its message could not be shown)"


# ------------------------------------------------------------------------------------- the CLI's -p


def split_assignments(assignments: Iterable[str]) -> dict[str, list[str]]:
    """Split ``NAME=VALUE`` strings into a name -> values mapping (a name may repeat).

    Raises:
        ParamError: an assignment has no ``=`` or an empty name.
    """
    result: dict[str, list[str]] = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ParamError(
                f"-p {assignment!r} is not of the form NAME=VALUE.",
                hint=f"Write it as -p {name or 'NAME'}=VALUE (one -p per parameter; quote values with spaces).",
                param=name or None,
            )
        result.setdefault(name, []).append(value)
    return result


def merge_specs(specs: Iterable[ParamSpec]) -> dict[str, ParamSpec]:
    """Index parameters by name; a name declared by two unrelated classes is an error.

    A subclass re-declaring its parent's parameter is fine: the subclass's declaration wins.

    Raises:
        ParamError: two unrelated classes declare the same parameter name.
    """
    merged: dict[str, ParamSpec] = {}
    for spec in specs:
        _check_secret_argument(spec)
        seen = merged.get(spec.name)
        if seen is None or issubclass(spec.owner, seen.owner):
            merged[spec.name] = spec
        elif not issubclass(seen.owner, spec.owner):
            raise ParamError(
                f"Parameter {spec.name!r} is declared by both {_where(seen.owner)} and {_where(spec.owner)}; "
                "a -p name must mean one thing.",
                hint="Rename one of them, or declare it once on your Configuration and inject the config.",
                param=spec.name,
            )
    return merged


def _where(cls: type) -> str:
    return f"{cls.__qualname__} ({cls.__module__})"


def _check_secret_argument(spec: ParamSpec) -> None:
    problem = secret_argument_problem(spec.type)
    if problem is not None:
        raise ParamError(
            f"Parameter {spec.name!r} of {_where(spec.owner)} is declared {problem}; a Secret holds text only.",
            hint=f"Declare it BatchframeParam[Secret] (or Secret[str]) and convert the text where you use it, "
            f"e.g. int(self.{spec.name}.get_secret_value()).",
            param=spec.name,
        )


def resolve_values(specs: Mapping[str, ParamSpec], given: Mapping[str, list[str]]) -> dict[str, Any]:
    """Parse the given values against their specs and fill in defaults.

    Returns:
        name -> value for every parameter that has a value (given or default).

    Raises:
        ParamError: an unknown name (with a did-you-mean hint) or a value that does not parse.
    """
    values: dict[str, Any] = {}
    for name, raws in given.items():
        spec = specs.get(name)
        if spec is None:
            raise unknown_param_error(name, specs)
        raw: str | list[str] = raws[0] if len(raws) == 1 else raws
        try:
            values[name] = parse_value(spec.type, raw)
        except (ValueError, TypeError) as exc:
            shown = MASK if spec.secret else ", ".join(map(repr, raws))
            raise ParamError(
                f"Parameter {name!r} expects {spec.type_name}, but got {shown}: {exc}.",
                hint=f"Pass a valid value, e.g. -p {name}=... (see the type above).",
                param=name,
            ) from None
    for name, spec in specs.items():
        if name not in values and not spec.required:
            values[name] = _secret_default(spec)
    return values


def _secret_default(spec: ParamSpec) -> Any:
    """A Secret parameter's plain-text default (``token: BatchframeParam[Secret] = ""``) becomes a Secret too."""
    if spec.secret and isinstance(spec.default, str):
        return Secret(spec.default)
    return spec.default


# ----------------------------------------------------------------------------- BATCHFRAME_PARAM_<NAME>

ENV_PREFIX = "BATCHFRAME_PARAM_"


def env_variable(name: str) -> str:
    """The environment variable that sets parameter ``name``."""
    return ENV_PREFIX + name.upper()


def env_values(
    specs: Mapping[str, ParamSpec], environ: Mapping[str, str], *, skip: Iterable[str] = ()
) -> tuple[dict[str, Any], dict[str, str]]:
    """The parameters set by ``BATCHFRAME_PARAM_<NAME>`` variables (parsed like ``-p``), except those in ``skip``.

    A 0.0.1a13 name works too (``BATCHFRAME_PARAM_EXECUTOR_CONSUMERS``). Variables that name no
    parameter of this project are left alone (the environment is shared by every project); a
    warning names them.

    Returns:
        name -> value, and name -> the variable it came from.

    Raises:
        ParamError: a variable's value does not parse (the message names the variable).
    """
    names = {env_variable(alias): name for name, spec in specs.items() for alias in (name, *spec.aliases)}
    skipped = set(skip)
    values: dict[str, Any] = {}
    variables: dict[str, str] = {}
    for variable in sorted(v for v in environ if v.upper().startswith(ENV_PREFIX)):
        name = names.get(variable.upper())
        if name is None:
            _warn_unknown_variable(variable, specs)
            continue
        if name in skipped:
            continue
        values[name] = _parse_env(specs[name], variable, environ[variable])
        variables[name] = variable
    return values, variables


def _parse_env(spec: ParamSpec, variable: str, raw: str) -> Any:
    try:
        return parse_value(spec.type, raw)
    except (ValueError, TypeError) as exc:
        shown = MASK if spec.secret else repr(raw)
        raise ParamError(
            f"The environment variable {variable}={shown} is not a valid {spec.type_name} "
            f"for parameter {spec.name!r}: {exc}.",
            hint=f"Fix or unset {variable} (it is read like -p {spec.name}=VALUE; -p wins over it).",
            param=spec.name,
        ) from None


def _warn_unknown_variable(variable: str, specs: Mapping[str, ParamSpec]) -> None:
    close = difflib.get_close_matches(variable.upper(), [env_variable(name) for name in specs], n=1, cutoff=0.8)
    logger.warning(
        "%s names no parameter of this project; it is ignored.%s",
        variable,
        f" Did you mean {close[0]}?" if close else "",
    )


def unknown_param_error(name: str, specs: Mapping[str, ParamSpec]) -> ParamError:
    """An error for a parameter name the project does not declare, with a did-you-mean hint."""
    close = difflib.get_close_matches(name, list(specs), n=1, cutoff=0.6)
    hint = f"Did you mean {close[0]!r}?" if close else ""
    known = ", ".join(sorted(specs)) or "(none)"
    return ParamError(
        f"Unknown parameter {name!r}. {hint}".strip(),
        hint=f"This project's parameters are: {known}.",
        param=name,
    )


def missing_params(specs: Mapping[str, ParamSpec], values: Mapping[str, Any]) -> list[ParamSpec]:
    """The required parameters that have no value yet, in declaration order."""
    return [spec for name, spec in specs.items() if spec.required and name not in values]


def missing_params_error(missing: Sequence[ParamSpec], *, project: str = "PATH") -> ParamError:
    """One error that lists every missing parameter with its type and description."""
    lines = [
        f"  - {spec.name} ({spec.type_name}, {spec.owner.__qualname__})"
        + (f": {spec.description}" if spec.description else "")
        for spec in missing
    ]
    example = " ".join(f"-p {spec.name}=..." for spec in missing)
    return ParamError(
        "Missing required parameter" + ("s" if len(missing) > 1 else "") + ":\n" + "\n".join(lines),
        hint=f"Give them on the command line: {example}   (list all with: batchframe params {project})",
        param=missing[0].name if len(missing) == 1 else None,
    )
