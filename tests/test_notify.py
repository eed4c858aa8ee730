"""``-p notify_url=URL``: the summary POSTed when a run ends; a failing endpoint never fails the run."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import batchframe_cli, build_file_tree, only_run_dir, start_batchframe

JOB = """
from batchframe import BatchframeParam, Secret, Service, Source


class Rows(Source[int]):
    def __iter__(self):
        return iter(range(5))


class Push(Service[int]):
    def __init__(self, token: BatchframeParam[Secret]):
        self.token = token

    def process(self, row):
        if row == 3:
            raise ValueError(f"row {row} refused with token {self.token.get_secret_value()}")
"""


class Endpoint:
    """A local webhook endpoint: records each POST; answers ``statuses`` in turn (then 204)."""

    def __init__(self, statuses: list[int]) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.statuses = statuses
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                endpoint.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(endpoint.statuses.pop(0) if endpoint.statuses else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/batchframe?key=abc"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    made: list[Endpoint] = []

    def make(statuses: list[int]) -> Endpoint:
        made.append(Endpoint(statuses))
        return made[-1]

    yield make  # type: ignore[misc]
    for each in made:
        each.close()


def _run(tmp_path: Path, url: str) -> tuple[int, str, dict[str, Any]]:
    build_file_tree(tmp_path, {"job.py": JOB})
    result = batchframe_cli(
        "exec", "job.py", "-d", "out", "-p", f"notify_url={url}", cwd=tmp_path, BATCHFRAME_PARAM_TOKEN="s3cr3t-t0ken"
    )
    summary = json.loads((only_run_dir(tmp_path / "out") / "summary.json").read_text())
    return result.returncode, result.stderr, summary


@pytest.mark.timeout(60)
def test_the_summary_is_posted_when_the_run_ends(tmp_path: Path, endpoint: Any) -> None:
    hook = endpoint([])
    code, err, summary = _run(tmp_path, hook.url)
    assert code == 3
    (body,) = hook.bodies
    assert body["outcome"] == "completed" and body["failed"] == 1 and body["succeeded"] == 4
    assert body["report"]["top_errors"][0]["type"] == "ValueError"
    assert "s3cr3t-t0ken" not in json.dumps(body)  # never a secret's value
    assert summary["warnings"] == []
    assert "key=abc" not in err  # the URL's query (a key) stays out of the log


@pytest.mark.timeout(60)
def test_one_retry_then_a_warning_never_a_failed_run(tmp_path: Path, endpoint: Any) -> None:
    hook = endpoint([503])
    code, _, summary = _run(tmp_path, hook.url)
    assert code == 3 and len(hook.bodies) == 2 and summary["warnings"] == []  # the retry got through

    down = endpoint([500, 500])
    code, err, summary = _run(tmp_path / "down", down.url)
    assert code == 3  # what the items did, not what the notification did
    assert len(down.bodies) == 2
    (warning,) = summary["warnings"]
    assert "The notification to http://127.0.0.1" in warning and "failed twice (HTTP 500)" in warning
    assert "failed twice" in err


@pytest.mark.timeout(60)
def test_an_endpoint_that_is_not_there(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    code, _, summary = _run(tmp_path, f"http://127.0.0.1:{port}/hook")
    assert code == 3
    assert "failed twice" in summary["warnings"][0]


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "example.com/hook", "http://"])
def test_a_bad_notify_url_is_a_usage_error(tmp_path: Path, url: str) -> None:
    build_file_tree(tmp_path, {"job.py": JOB})
    result = batchframe_cli("exec", "job.py", "-p", f"notify_url={url}", cwd=tmp_path, BATCHFRAME_PARAM_TOKEN="x")
    assert result.returncode == 2
    assert "notify_url must be an http:// or https:// URL with a host" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(60)
def test_a_second_signal_cuts_a_slow_notification_short_and_the_summary_is_kept(tmp_path: Path) -> None:
    arrived = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            arrived.set()
            time.sleep(8)  # an endpoint that hangs (the client gives up after 5 s)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        build_file_tree(tmp_path, {"job.py": JOB})
        url = f"http://127.0.0.1:{server.server_port}/hook"
        run = start_batchframe(
            "exec", "job.py", "-d", "out", "-p", f"notify_url={url}", cwd=tmp_path, BATCHFRAME_PARAM_TOKEN="t"
        )
        assert arrived.wait(30), "the notification never came"
        summary_path = only_run_dir(tmp_path / "out") / "summary.json"
        assert summary_path.exists()  # written before the notification: a signal now loses nothing
        run.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=20)
        assert run.returncode == 3, err  # what the items did
        warnings = json.loads(summary_path.read_text())["warnings"]
        assert warnings == [
            "The metrics and the notification at the end of the run were cut short (received SIGTERM twice)."
        ]
        assert "Traceback" not in err
    finally:
        server.shutdown()
        server.server_close()
