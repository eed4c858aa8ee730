"""Asking for missing required parameters on a terminal, with questionary.

Each prompt fits its type: y/n for bool (with no default when it is required), ``select`` for Enum
and Literal, path completion for Path, comma-separated text for collections, validated text for the
rest (an int prompt rejects "abc" and asks again; a date prompt says what is wrong with 2026-13-45).
The description and default are part of the question.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from batchframe.project.params import ParamSpec, parse_value
from batchframe.project.parsing import shown_value


def ask_missing(missing: Sequence[ParamSpec]) -> Mapping[str, Any]:
    """Ask for each parameter in turn and return name -> parsed value.

    Raises:
        KeyboardInterrupt: the user cancelled a prompt (Ctrl-C).
    """
    return {spec.name: ask_one(spec) for spec in missing}


def ask_one(spec: ParamSpec) -> Any:
    """Ask for one parameter with the prompt that suits its type."""
    question = _question(spec)
    answer = question.unsafe_ask()  # raises KeyboardInterrupt on Ctrl-C instead of returning None
    if isinstance(answer, str):
        return parse_value(spec.type, answer)
    return answer


def _question(spec: ParamSpec) -> Any:
    import questionary

    message = _message(spec)
    bare = _strip_optional(spec.type)
    choices = _choices(bare)
    if bare is bool:
        if spec.required:
            return _yes_or_no(message)
        return questionary.confirm(message, default=bool(spec.default))
    if choices is not None:
        return questionary.select(
            message,
            choices=[questionary.Choice(title=label, value=value) for label, value in choices],
            use_arrow_keys=True,
        )
    validate = _validator(spec)
    if spec.secret:
        return questionary.password(message, validate=validate)
    if bare is Path:
        return questionary.path(message, validate=validate)
    return questionary.text(message, validate=validate)


def _yes_or_no(message: str) -> Any:
    """A y/n question without a default, for a required bool: Enter alone answers nothing.

    ``questionary.confirm`` always has a default, so Enter would silently answer No.
    """
    from prompt_toolkit import PromptSession
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
    from questionary.constants import DEFAULT_QUESTION_PREFIX, NO, YES
    from questionary.question import Question
    from questionary.styles import merge_styles_default

    state: dict[str, bool] = {}  # "answer" once y or n is pressed; "nudged" after a bare Enter

    def tokens() -> FormattedText:
        if "answer" in state:
            tail = ("class:answer", YES if state["answer"] else NO)
        else:
            tail = ("class:instruction", "(y/n: type y or n) " if state.get("nudged") else "(y/n) ")
        return FormattedText([("class:qmark", DEFAULT_QUESTION_PREFIX), ("class:question", f" {message} "), tail])

    bindings = KeyBindings()

    @bindings.add("c-c", eager=True)
    def _cancel(event: KeyPressEvent) -> None:
        event.app.exit(exception=KeyboardInterrupt, style="class:aborting")

    def answer(value: bool) -> Any:
        def handler(event: KeyPressEvent) -> None:
            state["answer"] = value
            event.app.exit(result=value)

        return handler

    for key, value in (("y", True), ("Y", True), ("n", False), ("N", False)):
        bindings.add(key)(answer(value))

    @bindings.add("enter", eager=True)
    def _no_default(event: KeyPressEvent) -> None:
        state["nudged"] = True

    @bindings.add("<any>")
    def _ignore(event: KeyPressEvent) -> None:
        """Any other key types nothing."""

    session: PromptSession[bool] = PromptSession(tokens, key_bindings=bindings, style=merge_styles_default([None]))
    return Question(session.app)


def _message(spec: ParamSpec) -> str:
    parts = [f"{spec.name} ({spec.type_name})"]
    if spec.description:
        parts.append(f"- {spec.description}")
    if not spec.required:
        parts.append(f"[default: {shown_value(spec.default)}]")  # a Secret shows its mask
    if typing.get_origin(_strip_optional(spec.type)) in (list, tuple, set, frozenset):
        parts.append("(comma-separated)")
    return " ".join(parts)


def _strip_optional(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _choices(annotation: Any) -> list[tuple[str, Any]] | None:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [(member.name, member) for member in annotation]
    if typing.get_origin(annotation) is Literal:
        return [(str(choice), choice) for choice in typing.get_args(annotation)]
    return None


def _validator(spec: ParamSpec) -> Any:
    def validate(text: str) -> bool | str:
        if not text.strip() and spec.required and typing.get_origin(spec.type) is None:
            return f"{spec.name} is required: enter a {spec.type_name}"
        try:
            parse_value(spec.type, text)
        except (ValueError, TypeError) as exc:
            return f"Not a valid {spec.type_name}: {exc}"
        return True

    return validate
