"""Which log records reach the console and logs.txt: libraries' INFO kept off the console, log_levels per logger."""

from __future__ import annotations

import contextlib
import logging
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import batchframe_cli, only_run_dir

from batchframe.backends import _worker_logs
from batchframe.errors import ParamError
from batchframe.project.log_levels import EXPECTED, LogLevels, RunLogLevel, is_library, named_levels
from batchframe.runfolder.logs import _Thresholds, console_lines, run_levels

# A project whose process logs like a job using httpx: the library's logger (simulated: no network) at
# INFO and DEBUG, and its own logger (``proj.my_job``: the module's __name__) at INFO and DEBUG.
JOB = """
import logging
from batchframe import Service, Source

log = logging.getLogger(__name__)

class Numbers(Source[int]):
    def __len__(self):
        return 3

    def __iter__(self):
        return iter(range(3))

class Api(Service[int]):
    def process(self, item):
        logging.getLogger("httpx").info("HTTP Request: GET /items/%s", item)
        logging.getLogger("httpx._client").debug("connection detail %s", item)
        log.info("own line %s", item)
        log.debug("own detail %s", item)
        logging.getLogger("httpx").warning("slow answer %s", item)
"""

OWN_INFO = "proj.my_job: own line 2"
OWN_DEBUG = "proj.my_job: own detail 2"
HTTPX_INFO = "httpx: HTTP Request: GET /items/2"
HTTPX_DEBUG = "httpx._client: connection detail 2"
HTTPX_WARNING = "httpx: slow answer 2"


@pytest.fixture
def job(make_project: Callable[..., Path]) -> Path:
    return make_project({"my_job.py": JOB})


def run(job: Path, *params: str, verbose: bool = False, output: str = "out") -> tuple[str, str, int]:
    """``batchframe exec`` the job: its stderr (the console), its logs.txt and its exit code."""
    args = [arg for param in params for arg in ("-p", param)]
    done = batchframe_cli(*(["-v"] if verbose else []), "-d", output, "exec", "my_job.py", *args, cwd=job, timeout=60)
    folder = job / output
    logs = (only_run_dir(folder) / "logs.txt").read_text() if folder.exists() and any(folder.iterdir()) else ""
    return done.stderr, logs, done.returncode


# ------------------------------------------------------------------------------ through the real CLI


@pytest.mark.parametrize("executor", ["asyncio", "threads", "processes"])
def test_by_default_the_console_leaves_out_library_info_and_logs_txt_keeps_it(job: Path, executor: str) -> None:
    console, logs, code = run(job, f"executor={executor}", "concurrency=1")
    assert code == 0, console
    assert OWN_INFO in console and HTTPX_WARNING in console
    assert HTTPX_INFO not in console
    assert OWN_INFO in logs and HTTPX_INFO in logs and HTTPX_WARNING in logs
    assert HTTPX_DEBUG not in logs + console and OWN_DEBUG not in logs + console


@pytest.mark.parametrize("executor", ["asyncio", "processes"])
def test_a_library_set_to_warning_leaves_its_info_out_of_logs_txt(job: Path, executor: str) -> None:
    console, logs, code = run(job, f"executor={executor}", "log_levels=httpx:WARNING")
    assert code == 0, console
    assert HTTPX_INFO not in logs and HTTPX_WARNING in logs and OWN_INFO in logs


@pytest.mark.parametrize("executor", ["asyncio", "processes"])
def test_a_library_set_to_debug_shows_its_debug_records_everywhere(job: Path, executor: str) -> None:
    console, logs, code = run(job, f"executor={executor}", "log_levels=httpx:debug")
    assert code == 0, console
    for line in (HTTPX_DEBUG, HTTPX_INFO, OWN_INFO):  # the level covers httpx._client, below httpx
        assert line in console and line in logs
    assert OWN_DEBUG not in logs  # only the loggers named get DEBUG


@pytest.mark.parametrize("executor", ["asyncio", "processes"])
def test_the_projects_logger_set_to_warning_hides_its_info_everywhere(job: Path, executor: str) -> None:
    console, logs, code = run(job, f"executor={executor}", "log_levels=proj.my_job:WARNING,httpx:10")
    assert code == 0, console
    assert OWN_INFO not in console + logs
    assert HTTPX_DEBUG in console  # a level given as a number


def test_dask_workers_honour_the_same_levels(job: Path) -> None:
    pytest.importorskip("distributed")
    console, logs, code = run(job, "executor=dask", "concurrency=1", "log_levels=httpx:DEBUG")
    assert code == 0, console
    assert HTTPX_DEBUG in console and HTTPX_DEBUG in logs and OWN_INFO in console
    console, logs, code = run(job, "executor=dask", "concurrency=1", output="default")
    assert code == 0, console
    assert HTTPX_INFO in logs and HTTPX_INFO not in console and OWN_INFO in console


def test_verbose_shows_libraries_info_and_debug_on_the_console(job: Path) -> None:
    console, logs, code = run(job, verbose=True)
    assert code == 0, console
    for line in (HTTPX_INFO, HTTPX_DEBUG, OWN_DEBUG):
        assert line in console and line in logs


def test_a_named_level_wins_over_verbose(job: Path) -> None:
    console, _, code = run(job, "log_levels=httpx:WARNING", verbose=True)
    assert code == 0, console
    assert HTTPX_INFO not in console and HTTPX_DEBUG not in console and OWN_DEBUG in console


def test_a_config_class_may_set_log_levels_as_text(make_project: Callable[..., Path]) -> None:
    config = "from dataclasses import dataclass\nfrom batchframe import Configuration\n\n@dataclass\nclass Quiet(Configuration):\n    log_levels = 'httpx:ERROR'\n"
    job = make_project({"my_job.py": JOB, "config/quiet.py": config})
    done = batchframe_cli("exec", "my_job.py", "-c", "quiet", cwd=job, timeout=60)
    assert done.returncode == 0, done.stderr
    logs = (only_run_dir(job / "batchframe_outputs") / "logs.txt").read_text()
    assert HTTPX_WARNING not in logs and OWN_INFO in logs


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("httpx:LOUD", "unknown level 'LOUD' for httpx"),
        ("httpx", "'httpx' has no colon"),
        (":DEBUG", "a logger name is missing"),
        ("httpx:", "a level is missing for httpx"),
        ("httpx:0", "unknown level '0' for httpx"),
    ],
)
def test_a_bad_log_levels_value_exits_2_with_the_expected_form(job: Path, value: str, problem: str) -> None:
    console, _, code = run(job, f"log_levels={value}")
    assert code == 2, console
    assert "Traceback" not in console
    message = " ".join(console.split())  # the panel may wrap
    assert "'log_levels'" in message and repr(value) in message and problem in message
    assert " ".join(EXPECTED.split()) in message
    assert not (job / "out").exists() or not any((job / "out").iterdir())  # no run folder left behind


def test_a_bad_value_in_a_config_class_exits_2(make_project: Callable[..., Path]) -> None:
    config = "from dataclasses import dataclass\nfrom batchframe import Configuration\n\n@dataclass\nclass Bad(Configuration):\n    log_levels = 'httpx=DEBUG'\n"
    job = make_project({"my_job.py": JOB, "config/bad.py": config})
    done = batchframe_cli("exec", "my_job.py", "-c", "bad", cwd=job, timeout=60)
    assert done.returncode == 2, done.stderr
    message = " ".join(done.stderr.split())
    assert "Parameter 'log_levels' is 'httpx=DEBUG'" in message and "has no colon" in message
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------------------------------ the parser


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("httpx:DEBUG", {"httpx": logging.DEBUG}),
        ("httpx:debug, my_job : Warning", {"httpx": logging.DEBUG, "my_job": logging.WARNING}),
        ("a.b:5,c:ERROR,", {"a.b": 5, "c": logging.ERROR}),
        ("urllib3:critical,httpx:info", {"urllib3": logging.CRITICAL, "httpx": logging.INFO}),
        ("x:INFO,x:ERROR", {"x": logging.ERROR}),  # the last one wins, as with -p
        ("", {}),
    ],
)
def test_log_levels_parse(text: str, expected: dict[str, int]) -> None:
    assert dict(LogLevels(text)) == expected


@pytest.mark.parametrize("text", ["httpx", ":DEBUG", " :INFO", "httpx:", "httpx:LOUD", "httpx:0", "httpx:-5", "a:1.5"])
def test_log_levels_refuse_bad_text_and_show_the_form(text: str) -> None:
    with pytest.raises(ValueError, match="expected LOGGER:LEVEL pairs") as caught:
        LogLevels(text)
    assert "DEBUG, INFO, WARNING, ERROR, CRITICAL or a number" in str(caught.value)


def test_log_levels_from_a_mapping_round_trip_and_pickle() -> None:
    levels = LogLevels({"httpx": "debug", "my_job": 30, "odd": 15})
    assert str(levels) == "httpx:DEBUG,my_job:WARNING,odd:15"
    assert LogLevels(str(levels)) == levels and hash(LogLevels(str(levels))) == hash(levels)
    assert repr(levels) == "LogLevels('httpx:DEBUG,my_job:WARNING,odd:15')"
    assert pickle.loads(pickle.dumps(levels)) == levels
    with pytest.raises(ValueError, match="unknown level 'True'"):
        LogLevels({"x": True})  # type: ignore[dict-item]


def test_a_level_covers_the_loggers_below_it() -> None:
    levels = LogLevels("httpx:DEBUG,httpx._client:ERROR")
    assert levels.level_of("httpx") == logging.DEBUG
    assert levels.level_of("httpx._models") == logging.DEBUG
    assert levels.level_of("httpx._client.pool") == logging.ERROR
    assert levels.level_of("httpxx") is None and levels.level_of("other") is None


def test_log_levels_is_parsed_from_dash_p_by_the_parameter_machinery() -> None:
    from batchframe.configuration import Configuration
    from batchframe.project.params import params_of_class
    from batchframe.project.parsing import parse_value

    spec = next(spec for spec in params_of_class(Configuration) if spec.name == "log_levels")
    assert spec.default is None
    assert parse_value(spec.type, "httpx:WARNING") == LogLevels({"httpx": logging.WARNING})
    assert parse_value(spec.type, "none") is None
    with pytest.raises(ValueError, match="has no colon"):
        parse_value(spec.type, "httpx")


def test_run_levels_takes_a_config_value_or_says_what_is_wrong() -> None:
    assert run_levels(None) == LogLevels()
    assert run_levels("httpx:INFO") == LogLevels("httpx:INFO")
    assert run_levels({"httpx": "error"}) == LogLevels("httpx:ERROR")
    for bad in ("httpx:LOUD", 5, ["httpx:DEBUG"]):
        with pytest.raises(ParamError, match="Parameter 'log_levels' is") as caught:
            run_levels(bad)
        assert caught.value.param == "log_levels" and "LOGGER:LEVEL" in str(caught.value)


# ------------------------------------------------------------------------------- libraries and levels


def test_libraries_are_the_modules_installed_with_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mine_only_here.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert is_library("httpx") and is_library("httpcore.connection") and is_library("asyncio.events")
    assert not is_library("batchframe.run.driver")
    assert not is_library("__main__") and not is_library("root")
    assert not is_library("mine_only_here.sub")  # a module outside the installation: the project's
    assert not is_library("no_such_module_anywhere") and not is_library("user.code")
    assert not is_library("") and not is_library("not a module name")


def test_thresholds_per_logger() -> None:
    info, debug, warning = logging.INFO, logging.DEBUG, logging.WARNING
    default = _Thresholds(LogLevels(), verbosity=0)
    assert default.of("httpx") == (info, warning)
    assert default.of("proj.my_job") == (info, info) and default.of("batchframe.run.driver") == (info, info)
    assert default.of("root") == (info, info)
    verbose = _Thresholds(LogLevels(), verbosity=1)
    assert verbose.of("httpx") == (debug, debug)
    named = _Thresholds(LogLevels("httpx:DEBUG,proj:ERROR"), verbosity=0)
    assert named.of("httpx._client") == (debug, debug) and named.of("proj.my_job") == (40, 40)
    assert named.lowest == debug
    quiet = _Thresholds(LogLevels("root:WARNING"), verbosity=1)
    assert quiet.of("batchframe") == (warning, warning) and quiet.of("root") == (warning, warning)


def test_console_lines_leave_out_library_info_with_its_continuation_lines() -> None:
    text = """\
2026-12-03 08:00:00,000 INFO     batchframe.run.execute: Run folder: out/1
2026-12-03 08:00:00,001 INFO     httpx: HTTP Request: GET /1
2026-12-03 08:00:00,002 INFO     proj.my_job: own line
2026-12-03 08:00:00,003 DEBUG    httpcore.connection: a detail
that goes on
2026-12-03 08:00:00,004 WARNING  httpx: slow answer
2026-12-03 08:00:00,005 ERROR    proj.my_job: item 3 failed
Traceback (most recent call last):
ValueError: 3
2026-12-03 08:00:00,006 Level 5  httpcore: very low
2026-12-03 08:00:00,007 Level 55 httpcore: very high"""
    lines = text.splitlines()
    kept, hidden = console_lines(lines)
    assert hidden == 3
    assert kept == [lines[0], lines[2], *lines[5:9], lines[10]]


def test_the_ui_log_box_shows_what_the_console_did(tmp_path: Path) -> None:
    pytest.importorskip("starlette")
    from batchframe.ui._runs_view import LOG_LINES
    from batchframe.ui.app import log_box

    lines = [f"2026-12-03 08:00:00,{n % 1000:03} INFO     httpx: HTTP Request: GET /{n}" for n in range(3000)]
    lines.insert(10, "2026-12-03 08:00:00,000 INFO     proj.my_job: an early line of our own")
    lines += [f"2026-12-03 08:00:01,000 INFO     proj.my_job: own line {n}" for n in range(LOG_LINES + 5)]
    (tmp_path / "logs.txt").write_text("\n".join(lines) + "\n")
    shown = log_box(tmp_path).splitlines()
    assert len(shown) == LOG_LINES + 1 and "httpx" not in "\n".join(shown[:-1])
    assert shown[-2].endswith(f"own line {LOG_LINES + 4}")
    assert "records of libraries below WARNING left out here; logs.txt has every record" in shown[-1]
    (tmp_path / "logs.txt").write_text("\n".join(lines[-3:]) + "\n")
    assert "records of libraries" not in log_box(tmp_path)


# ------------------------------------------------------------------------------ the workers' side


@contextlib.contextmanager
def restored_logging() -> Iterator[None]:
    """Put back the root logger (level, handlers) and the loggers these tests set levels on."""
    names = ("httpx", "proj", "lib_a", "lib_b")
    root = logging.getLogger()
    saved = (root.level, list(root.handlers), [logging.getLogger(name).level for name in names])
    try:
        yield
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        for name, level in zip(names, saved[2], strict=True):
            logging.getLogger(name).setLevel(level)


def test_the_drivers_level_carries_the_named_levels_to_a_process_worker() -> None:
    level = pickle.loads(pickle.dumps(RunLogLevel(logging.INFO, LogLevels("httpx:DEBUG,proj:WARNING"))))
    assert level == logging.INFO and named_levels(level) == LogLevels("httpx:DEBUG,proj:WARNING")
    assert named_levels(logging.INFO) == LogLevels()
    sent: list[logging.LogRecord] = []

    class Queue:
        def put_nowait(self, record: logging.LogRecord) -> None:
            sent.append(record)

    with restored_logging():
        _worker_logs.forward_logs(Queue(), level)
        logging.getLogger("httpx._client").debug("made and sent")
        logging.getLogger("proj.job").info("never made")
        logging.getLogger("other").debug("never made")
        logging.getLogger("other").info("sent")
    assert [record.getMessage() for record in sent] == ["made and sent", "sent"]


def test_runs_routed_in_one_dask_worker_each_get_their_own_levels() -> None:
    with restored_logging():
        routed_runs_keep_their_levels()


def routed_runs_keep_their_levels() -> None:
    logging.getLogger("lib_a").setLevel(logging.ERROR)
    first: list[str] = []
    second: list[str] = []
    _worker_logs.route_logs("one", lambda r: first.append(r.getMessage()), RunLogLevel(20, LogLevels("lib_a:DEBUG")))
    _worker_logs.route_logs("two", lambda r: second.append(r.getMessage()), RunLogLevel(20, LogLevels("lib_b:ERROR")))
    try:
        assert logging.getLogger("lib_a").level == logging.DEBUG and logging.getLogger("lib_b").level == logging.INFO
        for key in ("one", "two"):
            with _worker_logs.working_for(key):
                logging.getLogger("lib_a").debug("a debug")
                logging.getLogger("lib_b").warning("b warning")
                logging.getLogger("lib_b").error("b error")
        assert first == ["a debug", "b warning", "b error"]
        assert second == ["b error"]
        _worker_logs.unroute_logs("one")
        assert logging.getLogger("lib_a").level == logging.ERROR  # its own level back
        assert logging.getLogger("lib_b").level == logging.ERROR
    finally:
        _worker_logs.unroute_logs("one")
        _worker_logs.unroute_logs("two")
    assert logging.getLogger("lib_b").level == logging.NOTSET
