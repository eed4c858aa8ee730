"""User code that changes the process under the run: ``os.chdir``, closed standard streams. The records stand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import batchframe_cli, only_run_dir, read_jsonl

SOURCE = """
import os, sys
from batchframe import Service, Source
class Numbers(Source[int]):
    def __len__(self):
        return 20
    def __iter__(self):
        return iter(range(20))
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("executor", ["asyncio", "threads"])
def test_os_chdir_in_process_leaves_every_record_in_the_run_folder(
    make_project: Any, tmp_path: Path, executor: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    job = (
        SOURCE
        + f"""
class Work(Service[int]):
    def process(self, item):
        os.chdir({str(elsewhere)!r})
        if item == 3:
            raise ValueError("three")
"""
    )
    project = make_project({"job.py": job})
    result = batchframe_cli("exec", "job.py", "-p", f"executor={executor}", cwd=project)
    assert result.returncode == 3, result.stderr
    run_dir = only_run_dir(project / "batchframe_outputs")
    assert [record["item"] for record in read_jsonl(run_dir / "failed.jsonl")] == [3]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["succeeded"], summary["failed"], summary["problems"]) == (19, 1, [])
    assert "deleted" not in result.stderr
    assert not (elsewhere / "batchframe_outputs").exists()


@pytest.mark.timeout(60)
def test_closing_stdout_and_stderr_in_process_does_not_abort_the_run(make_project: Any) -> None:
    job = (
        SOURCE
        + """
class Work(Service[int]):
    def process(self, item):
        if item == 3:
            sys.stdout.close()
            sys.stderr.close()
        if item == 5:
            raise ValueError("five")
"""
    )
    project = make_project({"job.py": job})
    result = batchframe_cli("exec", "job.py", cwd=project)
    assert result.returncode == 3, result.stderr
    summary = json.loads((only_run_dir(project / "batchframe_outputs") / "summary.json").read_text())
    assert (summary["succeeded"], summary["failed"]) == (19, 1)
    assert "batchframe run completed with failures" in result.stderr  # the summary reaches the console again
    assert "lost sys.stderr" not in result.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "args",
    [
        ["exec", "LONG"],
        ["exec", "job.py", "-d", "LONG"],
        ["exec", "job.py", "-d", "batchframe_outputs/LONG/runs"],  # under a folder yet to be made
        ["exec", "job.py", "--dry-run", "-d", "LONG"],
        ["runs", "-d", "LONG"],
        ["runs", "LONG"],
        ["resume", "LONG"],
        ["retry", "LONG"],
        ["ui", "-d", "LONG", "--port", "0", "--no-browser"],
        ["exec", "loop1"],
        ["exec", "loop1/job.py"],
        ["exec", "job.py", "-d", "loop1"],
        ["runs", "-d", "loop1"],
        ["runs", "loop1"],
        ["resume", "loop1"],
        ["retry", "loop1"],
    ],
)
def test_a_path_the_system_refuses_is_a_usage_error_with_a_panel(make_project: Any, args: list[str]) -> None:
    project = make_project(
        {"job.py": SOURCE + "\nclass Work(Service[int]):\n    def process(self, item):\n        pass\n"}
    )
    (project / "loop1").symlink_to(project / "loop2")
    (project / "loop2").symlink_to(project / "loop1")
    result = batchframe_cli(*[arg.replace("LONG", "x" * 300) for arg in args], cwd=project, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "Usage error: The path " in result.stderr and "Traceback" not in result.stderr
    why = "longer than a file name may be (255 bytes)" if "x" * 300 in result.stderr else "symbolic links form a loop"
    assert why in result.stderr
    assert not (project / "batchframe_outputs").exists()


@pytest.mark.timeout(60)
def test_a_secret_carried_inside_an_item_is_redacted_in_failed_jsonl(make_project: Any) -> None:
    job = """
from batchframe import BatchframeParam, Secret, Service, Source

class Calls(Source[dict]):
    def __init__(self, token: BatchframeParam[Secret]):
        self.token = token.get_secret_value()
    def __iter__(self):
        yield {"id": 1, "auth": f"Bearer {self.token}"}
        yield {"id": 2, "auth": self.token}

class Work(Service[dict]):
    def process(self, item):
        raise ValueError("refused")
"""
    project = make_project({"job.py": job})
    token = 'tok"en\\\\é-5d1f'  # quotes, a backslash and non-ASCII: JSON escapes them
    result = batchframe_cli("exec", "job.py", cwd=project, BATCHFRAME_PARAM_TOKEN=token)
    assert result.returncode == 3, result.stderr
    failed = (only_run_dir(project / "batchframe_outputs") / "failed.jsonl").read_text()
    assert token not in failed and json.dumps(token)[1:-1] not in failed and "5d1f" not in failed
    assert [
        record["item"]["auth"] for record in read_jsonl(only_run_dir(project / "batchframe_outputs") / "failed.jsonl")
    ] == ["Bearer **********", "**********"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "configure",
    [
        "logging.basicConfig(level=logging.INFO)",  # common at the top of a script
        "logging.basicConfig(level=logging.INFO, handlers=[type('Mine', (logging.StreamHandler,), {})()])",
        "from rich.logging import RichHandler; logging.basicConfig(level=logging.INFO, handlers=[RichHandler()])",
    ],
)
def test_basic_config_in_a_job_prints_each_line_once_and_leaks_no_secret(make_project: Any, configure: str) -> None:
    job = f"""
import logging
{configure}
from batchframe import BatchframeParam, Secret, Service, Source

class Numbers(Source[int]):
    def __iter__(self):
        return iter(range(2))

class Work(Service[int]):
    def __init__(self, token: BatchframeParam[Secret]):
        self.token = token.get_secret_value()
    def process(self, item):
        logging.getLogger("job").info("calling with %s for item %d", self.token, item)
"""
    project = make_project({"job.py": job})
    result = batchframe_cli("exec", "job.py", cwd=project, BATCHFRAME_PARAM_TOKEN="s3cret-value-77", COLUMNS="300")
    assert result.returncode == 0, result.stderr
    assert "s3cret-value-77" not in result.stderr + result.stdout
    assert result.stderr.count("calling with ********** for item 0") == 1  # once, not twice
    assert "calling with" not in result.stdout  # a handler of the user's to stdout is set aside too
    logs = (only_run_dir(project / "batchframe_outputs") / "logs.txt").read_text()
    assert "calling with ********** for item 1" in logs and "s3cret-value-77" not in logs


@pytest.mark.timeout(60)
@pytest.mark.parametrize("change", ["logging.basicConfig(force=True)", "logging.disable(logging.CRITICAL)"])
def test_user_logging_changes_do_not_truncate_logs_txt(make_project: Any, change: str) -> None:
    job = f"""
import logging
from batchframe import Service, Source

class Numbers(Source[int]):
    def __iter__(self):
        return iter(range(6))

class Work(Service[int]):
    def process(self, item):
        if item == 1:
            {change}
            logging.getLogger("job").info("right after the change")
            raise ValueError("one")  # batchframe's failure line follows at once
        logging.getLogger("job").info("done %d", item)
"""
    project = make_project({"job.py": job})
    result = batchframe_cli("exec", "job.py", "-p", "concurrency=1", cwd=project)
    assert result.returncode == 3, result.stderr
    logs = (only_run_dir(project / "batchframe_outputs") / "logs.txt").read_text()
    # Nothing is lost, not even the records made the instant after the change (no timer decides).
    assert "right after the change" in logs and "done 5" in logs  # the job's records after the change
    assert "Item 1 failed after 1 attempt(s): ValueError: one" in logs  # batchframe's own failure line
    assert "Run ended: completed (exit code 3)" in logs
    assert logs.count("put back") + logs.count("is undone") == 1  # said once


@pytest.mark.timeout(60)
def test_the_journals_text_of_a_failed_item_has_no_secret_but_retry_gets_the_item(make_project: Any) -> None:
    import sqlite3

    job = """
from batchframe import BatchframeParam, Secret, Service, Source

class Calls(Source[str]):
    def __init__(self, token: BatchframeParam[Secret]):
        self.token = token.get_secret_value()
    def __iter__(self):
        yield f"Bearer {self.token}"

class Work(Service[str]):
    def process(self, item):
        raise ValueError("refused")
"""
    project = make_project({"job.py": job})
    result = batchframe_cli("exec", "job.py", cwd=project, BATCHFRAME_PARAM_TOKEN="s3cret-in-item")
    assert result.returncode == 3, result.stderr
    run_dir = only_run_dir(project / "batchframe_outputs")
    with sqlite3.connect(run_dir / "journal.sqlite") as db:
        rows = db.execute("SELECT * FROM items").fetchall()
    texts = [value for row in rows for value in row if isinstance(value, str)]  # the pickle is bytes: kept for retry
    assert texts and not any("s3cret-in-item" in text for text in texts)
    assert any("**********" in text for text in texts)
    retried = batchframe_cli("retry", run_dir, cwd=project, BATCHFRAME_PARAM_TOKEN="s3cret-in-item")
    assert retried.returncode == 3, retried.stderr  # the item itself came back from the pickle and failed again
