"""Start-up, whole process (median of 5): ``--help``, a 10-item ``exec``, ``runs``; and what ``--help`` imports.

Targets: ``--help`` under 150 ms; a 10-item ``exec`` (journal, logs, summary and all) and ``runs``
at most 200 ms; ``--help`` never imports copier, IPython or questionary (the test suite checks that too).

Usage: python benchmarks/startup.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import byte_compile_batchframe, report, write_project

TEN_ITEMS = """
from batchframe import Service, Source

class Items(Source[int]):
    def __iter__(self):
        return iter(range(10))

class NoOp(Service[int]):
    async def process(self, item):
        pass
"""

THIRD_PARTY = ("typer", "annotated_doc", "shellingham", "click", "typing_extensions", "batchframe")
HEAVY = ("copier", "IPython", "questionary", "kink", "asyncio", "rich", "sqlite3")


def median_ms(command: list[str], runs: int = 5, cwd: Path | None = None) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, cwd=cwd)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    byte_compile_batchframe()
    executable = str(Path(sys.executable).parent / "batchframe")
    help_ms = median_ms([executable, "--help"])
    python_ms = median_ms([sys.executable, "-c", "pass"])
    job = write_project(TEN_ITEMS)
    exec_ms = median_ms([executable, "exec", job.name], cwd=job.parent)
    runs_ms = median_ms([executable, "runs"], cwd=job.parent)
    typer_ms = median_ms([sys.executable, "-c", "import typer"])
    code = (
        "import json, sys\nfrom batchframe.cli.app import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\nprint(json.dumps(sorted(sys.modules)))"
    )
    listing = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    modules = json.loads(listing.splitlines()[-1])
    top = sorted({name.split(".")[0] for name in modules if not name.startswith("_")})
    report(
        "start-up",
        [
            ("batchframe --help, median of 5 (target < 150 ms)", f"{help_ms:.0f} ms"),
            ("batchframe exec (10 items), median of 5 (target <= 200 ms)", f"{exec_ms:.0f} ms"),
            ("batchframe runs (5 runs), median of 5 (target <= 200 ms)", f"{runs_ms:.0f} ms"),
            ("python -c pass", f"{python_ms:.0f} ms"),
            ("python -c 'import typer'", f"{typer_ms:.0f} ms"),
            ("modules imported by --help", f"{len(modules)} ({len(top)} top-level)"),
            ("heavy modules imported", ", ".join(h for h in HEAVY if h in top) or "none"),
            (
                "third-party top-level modules",
                ", ".join(
                    t
                    for t in top
                    if t in ("typer", "annotated_doc", "shellingham", "click", "typing_extensions", "batchframe")
                ),
            ),
        ],
    )


if __name__ == "__main__":
    main()
