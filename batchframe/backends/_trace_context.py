"""An attempt's trace context, sent with its item to a worker process when the run is traced.

While a run is traced (``run.telemetry``), ``carrier`` gives the W3C trace context of the attempt
starting (its span is the current one); the ``Batcher`` wraps the item with it as a ``Traced``, and
the worker makes that context current while ``process`` runs: the spans the user's code makes
there belong to the run's trace, under the attempt. A worker sets up its own tracer provider from
the same ``OTEL_`` variables. Nothing here imports OpenTelemetry unless a run is traced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

carrier: Callable[[], dict[str, str]] | None = None
"""Set by a traced run: the current trace context as ``traceparent``/``tracestate`` headers."""


class Traced:
    """An item with the trace context of its attempt (pickled to the worker with it)."""

    __slots__ = ("carrier", "item")

    def __init__(self, item: Any, carrier: dict[str, str]) -> None:
        self.item = item
        self.carrier = carrier

    def __reduce__(self) -> tuple[Any, ...]:
        return Traced, (self.item, self.carrier)


def with_context(item: Any) -> Any:
    """``item``, wrapped with the current trace context when the run is traced."""
    if carrier is None:
        return item
    headers = carrier()
    return Traced(item, headers) if headers else item


@contextlib.contextmanager
def attached(headers: dict[str, str]) -> Iterator[None]:
    """In a worker: the attempt's trace context is the current one (a provider set up from the variables)."""
    try:
        from opentelemetry import context, propagate, trace
    except ImportError:  # a worker without the extra: the item runs, untraced
        yield
        return
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        from batchframe.backends._otel_setup import tracer_provider

        with contextlib.suppress(Exception):  # variables this worker cannot honour: untraced, never failed
            trace.set_tracer_provider(tracer_provider())
    token = context.attach(propagate.extract(headers))
    try:
        yield
    finally:
        context.detach(token)
