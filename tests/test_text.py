"""``_text``: the one traceback formatter (causes, context, notes, groups; the user's frames) and safe text."""

from __future__ import annotations

import json
import pickle
import sys
import threading

import pytest

from batchframe._text import exception_message, format_exception, group_members, notes_of, safe_str
from batchframe.backends._worker import RemoteError, transportable
from batchframe.runfolder.failures import FailedItem

needs_groups = pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups are Python 3.11+")
if sys.version_info >= (3, 11):
    from builtins import ExceptionGroup


def caught(raiser: object) -> BaseException:
    try:
        raiser()  # type: ignore[operator]
    except BaseException as exc:
        return exc
    raise AssertionError("nothing was raised")


def fetch() -> None:
    raise ConnectionError("down")


def caused() -> None:
    try:
        fetch()
    except ConnectionError as exc:
        error = ValueError("bad answer")
        error.add_note("while reading item 7")
        raise error from exc


def in_context() -> None:
    try:
        {}["missing"]  # type: ignore[index]
    except KeyError:
        raise RuntimeError("lookup failed")  # the implicit context is the point


def suppressed() -> None:
    try:
        {}["missing"]  # type: ignore[index]
    except KeyError:
        raise RuntimeError("lookup failed") from None


def grouped() -> None:
    try:
        fetch()
    except ConnectionError as exc:
        inner = ExceptionGroup("inner", [TimeoutError("slow")])
        raise ExceptionGroup("calls failed", [exc, inner])


def test_a_cause_is_shown_before_the_exception_with_its_frames_and_notes() -> None:
    text = format_exception(caught(caused))
    assert text.startswith("Traceback (most recent call last):\n")
    assert text.index('raise ConnectionError("down")') < text.index("ConnectionError: down")
    assert text.index("ConnectionError: down") < text.index("The above exception was the direct cause")
    assert text.index("direct cause") < text.index("raise error from exc") < text.index("ValueError: bad answer")
    assert text.endswith("ValueError: bad answer\nwhile reading item 7\n")


def test_an_implicit_context_is_shown_and_from_none_hides_it() -> None:
    text = format_exception(caught(in_context))
    assert "KeyError: 'missing'" in text and "During handling of the above exception" in text
    assert "KeyError" not in format_exception(caught(suppressed))


@needs_groups
def test_group_members_are_shown_in_pythons_boxes() -> None:
    text = format_exception(caught(grouped))
    assert "  + Exception Group Traceback (most recent call last):\n" in text
    assert "  | ExceptionGroup: calls failed (2 sub-exceptions)\n" in text
    assert "  +-+---------------- 1 ----------------\n" in text
    assert "    | ConnectionError: down\n" in text and '    |     raise ConnectionError("down")\n' in text
    assert "    | ExceptionGroup: inner (1 sub-exception)\n" in text and "      | TimeoutError: slow\n" in text
    assert text.endswith("      +------------------------------------\n")
    assert text.count("ConnectionError: down") == 2  # as a member, and as the context the group was raised in


@needs_groups
def test_wide_and_deep_groups_are_cut_as_python_cuts_them() -> None:
    wide = format_exception(ExceptionGroup("wide", [ValueError(i) for i in range(20)]))
    assert "+---------------- 15 ----------------" in wide and "and 5 more exceptions" in wide
    deep: BaseException = ValueError("leaf")
    for _ in range(15):
        deep = ExceptionGroup("level", [deep])
    assert "... (max_group_depth is 10)" in format_exception(deep)


@needs_groups
def test_cycles_and_shared_members_end() -> None:
    first, second = ValueError("first"), KeyError("second")
    first.__context__, second.__context__ = second, first
    assert (
        format_exception(first)
        == "KeyError: 'second'\n\nDuring handling of the above exception, another exception occurred:\n\nValueError: first\n"
    )
    shared: BaseException = ValueError("leaf")
    for _ in range(12):  # 15**12 leaves when walked as a tree: the formatter stops after 200 exceptions
        shared = ExceptionGroup("g", [shared] * 15)
    text = format_exception(shared)
    assert text.count("(more than 200 exceptions: the rest left out)") == 1 and len(text) < 100_000


def test_recursion_is_counted_not_repeated() -> None:
    def recurse(n: int) -> int:
        return recurse(n + 1)

    text = format_exception(caught(lambda: recurse(0)))
    assert text.count("return recurse(n + 1)") == 3 and "[Previous line repeated" in text


@needs_groups
def test_without_headers_nothing_reads_as_a_crash() -> None:
    for raiser in (caused, grouped):
        text = format_exception(caught(raiser), headers=False)
        assert "Traceback" not in text and ("direct cause" in text or "| ExceptionGroup" in text)


def test_library_frames_show_only_when_no_frame_is_the_users() -> None:
    exc = caught(lambda: json.loads("{"))
    text = format_exception(exc)
    assert "json.loads" in text and "json/decoder.py" not in text  # the user's line says what was called
    while exc.__traceback__ is not None and exc.__traceback__.tb_frame.f_code.co_filename == __file__:
        exc.__traceback__ = exc.__traceback__.tb_next  # drop this file's frames: all that is left is json's
    assert "json/decoder.py" in format_exception(exc)


def test_exclude_hides_more_frames() -> None:
    assert __file__ not in format_exception(caught(caused), exclude=[__file__])


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


class BadNotes(Exception):
    @property
    def __notes__(self) -> list[str]:  # type: ignore[override]
        raise RuntimeError("no notes")


class BadCause(Exception):
    @property
    def __cause__(self) -> BaseException:  # type: ignore[override]
        raise RuntimeError("no cause")


if sys.version_info >= (3, 11):

    class BadMembers(ExceptionGroup):  # type: ignore[type-arg]
        @property
        def exceptions(self) -> tuple[BaseException, ...]:  # type: ignore[override]
            raise RuntimeError("no members")


def test_user_data_that_cannot_be_read_never_makes_it_raise() -> None:
    assert format_exception(BadStr()) == "BadStr: <unprintable BadStr>\n"
    assert format_exception(BadNotes("x")) == "BadNotes: x\n" and exception_message(BadNotes("x")) == "x"
    assert format_exception(BadCause("x")) == "BadCause: x\n"


@needs_groups
def test_a_group_whose_members_cannot_be_read_is_shown_as_one_exception() -> None:
    assert group_members(BadMembers("m", [ValueError()])) is None
    assert format_exception(BadMembers("m", [ValueError()])) == "BadMembers: m (1 sub-exception)\n"


class RaisingList(list):  # type: ignore[type-arg]
    def __getitem__(self, index: object) -> object:
        raise RuntimeError("no items")


def test_notes_that_are_not_a_list_of_text() -> None:
    odd = ValueError("x")
    odd.add_note("plain")
    odd.__notes__.append(42)  # type: ignore[arg-type]
    assert notes_of(odd) == ["plain", "42"]
    odd.__notes__ = "not a list"  # type: ignore[assignment]
    assert notes_of(odd) == ["'not a list'"]
    odd.__notes__ = RaisingList(["hidden"])
    assert notes_of(odd) == [] and exception_message(odd) == "x" and format_exception(odd) == "ValueError: x\n"
    assert safe_str(BadStr()) == "<unprintable BadStr>"


def test_a_worker_s_traceback_travels_with_its_exception() -> None:
    exc = caught(caused)
    here = format_exception(exc)
    assert here.startswith("Traceback (most recent call last):") and "The above exception was the direct cause" in here
    exc.remote_traceback = "Traceback (most recent call last):\n  File \"/worker/job.py\", line 3\nKeyError: 'x'\n"  # type: ignore[attr-defined]
    assert format_exception(exc) == exc.remote_traceback  # type: ignore[attr-defined]
    panel = format_exception(exc, headers=False)  # under a panel: this process's frames, no headers
    assert "Traceback (most recent call last)" not in panel and panel == panel.rstrip() and "KeyError" not in panel


def test_a_failed_items_record_keeps_the_notes_in_its_message_and_the_chain_in_its_traceback() -> None:
    record = FailedItem.from_exception(7, "item", caught(caused), 1)
    assert record.message == "bad answer\nwhile reading item 7"
    assert "ConnectionError: down" in record.traceback and "direct cause" in record.traceback
    line = json.loads(record.to_json())
    assert line["message"] == record.message and line["traceback"] == record.traceback


class Unpicklable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def test_an_exception_that_cannot_travel_keeps_its_notes_and_chain_as_text() -> None:
    def raiser() -> None:
        try:
            fetch()
        except ConnectionError as exc:
            error = Unpicklable("no pickle")
            error.add_note("a note")
            raise error from exc

    sent = transportable(caught(raiser))
    assert isinstance(sent, RemoteError)
    assert (sent.error_type, str(sent)) == ("Unpicklable", "no pickle\na note")
    assert "ConnectionError: down" in sent.remote_traceback and "direct cause" in sent.remote_traceback
    record = FailedItem.from_exception(0, None, pickle.loads(pickle.dumps(sent)), 1)
    assert (record.error_type, record.message) == ("Unpicklable", "no pickle\na note")
    assert record.traceback == sent.remote_traceback


@needs_groups
def test_a_group_from_a_worker_says_it_is_retried_when_all_its_members_are() -> None:
    from batchframe import Retry
    from batchframe.backends._worker import pack

    retried, mixed = (
        ExceptionGroup("calls", [Retry(), Retry(delay_s=1)]),
        ExceptionGroup("calls", [Retry(), KeyError()]),
    )
    assert transportable(retried) is retried
    assert [pack(group)[4] for group in (retried, mixed)] == [True, False]  # type: ignore[index]
