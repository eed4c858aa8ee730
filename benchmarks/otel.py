"""The cost of OpenTelemetry tracing per item: the same no-op run untraced and traced (an SDK provider).

Traced, each attempt gets a span, exported in batches to an exporter that drops them (the export
itself is the collector's cost, not batchframe's). Each configuration runs in a process of its own
(a tracer provider is set once per process), median of 3.

Usage: python benchmarks/otel.py [ITEMS]
"""

from __future__ import annotations

import statistics
import subprocess
import sys

from _common import byte_compile_batchframe, report, write_project
from throughput import PROJECT

RUN = """
import sys, time
if sys.argv[2] == "traced":
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=1 << 16))
    trace.set_tracer_provider(provider)
from batchframe.run.commands import run_project
result = run_project(sys.argv[1], params=[f"count={sys.argv[3]}", "concurrency=64"], output_dir=sys.argv[1] + ".out")
print(result.stats.elapsed_s)
"""


def elapsed(path: str, mode: str, items: int) -> float:
    done = subprocess.run(
        [sys.executable, "-c", RUN, path, mode, str(items)], capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    items = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    byte_compile_batchframe()
    path = str(write_project(PROJECT))
    plain = statistics.median(elapsed(path, "plain", items) for _ in range(3))
    traced = statistics.median(elapsed(path, "traced", items) for _ in range(3))
    report(
        f"OpenTelemetry: {items:,} no-op items at concurrency 64, the run's elapsed time (median of 3)",
        [
            ("untraced", f"{plain:.2f} s ({plain / items * 1e6:.1f} us per item)"),
            ("a span per attempt", f"{traced:.2f} s ({traced / items * 1e6:.1f} us per item)"),
            ("cost of tracing", f"{(traced - plain) / items * 1e6:.1f} us per item"),
        ],
    )


if __name__ == "__main__":
    main()
