"""OpenTelemetry (the ``otel`` extra): a span for the run and one per attempt, and the run's metrics.

Each signal is on when the standard variables ask for it, or when the program running batchframe
set a provider of its own (a test, an application embedding runs):

- traces: ``OTEL_TRACES_EXPORTER`` other than ``none``, or ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``;
- metrics: ``OTEL_METRICS_EXPORTER`` other than ``none``, or ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
  ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``.

batchframe then uses the global provider, and sets one up from the variables when there is none
(``otlp``: the OTLP/HTTP exporter; ``console``: JSON on stderr). Otherwise nothing is set up and
OpenTelemetry is never imported.

The attempt spans are made in the run's own process, around the back end's call, on every back end
(so those of ``processes`` and ``dask`` belong to the run's trace like the others): a span per
attempt, child of the run's span, with ``batchframe.run_id``, ``batchframe.item.index``,
``batchframe.item.attempt``, ``batchframe.outcome`` (``success``, ``error``, ``cancelled``) and, for
an error, ``error.type``. The attempt's span is the current span while ``process`` runs, in this
process or in a worker process (``backends._trace_context`` sends its context with the item), so
spans of the user's code (an instrumented HTTP client) nest under it.

The metrics are those of ``-p metrics_textfile`` (``run.metrics``) as OpenTelemetry instruments:
observable counters and gauges read from the run's counters when exported, and the
``batchframe.item.duration`` histogram recorded per attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from batchframe._text import safe_str
from batchframe.backends import ItemCall, _trace_context
from batchframe.backends._otel_setup import meter_provider, tracer_provider
from batchframe.errors import UsageError
from batchframe.runfolder.stats import Stats

if TYPE_CHECKING:
    from collections.abc import Iterable

    from opentelemetry.metrics import CallbackOptions, Histogram, Observation
    from opentelemetry.trace import Span, Tracer

logger = logging.getLogger(__name__)

_ENDPOINTS = {
    "TRACES": ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    "METRICS": ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
}


def _asked(signal: str) -> bool:
    """Whether the variables ask for ``signal`` (``TRACES``, ``METRICS``)."""
    exporter = os.environ.get(f"OTEL_{signal}_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return any(os.environ.get(name) for name in _ENDPOINTS[signal])


def traces_wanted() -> bool:
    """Whether the run is traced; imports nothing to answer "no"."""
    return _asked("TRACES") or ("opentelemetry.trace" in sys.modules and _has_tracer_provider())


def metrics_wanted() -> bool:
    """Whether the run's metrics go to OpenTelemetry; imports nothing to answer "no"."""
    return _asked("METRICS") or ("opentelemetry.metrics" in sys.modules and _has_meter_provider())


def _has_tracer_provider() -> bool:
    from opentelemetry import trace

    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _has_meter_provider() -> bool:
    from opentelemetry import metrics
    from opentelemetry.metrics import _internal

    return not isinstance(metrics.get_meter_provider(), _internal._ProxyMeterProvider)


def _import_otel() -> None:
    try:
        import opentelemetry.sdk  # noqa: F401
    except ImportError:
        raise UsageError(
            "OTEL_* variables ask for traces or metrics, but the OpenTelemetry SDK is not installed.",
            hint="pip install 'batchframe[otel]', or unset the OTEL_ variables.",
        ) from None


class RunTelemetry:
    """The run's span, a span per attempt under it, and its metrics; each only when wanted.

    Args:
        stats: the run's counters (read by the observable instruments).
        run_id: the run folder's name.
        project: the project's name; config: the config's name or None (the metrics' attributes).
        traces: make spans; metrics: register the instruments.
    """

    def __init__(
        self, stats: Stats, run_id: str, *, project: str, config: str | None, traces: bool, metrics: bool
    ) -> None:
        _import_otel()
        from batchframe import __version__

        self.stats = stats
        self.run_id = run_id
        self.labels = {"project": project, "config": config or ""}
        self.tracer: Tracer | None = None
        self.span: Span | None = None
        self._duration: Histogram | None = None
        self._set_up: list[Any] = []  # the providers batchframe made: flushed at the end
        if traces:
            from opentelemetry import trace

            if not _has_tracer_provider():
                provider = tracer_provider()
                trace.set_tracer_provider(provider)
                self._set_up.append(provider)
            self.tracer = trace.get_tracer("batchframe", __version__)
            attributes: dict[str, Any] = {"batchframe.run_id": run_id, "batchframe.project": project}
            attributes["batchframe.config"] = config or ""
            self.span = self.tracer.start_span("batchframe run", attributes=attributes)
            self._context = trace.set_span_in_context(self.span)
            _trace_context.carrier = _current_headers  # items sent to workers carry their attempt's context
        if metrics:
            self._meters(__version__)
        self.exit_code: int | None = None

    def _meters(self, version: str) -> None:
        from opentelemetry import metrics

        if not _has_meter_provider():
            provider = meter_provider()
            metrics.set_meter_provider(provider)
            self._set_up.append(provider)
        meter = metrics.get_meter("batchframe", version)
        meter.create_observable_counter(
            "batchframe.items", [self._items], unit="{item}", description="Items by outcome"
        )
        meter.create_observable_counter("batchframe.retries", [self._count("whole_retries")], unit="{retry}")
        meter.create_observable_counter(
            "batchframe.rate_limited", [self._count("whole_rate_limited")], unit="{refusal}"
        )
        meter.create_observable_gauge("batchframe.run.duration", [self._run_duration], unit="s")
        meter.create_observable_gauge("batchframe.run.in_progress", [self._in_progress])
        self._duration = meter.create_histogram(
            "batchframe.item.duration", unit="s", description="Duration of process per attempt"
        )

    def _observe(self, value: float, **more: str) -> list[Observation]:
        from opentelemetry.metrics import Observation

        return [Observation(value, {**self.labels, **more})]

    def _items(self, options: CallbackOptions) -> Iterable[Observation]:
        stats = self.stats
        return [
            *self._observe(stats.whole_succeeded, outcome="succeeded"),
            *self._observe(stats.whole_failed, outcome="failed"),
            *self._observe(stats.not_processed, outcome="not_processed"),
        ]

    def _count(self, name: str) -> Any:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return self._observe(getattr(self.stats, name))

        return observe

    def _run_duration(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._observe(self.stats.elapsed_s)

    def _in_progress(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._observe(float(self.exit_code is None))

    async def attempt(self, call: ItemCall, item: Any, index: int, attempt: int) -> Any:
        """``call(item)``, inside a span for this attempt when traced, its duration recorded when measured."""
        started = time.perf_counter()
        try:
            if self.tracer is None:
                return await call(item)
            return await self._traced(call, item, index, attempt)
        finally:
            if self._duration is not None:
                self._duration.record(time.perf_counter() - started, self.labels)

    async def _traced(self, call: ItemCall, item: Any, index: int, attempt: int) -> Any:
        from opentelemetry import trace

        assert self.tracer is not None
        attributes: dict[str, Any] = {
            "batchframe.run_id": self.run_id,
            "batchframe.item.index": index,
            "batchframe.item.attempt": attempt,
        }
        span = self.tracer.start_span("batchframe item", context=self._context, attributes=attributes)
        with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
            try:
                result = await call(item)
            except asyncio.CancelledError:
                span.set_attribute("batchframe.outcome", "cancelled")  # a pause or a stop: not the item's doing
                raise
            except BaseException as exc:
                span.set_attribute("batchframe.outcome", "error")
                span.set_attribute("error.type", type(exc).__qualname__)
                span.set_status(trace.Status(trace.StatusCode.ERROR, safe_str(exc)[:200]))
                raise
            span.set_attribute("batchframe.outcome", "success")
            return result

    def end(self, outcome: str, exit_code: int) -> None:
        """End the run's span; export what the providers batchframe set up still hold."""
        self.exit_code = exit_code
        _trace_context.carrier = None
        if self.span is not None:
            from opentelemetry import trace

            self.span.set_attribute("batchframe.outcome", outcome)
            self.span.set_attribute("batchframe.exit_code", exit_code)
            if exit_code not in (0, 3):
                self.span.set_status(trace.Status(trace.StatusCode.ERROR, outcome))
            self.span.end()
        for provider in self._set_up:
            with contextlib.suppress(Exception):  # a collector that is down: the run's outcome is unchanged
                provider.force_flush()


def _current_headers() -> dict[str, str]:
    """The current trace context as W3C headers (``traceparent``), for a worker process."""
    from opentelemetry import propagate

    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers
