"""Readable at any width, on a terminal and off it: the real CLI at 80 and 120 columns, and piped.

"On a terminal" is rich's decision: ``TTY_COMPATIBLE=1`` makes a subprocess whose output is a pipe
render as on a terminal (``NO_COLOR=1``, set by ``batchframe_cli``, keeps colours out); without it,
the output is a pipe: plain lines. The live progress line needs a real terminal (pexpect).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest
from helpers import batchframe_cli, build_file_tree, only_run_dir

from batchframe.runfolder.stats import Stats

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

MODES_PROJECT = """
import asyncio
import os
import signal
from batchframe import BatchframeParam, Service, Source, inject

@inject
class Numbers(Source[int]):
    def __init__(self, count: BatchframeParam[int] = 12, mode: BatchframeParam[str] = "ok"):
        self.count = count
        self.mode = mode

    def __len__(self):
        return self.count

    def __iter__(self):
        for i in range(self.count):
            if self.mode == "fatal" and i == 6:
                raise RuntimeError("the source broke")
            yield i

@inject
class Work(Service[int]):
    def __init__(self, source: Source[int]):
        self.mode = source.mode

    async def process(self, item):
        if self.mode in ("fail", "stop") and item == 3:
            raise ValueError(item)
        if self.mode == "stop" and item == 4:
            await asyncio.sleep(30)  # in flight when the run is stopped: not processed
        if self.mode == "stop" and item == 5:
            os.kill(os.getpid(), signal.SIGTERM)  # stop...
            os.kill(os.getpid(), signal.SIGTERM)  # ...now: the items in flight are cancelled
"""

PROJECT_FILE = "a_project_with_a_rather_long_module_name.py"
MODES = {  # -p mode=...: (the summary's heading, the exit code)
    "ok": ("completed", 0),
    "fail": ("completed with failures", 3),
    "stop": ("stopped", 143),
    "fatal": ("failed", 1),
}


def terminal(columns: int) -> dict[str, str]:
    """The environment of a process that renders as on a terminal ``columns`` wide (its output still a pipe)."""
    return {"COLUMNS": str(columns), "TTY_COMPATIBLE": "1"}


def screen_lines(output: str) -> list[str]:
    """What a terminal shows of ``output``, line by line: escape codes removed, each redrawn line apart."""
    return [line for line in re.split(r"[\r\n]", ANSI.sub("", output)) if line]


def assert_fits(output: str, columns: int) -> None:
    too_wide = [line for line in screen_lines(output) if len(line) > columns]
    assert not too_wide, too_wide


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    """One real run per mode in the same output folder, rendered as on an 80-column terminal."""
    root = build_file_tree(tmp_path_factory.mktemp("runs"), {PROJECT_FILE: MODES_PROJECT})
    done: dict[str, tuple[Path, subprocess.CompletedProcess[str]]] = {}
    for mode in MODES:
        before = set((root / "out").glob("*"))
        args = ("exec", PROJECT_FILE, "-p", f"mode={mode}", "-p", "concurrency=2", "-d", "out")
        result = batchframe_cli(*args, cwd=root, **terminal(80))
        (run_dir,) = set((root / "out").glob("*")) - before
        done[mode] = (run_dir, result)
    return done


# ---------------------------------------------------------------------------------------- summary


@pytest.mark.parametrize("mode", MODES)
def test_the_summary_names_the_outcome_and_fits_80_columns(runs, mode: str) -> None:
    run_dir, result = runs[mode]
    heading, exit_code = MODES[mode]
    assert result.returncode == exit_code, result.stderr
    lines = screen_lines(result.stderr)
    assert f"batchframe run {heading}" in lines
    assert f"Run folder: {run_dir.relative_to(run_dir.parent.parent)}" in lines  # whole, on its own line
    assert_fits(result.stderr, 80)


def test_failures_by_type_are_their_own_table_and_not_processed_items_are_apart(runs) -> None:
    _, result = runs["stop"]
    lines = screen_lines(result.stderr)
    table = lines.index("Failed items by exception type")
    assert any(re.fullmatch(r"│ ValueError\s+│\s+1 │", line) for line in lines[table:])
    counts = lines[: table - 1]
    assert any(re.fullmatch(r"│ not processed\s+│\s+[1-9]\d* │", line) for line in counts)
    assert "NotProcessed" not in result.stderr  # not processed items are not a kind of failure
    assert not any(line.startswith("│   ") for line in lines)  # nothing indented under "rate"


def test_a_fatal_run_says_why(runs) -> None:
    lines = screen_lines(runs["fatal"][1].stderr)
    assert lines[lines.index("batchframe run failed") + 1] == "Fatal error: RuntimeError: the source broke"


# ------------------------------------------------------------------------------------------- runs


def runs_table(runs, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    run_dir = next(iter(runs.values()))[0]
    result = batchframe_cli("runs", *args, "-d", "out", cwd=run_dir.parent.parent, **env)
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize("columns", [80, 120])
def test_the_runs_table_shows_every_run_folder_whole_and_fits(runs, columns: int) -> None:
    result = runs_table(runs, **terminal(columns))
    assert_fits(result.stdout, columns)
    for run_dir, _ in runs.values():
        assert any(re.match(rf"│ {re.escape(run_dir.name)}\s+│", line) for line in screen_lines(result.stdout))
    header = next(line for line in screen_lines(result.stdout) if "run folder" in line)
    assert ("duration" in header) == (columns == 120)  # at 80 columns, other columns give way first
    assert "started" not in header  # the run folder's name is its start time


def test_one_run_in_detail_has_no_none_and_no_wrapped_title(runs) -> None:
    run_dir, _ = runs["stop"]
    result = runs_table(runs, str(run_dir.relative_to(run_dir.parent.parent)), **terminal(80))
    lines = screen_lines(result.stdout)
    assert lines[0] == f"Run folder: {run_dir.relative_to(run_dir.parent.parent)}"
    assert "None" not in result.stdout
    assert lines[1] == f"Project: {run_dir.parent.parent / PROJECT_FILE}"
    assert any(re.fullmatch(r"│ config\s+│ -\s+│", line) for line in lines)
    assert any(re.fullmatch(r"│ not processed\s+│ [1-9]\d*\s+│", line) for line in lines)
    assert all(len(line) <= 80 for line in lines[2:])  # the paths above may be longer: never cut
    assert "NotProcessed" not in result.stdout


# -------------------------------------------------------------------------------- off a terminal


def test_off_a_terminal_lines_are_plain_and_whole(make_project, tmp_path: Path) -> None:
    root = make_project({"job.py": MODES_PROJECT})
    output = tmp_path.joinpath(*["a_deep_folder_for_the_runs"] * 6)  # longer than 80 columns
    result = batchframe_cli("exec", root / "job.py", "-p", "mode=fail", "-d", output, cwd=tmp_path, COLUMNS="80")
    assert result.returncode == 3, result.stderr
    run_dir = only_run_dir(output)
    lines = result.stderr.splitlines()
    assert f"Run folder: {run_dir}" in lines
    logged = rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} INFO     batchframe\.run\.execute: Run folder: {re.escape(str(run_dir))}"
    assert any(re.fullmatch(logged, line) for line in lines)  # as in logs.txt: one line, time and level
    assert [line for line in lines if line != line.rstrip()] == []  # nothing padded to a width
    assert "╭" not in result.stderr


def test_off_a_terminal_the_progress_line_is_one_line() -> None:
    from rich.console import Console

    from batchframe.run.progress import LogProgress
    from batchframe.runfolder.logs import run_logging

    out = io.StringIO()
    stats = Stats(total=3_000_000, succeeded=1_234_567, failed=12_345, retrying=1_234, in_flight=512)
    with run_logging(None, console=Console(file=out, width=80)), LogProgress(stats, interval_s=0.01):
        deadline = time.monotonic() + 5
        while "ETA" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = [line for line in out.getvalue().splitlines() if "Progress:" in line]
    assert lines, out.getvalue()
    assert all(
        re.fullmatch(r"\S+ \S+ INFO     batchframe\.run\.progress: Progress: .+, ETA \S+", line) for line in lines
    )
    assert len(lines[0]) > 80  # a long line stays one line: nothing wraps it at the console's width


# ----------------------------------------------------------------------------------------- params

CONFIGURED_PROJECT = {
    "job.py": """
        from batchframe import BatchframeParam, Service, Source

        class Numbers(Source[int]):
            def __init__(self, the_number_of_items_to_generate_for_this_run: BatchframeParam[int] = 3):
                self.count = the_number_of_items_to_generate_for_this_run

            def __iter__(self):
                return iter(range(self.count))

        class Work(Service[int]):
            async def process(self, item):
                pass
    """,
    "config/config_dev.py": """
        from dataclasses import dataclass
        from batchframe import BatchframeParam, Configuration

        @dataclass
        class Dev(Configuration):
            dev_only_setting: BatchframeParam[int] = 1
    """,
    "config/config_prod.py": """
        from dataclasses import dataclass
        from batchframe import Configuration

        @dataclass
        class Prod(Configuration):
            concurrency: int = 32
    """,
}
LONG_NAME = "the_number_of_items_to_generate_for_this_run"


def test_params_lists_the_projects_own_first_then_the_runtime_settings(make_project, tmp_path: Path) -> None:
    root = make_project(CONFIGURED_PROJECT)
    result = batchframe_cli("params", "job.py", cwd=root, **terminal(80))
    assert result.returncode == 0, result.stderr
    assert_fits(result.stdout, 80)
    lines = screen_lines(result.stdout)
    own = next(i for i, line in enumerate(lines) if re.match(rf"│ {LONG_NAME} │", line))  # never cut
    runtime = next(i for i, line in enumerate(lines) if line.startswith("Runtime settings"))
    settings = next(i for i, line in enumerate(lines) if re.match(r"│ concurrency\s+│", line))
    assert own < runtime < settings
    assert "dev_only_setting" not in result.stdout  # no config was chosen...
    assert "-c NAME adds that config's own parameters" in " ".join(line.strip() for line in lines)  # ...and it says so
    chosen = batchframe_cli("params", "job.py", "-c", "config_dev", cwd=root, **terminal(80))
    assert "dev_only_setting" in chosen.stdout and "-c NAME" not in chosen.stdout


# ----------------------------------------------------------------------------------------- errors

KINK_PROJECT = """
from batchframe import Service, Source, inject

@inject
class Numbers(Source[int]):
    def __init__(self):
        {source}

    def __iter__(self):
        return iter(range(3))

@inject
class Work(Service[int]):
    def __init__(self, source: Source[int]):
        {service}

    async def process(self, item):
        pass
"""


@pytest.mark.parametrize(
    ("source", "service", "error"),
    [
        ("pass", "raise RuntimeError('no service here')", "RuntimeError: no service here"),
        ("raise OSError('no input file')", "pass", "OSError: no input file"),
    ],
)
def test_an_error_panel_shows_the_users_frames_only(tmp_path: Path, source: str, service: str, error: str) -> None:
    folder = tmp_path.joinpath(*["a_folder_with_a_long_name"] * 4)  # a frame's path longer than 80 columns
    job = build_file_tree(folder, {"job.py": KINK_PROJECT.format(source=source, service=service)}) / "job.py"
    line = 6 if service == "pass" else 14
    frame = f'  File "{job}", line {line}, in __init__'
    on_terminal = batchframe_cli("exec", job, cwd=tmp_path, **terminal(80))
    piped = batchframe_cli("exec", job, cwd=tmp_path, COLUMNS="80")
    for result in (on_terminal, piped):
        assert result.returncode == 1, result.stderr
        assert "site-packages" not in result.stderr and "kink" not in result.stderr
        assert frame in screen_lines(result.stderr)  # the path whole, on one line
        assert error in result.stderr
    assert "╭" in on_terminal.stderr
    assert "╭" not in piped.stderr and piped.stderr.startswith(f"Run failed: Building the project failed: {error}")


# ----------------------------------------------------------------------------------- live progress


def test_the_live_line_keeps_count_percentage_and_eta_when_narrow() -> None:
    from batchframe.run.progress import live_line

    stats = Stats(total=300, succeeded=100, failed=13, retrying=2, in_flight=8)
    for width in (200, 120, 80, 60, 45):
        line = live_line(stats, width=width, spinner="⠋")
        assert line.cell_len <= width, (width, line.plain)
        assert "113/300" in line.plain and "38%" in line.plain and "ETA" in line.plain, line.plain
    assert "8 in flight" in live_line(stats, width=200).plain
    quiet = live_line(Stats(total=300, succeeded=100), width=80).plain
    assert "failed" not in quiet and "retrying" not in quiet  # nothing to report at 80 columns


SLOW_PROJECT = """
import asyncio
from batchframe import Service, Source

class Numbers(Source[int]):
    def __len__(self):
        return 300

    def __iter__(self):
        return iter(range(300))

class Slow(Service[int]):
    async def process(self, item):
        await asyncio.sleep(0.01)
"""


@pytest.mark.timeout(60)
def test_on_an_80_column_terminal_the_live_line_fits_and_says_paused(tmp_path: Path) -> None:
    from batchframe.runfolder.live import send_control

    build_file_tree(tmp_path, {"job.py": SLOW_PROJECT})
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "80", "LINES": "24"}
    env.pop("NO_COLOR", None)
    executable = str(Path(sys.executable).parent / "batchframe")
    args = ["exec", "job.py", "-p", "concurrency=2", "-d", "out"]
    child = pexpect.spawn(
        executable, args, cwd=str(tmp_path), env=env, encoding="utf-8", timeout=30, dimensions=(24, 80)
    )
    child.logfile_read = screen = io.StringIO()
    try:
        child.expect(r"[1-9]\d*/300")
        run_dir = only_run_dir(tmp_path / "out")
        send_control(run_dir, "pause")
        child.expect("paused")
        send_control(run_dir, "resume")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    frames = [line for line in screen_lines(screen.getvalue()) if "/300" in line]
    assert any("paused" in frame for frame in frames)
    for frame in frames:
        assert len(frame) <= 80 and re.search(r"\d+/300 \d+%", frame) and "ETA" in frame, frame


# -------------------------------------------------------------------------------------------- dask

DASK_PROJECT = """
import logging
import distributed  # before batchframe's handlers: distributed gives its loggers stderr handlers of their own
from batchframe import Service, Source

class Numbers(Source[int]):
    def __len__(self):
        return 4

    def __iter__(self):
        logging.getLogger("distributed.gc").warning("full garbage collections took 12% CPU time")
        return iter(range(4))

class Work(Service[int]):
    def process(self, item):
        pass
"""


@pytest.mark.timeout(120)
def test_dasks_own_log_lines_stay_out_of_the_console(make_project, tmp_path: Path) -> None:
    root = make_project({"job.py": DASK_PROJECT})
    args = ("exec", root / "job.py", "-p", "executor=dask", "-p", "concurrency=2", "-d", "out")
    result = batchframe_cli(*args, cwd=tmp_path, timeout=100)
    assert result.returncode == 0, result.stderr
    assert "Dask cluster ready" in result.stderr
    assert "distributed" not in result.stderr and "garbage collections" not in result.stderr
    logs = (only_run_dir(tmp_path / "out") / "logs.txt").read_text()
    assert "distributed.scheduler" in logs and "distributed.gc: full garbage collections" in logs


# ---------------------------------------------------------------------------- found from outside

KILLED_PROJECT = """
import os
import signal
from batchframe import Service, Source

class Numbers(Source[int]):
    def __len__(self):
        return 4

    def __iter__(self):
        return iter(range(4))

class Dies(Service[int]):
    async def process(self, item):
        os.kill(os.getpid(), signal.SIGKILL)  # the run never ends: its journal has no exit code
"""


def test_at_80_columns_a_killed_run_does_not_push_pending_out_of_the_runs_table(make_project) -> None:
    broken = KINK_PROJECT.format(source="1 / 0", service="pass")
    root = make_project({"a_job_that_dies.py": KILLED_PROJECT, "broken.py": broken})
    assert batchframe_cli("exec", "a_job_that_dies.py", cwd=root).returncode == -9
    assert batchframe_cli("exec", "broken.py", cwd=root).returncode == 1
    result = batchframe_cli("runs", cwd=root, **terminal(80))
    assert result.returncode == 0, result.stderr
    assert_fits(result.stdout, 80)
    header = next(line for line in screen_lines(result.stdout) if "run folder" in line)
    assert "pending" in header, result.stdout  # the exit column wraps "running or killed" instead
    assert "killed" in result.stdout and "failed" in result.stdout
    failed_to_start = max((root / "batchframe_outputs").iterdir())
    detail = batchframe_cli("runs", failed_to_start, cwd=root, **terminal(80)).stdout
    assert any(re.fullmatch(r"│ outcome\s+│ failed to start\s+│", line) for line in screen_lines(detail)), detail
    assert "failed_to_start" not in detail


def test_a_run_folders_name_alone_gets_a_hint_with_its_whole_path(make_project) -> None:
    root = make_project({"job.py": MODES_PROJECT})
    assert batchframe_cli("exec", "job.py", "-p", "count=2", cwd=root).returncode == 0
    name = only_run_dir(root / "batchframe_outputs").name  # what the table of `batchframe runs` shows
    for command in ("runs", "resume", "retry"):
        result = batchframe_cli(command, name, cwd=root)
        assert result.returncode == 2, result.stderr
        assert f"Did you mean batchframe_outputs/{name}?" in result.stderr


def test_the_rate_counts_the_items_processed_not_those_a_stop_left() -> None:
    stats = Stats(succeeded=30, failed=10, not_processed=960, started_at=100.0, finished_at=110.0)
    assert stats.rate_per_s == 4.0
    assert "rate='4.0 items/s'" in repr(stats)


ABSTRACT_CONFIG = """
from dataclasses import dataclass
from batchframe import Configuration

@dataclass
class JobConfig(Configuration):
    pass
"""


def test_off_a_terminal_a_message_is_one_line_whatever_its_length(make_project) -> None:
    root = make_project({"job/__init__.py": "", "job/config/__init__.py": ABSTRACT_CONFIG})
    name = "an_environment_whose_name_is_long_enough_to_pass_eighty_columns"
    result = batchframe_cli("new-config", name, cwd=root, COLUMNS="80")
    assert result.returncode == 0, result.stderr
    created, command = result.stdout.splitlines()  # neither wrapped at the console's 80 columns
    assert created.startswith("Created ") and created.endswith(f"config_{name}.py. Use it with:")
    assert command == f"  batchframe exec job -c config_{name}"


LONG_PATH = "/" + "/".join(["a_folder_with_a_rather_long_name"] * 4) + "/job.py"


def test_on_a_terminal_an_error_with_a_path_wider_than_a_panel_is_plain_lines(tmp_path: Path) -> None:
    result = batchframe_cli("exec", LONG_PATH, cwd=tmp_path, **terminal(80))
    assert result.returncode == 2, result.stderr
    lines = screen_lines(result.stderr)
    assert any(f"'{LONG_PATH}'" in line for line in lines), lines  # never broken inside the path
    assert "╭" not in result.stderr  # a box would cut it at its edge
    assert lines[0].startswith("Project error: ")
    assert [line for line in lines if line != line.rstrip()] == []
    short = batchframe_cli("exec", "missing.py", cwd=tmp_path, **terminal(80))
    assert "╭─ Project error" in short.stderr  # a message whose words all fit keeps its panel


def test_on_a_terminal_prose_wraps_between_words_only(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from batchframe._console import print_line

    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("NO_COLOR", "1")
    print_line(f"Warning: the items were not read from {LONG_PATH}; batchframe resume reads them.", prose=True)
    lines = capsys.readouterr().out.splitlines()
    assert LONG_PATH + ";" in lines  # a word longer than the line: on a line of its own, whole
    assert lines[0] == "Warning: the items were not read from"
    assert all(len(line) <= 40 for line in lines if line != LONG_PATH + ";")
    assert [line for line in lines if line != line.rstrip()] == []  # no space left where a line broke


def test_on_a_terminal_a_log_line_keeps_a_long_path_whole(make_project, tmp_path: Path) -> None:
    root = make_project({"job.py": MODES_PROJECT})
    output = tmp_path.joinpath(*["a_deep_folder_for_the_runs"] * 3)
    result = batchframe_cli("exec", "job.py", "-p", "count=2", "-d", output, cwd=root, **terminal(80))
    assert result.returncode == 0, result.stderr
    logged = [line for line in screen_lines(result.stderr) if "INFO" in line and "Run folder:" in line]
    assert logged and logged[0].endswith(f"Run folder: {only_run_dir(output)}"), result.stderr  # not folded by rich
    short = batchframe_cli("exec", "job.py", "-p", "count=2", "-d", "out", cwd=root, **terminal(80))
    pattern = r"\[.+\] INFO     Run folder: out/\S+ *"  # a short one: rich's own line, as before
    assert any(re.fullmatch(pattern, line) for line in screen_lines(short.stderr)), short.stderr
