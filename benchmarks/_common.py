"""Shared bits of the benchmarks: writing a throwaway project and running it through batchframe."""

from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path

from batchframe.run import RunResult, run_project


def write_project(body: str) -> Path:
    """Write a one-file project in a fresh temporary directory and return the file."""
    folder = Path(tempfile.mkdtemp(prefix="batchframe-bench-"))
    path = folder / "bench_job.py"
    path.write_text(textwrap.dedent(body))
    return path


def run(path: Path, *params: str) -> RunResult:
    """Run a project the way ``batchframe exec`` does (logging and progress on), outputs in its folder."""
    return run_project(path, params=list(params), output_dir=path.parent / "out")


def report(title: str, rows: list[tuple[str, str]]) -> None:
    """Print a small aligned table."""
    print(title)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
