"""The "Start a run" form of ``batchframe ui``: a project's parameters as fields, a submitted form as ``-p`` text.

The web server never imports the user's project (its code may block, crash or print): ``describe``
and ``validate`` ask a child process, ``batchframe.ui._describe``, which loads the project the way
``batchframe params`` does, parses the values with the project's real types and answers in JSON. The
child is killed when it takes longer than ``timeout_s``. The form travels on the child's stdin, never
on its command line: a ``Secret`` parameter's value would be visible there to every user of the machine.

Everything here is framework-free: the web app turns a ``ProjectForm`` into HTML and a submitted
form into ``batchframe exec PATH -c CONFIG -p NAME=VALUE ...``, plus ``BATCHFRAME_PARAM_<NAME>``
environment variables for the secrets.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from batchframe.errors import BatchframeError
from batchframe.secret import Secret

__all__ = [
    "UNSET_SUFFIX",
    "Checked",
    "FieldSpec",
    "FormError",
    "ProjectForm",
    "Widget",
    "describe",
    "validate",
    "widget_for",
]

Widget = Literal["text", "int", "float", "bool", "date", "datetime", "select", "path", "list", "secret"]
Group = Literal["project", "runtime"]

UNSET_SUFFIX = "__unset"
"""The "unset" checkbox of an optional field ``NAME`` is named ``NAME + UNSET_SUFFIX``."""

# The child: `-c` rather than `-m`, so that it can drop the current directory from sys.path before
# importing anything else. `python -m` puts the server's working directory first on sys.path, where a
# user's `json.py` or `typing.py` would shadow the standard library; the `batchframe` console script
# never does (the project's own folder is appended last by batchframe.project.load). The folder this
# batchframe was imported from (argv[1]) is appended instead, so a batchframe that is not installed
# (run from a checkout) is found all the same.
_CHILD_CODE = (
    "import sys\n"
    "if sys.path and sys.path[0] in ('', '.'):\n"
    "    del sys.path[0]\n"
    "if sys.argv[1] not in sys.path:\n"
    "    sys.path.append(sys.argv[1])\n"
    "from batchframe.ui._describe import main\n"
    "main()\n"
)
_BATCHFRAME_ROOT = str(Path(__file__).resolve().parent.parent.parent)
_STDERR_TAIL_BYTES = 2000


@dataclass(frozen=True)
class FieldSpec:
    """One parameter of the project, as a form field.

    Attributes:
        name: the ``-p`` name.
        type_name: the type as ``batchframe params`` shows it.
        description: the parameter's description, or empty.
        required: the parameter has no default.
        widget: how to ask for it (see ``widget_for``).
        choices: for a "select", the texts the CLI accepts (Enum member names, Literal values,
            "true"/"false" for a bool without a bool default).
        optional: the type accepts None: the form offers an "unset" checkbox named ``f"{name}__unset"``.
        default: the default as text the CLI accepts (a list: one value per line); None when the
            parameter is required or its default is None, and always for a secret (never shown).
        group: "runtime" for batchframe's own Configuration fields, "project" for the project's.
        owner: the qualified name of the class that declares it.
    """

    name: str
    type_name: str
    description: str
    required: bool
    widget: Widget
    choices: tuple[str, ...] = ()
    optional: bool = False
    default: str | None = None
    group: Group = "project"
    owner: str = ""


@dataclass(frozen=True)
class ProjectForm:
    """The form for one project and config.

    Attributes:
        path: the project path as given.
        config: the config in use: the one asked for, the project's only one, or (when the project has
            several and none was asked for) the first concrete one; None when no config file is loaded.
        configs: the concrete configs the project offers (empty: no config to choose).
        fields: the project's fields (declaration order), then the runtime fields.
    """

    path: str
    config: str | None
    configs: tuple[str, ...]
    fields: tuple[FieldSpec, ...]


class FormError(BatchframeError):
    """The project could not be described or its form checked: the CLI's own message and hint.

    ``title`` is the title of the CLI's error panel for the same failure ("Project error",
    "Config error", ...); ``user_traceback`` holds the user's frames when their code raised.
    """

    title = "Project error"

    def __init__(
        self, message: str, *, hint: str | None = None, user_traceback: str | None = None, title: str | None = None
    ) -> None:
        super().__init__(message, hint=hint, user_traceback=user_traceback)
        if title:
            self.title = title


# ------------------------------------------------------------------------------------------ widgets

_COLLECTIONS: tuple[Any, ...] = (list, tuple, set, frozenset, Sequence, Iterable)
"""The generic origins ``_parsing.parse_value`` reads as comma-separated collections."""

_SCALAR_WIDGETS: tuple[tuple[type, Widget], ...] = (
    (enum.Enum, "select"),  # before int: an IntEnum is an int
    (bool, "bool"),  # before int: a bool is an int
    (int, "int"),
    (float, "float"),
    (dt.datetime, "datetime"),  # before date: a datetime is a date
    (dt.date, "date"),
    (pathlib.PurePath, "path"),
    (str, "text"),
)
"""A class (or its subclasses) -> its widget, first match wins; any other class is "text"."""


def widget_for(annotation: Any, default: Any) -> tuple[Widget, tuple[str, ...], bool]:
    """The widget, choices and optional flag for a parameter of type ``annotation``: the one mapping.

    ====================================== =====================================================
    type                                   widget
    ====================================== =====================================================
    ``str``                                text
    ``int``                                int
    ``float``                              float
    ``bool`` with a bool default           bool (a checkbox)
    ``bool`` required (or default None)    select, choices ("true", "false"), no preselection
    ``datetime.date``                      date
    ``datetime.datetime``                  datetime
    an ``Enum``                            select, choices: the member names
    ``Literal[...]``                       select, choices: the values as text
    ``pathlib.Path``                       path
    ``list/tuple/set/frozenset[...]``      list (one value per line)
    ``Secret`` (``Secret[str]``)           secret (a password input; left empty: not given)
    ``X | None``                           X's widget, optional=True (``X | Y | None``: text)
    anything else                          text
    ====================================== =====================================================

    Args:
        annotation: the parameter's type (``ParamSpec.type``).
        default: its default (``dataclasses.MISSING`` when required).
    """
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(annotation) if m is not type(None)]
        optional = len(members) < len(typing.get_args(annotation))
        if len(members) != 1:
            return "text", (), optional
        inner, choices, _ = widget_for(members[0], default)
        return inner, choices, optional
    if origin is Literal:
        return "select", tuple(str(value) for value in typing.get_args(annotation)), False
    if annotation is Secret or origin is Secret:
        return "secret", (), False
    if origin in _COLLECTIONS:
        return "list", (), False
    widget = _class_widget(annotation)
    if widget == "select":
        return "select", tuple(member.name for member in annotation), False
    if widget == "bool" and not isinstance(default, bool):
        # A checkbox always submits a value (absent = false): without a bool default, "not answered"
        # must stay possible, so ask with a select that starts empty.
        return "select", ("true", "false"), False
    return widget or "text", (), False


def _class_widget(annotation: Any) -> Widget | None:
    """The widget of the first class of ``_SCALAR_WIDGETS`` that ``annotation`` is (a subclass of)."""
    if not isinstance(annotation, type) or typing.get_origin(annotation) is not None:
        return None  # dict[str, int] is a type on Python 3.10, but issubclass() refuses it
    return next((widget for cls, widget in _SCALAR_WIDGETS if issubclass(annotation, cls)), None)


# ------------------------------------------------------------------------------------------ the API


def describe(path: Path | str, config: str | None, *, timeout_s: float = 60.0) -> ProjectForm:
    """The form for the project at ``path`` with ``config`` (loaded in a child process).

    ``path`` is read as ``batchframe params PATH`` reads it: relative to the current directory.
    ``config`` "" counts as None.

    Raises:
        FormError: the project cannot be loaded (the CLI's message and hint), or the child took
            longer than ``timeout_s`` or died.
    """
    answer = _ask(path, config, None, timeout_s=timeout_s)
    return _form_from_json(answer["form"])


class Checked(NamedTuple):
    """A submitted form, checked: what to launch ``batchframe exec`` with, or what is wrong.

    Attributes:
        assignments: ``NAME=VALUE`` strings for ``batchframe exec -p`` (only the values that differ
            from the defaults; a list gives one per item). Never a secret.
        errors: field name -> the CLI's message for that value (empty: the form is good).
        environment: ``BATCHFRAME_PARAM_<NAME>`` -> value for each secret given: the launched process
            gets them in its environment, so they never reach a command line.
    """

    assignments: list[str]
    errors: dict[str, str]
    environment: dict[str, str]


def validate(
    path: Path | str, config: str | None, form: Mapping[str, Sequence[str]], *, timeout_s: float = 60.0
) -> Checked:
    """Check a submitted form against the project's real types; return its ``-p`` assignments and errors.

    Args:
        path: the project, as for ``describe``.
        config: the config in use, as for ``describe`` (run ``batchframe exec`` with ``-c`` and the
            ``ProjectForm.config`` that ``describe`` returned).
        form: name -> submitted values; keys that name no parameter are ignored.
        timeout_s: how long the child may take.

    Returns:
        The ``-p`` assignments, the errors by field, and the secrets as environment variables
        (see ``Checked``). A secret field left empty is not given (its default, or the environment
        of the launched process, applies).

    Raises:
        FormError: as for ``describe``.
    """
    answer = _ask(path, config, _as_lists(form), timeout_s=timeout_s)
    return Checked(list(answer["assignments"]), dict(answer["errors"]), dict(answer.get("environment") or {}))


def _as_lists(form: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The form as JSON-ready lists of text; a bare string is one value, not a sequence of characters."""
    return {name: [values] if isinstance(values, str) else [str(v) for v in values] for name, values in form.items()}


def _form_from_json(data: dict[str, Any]) -> ProjectForm:
    fields = tuple(FieldSpec(**{**field, "choices": tuple(field["choices"])}) for field in data["fields"])
    return ProjectForm(path=data["path"], config=data["config"], configs=tuple(data["configs"]), fields=fields)


# ----------------------------------------------------------------------------------------- the child


def _ask(
    path: Path | str, config: str | None, form: dict[str, list[str]] | None, *, timeout_s: float
) -> dict[str, Any]:
    """Run the child on one request; return its answer, or raise its error as a FormError."""
    request = {"path": str(path), "config": config or None, "form": form}
    output, stderr_tail = _run_child(json.dumps(request).encode(), path=str(path), timeout_s=timeout_s)
    try:
        answer = json.loads(output)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise _child_died(str(path), stderr_tail)
    if not answer.get("ok"):
        raise FormError(
            answer.get("message") or f"The project {str(path)!r} could not be loaded.",
            hint=answer.get("hint"),
            user_traceback=answer.get("user_traceback"),
            title=answer.get("title"),
        )
    return answer


def _run_child(request: bytes, *, path: str, timeout_s: float) -> tuple[bytes, str]:
    """The child's stdout, and the end of its stderr (for when it died without answering).

    stderr goes to a file rather than a pipe: a process the user's code started and left running
    inherits it, and must not keep us waiting for the end of a pipe.
    """
    with tempfile.TemporaryFile() as log:
        with subprocess.Popen(
            [sys.executable, "-c", _CHILD_CODE, _BATCHFRAME_ROOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            # Its own process group, so a timeout kills whatever the user's code started too.
            start_new_session=hasattr(os, "killpg"),
        ) as process:
            try:
                output, _ = process.communicate(request, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill(process)
                raise _timed_out(path, timeout_s) from None
        log.seek(0)
        tail = log.read()[-_STDERR_TAIL_BYTES:].decode("utf-8", errors="replace")
    return output, tail


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Kill the child and its process group, and reap it."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(process.pid, signal.SIGKILL)
        else:  # Windows: no process groups to kill
            process.kill()
    except ProcessLookupError:
        pass  # it ended meanwhile
    process.wait()


def _timed_out(path: str, timeout_s: float) -> FormError:
    return FormError(
        f"The project {path!r} took longer than {timeout_s:g} s to load, so batchframe stopped it.",
        hint=(
            "Importing the project's modules should be quick: move slow work (network calls, sleeps, "
            f"input()) from module level into the Source or Service. Check with: batchframe params {path}"
        ),
    )


def _child_died(path: str, stderr_tail: str) -> FormError:
    last_lines = "\n".join(stderr_tail.strip().splitlines()[-10:])
    return FormError(
        f"Loading the project {path!r} stopped the process that loads it before it could answer."
        + (f"\n{last_lines}" if last_lines else ""),
        hint=f"Run batchframe params {path} to see what happens.",
    )
