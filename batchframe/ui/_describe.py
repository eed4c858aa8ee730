"""The child process behind ``batchframe ui``'s forms: ``python -m batchframe.ui._describe``.

It loads the user's project (which the web server never imports), describes its parameters as form
fields and, when given a submitted form, parses it with the project's real types. One JSON request
on stdin::

    {"path": str, "config": str | null, "form": {name: [values]} | null}

One JSON answer on stdout::

    {"ok": true, "form": {ProjectForm}, "assignments": ["NAME=VALUE", ...], "errors": {name: message},
     "environment": {"BATCHFRAME_PARAM_<NAME>": value}}
    {"ok": false, "message": str, "hint": str, "title": str, "user_traceback": str | null}

A ``Secret`` parameter's value comes in the request (stdin, never the command line) and goes back
in ``environment``, never in ``assignments``; every text of the answer has the submitted secrets
blanked out, in case the user's code put one in an error message.

Nothing else reaches stdout: the user's modules may print while they are imported, so file
descriptor 1 is pointed at stderr and the answer goes to a private copy of the real stdout. The
process exits 0 whatever happens in the project (the answer says what), and never prints a traceback.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import importlib
import inspect
import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from batchframe._text import format_exception
from batchframe.configuration import Configuration
from batchframe.errors import BatchframeError, ParamError
from batchframe.project.compat import fold_alias_assignments
from batchframe.project.configs import CONFIG_DIR, _is_abstract, _leaves, find_config_dir, list_configs
from batchframe.project.load import Project, load_project
from batchframe.project.params import ParamSpec, missing_params_error, resolve_values, split_assignments
from batchframe.run.prepare import build_config, collect_specs, param_text, settings_from_config
from batchframe.secret import Secret, redact, remember_secret
from batchframe.ui._forms import UNSET_SUFFIX, FieldSpec, ProjectForm, widget_for

logger = logging.getLogger(__name__)

_RUNTIME_NAMES = frozenset(f.name for f in dataclasses.fields(Configuration))
"""batchframe's own settings: the "runtime" group of the form (a project may override their defaults)."""


def main() -> None:
    """Answer one request from stdin on stdout, then exit 0 (even when the project is broken)."""
    answer_fd = _divert_stdout()
    try:
        answer = answer_request(_read_request())
    except BatchframeError as error:
        answer = _failure(error)
    except BaseException as exc:  # the user's code may raise anything, SystemExit included: report it
        answer = _failure(_unexpected(exc))
    with os.fdopen(answer_fd, "w", encoding="utf-8") as out:
        json.dump(_redacted(answer), out)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    # Not sys.exit: a non-daemon thread the user's code started at import would keep us alive.
    os._exit(0)


def _divert_stdout() -> int:
    """Point file descriptor 1 at stderr (prints, C extensions, child processes); return a copy of the real one."""
    sys.stdout.flush()
    answer_fd = os.dup(1)  # not inheritable: processes the user's code starts cannot write to it
    os.dup2(2, 1)
    return answer_fd


def _read_request() -> dict[str, Any]:
    request = json.loads(sys.stdin.buffer.read() or b"null")
    if not isinstance(request, dict) or not isinstance(request.get("path"), str):
        raise BatchframeError(
            "The request is not a JSON object with a 'path'.", hint="See batchframe/ui/_describe.py for the protocol."
        )
    return request


_NOT_REDACTED = frozenset({"environment", "assignments"})
"""The values the run is launched with: blanking one out would change what it gets."""


def _redacted(answer: Any) -> Any:
    """The answer with every remembered secret blanked out of the texts the page may show."""
    if isinstance(answer, str):
        return redact(answer)
    if isinstance(answer, list):
        return [_redacted(value) for value in answer]
    if isinstance(answer, dict):
        return {key: value if key in _NOT_REDACTED else _redacted(value) for key, value in answer.items()}
    return answer


def _failure(error: BatchframeError) -> dict[str, Any]:
    return {
        "ok": False,
        "message": error.message,
        "hint": error.hint or "",
        "title": error.title,
        "user_traceback": error.user_traceback,
    }


def _unexpected(exc: BaseException) -> BatchframeError:
    """An exception that is not a BatchframeError (the CLI would show a traceback): its type, text and frames."""
    return BatchframeError(
        f"Loading the project failed with {type(exc).__name__}: {exc}",
        hint="Run batchframe params on the project with -vv to see the full error.",
        user_traceback=format_exception(exc, headers=False),
    )


def answer_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """The answer to one request (see the module docstring).

    Raises:
        BatchframeError: the project cannot be loaded, as ``batchframe params`` reports it.
    """
    path: str = request["path"]
    project, configs = load_for_form(path, request.get("config") or None)
    specs = collect_specs(project)
    form = ProjectForm(path=path, config=project.config_name, configs=configs, fields=form_fields(specs))
    answer: dict[str, Any] = {
        "ok": True,
        "form": dataclasses.asdict(form),
        "assignments": [],
        "errors": {},
        "environment": {},
    }
    if request.get("form") is not None:
        assignments, environment, errors = check_form(project, specs, form.fields, request["form"])
        answer.update(assignments=assignments, errors=errors, environment=environment)
    return answer


# ------------------------------------------------------------------------------------------ configs


def load_for_form(path: str, config: str | None) -> tuple[Project, tuple[str, ...]]:
    """The project loaded with ``config``, and the concrete configs it offers.

    Without ``config``, a project with several config files makes the CLI ask for ``-c``; the form
    instead starts with the first concrete one (the page shows which, in its config select).

    Raises:
        BatchframeError: as ``load_project``.
    """
    first = config or _first_of_several_configs(path)
    project = load_project(path, first)
    offered = concrete_configs(project)
    if config is None and first is not None and offered and first not in offered:
        project = load_project(path, offered[0])  # the first file was a base config: load a concrete one
    return project, offered


def _first_of_several_configs(path: str) -> str | None:
    """The first config file when there are several (where the CLI would ask for ``-c``), else None."""
    target = Path(path).expanduser().resolve()  # a missing path: load_project says so
    configs = list_configs(find_config_dir(target if target.is_dir() else target.parent))
    return configs[0] if len(configs) > 1 else None


def concrete_configs(project: Project) -> tuple[str, ...]:
    """The project's config files that define one concrete Configuration, i.e. that a run may use."""
    return tuple(name for name in project.available_configs if _is_concrete_config(project, name))


def _is_concrete_config(project: Project, name: str) -> bool:
    module_name = f"{project.package}.{CONFIG_DIR}.{name}"
    try:
        module = importlib.import_module(module_name)
    except Exception:
        # Offered all the same: choosing it shows the CLI's error for it.
        logger.debug("config %s does not import", name, exc_info=True)
        return True
    classes = [
        value
        for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, Configuration) and value.__module__ == module_name
    ]
    leaves = _leaves(classes)
    return len(leaves) == 1 and not _declared_abstract(leaves[0])


def _declared_abstract(cls: type) -> bool:
    """Abstract as ``_configs`` sees it, or declared with ``metaclass=ABCMeta`` (0.0.1a13's base configs)."""
    introduces_abcmeta = isinstance(cls, abc.ABCMeta) and not any(isinstance(b, abc.ABCMeta) for b in cls.__bases__)
    return _is_abstract(cls) or introduces_abcmeta


# ------------------------------------------------------------------------------------------- fields


def form_fields(specs: Mapping[str, ParamSpec]) -> tuple[FieldSpec, ...]:
    """One field per parameter: the project's in declaration order, then batchframe's runtime settings."""
    fields = [field_of(spec) for spec in specs.values()]
    return tuple(sorted(fields, key=lambda field: field.group == "runtime"))  # a stable sort keeps the order


def field_of(spec: ParamSpec) -> FieldSpec:
    """The form field for one parameter."""
    widget, choices, optional = widget_for(spec.type, spec.default)
    return FieldSpec(
        name=spec.name,
        type_name=spec.type_name,
        description=spec.description,
        required=spec.required,
        widget=widget,
        choices=choices,
        optional=optional,
        # A secret's default is never shown: the form would send it back to every browser.
        default=None if spec.required or spec.secret else default_text(spec.default),
        group="runtime" if spec.name in _RUNTIME_NAMES else "project",
        owner=spec.owner.__qualname__,
    )


def default_text(value: Any) -> str | None:
    """A default as text the CLI parses back to it; a collection one item per line; None for None."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, set, frozenset)):
        return "\n".join(default_text(item) or "none" for item in value)
    if isinstance(value, dt.datetime):
        return value.isoformat()  # with a "T", as an <input type="datetime-local"> reads it
    return param_text(value)


# ------------------------------------------------------------------------------------------ the form


def check_form(
    project: Project, specs: Mapping[str, ParamSpec], fields: Iterable[FieldSpec], form: Mapping[str, list[str]]
) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """The ``-p`` assignments a submitted form makes, its secrets, and the CLI's message for each field that is wrong.

    Returns:
        ``NAME=VALUE`` texts (no secret among them), ``BATCHFRAME_PARAM_<NAME>`` -> value for each
        secret given, and field name -> message.

    Raises:
        BatchframeError: the configuration cannot be built with these values for a reason that is not
            one field's (the user's own code raised, as ``batchframe exec`` reports it).
    """
    assignments: list[str] = []
    secrets: list[str] = []
    environment: dict[str, str] = {}
    errors: dict[str, str] = {}
    for field in fields:
        spec = specs[field.name]
        try:
            texts = submitted_texts(field, spec, form)
            mine = [f"{field.name}={text}" for text in texts]
            # The CLI's own path: split the NAME=VALUE text, parse it, word any error.
            values = resolve_values(specs, split_assignments(mine))
        except ParamError as error:
            errors[field.name] = error.message
            continue
        value = values.get(field.name) if texts else None
        if isinstance(value, Secret):  # not "none" from the unset box: that one is no secret
            remember_secret(value)  # blanked out of every text of the answer
            secrets += mine
            environment[spec.env_variable] = texts[-1]
        elif spec.secret and not texts and spec.env_variable in os.environ:
            # Left empty, set where the server runs: the launched run inherits it; check with it too.
            remember_secret(Secret(os.environ[spec.env_variable]))
            secrets.append(f"{field.name}={os.environ[spec.env_variable]}")
        else:
            assignments += mine
    if not errors:
        errors = _settings_errors(project, specs, [*assignments, *secrets])
    return assignments, environment, errors


def _settings_errors(project: Project, specs: Mapping[str, ParamSpec], assignments: list[str]) -> dict[str, str]:
    """What ``batchframe exec`` checks after parsing: the configuration builds, its settings are valid."""
    values = resolve_values(specs, fold_alias_assignments(split_assignments(assignments)))
    try:
        settings_from_config(build_config(project, values))
    except ParamError as error:
        if error.param is not None and error.param in specs:
            return {error.param: error.message}
        raise
    return {}


def submitted_texts(field: FieldSpec, spec: ParamSpec, form: Mapping[str, list[str]]) -> list[str]:
    """The ``-p`` values (zero, one, or one per list item) a field's submitted values stand for.

    A secret left empty is not given; a required one may then come from the server's own
    ``BATCHFRAME_PARAM_<NAME>`` (this process inherits its environment, as the launched run does).

    Raises:
        ParamError: a required field left empty (the CLI's message for that parameter), or a list
            item the command line cannot carry.
    """
    if field.optional and field.name + UNSET_SUFFIX in form:
        # spec.default, not field.default: a secret's field never carries its default.
        return [] if not spec.required and spec.default is None else ["none"]
    values = [str(value) for value in form.get(field.name, [])]
    if field.widget == "bool":
        # A checkbox: the browser sends it only when it is ticked.
        texts = ["true" if values else "false"]
    elif field.widget == "list":
        texts = _list_items(field, values)
    else:
        texts = [value for value in values if value.strip()]
    if not texts and field.required and not (spec.secret and spec.env_variable in os.environ):
        raise missing_params_error([spec])
    return [] if "\n".join(texts) == field.default else texts


def _list_items(field: FieldSpec, values: list[str]) -> list[str]:
    """The items of a list textarea: one per non-empty line.

    Raises:
        ParamError: an item contains a comma: ``-p`` splits values at commas, so it would become two.
    """
    items = [line.strip() for value in values for line in value.splitlines() if line.strip()]
    for item in items:
        if "," in item:
            raise ParamError(
                f"Parameter {field.name!r} cannot take the item {item!r}: the command line splits values "
                "at commas, so an item cannot contain one.",
                hint="Give one item per line, without commas.",
                param=field.name,
            )
    return items


if __name__ == "__main__":
    main()
