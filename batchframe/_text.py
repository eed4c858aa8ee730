"""User data as text that can be recorded: safe ``str``/``repr``, and the one traceback formatter.

Everything here formats what user code handed us (items, exceptions) and never raises on it: an
exception whose ``__str__`` raises, an item whose ``__repr__`` raises or recurses, lone surrogates
from ``os.listdir``, a note that is not a string, a cycle of causes, a group of a thousand members.
Each has a fallback, so recording a failure cannot break a run.

``format_exception`` is the only traceback formatter of batchframe: ``failed.jsonl`` and the journal,
what a worker process sends back, the logs and the user's frames under an error panel all come from
it. It keeps what
Python's own traceback shows (causes, context, notes, exception group members, in Python's layout)
but only the user's frames: never batchframe's, nor those of the machinery it calls user code through
(asyncio, threads, importlib, kink), nor the libraries the user's code called, unless no frame at
all is the user's (a project installed in site-packages). Source lines come from ``linecache``
without Python 3.11's caret lines: those re-parse every line, and a failing item must stay cheap.
"""

from __future__ import annotations

import builtins
import functools
import importlib
import importlib.util
import linecache
import os
import re
import reprlib
import site
import sysconfig
import traceback
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

# Python 3.10 has no exception groups (the exceptiongroup backport is not a dependency).
_GROUP: Any = getattr(builtins, "BaseExceptionGroup", None)

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 300
_REPR.maxlevel = 8

_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
_REPEATS_SHOWN = 3  # as Python: a frame repeated more often (recursion) is shown 3 times, then counted
_MAX_CHAIN = 50
_MAX_GROUP_WIDTH = 15  # Python's defaults for exception groups
_MAX_GROUP_DEPTH = 10
_MAX_EXCEPTIONS = 200  # in one traceback: members of members may repeat one object many times
_MAX_NOTES = 100


# ------------------------------------------------------------------------------------------ values


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""Characters a terminal acts on (ESC sequences, a reset, a bell...); newline and tab are left as they are."""


def printable(text: str) -> str:
    """``text`` with its control characters written out as text (ESC as four characters, backslash x1b).

    User data never drives the terminal: no screen cleared, no reset, no colour.
    """
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
"""A terminal's colour and style sequences (CSI) and its title and link sequences (OSC)."""


def without_ansi(text: str) -> str:
    """``text`` without the colour codes a program wrote for a terminal (Ray's messages, a child's output)."""
    return _ANSI.sub("", text)


def safe_str(value: object) -> str:
    """``str(value)``, or ``<unprintable TypeName>`` when that raises. Never raises."""
    try:
        return str(value)
    except Exception:
        return unprintable(value)


def safe_repr(value: object) -> str:
    """A short ``repr(value)`` (bounded depth and length), or ``<unprintable TypeName>``. Never raises."""
    try:
        return _REPR.repr(value)
    except Exception:
        return unprintable(value)


def unprintable(value: object) -> str:
    """What stands for a value whose ``__str__`` or ``__repr__`` raised: ``<unprintable TypeName>``."""
    return f"<unprintable {_type_name(value)}>"


def shortened(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in ``...`` when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def storable_text(text: str) -> str:
    r"""``text`` with lone surrogates escaped (``\\udcff``), so UTF-8 files and SQLite accept it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def safe_attribute(obj: object, name: str) -> Any:
    """``getattr(obj, name, None)``, or None when reading it raises (a user's property may). Never raises."""
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


def _type_name(value: object) -> str:
    try:
        return type(value).__qualname__
    except Exception:  # a metaclass may make even this raise
        return "object"


# -------------------------------------------------------------------------------------- exceptions


def error_type_of(exc: BaseException) -> str:
    """The exception's type name; for an error that came back from a worker, the original type's name."""
    if type(exc).__name__ == "RemoteError":
        remote = safe_attribute(exc, "error_type")
        if isinstance(remote, str):
            return remote
    return _type_name(exc)


def notes_of(exc: BaseException) -> list[str]:
    """The exception's notes (``add_note``), each as text; [] when it has none or they cannot be read."""
    notes = safe_attribute(exc, "__notes__")
    if notes is None:
        return []
    if isinstance(notes, (str, bytes)) or not isinstance(notes, (list, tuple)):
        return [safe_repr(notes)]  # as Python: notes that are not a list are shown as they are
    try:
        shown = [safe_str(note) for note in notes[:_MAX_NOTES]]
        return shown + ([f"({len(notes) - _MAX_NOTES} more notes)"] if len(notes) > _MAX_NOTES else [])
    except Exception:  # a list subclass of the user's whose methods raise
        return []


def exception_message(exc: BaseException) -> str:
    """``str(exc)`` and its notes below it, one per line (what ``failed.jsonl`` records). Never raises."""
    return "\n".join([safe_str(exc), *notes_of(exc)])


def format_exception(exc: BaseException, *, headers: bool = True, exclude: Iterable[str | Path] = ()) -> str:
    """The traceback of ``exc`` as Python prints it (causes, context, notes, groups), with the user's frames only.

    Args:
        exc: the exception.
        headers: start each traceback with ``Traceback (most recent call last):`` (as in
            ``failed.jsonl``); without them (under an error panel, where a traceback header would
            read as a crash of batchframe's) only the frames and the exceptions' lines.
        exclude: more folders (or files) whose frames are not shown.

    An exception a worker process sent back carries the traceback formatted there
    (``remote_traceback``): with headers, that is the one returned.

    Never raises: if formatting fails, the exception's own line.
    """
    if headers:
        remote = safe_attribute(exc, "remote_traceback")
        if isinstance(remote, str):
            return remote
    try:
        skip = tuple(str(path) for path in exclude)
        writer = _Writer(headers=headers, skip=skip)
        writer.hide_libraries = writer.has_own_frame(exc)
        writer.exception(exc)
        text = "".join(writer.out)
        return text if headers else text.rstrip()
    except Exception:  # RecursionError, MemoryError aside: a fallback that cannot fail
        return f"{error_type_of(exc)}: {safe_str(exc)}\n"


_Entry = tuple[str, int, str, dict[str, Any], bool]
"""A frame that may be shown: its file, line number, function name, globals (for linecache), and whether a library's."""


class _Writer:
    """Writes one traceback. Follows ``traceback.TracebackException.format`` (Python 3.11), group boxes included."""

    def __init__(self, *, headers: bool, skip: tuple[str, ...]) -> None:
        self.headers = headers
        self.skip = skip
        self.hide_libraries = False
        self.depth = 0  # exception groups we are inside
        self.need_close = False
        self.seen: set[int] = set()  # causes and contexts followed: a cycle is followed once
        self.written = 0
        self._walked: dict[int, list[_Entry]] = {}  # by the traceback's id: each is walked once
        self._hidden = (*_framework_files(), *skip)
        self.out: list[str] = []

    # ---- the exceptions

    def exception(self, exc: BaseException) -> None:
        """Write ``exc`` after its chain of causes and contexts, oldest first."""
        for link, each in reversed(self._chain(exc)):
            self.written += 1
            if self.written > _MAX_EXCEPTIONS:
                if self.written == _MAX_EXCEPTIONS + 1:  # said once; the boxes around close as they are
                    self._emit(f"... (more than {_MAX_EXCEPTIONS} exceptions: the rest left out)\n")
                return
            members = group_members(each)
            if members is None:
                frames = self._frames(each.__traceback__)
                if frames and self.headers:
                    self._emit("Traceback (most recent call last):\n")
                self._emit(*frames, *self._exception_only(each))
            else:
                self._group(each, members)
            if link:
                self._emit(link)

    def _chain(self, exc: BaseException) -> list[tuple[str, BaseException]]:
        """``exc`` and the exceptions it was raised from or while handling, newest first.

        Each comes with the line that links it to the one before it in the list: printed oldest
        first, an exception is followed by the line that says how the newer one came from it.
        """
        chain: list[tuple[str, BaseException]] = []
        current: BaseException | None = exc
        link = ""
        while current is not None and len(chain) < _MAX_CHAIN:
            self.seen.add(id(current))
            chain.append((link, current))
            cause = safe_attribute(current, "__cause__")
            context = safe_attribute(current, "__context__")
            if isinstance(cause, BaseException):
                current, link = cause, _CAUSE
            elif isinstance(context, BaseException) and not safe_attribute(current, "__suppress_context__"):
                current, link = context, _CONTEXT
            else:
                current = None
            if current is not None and id(current) in self.seen:
                current = None
        return chain

    def _group(self, exc: BaseException, members: list[BaseException]) -> None:
        if self.depth > _MAX_GROUP_DEPTH:
            self._emit(f"... (max_group_depth is {_MAX_GROUP_DEPTH})\n")
            return
        toplevel = self.depth == 0
        if toplevel:
            self.depth += 1
        frames = self._frames(exc.__traceback__)
        if frames and self.headers:
            self._emit("Exception Group Traceback (most recent call last):\n", margin="+" if toplevel else "|")
        self._emit(*frames, *self._exception_only(exc))
        shown = min(len(members), _MAX_GROUP_WIDTH + 1)
        self.need_close = False
        for i in range(shown):
            last = i == shown - 1
            if last:
                self.need_close = True  # a nested group below may close the box itself
            truncated = i >= _MAX_GROUP_WIDTH
            title = "..." if truncated else str(i + 1)
            self.out.append(
                self._indent() + ("+-" if i == 0 else "  ") + f"+---------------- {title} ----------------\n"
            )
            self.depth += 1
            if truncated:
                more = len(members) - _MAX_GROUP_WIDTH
                self._emit(f"and {more} more exception{'s' if more > 1 else ''}\n")
            else:
                self.exception(members[i])
            if last and self.need_close:
                self.out.append(self._indent() + "+------------------------------------\n")
                self.need_close = False
            self.depth -= 1
        if toplevel:
            self.depth = 0

    def _emit(self, *texts: str, margin: str = "|") -> None:
        if not self.depth:  # outside a group: the lines as they are
            self.out.extend(texts)
            return
        prefix = f"{self._indent()}{margin} "
        self.out.extend(prefix + line for text in texts for line in text.splitlines(keepends=True))

    def _indent(self) -> str:
        return " " * (2 * self.depth)

    @staticmethod
    def _exception_only(exc: BaseException) -> list[str]:
        message = safe_str(exc)
        head = f"{error_type_of(exc)}: {message}" if message else error_type_of(exc)
        return [line + "\n" for text in (head, *notes_of(exc)) for line in text.split("\n")]

    # ---- the frames

    def has_own_frame(self, exc: BaseException) -> bool:
        """Whether any exception of the traceback (chain and groups) has a frame of the user's own code."""
        pending, seen = [exc], set[int]()
        while pending and len(seen) < _MAX_EXCEPTIONS:
            current = pending.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            if not all(entry[4] for entry in self._entries(current.__traceback__)):
                return True
            linked = [safe_attribute(current, "__cause__"), safe_attribute(current, "__context__")]
            linked += group_members(current) or []
            pending += [e for e in linked if isinstance(e, BaseException)]
        return False

    def _entries(self, tb: TracebackType | None) -> list[_Entry]:
        """Filename, line, function and globals of each frame that may be shown (batchframe's never are)."""
        key = id(tb)
        entries = self._walked.get(key)
        if entries is None:
            hidden, libraries = self._hidden, _library_files()
            entries = self._walked[key] = [
                (code.co_filename, line_number, code.co_name, frame.f_globals, code.co_filename.startswith(libraries))
                for frame, line_number in traceback.walk_tb(tb)
                if not (code := frame.f_code).co_filename.startswith(hidden)
            ]
        return entries

    def _frames(self, tb: TracebackType | None) -> list[str]:
        """The frames to show, formatted; a frame repeated more than 3 times in a row is counted (recursion)."""
        entries = self._entries(tb)
        if self.hide_libraries:
            entries = [entry for entry in entries if not entry[4]]
        lines: list[str] = []
        last: tuple[str, int, str] | None = None
        count = 0
        for filename, line_number, name, module_globals, _ in entries:
            if (filename, line_number, name) != last:
                lines += _repeated(count)
                last, count = (filename, line_number, name), 0
            count += 1
            if count > _REPEATS_SHOWN:
                continue
            lines += _frame_lines(filename, line_number, name, module_globals)
        return lines + _repeated(count)


_FRAME_LINES: dict[tuple[str, int, str], list[str]] = {}
_FRAME_LINES_MOST = 4096


def _frame_lines(filename: str, line_number: int, name: str, module_globals: dict[str, Any]) -> list[str]:
    """A frame's ``File ..., line ..., in ...`` line and its source line, formatted once per place.

    A run whose items fail the same way formats the same few frames for every failure: remembered,
    each costs a dict lookup instead of a linecache lookup and two f-strings.
    """
    key = (filename, line_number, name)
    known = _FRAME_LINES.get(key)
    if known is not None:
        return known
    known = [f'  File "{filename}", line {line_number}, in {name}\n']
    try:
        source = linecache.getline(filename, line_number, module_globals).strip()
    except Exception:  # a module's loader (get_source) may raise anything
        source = ""
    if source:
        known.append(f"    {source}\n")
    if len(_FRAME_LINES) >= _FRAME_LINES_MOST:
        _FRAME_LINES.clear()
    _FRAME_LINES[key] = known
    return known


def _repeated(count: int) -> list[str]:
    more = count - _REPEATS_SHOWN
    return [f"  [Previous line repeated {more} more time{'s' if more > 1 else ''}]\n"] if more > 0 else []


def group_members(exc: BaseException) -> list[BaseException] | None:
    """The exceptions of an exception group (``BaseExceptionGroup``); None for any other exception.

    None too for a group whose ``exceptions`` cannot be read (a user's subclass). Never raises.
    """
    try:
        members = safe_attribute(exc, "exceptions") if _GROUP is not None and isinstance(exc, _GROUP) else None
        if not isinstance(members, (list, tuple)):
            return None
        return [member for member in members if isinstance(member, BaseException)]
    except Exception:
        return None


# ------------------------------------------------------------------------------------------ frames


def _prefixes(*paths: str | Path, folders: bool = True) -> tuple[str, ...]:
    """Each path as given and resolved (a frame's file is spelt as its module was found, symlinks and all).

    A folder ends with a separator, so that ``/usr/lib/python3.1`` is no prefix of ``/usr/lib/python3.11``.
    """
    tail = os.sep if folders else ""
    spellings = (spelling for path in paths for spelling in (str(path), str(Path(path).resolve())))
    return tuple(dict.fromkeys(spelling.rstrip(os.sep) + tail for spelling in spellings))


def _found(name: str) -> list[str]:
    """Where a module or package is, found without importing it (asyncio must not load at ``--help``)."""
    try:
        spec = importlib.util.find_spec(name)
    except Exception:
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return list(spec.submodule_search_locations)
    return [spec.origin] if spec.origin else []


@functools.cache
def _framework_files() -> tuple[str, ...]:
    """Where the frames between batchframe and the user's code are: never shown as the user's.

    Found on first use, not at import: ``import batchframe`` stays fast.
    """
    return (
        *_prefixes(
            Path(__file__).parent,
            *_found("asyncio"),
            *_found("concurrent"),
            Path(importlib.__file__).parent,
            *_found("kink"),  # kink's @inject builds the user's Source and Service: its frames sit above the user's
        ),
        *_prefixes(*_found("threading"), folders=False),
        "<frozen importlib",
        "<frozen runpy",
    )


@functools.cache
def _library_files() -> tuple[str, ...]:
    """Where the standard library and installed packages are: code that the user's code called."""
    paths = sysconfig.get_paths()
    return (
        *_prefixes(
            *dict.fromkeys(paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")),
            *site.getsitepackages(),
        ),
        "<frozen ",
    )


def is_framework_frame(filename: str) -> bool:
    """Whether a frame is batchframe's, or of the machinery it calls user code through (kink, importlib, asyncio)."""
    return filename.startswith(_framework_files())


def is_library_frame(filename: str) -> bool:
    """Whether a frame is of an installed library or the standard library (code the user's code called)."""
    return filename.startswith(_library_files())


def clock(seconds: float) -> str:
    """A duration as a clock reads: ``0:01:05`` (hours:minutes:seconds, whole seconds)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
