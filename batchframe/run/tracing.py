"""OpenTelemetry traces of a run (the ``otel`` extra): a span for the run, one per item attempt.

Tracing is on when the standard variables ask for it (``OTEL_TRACES_EXPORTER`` other than ``none``,
or ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), or when the program
running batchframe set a tracer provider of its own (a test, an application embedding runs). Then
batchframe uses the global provider, and sets one up from the variables when there is none
(``otlp``: the OTLP/HTTP exporter; ``console``: spans printed as JSON on stderr). Otherwise nothing
is set up and OpenTelemetry is never imported.

The attempt spans are made in the run's own process, around the back end's call, on every back end
(so those of ``processes`` and ``dask`` belong to the run's trace like the others):
a span per attempt, child of the run's span, with ``batchframe.run_id``, ``batchframe.item.index``,
``batchframe.item.attempt``, ``batchframe.outcome`` (``success``, ``error``, ``cancelled``) and, for
an error, ``error.type``. On ``asyncio`` and ``threads`` the attempt's span is the current span while
``process`` runs, so spans of the user's code (an instrumented HTTP client) nest under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from batchframe._text import safe_str
from batchframe.backends import ItemCall
from batchframe.errors import UsageError

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

logger = logging.getLogger(__name__)

_ASKING = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def wanted() -> bool:
    """Whether the run is traced (see the module's docstring); imports nothing to answer "no"."""
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter and exporter != "none":
        return True
    if exporter != "none" and any(os.environ.get(name) for name in _ASKING):
        return True
    return "opentelemetry.trace" in sys.modules and _has_provider()


def _has_provider() -> bool:
    from opentelemetry import trace

    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def tracer() -> Tracer:
    """The global provider's tracer for batchframe, the provider set up from the variables first if needed.

    Raises:
        UsageError: the ``otel`` extra is not installed, or the variables name an exporter it lacks.
    """
    try:
        from opentelemetry import trace
    except ImportError:
        raise UsageError(
            "OTEL_* variables ask for traces, but OpenTelemetry is not installed.",
            hint="pip install 'batchframe[otel]', or unset the OTEL_ variables.",
        ) from None
    if not _has_provider():
        trace.set_tracer_provider(_provider_from_environment())
    from batchframe import __version__

    return trace.get_tracer("batchframe", __version__)


def _provider_from_environment() -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create())  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    for name in [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",") if n.strip()]:
        if name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        elif name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                raise UsageError(
                    "OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter, which is not installed.",
                    hint="pip install 'batchframe[otel]'",
                ) from None
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # OTEL_EXPORTER_OTLP_*
        elif name != "none":
            raise UsageError(
                f"OTEL_TRACES_EXPORTER={name} is not an exporter batchframe sets up.",
                hint="Use otlp, console or none (or set a tracer provider in your own code).",
            )
    return provider


class RunTrace:
    """The run's span, and a span per attempt under it."""

    def __init__(self, run_id: str, attributes: dict[str, Any]) -> None:
        from opentelemetry import trace

        self._trace = trace
        self.tracer = tracer()
        self.run_id = run_id
        self.span: Span = self.tracer.start_span(
            "batchframe run", attributes={"batchframe.run_id": run_id, **attributes}
        )
        self._context = trace.set_span_in_context(self.span)

    async def attempt(self, call: ItemCall, item: Any, index: int, attempt: int) -> Any:
        """``call(item)`` inside a span for this attempt, child of the run's span (and current while it runs)."""
        trace = self._trace
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
        """End the run's span, and flush the spans of a provider batchframe set up."""
        self.span.set_attribute("batchframe.outcome", outcome)
        self.span.set_attribute("batchframe.exit_code", exit_code)
        if exit_code not in (0, 3):
            self.span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, outcome))
        self.span.end()
        provider = self._trace.get_tracer_provider()
        with contextlib.suppress(Exception):
            provider.force_flush()  # type: ignore[attr-defined]
