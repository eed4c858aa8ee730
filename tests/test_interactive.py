"""Real terminal sessions (pexpect): the live progress display, the pause shell, the emergency shell."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pexpect
import pytest
from helpers import build_file_tree, only_run_dir, read_jsonl

SLOW_PROJECT = """
import asyncio
import json
from pathlib import Path
from batchframe import BatchframeParam, Service, Source

class Numbers(Source[int]):
    def __init__(self, count: BatchframeParam[int] = 300, fail_at: BatchframeParam[int] = -1):
        self.count = count
        self.fail_at = fail_at

    def __len__(self):
        return self.count

    def __iter__(self):
        for i in range(self.count):
            if i == self.fail_at:
                raise RuntimeError("the source broke")
            yield i

class Slow(Service[int]):
    def __init__(self, _current_run_output_dir: Path):
        self.done_file = (_current_run_output_dir / "done.txt").open("a")

    async def process(self, item):
        await asyncio.sleep(0.02)
        self.done_file.write(f"{item}\\n")
        self.done_file.flush()
"""

ANSI = r"(?:\x1b\[[0-9;]*m)*"
PROMPT = rf"In \[{ANSI}\d+{ANSI}\]: "


@pytest.fixture
def spawn(tmp_path: Path):
    children = []

    def start(*args: str, dimensions: tuple[int, int] = (40, 160)) -> pexpect.spawn:
        executable = str(Path(sys.executable).parent / "batchframe")
        rows, columns = dimensions
        env = {
            **os.environ,
            "IPYTHONDIR": str(tmp_path / "ipython"),
            "PROMPT_TOOLKIT_NO_CPR": "1",
            "TERM": "xterm",
            "COLUMNS": str(columns),
            "LINES": str(rows),
        }
        child = pexpect.spawn(
            executable, list(args), cwd=str(tmp_path), env=env, encoding="utf-8", timeout=30, dimensions=dimensions
        )
        child.logfile_read = (tmp_path / f"pty-{len(children)}.log").open("w")  # the whole screen, for failures
        children.append(child)
        return child

    yield start
    for child in children:
        if child.isalive():
            child.terminate(force=True)
        child.logfile_read.close()


def stop_from_the_shell(child: pexpect.spawn) -> None:
    """At the pause shell's prompt: self.stop(), leave, and check the run ended as interrupted (130)."""
    child.expect(PROMPT)
    child.sendline("self.stop()")
    child.expect(PROMPT)
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130


def done_items(run_dir: Path) -> list[int]:
    return [int(line) for line in (run_dir / "done.txt").read_text().split()]


def test_live_progress_then_pause_shell_then_stop(spawn, tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": SLOW_PROJECT})
    child = spawn("exec", "job.py", "-p", "concurrency=2", "-d", "out")
    child.expect(r"/300")  # the live display, with the total
    child.expect(r"[1-9]\d* ok")  # some items done
    child.sendintr()
    child.expect("batchframe paused")
    child.expect(PROMPT)
    child.sendline("print('in flight:', stats.in_flight, 'ok:', stats.succeeded > 0)")
    child.expect("in flight: 0 ok: True")
    stop_from_the_shell(child)
    run_dir = only_run_dir(tmp_path / "out")
    not_done = [r["item"] for r in read_jsonl(run_dir / "failed.jsonl")]
    assert {r["error_type"] for r in read_jsonl(run_dir / "failed.jsonl")} == {"NotProcessed"}
    summary = json.loads((run_dir / "summary.json").read_text())
    read = summary["this_part"]["read"]
    assert sorted(done_items(run_dir) + not_done) == list(range(read))
    assert summary["unread"] == 300 - read  # left for resume (and handed to persist_failed)
    assert summary["exit_code"] == 130 and summary["outcome"] == "stopped"


def test_leaving_the_shell_resumes_the_run(spawn, tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": SLOW_PROJECT})
    child = spawn("exec", "job.py", "-p", "count=60", "-p", "concurrency=2", "-d", "out")
    child.expect(r"/60")
    child.sendintr()
    child.expect(PROMPT)
    child.sendline("exit")
    child.expect("Leaving the batchframe shell")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    run_dir = only_run_dir(tmp_path / "out")
    assert sorted(done_items(run_dir)) == list(range(60))


def test_tune_from_the_pause_shell(spawn, tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": SLOW_PROJECT})
    child = spawn("exec", "job.py", "-p", "count=200", "-p", "concurrency=4", "-d", "out")
    child.expect(r"/200")
    child.sendintr()
    child.expect(PROMPT)
    child.sendline("self.tune(max_per_second=25, concurrency=2)")
    child.expect(re.escape("['concurrency: 4 -> 2', 'max_per_second: none -> 25']"))
    child.expect(PROMPT)
    child.sendline("self.tune(concurrency=0)")
    child.expect("concurrency must be a whole number greater than 0")  # refused, the run goes on as it was
    child.expect(PROMPT)
    child.sendline("exit")
    child.expect("limit 25/s")  # the live line shows the tuned limit
    child.expect(pexpect.EOF, timeout=60)
    child.close()
    assert child.exitstatus == 0
    run_dir = only_run_dir(tmp_path / "out")
    assert sorted(done_items(run_dir)) == list(range(200))
    assert "Limits tuned (concurrency: 4 -> 2; max_per_second: none -> 25)." in (run_dir / "logs.txt").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["limits"]["per_second"] == 25 and summary["limits"]["tuned"] == 1


def test_second_ctrl_c_cancels_in_flight_items_back_to_pending(spawn, tmp_path: Path) -> None:
    project = SLOW_PROJECT.replace("await asyncio.sleep(0.02)", "await asyncio.sleep(0.02 if item % 10 else 30)")
    build_file_tree(tmp_path, {"job.py": project})
    child = spawn("exec", "job.py", "-p", "count=30", "-p", "concurrency=2", "-d", "out")
    child.expect(r"/30")
    child.expect(r"[1-9]\d* ok")  # under way: item 0 (30 s) is in flight
    child.sendintr()
    child.expect("Pausing")
    child.sendintr()  # item 0 (30 s) is still in flight: cancel it
    child.expect("Cancelling the items in flight; they go back to pending")
    stop_from_the_shell(child)
    run_dir = only_run_dir(tmp_path / "out")
    records = read_jsonl(run_dir / "failed.jsonl")
    assert 0 in [r["item"] for r in records]  # the cancelled item was not lost
    read = json.loads((run_dir / "summary.json").read_text())["this_part"]["read"]
    assert sorted(done_items(run_dir) + [r["item"] for r in records]) == list(range(read))


def test_a_fatal_error_opens_the_emergency_shell(spawn, tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": SLOW_PROJECT})
    child = spawn("exec", "job.py", "-p", "count=50", "-p", "fail_at=20", "-d", "out")
    child.expect("emergency shell")
    child.expect("the source broke")
    child.expect(PROMPT)
    child.sendline("print(type(executor.fatal_error).__name__)")
    child.expect("RuntimeError")
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    run_dir = only_run_dir(tmp_path / "out")
    not_done = [r["item"] for r in read_jsonl(run_dir / "failed.jsonl")]
    assert sorted(done_items(run_dir) + not_done) == list(range(20))  # everything read is accounted for


@pytest.mark.timeout(60)
def test_the_pause_shell_at_80_columns(spawn, tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": SLOW_PROJECT})
    child = spawn("exec", "job.py", "-p", "count=60", "-p", "concurrency=2", "-d", "out", dimensions=(24, 80))
    child.expect(r"/60")
    child.sendintr()
    child.expect("batchframe paused")
    child.expect(PROMPT)
    banner = "batchframe paused" + child.before
    assert "Tip:" not in banner
    lines = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", banner).splitlines()
    assert max(len(line) for line in lines) <= 80, lines  # wrapped at word boundaries, not by the terminal
    words = " ".join(line.strip() for line in lines)
    assert "self.stop() then exit to end the run gracefully;" in words
    assert "self.tune(max_per_second=5) changes a limit" in words
    child.sendline("stats")
    child.expect(r"elapsed='0:00:\d\d'")  # a duration, not a monotonic clock reading
    child.expect(PROMPT)
    child.sendcontrol("d")  # leaves at once: no "Do you really want to exit?"
    assert child.expect(["Do you really want to exit", "Leaving the batchframe shell"]) == 1
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert sorted(done_items(only_run_dir(tmp_path / "out"))) == list(range(60))


@pytest.mark.timeout(60)
def test_two_quick_ctrl_c_still_open_the_shell(spawn, tmp_path: Path) -> None:
    # The second Ctrl-C lands while the shell opens (IPython takes a moment to import): it cancels the
    # items in flight (back to pending), and the shell opens all the same.
    build_file_tree(tmp_path, {"job.py": SLOW_PROJECT})
    child = spawn("exec", "job.py", "-p", "count=60", "-p", "concurrency=4", "-d", "out")
    child.expect(r"[1-9]\d* ok")  # under way, items in flight
    child.sendintr()
    time.sleep(0.05)
    child.sendintr()
    child.expect(PROMPT)
    child.sendline("exit")
    child.expect("Leaving the batchframe shell")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    run_dir = only_run_dir(tmp_path / "out")
    assert sorted(done_items(run_dir)) == list(range(60))  # cancelled items ran again after the pause
    assert json.loads((run_dir / "summary.json").read_text())["succeeded"] == 60
