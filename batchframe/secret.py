"""Secret: a parameter value that is never shown, logged, stored or put on a command line.

``api_token: BatchframeParam[Secret]`` is parsed, prompted for (hidden) and passed to the user's
constructor as a ``Secret``; ``str()``, ``repr()`` and f-strings show ``'**********'`` and
``get_secret_value()`` returns the text. The run keeps no copy of the value: the journal records
where it came from and a salted hash, so ``resume`` can say that it changed. ``redact()`` blanks the
values of the run's secrets out of any text batchframe writes (log lines, failure records), in case
the user's own code puts one in an exception message.
"""

from __future__ import annotations

import json
import os
import re
import threading
import types
import typing
from collections.abc import Mapping
from typing import Any, Generic, Union

from typing_extensions import TypeVar

__all__ = [
    "MASK",
    "Secret",
    "fingerprint_secret",
    "has_secrets",
    "is_secret_type",
    "redact",
    "remember_secret",
    "secret_argument_problem",
    "secret_changed",
]

MASK = "**********"

_T = TypeVar("_T", default=str)

# Shorter values are not blanked out of text: redacting every "ab" would garble the logs, not protect.
_MIN_REDACTED_LENGTH = 4
_HASH_ITERATIONS = 100_000


class Secret(Generic[_T]):
    """A value that shows as ``'**********'`` everywhere: ``str()``, ``repr()``, f-strings, logs.

    Declare a parameter as ``BatchframeParam[Secret]`` (or ``Secret[str]``); batchframe gives the
    constructor a ``Secret``. Read the value with ``get_secret_value()`` where it is used::

        headers = {"Authorization": f"Bearer {self.api_token.get_secret_value()}"}

    Two secrets are equal when their values are. A Secret pickles with its value, so it reaches
    worker processes; it is never written to the run folder.
    """

    __slots__ = ("_value",)

    def __init__(self, value: _T) -> None:
        self._value = value

    def get_secret_value(self) -> _T:
        """The value itself."""
        return self._value

    def __repr__(self) -> str:
        return f"'{MASK}'"

    def __str__(self) -> str:
        return MASK

    def __format__(self, format_spec: str) -> str:
        return format(MASK, format_spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        import hmac

        return hmac.compare_digest(_bytes(self._value), _bytes(other._value))

    def __hash__(self) -> int:
        return hash(self._value)

    def __len__(self) -> int:
        return len(str(self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Secret, (self._value,))

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's pause shell shows the mask too."""
        printer.text(repr(self))


def _bytes(value: object) -> bytes:
    # An environment variable that is not UTF-8 arrives with lone surrogates: encode them too, never fail.
    return str(value).encode("utf-8", "surrogatepass")


def is_secret_type(annotation: Any) -> bool:
    """Whether a parameter's type is ``Secret``, ``Secret[str]`` or an optional one (``Secret | None``)."""
    if annotation is Secret or typing.get_origin(annotation) is Secret:
        return True
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return any(is_secret_type(member) for member in typing.get_args(annotation))
    return False


def secret_argument_problem(annotation: Any) -> str | None:
    """What is wrong with a ``Secret[X]`` in ``annotation`` (only ``Secret`` and ``Secret[str]`` are), or None."""
    if typing.get_origin(annotation) is Secret:
        args = typing.get_args(annotation)
        if args != (str,):
            return f"Secret[{', '.join(getattr(a, '__name__', str(a)) for a in args)}]"
        return None
    for member in typing.get_args(annotation):
        problem = secret_argument_problem(member)
        if problem is not None:
            return problem
    return None


# ------------------------------------------------------------------------------------ what a run keeps


def fingerprint_secret(value: Secret[Any], *, salt: bytes | None = None) -> dict[str, str]:
    """A salted hash of the value (PBKDF2-SHA256), for the journal: enough to tell that it changed."""
    salt = os.urandom(16) if salt is None else salt
    import hashlib  # 5 ms at start-up (with hmac), for what only a run with a secret needs

    digest = hashlib.pbkdf2_hmac("sha256", _bytes(value.get_secret_value()), salt, _HASH_ITERATIONS)
    return {"salt": salt.hex(), "hash": digest.hex()}


def secret_changed(recorded: Mapping[str, str], value: Secret[Any]) -> bool:
    """Whether ``value`` differs from the one whose salted hash ``recorded`` holds."""
    try:
        salt = bytes.fromhex(recorded["salt"])
    except (KeyError, ValueError):
        return False  # nothing usable was recorded: nothing to compare with
    import hmac

    again = fingerprint_secret(value, salt=salt)["hash"]
    return not hmac.compare_digest(again, recorded.get("hash", ""))


# ---------------------------------------------------------------------------------------- redaction

_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern[str] | None = None


def remember_secret(value: Secret[Any]) -> None:
    """Blank this secret's value out of what ``redact`` is given from now on (for the rest of the process)."""
    global _pattern
    text = str(value.get_secret_value())
    if len(text) < _MIN_REDACTED_LENGTH or text in _values:
        return
    with _lock:
        _values.add(text)
        # Also as JSON writes it (failed.jsonl): a value with quotes, backslashes or non-ASCII is escaped there.
        _values.add(json.dumps(text, ensure_ascii=True)[1:-1])
        _values.add(json.dumps(text, ensure_ascii=False)[1:-1])
        longest_first = sorted(_values, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(v) for v in longest_first))


def has_secrets() -> bool:
    """Whether this process has remembered a secret value (so text is worth redacting)."""
    return _pattern is not None


def redact(text: str) -> str:
    """``text`` with every remembered secret value replaced by ``'**********'``."""
    pattern = _pattern
    if pattern is None:
        return text
    return pattern.sub(MASK, text)
