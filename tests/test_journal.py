from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from batchframe.runfolder.failures import FailedItem, pickled_item
from batchframe.runfolder.journal import FORMAT_VERSION, Journal, JournalError, merge_ranges, ranges_of


def test_ranges_of_coalesces_positions() -> None:
    assert ranges_of([]) == []
    assert ranges_of([5, 3, 4]) == [(3, 6)]
    assert ranges_of([1, 2, 7, 9, 8, 20]) == [(1, 3), (7, 10), (20, 21)]


def test_merge_ranges() -> None:
    assert merge_ranges([(5, 8), (0, 2), (2, 4), (7, 10)]) == [(0, 4), (5, 10)]


def test_a_journal_records_done_failed_and_not_processed(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, {"project": "job.py"})
    for index in [0, 1, 2, 5, 6]:
        journal.succeeded(index)
    journal.finished_badly(FailedItem.from_exception(3, {"n": 3}, ValueError("bad"), 2), pickled_item({"n": 3}))
    journal.finished_badly(FailedItem.not_processed(4, Path("x"), 0, "stopped"), pickled_item(Path("x")))
    journal.close()
    reopened = Journal.open(tmp_path)
    assert reopened.meta()["project"] == "job.py"
    assert reopened.meta()["format_version"] == FORMAT_VERSION
    counts = reopened.counts()
    assert (counts["done"], counts["failed"], counts["not_processed"]) == (5, 1, 1)
    assert counts["highest_position"] == 7
    assert reopened.finished_ranges() == [(0, 4), (5, 7)]  # failed 3 is finished; 4 is not
    assert reopened.unfinished_items() == [(3, {"n": 3}), (4, Path("x"))]
    assert reopened.failures_by_type() == {"ValueError": 1, "NotProcessed": 1}
    reopened.close()


def test_items_in_flight_for_a_while_are_written_with_the_item(tmp_path: Path, monkeypatch) -> None:
    import batchframe.runfolder.journal as journal_module

    monkeypatch.setattr(journal_module, "_IN_FLIGHT_AFTER_S", 0.0)
    journal = Journal.create(tmp_path, {})
    in_flight = [(7, 1, "slow item")]
    journal.watch_in_flight(lambda: list(in_flight))
    journal.flush()  # first sighting
    journal.flush()  # still in flight: recorded
    assert journal.counts()["in_flight"] == 1
    assert journal.unfinished_items() == [(7, "slow item")]
    in_flight.clear()
    journal.succeeded(7)
    journal.flush()
    assert journal.counts()["in_flight"] == 0
    assert journal.counts()["done"] == 1
    journal.close()


def test_unpicklable_failed_items_are_reported_on_retry(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, {})
    journal.finished_badly(FailedItem.from_exception(0, lambda: 1, ValueError("x"), 1), None)
    journal.flush()
    with pytest.raises(JournalError, match="not picklable"):
        journal.unfinished_items()
    journal.close()


def test_open_a_missing_folder_or_a_folder_without_journal(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="does not exist"):
        Journal.open(tmp_path / "nope")
    with pytest.raises(JournalError, match="not a batchframe run folder"):
        Journal.open(tmp_path)


def test_a_corrupt_journal_is_reported_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    path.write_bytes(b"this is not a database at all, just some bytes" * 20)
    before = path.read_bytes()
    with pytest.raises(JournalError, match="damaged"):
        Journal.open(tmp_path)
    assert path.read_bytes() == before


def test_a_truncated_journal_is_reported(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, {"project": "x"})
    for index in range(1000):
        journal.succeeded(index)
    journal.close()
    path = tmp_path / "journal.sqlite"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(JournalError, match="damaged"):
        Journal.open(tmp_path)


def test_a_journal_from_a_newer_batchframe(tmp_path: Path) -> None:
    Journal.create(tmp_path, {"batchframe_version": "9.0.0"}).close()
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (str(FORMAT_VERSION + 1),))
    with pytest.raises(JournalError, match=r"written by batchframe 9\.0\.0") as info:
        Journal.open(tmp_path)
    assert "Upgrade batchframe" in str(info.value)


def test_the_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    first = Journal.create(tmp_path, {})
    second = Journal.open(tmp_path)
    with first.locked(), pytest.raises(JournalError, match="in use by another batchframe process"), second.locked():
        pass
    with second.locked():  # free again
        pass
    first.close()
    second.close()
