"""Prometheus: the textfile for node_exporter and the Pushgateway, each read back by prometheus_client's parser."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import batchframe_cli, build_file_tree, only_run_dir, start_batchframe, wait_until
from prometheus_client.parser import text_string_to_metric_families

from batchframe.runfolder.live import read_status, send_control

JOB = """
import time

from batchframe import BatchframeParam, Service, Source


class Rows(Source[int]):
    def __init__(self, count: BatchframeParam[int] = 40):
        self.count = count

    def __iter__(self):
        return iter(range(self.count))


class Push(Service[int]):
    def __init__(self, pause: BatchframeParam[float] = 0.0):
        self.pause = pause

    def process(self, row):
        time.sleep(self.pause)
        if row % 10 == 9:
            raise ValueError(f"row {row} refused")
"""


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition text, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


LABELS = {("project", "job"), ("config", "")}


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found[(name, frozenset(LABELS | set(labels.items())))]


@pytest.mark.timeout(60)
def test_the_textfile_has_the_run_s_figures(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": JOB})
    prom = tmp_path / "run.prom"
    result = batchframe_cli("exec", "job.py", "-d", "out", "-p", f"metrics_textfile={prom}", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    found = samples(prom.read_text())
    assert value(found, "batchframe_items_total", outcome="succeeded") == 36
    assert value(found, "batchframe_items_total", outcome="failed") == 4
    assert value(found, "batchframe_items_total", outcome="not_processed") == 0
    assert value(found, "batchframe_retries_total") == 0
    assert value(found, "batchframe_run_in_progress") == 0
    assert value(found, "batchframe_run_exit_code") == 3
    assert value(found, "batchframe_item_duration_seconds_count") == 40
    assert value(found, "batchframe_item_duration_seconds_bucket", le="+Inf") == 40
    assert value(found, "batchframe_last_success_timestamp_seconds") > 1.7e9
    assert not list(tmp_path.glob("run.prom.*"))  # written through a temporary file, renamed


@pytest.mark.timeout(60)
def test_the_textfile_is_written_while_the_run_goes(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": JOB})
    prom = tmp_path / "run.prom"
    params = ["-p", "count=4000", "-p", "pause=0.01", "-p", f"metrics_textfile={prom}"]
    process = start_batchframe("exec", "job.py", "-d", "out", *params, cwd=tmp_path)
    wait_until(lambda: prom.exists() and (tmp_path / "out").exists() and any((tmp_path / "out").iterdir()), process)
    assert value(samples(prom.read_text()), "batchframe_run_in_progress") == 1
    run_dir = only_run_dir(tmp_path / "out")
    wait_until(lambda: (status := read_status(run_dir)) is not None and status.live, process)
    send_control(run_dir, "stop")
    process.communicate(timeout=60)
    found = samples(prom.read_text())
    assert value(found, "batchframe_run_in_progress") == 0 and value(found, "batchframe_run_exit_code") == 130
    assert value(found, "batchframe_items_total", outcome="not_processed") > 0


class Gateway:
    """A Pushgateway stand-in: records each push's path and body; answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.pushes: list[tuple[str, str]] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                gateway.pushes.append((self.path, body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def gateway() -> Iterator[Any]:
    made: list[Gateway] = []

    def make(status: int = 200) -> Gateway:
        made.append(Gateway(status))
        return made[-1]

    yield make
    for each in made:
        each.server.shutdown()
        each.server.server_close()


@pytest.mark.timeout(60)
def test_the_pushgateway_gets_the_figures_at_the_end(tmp_path: Path, gateway: Any) -> None:
    build_file_tree(tmp_path, {"job.py": JOB})
    up = gateway()
    result = batchframe_cli("exec", "job.py", "-d", "out", "-p", f"metrics_pushgateway={up.url}", cwd=tmp_path)
    assert result.returncode == 3
    ((path, body),) = up.pushes
    assert path == "/metrics/job/batchframe/config/-/project/job"  # the grouping key
    assert value(samples(body), "batchframe_items_total", outcome="failed") == 4

    down = gateway(status=500)
    result = batchframe_cli("exec", "job.py", "-d", "out2", "-p", f"metrics_pushgateway={down.url}", cwd=tmp_path)
    assert result.returncode == 3  # what the items did: a failed push is a warning
    summary = json.loads((only_run_dir(tmp_path / "out2") / "summary.json").read_text())
    assert summary["warnings"] == [f"Metrics: the push to {down.url} failed (HTTPError) (see logs.txt)."]


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("metrics_textfile=/no/such/folder/run.prom", "cannot be written: /no/such/folder is not a folder"),
        ("metrics_pushgateway=ftp://gateway:9091", "metrics_pushgateway must be an http:// or https:// URL"),
    ],
)
def test_bad_metrics_settings_are_usage_errors(tmp_path: Path, param: str, message: str) -> None:
    build_file_tree(tmp_path, {"job.py": JOB})
    result = batchframe_cli("exec", "job.py", "-p", param, cwd=tmp_path)
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
