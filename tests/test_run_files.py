"""Run folders hold parameters and pickled items: owner-only files, and never written through a symlink."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import batchframe_cli, only_run_dir

JOB = """
from batchframe import BatchframeParam, Service, Source

class Numbers(Source[int]):
    def __init__(self, count: BatchframeParam[int] = 6) -> None:
        self.count = count
    def __iter__(self):
        return iter(range(self.count))

class Odd(Service[int]):
    async def process(self, item):
        if item % 2:
            raise ValueError(f"{item} is odd")
"""


def _run(make_project: Callable[..., Path], tmp_path: Path) -> tuple[Path, Path]:
    project = make_project({"job.py": JOB})
    done = batchframe_cli("exec", project / "job.py", "-d", tmp_path / "out", cwd=project)
    assert done.returncode == 3, done.stderr
    return project, only_run_dir(tmp_path / "out")


def test_the_run_folder_and_its_records_are_the_owners_alone(make_project: Callable[..., Path], tmp_path: Path) -> None:
    _, run_dir = _run(make_project, tmp_path)
    assert run_dir.stat().st_mode & 0o777 == 0o700
    for name in ("journal.sqlite", "failed.jsonl", "summary.json", "status.json"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o600, name


@pytest.mark.parametrize("command", ["resume", "retry"])
@pytest.mark.parametrize("linked", ["failed.jsonl", "journal.sqlite"])
def test_resume_and_retry_refuse_symlinked_run_files(
    make_project: Callable[..., Path], tmp_path: Path, command: str, linked: str
) -> None:
    project, run_dir = _run(make_project, tmp_path)
    target = tmp_path / f"elsewhere-{linked}"
    (run_dir / linked).rename(target)
    (run_dir / linked).symlink_to(target)
    before = target.read_bytes()
    refused = batchframe_cli(command, run_dir, "--no-input", cwd=project)
    assert refused.returncode == 2, refused.stderr
    assert f"symbolic links ({linked})" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert target.read_bytes() == before  # nothing was written through the link
