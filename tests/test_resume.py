"""Durable runs through the real CLI: kill -9 / SIGTERM / stop() then resume; retry; runs; bad journals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import batchframe_cli, build_file_tree, only_run_dir, read_jsonl

from batchframe.run.driver import SAVE_GROUP_MIN

JOB = """
import asyncio
import os
from pathlib import Path
from batchframe import BatchframeParam, Service, Source

class Numbers(Source[int]):
    def __init__(self, _current_run_output_dir: Path, count: BatchframeParam[int] = 3000,
                 items_file: BatchframeParam[Path | None] = None):
        self.count = count
        self.items_file = items_file
        self.run_dir = _current_run_output_dir
        self.failed_file = _current_run_output_dir / "persisted.json"

    def __len__(self):
        return self.count

    def __iter__(self):
        (self.run_dir / "iterated").touch()
        if self.items_file is not None:
            yield from (int(line) for line in self.items_file.read_text().split())
            return
        yield from range(self.count)

    def persist_failed(self, failed):
        self.failed_file.write_text(json.dumps(sorted(failed)))

class Record(Service[int]):
    def __init__(self, log_file: BatchframeParam[Path] = Path("processed.txt"), sleep: BatchframeParam[float] = 0.002,
                 fail_file: BatchframeParam[Path] = Path("fail_every.txt")):
        self.fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self.sleep = sleep
        self.fail_every = int(fail_file.read_text()) if fail_file.exists() else 0

    async def process(self, item):
        await asyncio.sleep(self.sleep)
        if self.fail_every and item % self.fail_every == 0:
            raise ValueError(f"{item} is a multiple of {self.fail_every}")
        os.write(self.fd, f"{item}\\n".encode())
""".replace("from pathlib import Path", "import json\nfrom pathlib import Path")


@pytest.fixture
def job(tmp_path: Path) -> Path:
    build_file_tree(tmp_path, {"job.py": JOB})
    return tmp_path


def processed(folder: Path) -> Counter[int]:
    path = folder / "processed.txt"
    return Counter(int(x) for x in path.read_text().split()) if path.exists() else Counter()


def start(folder: Path, *args: str) -> subprocess.Popen[str]:
    executable = Path(sys.executable).parent / "batchframe"
    return subprocess.Popen(
        [str(executable), *args],
        cwd=folder,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def wait_for_lines(folder: Path, count: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(processed(folder).values()) < count:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.005)


def killed_run(folder: Path, signum: int, *extra: str) -> subprocess.Popen[str]:
    process = start(
        folder, "exec", "job.py", "-p", "concurrency=8", "-p", f"log_file={folder / 'processed.txt'}", *extra
    )
    wait_for_lines(folder, 300)  # a tenth of the run: the signal lands mid-run however loaded the machine is
    process.send_signal(signum)
    process.communicate(timeout=30)
    return process


def test_kill_9_then_resume_loses_nothing(job: Path) -> None:
    process = killed_run(job, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    run_dir = only_run_dir(job / "batchframe_outputs")
    before = processed(job)
    assert 0 < sum(before.values()) < 3000
    resumed = batchframe_cli("resume", run_dir, cwd=job)
    assert resumed.returncode == 0, resumed.stderr
    after = processed(job)
    assert set(after) == set(range(3000))  # nothing missing
    duplicates = sum(count - 1 for count in after.values())
    # The documented bound (failures-and-resume.md): items in flight and unsaved outcomes never
    # exceed two journal groups, 2 x max(concurrency, SAVE_GROUP_MIN); only those can run twice.
    assert duplicates <= 2 * max(8, SAVE_GROUP_MIN)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["succeeded"] == 3000  # the whole run, both parts
    assert summary["this_part"]["succeeded"] < 3000


def test_sigterm_then_resume_has_no_duplicates(job: Path) -> None:
    process = killed_run(job, signal.SIGTERM)
    assert process.returncode == 143
    run_dir = only_run_dir(job / "batchframe_outputs")
    assert {r["error_type"] for r in read_jsonl(run_dir / "failed.jsonl")} == {"NotProcessed"}
    resumed = batchframe_cli("resume", run_dir, cwd=job)
    assert resumed.returncode == 0, resumed.stderr
    after = processed(job)
    assert sorted(after) == list(range(3000))
    assert set(after.values()) == {1}
    assert not (run_dir / "failed.jsonl").read_text().strip()  # the not-processed records are gone: all done now
    # the journal agrees: nothing pending, nothing to retry, and resuming again says it is finished
    detail = batchframe_cli("runs", run_dir, cwd=job)
    assert "pending" in detail.stdout
    assert next(line for line in detail.stdout.splitlines() if "pending" in line).split()[-2] == "0"
    assert "nothing to retry" in batchframe_cli("retry", run_dir, cwd=job).stdout
    assert "finished already" in batchframe_cli("resume", run_dir, cwd=job).stdout


def test_stop_in_the_pause_shell_then_resume(job: Path) -> None:
    import pexpect
    from test_interactive import stop_from_the_shell

    env = {**os.environ, "IPYTHONDIR": str(job / "ipython"), "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm"}
    executable = str(Path(sys.executable).parent / "batchframe")
    args = ["exec", "job.py", "-p", "count=1500", "-p", "concurrency=4", "-p", "sleep=0.005"]
    child = pexpect.spawn(
        executable,
        [*args, "-p", f"log_file={job / 'processed.txt'}"],
        cwd=str(job),
        env=env,
        encoding="utf-8",
        timeout=30,
    )
    child.setwinsize(40, 160)
    child.expect(r"[1-9]\d* ok")
    child.sendintr()
    stop_from_the_shell(child)
    run_dir = only_run_dir(job / "batchframe_outputs")
    resumed = batchframe_cli("resume", run_dir, cwd=job)
    assert resumed.returncode == 0, resumed.stderr
    after = processed(job)
    assert sorted(after) == list(range(1500))
    assert set(after.values()) == {1}


def test_resume_of_a_finished_run_says_so(job: Path) -> None:
    done = batchframe_cli("exec", "job.py", "-p", "count=20", cwd=job)
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(job / "batchframe_outputs")
    again = batchframe_cli("resume", run_dir, cwd=job)
    assert again.returncode == 0
    assert "finished already" in again.stdout
    assert sum(processed(job).values()) == 20


def test_retry_runs_only_the_failed_items_in_a_new_folder(job: Path) -> None:
    (job / "fail_every.txt").write_text("7")
    first = batchframe_cli("exec", "job.py", "-p", "count=100", cwd=job)
    assert first.returncode == 3
    first_dir = only_run_dir(job / "batchframe_outputs")
    assert json.loads((first_dir / "persisted.json").read_text()) == list(range(0, 100, 7))
    (job / "fail_every.txt").write_text("14")
    retried = batchframe_cli("retry", first_dir, cwd=job)
    assert retried.returncode == 3, retried.stderr
    new_dirs = [p for p in (job / "batchframe_outputs").iterdir() if p.is_dir() and p != first_dir]
    assert len(new_dirs) == 1
    new_dir = new_dirs[0]
    assert not (new_dir / "iterated").exists()  # the Source was built but not iterated
    assert json.loads((new_dir / "persisted.json").read_text()) == list(range(0, 100, 14))  # only what failed again
    assert sorted(processed(job)) == [
        i for i in range(100) if i % 14
    ]  # each 7-multiple that is not a 14-multiple, once
    summary = json.loads((new_dir / "summary.json").read_text())
    assert summary["succeeded"] == len(range(0, 100, 7)) - len(range(0, 100, 14))
    listing = batchframe_cli("runs", cwd=job)
    assert listing.returncode == 0
    assert first_dir.name in listing.stdout and new_dir.name in listing.stdout
    assert "(retry)" in listing.stdout
    detail = batchframe_cli("runs", new_dir, cwd=job)
    assert detail.returncode == 0
    assert "ValueError" in detail.stdout
    assert str(first_dir.resolve()) in detail.stdout


def test_retry_of_a_run_without_failures(job: Path) -> None:
    batchframe_cli("exec", "job.py", "-p", "count=5", cwd=job)
    result = batchframe_cli("retry", only_run_dir(job / "batchframe_outputs"), cwd=job)
    assert result.returncode == 0
    assert "nothing to retry" in result.stdout


def test_resume_refuses_when_the_parameters_changed(job: Path) -> None:
    killed_run(job, signal.SIGTERM)
    run_dir = only_run_dir(job / "batchframe_outputs")
    (job / "job.py").write_text(
        JOB.replace("sleep: BatchframeParam[float] = 0.002", "sleep: BatchframeParam[float] = 0.001")
    )
    result = batchframe_cli("resume", run_dir, cwd=job)
    assert result.returncode == 2
    assert "changed since this run started" in result.stderr
    assert "sleep: 0.002 -> 0.001" in result.stderr


def test_resume_of_a_run_from_before_a_new_setting_existed(job: Path) -> None:
    """A run's journal from a batchframe without a setting added since (log_levels) resumes: no job changed."""
    from batchframe.runfolder.journal import Journal

    killed_run(job, signal.SIGTERM)
    run_dir = only_run_dir(job / "batchframe_outputs")
    journal = Journal.open(run_dir)
    try:
        fingerprint = dict(journal.meta()["fingerprint"])
        del fingerprint["log_levels"]
        journal.set_meta(fingerprint=fingerprint)
    finally:
        journal.close()
    result = batchframe_cli("resume", run_dir, cwd=job)
    assert result.returncode == 0, result.stderr  # no item fails in this job: the rest was processed
    assert "changed since this run started" not in result.stderr
    assert sum(processed(job).values()) >= 3000


def test_a_source_that_shrank_is_reported(job: Path) -> None:
    items = job / "items.txt"
    items.write_text("\n".join(map(str, range(3000))))
    killed_run(job, signal.SIGTERM, "-p", f"items_file={items}")
    run_dir = only_run_dir(job / "batchframe_outputs")
    items.write_text("\n".join(map(str, range(50))))
    result = batchframe_cli("resume", run_dir, cwd=job)
    assert "the journal knows" in result.stderr
    assert "source yielded 50 items" in result.stderr.replace("\n", " ")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert any("the journal knows" in warning for warning in summary["warnings"])


def test_two_resumes_at_once(job: Path) -> None:
    killed_run(job, signal.SIGTERM, "-p", "sleep=0.01")
    run_dir = only_run_dir(job / "batchframe_outputs")
    first = start(job, "resume", str(run_dir))
    try:
        deadline = time.monotonic() + 20
        while "Resuming" not in (run_dir / "logs.txt").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        second = batchframe_cli("resume", run_dir, cwd=job)
        assert second.returncode == 2
        assert "in use by another batchframe process" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)


@pytest.mark.parametrize("command", ["resume", "retry", "runs"])
def test_a_folder_that_is_not_a_run(job: Path, command: str) -> None:
    missing = batchframe_cli(command, job / "nope", cwd=job)
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
    not_a_run = batchframe_cli(command, job, cwd=job)
    assert not_a_run.returncode == 2
    assert "not a batchframe run folder" in not_a_run.stderr


def test_a_corrupt_journal_is_refused_and_kept(job: Path) -> None:
    run_dir = job / "batchframe_outputs" / "2026-01-01T00-00-00"
    run_dir.mkdir(parents=True)
    (run_dir / "journal.sqlite").write_bytes(b"garbage" * 100)
    result = batchframe_cli("resume", run_dir, cwd=job)
    assert result.returncode == 2
    assert "damaged" in result.stderr and "Traceback" not in result.stderr
    assert (run_dir / "journal.sqlite").read_bytes() == b"garbage" * 100
    listing = batchframe_cli("runs", cwd=job)
    assert listing.returncode == 0
    assert "damaged" in listing.stdout


def test_runs_without_any_run_yet(tmp_path: Path) -> None:
    result = batchframe_cli("runs", "-d", tmp_path / "nothing-here", cwd=tmp_path)
    assert result.returncode == 0
    assert "No runs in" in result.stdout and "batchframe exec PATH" in result.stdout
