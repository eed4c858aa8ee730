"""Type variables, the hook protocols, and the checks that find a user's hooks (and misspelt ones)."""

from __future__ import annotations

import inspect
from collections.abc import Collection, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

ItemT = TypeVar("ItemT")

HOOK_MATCH_CUTOFF = 0.8
"""How close (``difflib`` ratio) a name must be to a hook's to be reported as a probable misspelling."""


@runtime_checkable
class PersistsFailed(Protocol):
    """A Source that wants the failed items at the end of a run."""

    def persist_failed(self, failed: Sequence[Any]) -> object:
        """Store the items that failed (called once, at the end of the run; ``list(failed)`` makes a list).

        May be ``async def``.
        """


@runtime_checkable
class Finishes(Protocol):
    """A Service with a ``finish()`` hook, called once after the last item."""

    def finish(self) -> object:
        """Release resources, flush buffers: called once at the end of the run (may be ``async def``)."""


def defines(cls: type, name: str, base: type) -> bool:
    """Whether ``cls`` has its own ``name``: defined by it or a parent other than ``base`` (and ``base``'s bases).

    ``defines(MySource, "persist_failed", Source)`` is False when only ``Source``'s no-op is there.
    """
    return any(name in vars(klass) for klass in cls.__mro__ if klass not in base.__mro__)


def misspelt_hooks(cls: type, base: type, *, methods: Collection[str], attributes: Collection[str] = ()) -> list[str]:
    """One warning per name of ``cls`` that looks like a misspelt hook of ``base``. Never raises.

    A name is suspect when it is public, ``base`` has nothing of that name, and it is close
    (``difflib``, ratio 0.8 or more) to a hook that ``cls`` does not define: a method to any of
    ``methods`` and ``attributes``, a property or plain value only to one of ``attributes``.
    batchframe's own classes (``batchframe.*``) are not checked.
    """
    import difflib

    missing_attributes = [hook for hook in attributes if not defines(cls, hook, base)]
    missing_any = [*(hook for hook in methods if not defines(cls, hook, base)), *missing_attributes]
    warnings: list[str] = []
    seen: set[str] = set()
    for klass in cls.__mro__:
        if klass in base.__mro__ or _is_ours(klass):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name in seen or hasattr(base, name):
                continue
            seen.add(name)
            candidates = missing_any if _is_method(value) else missing_attributes
            close = difflib.get_close_matches(name, candidates, n=1, cutoff=HOOK_MATCH_CUTOFF)
            if close:
                warnings.append(
                    f"{klass.__qualname__}.{name} is not a batchframe hook, so batchframe ignores it: did you mean "
                    f"{close[0]}? Rename it to {close[0]} (or to a name that does not look like a hook)."
                )
    return warnings


def _is_method(value: object) -> bool:
    return inspect.isfunction(value) or isinstance(value, (staticmethod, classmethod))


def _is_ours(klass: type) -> bool:
    module = getattr(klass, "__module__", "") or ""
    return module == "batchframe" or module.startswith("batchframe.")


__all__ = ["Finishes", "ItemT", "PersistsFailed", "defines", "misspelt_hooks"]
