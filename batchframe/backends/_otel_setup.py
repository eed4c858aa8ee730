"""OpenTelemetry providers set up from the standard ``OTEL_`` variables (the ``otel`` extra).

For the run's process (``run.telemetry``) and for its worker processes, which trace the items they
run under the context the run sends them (``_trace_context``). Imported only when a run is traced.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from batchframe.errors import UsageError

_EXPORTERS = ("otlp", "console", "none")


def _exporters(signal: str) -> list[str]:
    names = [name.strip() for name in os.environ.get(f"OTEL_{signal}_EXPORTER", "otlp").lower().split(",")]
    for name in names:
        if name and name not in _EXPORTERS:
            raise UsageError(
                f"OTEL_{signal}_EXPORTER={name} is not an exporter batchframe sets up.",
                hint="Use otlp, console or none (or set a provider in your own code).",
            )
    return [name for name in names if name and name != "none"]


def _otlp(module: str, name: str) -> Any:
    try:
        return getattr(__import__(f"opentelemetry.exporter.otlp.proto.http.{module}", fromlist=[name]), name)
    except ImportError:
        raise UsageError(
            "OTEL_..._EXPORTER=otlp needs the OTLP exporter, which is not installed.",
            hint="pip install 'batchframe[otel]'",
        ) from None


def tracer_provider() -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create())  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    for name in _exporters("TRACES"):
        exporter = (
            ConsoleSpanExporter(out=sys.stderr) if name == "console" else _otlp("trace_exporter", "OTLPSpanExporter")()
        )
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def meter_provider() -> Any:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    readers = []
    for name in _exporters("METRICS"):
        exporter = (
            ConsoleMetricExporter(out=sys.stderr)
            if name == "console"
            else _otlp("metric_exporter", "OTLPMetricExporter")()
        )
        readers.append(PeriodicExportingMetricReader(exporter))  # OTEL_METRIC_EXPORT_INTERVAL
    return MeterProvider(resource=Resource.create(), metric_readers=readers)
