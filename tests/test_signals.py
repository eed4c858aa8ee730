"""Off a terminal, SIGTERM and SIGINT stop a run gracefully: every item is either done or recorded."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from helpers import build_file_tree, only_run_dir, read_jsonl, signal_when_ready
from test_interactive import SLOW_PROJECT, done_items


def made_progress(output_dir: Path) -> bool:
    """At least 10 items are done in the run under ``output_dir``."""
    runs = list(output_dir.glob("*/done.txt")) if output_dir.exists() else []
    return bool(runs) and runs[0].read_text().count("\n") >= 10


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_gracefully_and_loses_nothing(tmp_path: Path, signum: int, code: int) -> None:
    build_file_tree(tmp_path, {"job.py": SLOW_PROJECT})
    returncode, _, stderr = signal_when_ready(
        "exec", "job.py", "-p", "count=400", "-p", "concurrency=4", "-d", "out",
        cwd=tmp_path, ready=lambda: made_progress(tmp_path / "out"), signum=signum,
    )  # fmt: skip
    assert returncode == code, stderr
    assert "Traceback" not in stderr
    run_dir = only_run_dir(tmp_path / "out")
    records = read_jsonl(run_dir / "failed.jsonl")
    assert {r["error_type"] for r in records} == {"NotProcessed"}
    done = done_items(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    read = summary["this_part"]["read"]
    # Every item read is done or recorded; reading stopped at once (O(in flight)), the rest is left for resume.
    assert sorted(done + [r["item"] for r in records]) == list(range(read))
    assert read < 400 and summary["unread"] == 400 - read
    assert summary["exit_code"] == code
    assert summary["not_processed"] == len(records)
