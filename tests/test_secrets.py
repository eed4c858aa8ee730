"""``Secret`` parameters: masked everywhere, never stored, asked for again (or taken from the environment) on resume."""

from __future__ import annotations

import json
import os
import pickle
import signal
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest
from helpers import batchframe_cli, only_run_dir
from test_interactive import spawn  # noqa: F401 - the pexpect fixture

from batchframe import Secret
from batchframe.run.prepare import prepare
from batchframe.secret import fingerprint_secret, redact, remember_secret, secret_changed

VALUE = "tok-9f3b2c71d5e84a06"

PROJECT = """
import logging
import os
import signal
from batchframe import BatchframeParam, Secret, Service, Source

log = logging.getLogger("job")

class Numbers(Source[int]):
    def __len__(self) -> int:
        return 8

    def __iter__(self):
        return iter(range(8))

class Job(Service[int]):
    def __init__(self, api_token: BatchframeParam[Secret], stop_at: BatchframeParam[int] = -1,
                 fail_at: BatchframeParam[int] = 3) -> None:
        self.api_token = api_token
        self.stop_at = stop_at
        self.fail_at = fail_at
        log.info("using token %s (%r)", api_token, api_token)

    def process(self, item: int) -> None:
        assert isinstance(self.api_token, Secret)
        log.info("item %d with %s", item, self.api_token)
        if item == self.fail_at:
            # The user's own message quotes the value: batchframe blanks it out of what it writes.
            raise PermissionError(f"401 for token {self.api_token.get_secret_value()}")
        if item == self.stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
"""


@pytest.fixture
def project(make_project: Callable[..., Path]) -> Path:
    return make_project({"job.py": PROJECT}) / "job.py"


def test_a_secret_shows_only_its_mask() -> None:
    secret = Secret(VALUE)
    assert str(secret) == "**********"
    assert repr(secret) == "'**********'"
    assert f"{secret}|{secret!r}|{secret:>12}" == "**********|'**********'|  **********"
    assert secret.get_secret_value() == VALUE
    assert secret == Secret(VALUE) and secret != Secret("other") and secret != VALUE
    assert pickle.loads(pickle.dumps(secret)).get_secret_value() == VALUE  # workers get the value
    assert VALUE not in repr({"token": secret, "list": [secret]})


def test_the_journal_keeps_a_salted_hash_that_tells_a_change() -> None:
    first, second = fingerprint_secret(Secret(VALUE)), fingerprint_secret(Secret(VALUE))
    assert first["hash"] != second["hash"]  # salted: equal values do not give equal records
    assert VALUE not in json.dumps(first)
    assert not secret_changed(first, Secret(VALUE))
    assert secret_changed(first, Secret(VALUE + "x"))


def test_a_value_with_lone_surrogates_hashes_and_compares() -> None:
    odd = Secret("caf\udce9-token")  # what os.environ gives for bytes that are not UTF-8
    assert not secret_changed(fingerprint_secret(odd), odd)
    assert odd == Secret("caf\udce9-token") and odd != Secret("cafe-token")


def test_redact_blanks_remembered_values_only() -> None:
    remember_secret(Secret("s3cr3t-value"))
    assert redact("header: Bearer s3cr3t-value; again s3cr3t-value") == "header: Bearer **********; again **********"
    assert redact("nothing here") == "nothing here"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("declared", ["Secret[int]", "Secret[bytes] | None"])
def test_a_secret_of_anything_but_text_is_a_usage_error(
    declared: str, make_project: Callable[..., Path], tmp_path: Path
) -> None:
    job = make_project({"job.py": PROJECT.replace("BatchframeParam[Secret]", f"BatchframeParam[{declared}]")})
    for command in (["exec", job / "job.py", "-p", "api_token=1"], ["params", job / "job.py"]):
        done = batchframe_cli(*command, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert "a Secret holds text only" in done.stderr and "Traceback" not in done.stderr


def _secret_free(text: str | bytes, where: str) -> None:
    raw = text.encode() if isinstance(text, str) else text
    assert VALUE.encode() not in raw, f"the secret's value is in {where}"


def _check_run_folders(output_dir: Path) -> list[Path]:
    files = [path for path in output_dir.rglob("*") if path.is_file()]
    assert files
    for path in files:
        _secret_free(path.read_bytes(), str(path))
    return files


@pytest.mark.timeout(120)
@pytest.mark.parametrize("executor", ["asyncio", "processes"])
def test_the_value_reaches_no_file_and_no_output(executor: str, project: Path, tmp_path: Path) -> None:
    out = tmp_path / "batchframe_outputs"
    env = {"BATCHFRAME_PARAM_API_TOKEN": VALUE}
    outputs: dict[str, str] = {}

    def run(name: str, *args: str | Path, expect: int, **extra: str) -> str:
        done = batchframe_cli(*args, cwd=tmp_path, **{**env, **extra})
        assert done.returncode == expect, (name, done.stdout, done.stderr)
        outputs[name] = done.stdout + done.stderr
        return outputs[name]

    # Stopped by SIGTERM at item 5 (the asyncio back end runs process() in this process).
    stop = "5" if executor == "asyncio" else "-1"
    run("exec", "exec", project, "-p", f"executor={executor}", "-p", f"stop_at={stop}", "-v",
        expect=143 if executor == "asyncio" else 3)  # fmt: skip
    assert "**********" in outputs["exec"]  # the user's log lines and the failure message, masked
    run_dir = only_run_dir(out)
    if executor == "asyncio":
        run("resume", "resume", run_dir, expect=3)
    run("retry", "retry", run_dir, expect=3)
    run("runs", "runs", expect=0)
    run("runs RUN_DIR", "runs", run_dir, expect=0)
    run("params", "params", project, expect=0)
    for name, text in outputs.items():
        _secret_free(text, f"the output of {name}")
    files = _check_run_folders(out)
    assert {path.name for path in files} >= {"journal.sqlite", "failed.jsonl", "logs.txt", "summary.json"}
    failed = [json.loads(line) for line in (run_dir / "failed.jsonl").read_text().splitlines()]
    assert failed[0]["message"] == "401 for token **********"
    for path in [run_dir, *files]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is readable by others ({oct(mode)})"
    with sqlite3.connect(run_dir / "journal.sqlite") as db:
        secrets = json.loads(db.execute("SELECT value FROM meta WHERE key = 'secrets'").fetchone()[0])
    assert secrets["api_token"]["source"] == "BATCHFRAME_PARAM_API_TOKEN"
    assert set(secrets["api_token"]) == {"source", "salt", "hash"}


@pytest.mark.timeout(60)
def test_a_value_given_with_p_is_not_kept_for_resume(project: Path, tmp_path: Path) -> None:
    stopped = batchframe_cli("exec", project, "-p", f"api_token={VALUE}", "-p", "stop_at=2", cwd=tmp_path)
    assert stopped.returncode == 143, stopped.stderr
    run_dir = only_run_dir(tmp_path / "batchframe_outputs")
    _check_run_folders(tmp_path / "batchframe_outputs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHFRAME_PARAM_")}
    refused = batchframe_cli("resume", run_dir, cwd=tmp_path, **env)
    assert refused.returncode == 2
    assert "needs its secret parameter api_token again" in refused.stderr
    assert "BATCHFRAME_PARAM_API_TOKEN" in refused.stderr and "Traceback" not in refused.stderr
    for command in ("resume", "retry"):
        assert batchframe_cli(command, run_dir, "--no-input", cwd=tmp_path, **env).returncode == 2


@pytest.mark.timeout(60)
def test_resume_says_when_the_secret_changed(project: Path, tmp_path: Path) -> None:
    stopped = batchframe_cli("exec", project, "-p", "stop_at=2", cwd=tmp_path, BATCHFRAME_PARAM_API_TOKEN=VALUE)
    assert stopped.returncode == 143, stopped.stderr
    run_dir = only_run_dir(tmp_path / "batchframe_outputs")
    resumed = batchframe_cli("resume", run_dir, cwd=tmp_path, BATCHFRAME_PARAM_API_TOKEN="rotated-token-value")
    assert resumed.returncode == 3, resumed.stderr
    warning = "The secret parameter api_token is not the value the run started with"
    assert warning in resumed.stderr
    assert warning in (run_dir / "logs.txt").read_text()
    same = batchframe_cli("retry", run_dir, cwd=tmp_path, BATCHFRAME_PARAM_API_TOKEN=VALUE)
    assert same.returncode == 3 and "not the value" not in same.stderr


@pytest.mark.timeout(60)
def test_a_prompted_secret_is_hidden_and_resume_asks_again(spawn, project: Path, tmp_path: Path) -> None:  # noqa: F811
    child = spawn("exec", str(project), "-p", "stop_at=2", dimensions=(24, 80))
    child.expect("api_token")
    child.sendline(VALUE)
    child.expect("Run folder: ")
    child.expect(r"\n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 143 or child.signalstatus == signal.SIGTERM
    run_dir = only_run_dir(tmp_path / "batchframe_outputs")
    with sqlite3.connect(run_dir / "journal.sqlite") as db:
        secrets = json.loads(db.execute("SELECT value FROM meta WHERE key = 'secrets'").fetchone()[0])
    assert secrets["api_token"]["source"] == "prompt"

    again = spawn("resume", str(run_dir), dimensions=(24, 80))
    again.expect("api_token")
    again.sendline("a-new-token-value")
    again.expect("is not the value")
    again.expect(pexpect.EOF)
    again.close()
    assert again.exitstatus == 3
    for log in tmp_path.glob("pty-*.log"):
        _secret_free(log.read_text(), f"the terminal ({log.name})")
    _check_run_folders(tmp_path / "batchframe_outputs")


def test_prompted_values_are_recorded_for_resume_but_not_secrets(make_project: Callable[..., Path]) -> None:
    required = PROJECT.replace("stop_at: BatchframeParam[int] = -1", "stop_at: BatchframeParam[int]")
    job = make_project({"job.py": required}) / "job.py"

    def ask(missing: object) -> dict[str, object]:
        return {"api_token": Secret(VALUE), "stop_at": 4}

    prepared = prepare(job, params=["fail_at=6"], ask_missing=ask, environ={})
    assert prepared.sources == {"fail_at": "-p", "api_token": "prompt", "stop_at": "prompt"}
    assert prepared.recorded_params() == ["fail_at=6", "stop_at=4"]
    again = prepare(job, params=prepared.recorded_params(), environ={"BATCHFRAME_PARAM_API_TOKEN": VALUE})
    assert again.values == prepared.values


@pytest.mark.timeout(60)
def test_a_bad_log_call_in_a_run_with_a_secret_does_not_fail_the_item(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    bad_log = PROJECT.replace(
        'log.info("item %d with %s", item, self.api_token)', 'log.info("item %d with %d", item, "not a number")'
    )
    job = make_project({"job.py": bad_log}, name="bad_log") / "job.py"
    done = batchframe_cli("exec", job, "-p", "fail_at=-1", cwd=tmp_path, BATCHFRAME_PARAM_API_TOKEN=VALUE)
    assert done.returncode == 0, done.stderr  # logging reports the bad call; the items succeed
    summary = json.loads((only_run_dir(tmp_path / "batchframe_outputs") / "summary.json").read_text())
    assert summary["succeeded"] == 8


def test_users_tests_give_a_secret_as_text_or_as_a_secret(project: Path) -> None:
    import importlib.util

    from batchframe.testing import run_service

    spec = importlib.util.spec_from_file_location("secret_job", project)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for given in ("test-token", Secret("test-token")):
        result = run_service(module.Job, [0, 1], params={"api_token": given})
        assert isinstance(result.service.api_token, Secret)
        assert result.service.api_token.get_secret_value() == "test-token"
