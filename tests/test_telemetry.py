"""OpenTelemetry: a span for the run and one per attempt, and the run's metrics, read back in memory.

Each case runs in a process of its own: a provider is set once per process, for good.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import batchframe_cli, build_file_tree

JOB = """
import asyncio

from batchframe import Service, Source


class Rows(Source[int]):
    def __iter__(self):
        return iter(range(6))


class Push(Service[int]):
    async def process(self, row):
        await asyncio.sleep(0.001)
        if row == 4:
            raise KeyError(row)
"""

TRACED = """
import json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

from batchframe.run.commands import run_project

result = run_project("job.py", params=sys.argv[1:], output_dir="out")
spans = [
    {
        "name": span.name,
        "trace_id": span.context.trace_id,
        "span_id": span.context.span_id,
        "parent": span.parent.span_id if span.parent else None,
        "attributes": dict(span.attributes),
        "error": span.status.status_code.name == "ERROR",
    }
    for span in exporter.get_finished_spans()
]
print(json.dumps({"exit_code": result.exit_code, "spans": spans}))
"""

MEASURED = """
import json, sys
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

from batchframe.run.commands import run_project

result = run_project("job.py", output_dir="out")
found = {}
for resource in reader.get_metrics_data().resource_metrics:
    for scope in resource.scope_metrics:
        for metric in scope.metrics:
            for point in metric.data.data_points:
                labels = dict(point.attributes)
                value = getattr(point, "value", None)
                if value is None:
                    value = {"count": point.count, "sum": point.sum}
                found.setdefault(metric.name, []).append([labels, value])
print(json.dumps({"exit_code": result.exit_code, "metrics": found}))
"""

UNTRACED = """
import sys
from batchframe.run.commands import run_project

run_project("job.py", output_dir="out")
print("opentelemetry" in " ".join(sys.modules))
"""


def _run(tmp_path: Path, script: str, *params: str) -> str:
    build_file_tree(tmp_path, {"job.py": JOB, "script.py": script})
    done = subprocess.run(
        [sys.executable, "script.py", *params], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("executor", ["asyncio", "processes"])
def test_a_span_for_the_run_and_one_per_attempt(tmp_path: Path, executor: str) -> None:
    found: dict[str, Any] = json.loads(_run(tmp_path, TRACED, f"executor={executor}"))
    assert found["exit_code"] == 3
    spans = found["spans"]
    (run,) = [span for span in spans if span["name"] == "batchframe run"]
    items = [span for span in spans if span["name"] == "batchframe item"]
    assert len(items) == 6
    assert {span["trace_id"] for span in items} == {run["trace_id"]}  # every back end: the run's trace
    assert {span["parent"] for span in items} == {run["span_id"]}
    run_id = run["attributes"]["batchframe.run_id"]
    assert run["attributes"]["batchframe.outcome"] == "completed" and run["attributes"]["batchframe.exit_code"] == 3
    by_index = {span["attributes"]["batchframe.item.index"]: span for span in items}
    assert sorted(by_index) == list(range(6))
    failed = by_index[4]
    assert failed["attributes"]["batchframe.outcome"] == "error" and failed["attributes"]["error.type"] == "KeyError"
    assert failed["error"]
    ok = by_index[0]["attributes"]
    assert ok == {
        "batchframe.run_id": run_id,
        "batchframe.item.index": 0,
        "batchframe.item.attempt": 1,
        "batchframe.outcome": "success",
    }


@pytest.mark.timeout(120)
def test_the_run_s_metrics_as_opentelemetry_instruments(tmp_path: Path) -> None:
    found: dict[str, Any] = json.loads(_run(tmp_path, MEASURED))
    assert found["exit_code"] == 3
    measured = found["metrics"]
    labels = {"project": "job", "config": ""}
    items = {entry[0]["outcome"]: entry[1] for entry in measured["batchframe.items"]}
    assert items == {"succeeded": 5, "failed": 1, "not_processed": 0}
    assert all(
        {k: v for k, v in entry[0].items() if k != "outcome"} == labels for entry in measured["batchframe.items"]
    )
    assert measured["batchframe.retries"] == [[labels, 0]]
    assert measured["batchframe.run.in_progress"] == [[labels, 0.0]]
    ((duration_labels, duration),) = measured["batchframe.item.duration"]
    assert duration_labels == labels and duration["count"] == 6 and duration["sum"] >= 0.006


@pytest.mark.timeout(60)
def test_without_the_variables_nothing_is_set_up_or_imported(tmp_path: Path) -> None:
    assert _run(tmp_path, UNTRACED) == "False"


@pytest.mark.timeout(60)
def test_the_console_exporter_from_the_standard_variables(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": JOB})
    result = batchframe_cli(
        "exec", "job.py", "-d", "out", cwd=tmp_path, OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="rows-push"
    )
    assert result.returncode == 3
    assert result.stderr.count('"name": "batchframe item"') == 6
    assert '"service.name": "rows-push"' in result.stderr
    measured = batchframe_cli("exec", "job.py", "-d", "out", cwd=tmp_path, OTEL_METRICS_EXPORTER="console")
    assert measured.returncode == 3
    assert '"name": "batchframe.items"' in measured.stderr and '"name": "batchframe.item.duration"' in measured.stderr


def test_an_exporter_batchframe_does_not_set_up_is_a_usage_error(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"job.py": JOB})
    result = batchframe_cli("exec", "job.py", "-d", "out", cwd=tmp_path, OTEL_TRACES_EXPORTER="zipkin")
    assert result.returncode == 2
    assert "OTEL_TRACES_EXPORTER=zipkin is not an exporter batchframe sets up" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


USER_SPANS = """
from opentelemetry import trace

from batchframe import Service, Source

tracer = trace.get_tracer("my_job")


class Rows(Source[int]):
    def __iter__(self):
        return iter(range(4))


class Push(Service[int]):
    def process(self, row):
        with tracer.start_as_current_span("push row") as span:
            span.set_attribute("row", row)
"""


def _printed_spans(text: str) -> list[dict[str, Any]]:
    """The spans the console exporter printed (indented JSON objects, among log lines)."""
    decoder, spans, at = json.JSONDecoder(), [], 0
    while (at := text.find("{\n", at)) != -1:
        try:
            found, end = decoder.raw_decode(text, at)
        except ValueError:
            at += 1
            continue
        if isinstance(found, dict) and "context" in found:
            spans.append(found)
        at = end
    return spans


@pytest.mark.timeout(120)
@pytest.mark.parametrize("executor", ["asyncio", "processes"])
def test_the_spans_of_process_nest_under_their_attempt_even_in_worker_processes(tmp_path: Path, executor: str) -> None:
    build_file_tree(tmp_path, {"job.py": USER_SPANS})
    result = batchframe_cli(
        "exec", "job.py", "-d", "out", "-p", f"executor={executor}", cwd=tmp_path, OTEL_TRACES_EXPORTER="console"
    )
    assert result.returncode == 0, result.stderr
    spans = _printed_spans(result.stderr)
    attempts = {span["context"]["span_id"]: span for span in spans if span["name"] == "batchframe item"}
    pushes = [span for span in spans if span["name"] == "push row"]
    (run,) = [span for span in spans if span["name"] == "batchframe run"]
    assert len(attempts) == 4 and len(pushes) == 4
    for push in pushes:
        attempt = attempts[push["parent_id"]]  # under the attempt that ran it
        assert attempt["attributes"]["batchframe.item.index"] == push["attributes"]["row"]
        assert push["context"]["trace_id"] == run["context"]["trace_id"]
