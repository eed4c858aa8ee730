"""The run's figures for Prometheus: ``-p metrics_textfile=PATH`` and ``-p metrics_pushgateway=URL``.

A textfile in node_exporter's format (its textfile collector picks it up) is rewritten atomically
every ``WRITE_EVERY_S`` seconds while the run goes and once at its end; a Pushgateway gets the
figures once, at the end, as Prometheus advises for batch jobs. Every figure is read from the run's
counters and report when written: nothing is added to the per-item path. ``prometheus_client`` (the
``prometheus`` extra) is imported only when one of the two is set.

Metrics (labels ``project`` and ``config``): ``batchframe_items_total{outcome}``,
``batchframe_retries_total``, ``batchframe_rate_limited_total``, ``batchframe_run_duration_seconds``,
``batchframe_run_in_progress``, ``batchframe_run_exit_code`` (at the end),
``batchframe_last_success_timestamp_seconds`` (when an item last succeeded) and the histogram
``batchframe_item_duration_seconds`` (attempts, from the run's latency report).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchframe.errors import ParamError, UsageError
from batchframe.project.config_values import check_http_url
from batchframe.runfolder.report import Latency
from batchframe.runfolder.stats import Stats

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

logger = logging.getLogger(__name__)

WRITE_EVERY_S = 5.0
BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""The bounds of ``batchframe_item_duration_seconds`` (Prometheus's defaults, widened both ways)."""


def check_metrics(textfile: str | None, pushgateway: str | None) -> None:
    """Refuse before the run what would fail at its end: a folder that cannot be written, a bad URL, no extra.

    Raises:
        ParamError: the textfile's folder is missing or not writable; the Pushgateway URL is not http(s).
        UsageError: ``prometheus_client`` is not installed.
    """
    if textfile is None and pushgateway is None:
        return
    if textfile is not None:
        folder = Path(textfile).expanduser().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise ParamError(
                f"metrics_textfile {textfile!r} cannot be written: {folder} is not a folder this user can write to.",
                hint="Give a file in a writable folder, e.g. -p metrics_textfile=/var/lib/node_exporter/run.prom",
                param="metrics_textfile",
            )
    check_http_url("metrics_pushgateway", pushgateway, "http://pushgateway:9091")
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise UsageError(
            "metrics_textfile and metrics_pushgateway need prometheus_client, which is not installed.",
            hint="pip install 'batchframe[prometheus]'",
        ) from None


class RunMetrics:
    """Writes the run's figures to a textfile while it goes, and pushes them at its end.

    Args:
        stats: the run's live counters (the whole run's counts; this part's latency).
        project: the project's name (a label).
        config: the config's name, or None (a label: "").
        textfile: where to write node_exporter's textfile, or None.
        pushgateway: the Pushgateway's URL, or None.
    """

    def __init__(
        self, stats: Stats, *, project: str, config: str | None, textfile: str | None, pushgateway: str | None
    ) -> None:
        from prometheus_client import CollectorRegistry

        self.textfile = textfile
        self.pushgateway = pushgateway
        self.registry: CollectorRegistry = CollectorRegistry()
        self._collector = _RunCollector(stats, {"project": project, "config": config or ""})
        self.registry.register(self._collector)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = False

    def start(self) -> None:
        """Write the textfile now and every ``WRITE_EVERY_S`` seconds, on a thread of its own."""
        if self.textfile is None:
            return
        self._write()
        self._thread = threading.Thread(target=self._run, name="batchframe-metrics", daemon=True)
        self._thread.start()

    def finish(self, exit_code: int) -> str | None:
        """The last figures: the textfile once more, and the Pushgateway. Returns a warning, or None."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._collector.exit_code = exit_code
        warnings = []
        if self.textfile is not None and not self._write():
            warnings.append(f"the metrics textfile {self.textfile} could not be written")
        if self.pushgateway is not None:
            warnings += self._push()
        if not warnings:
            return None
        return "Metrics: " + "; ".join(warnings) + " (see logs.txt)."

    def _run(self) -> None:
        while not self._stop.wait(WRITE_EVERY_S):
            self._write()

    def _write(self) -> bool:
        from prometheus_client import write_to_textfile

        assert self.textfile is not None
        try:
            write_to_textfile(str(Path(self.textfile).expanduser()), self.registry)  # a temporary file, then renamed
        except OSError as exc:
            if not self._failed:
                self._failed = True
                logger.warning("Could not write the metrics textfile %s: %s", self.textfile, exc)
            return False
        return True

    def _push(self) -> list[str]:
        from prometheus_client import push_to_gateway

        assert self.pushgateway is not None
        labels = self._collector.labels
        try:
            push_to_gateway(
                self.pushgateway,
                job="batchframe",
                registry=self.registry,
                grouping_key={"project": labels["project"], "config": labels["config"] or "-"},
                timeout=5,
            )
        except Exception as exc:  # a network error, an HTTP error: the run's outcome is unchanged
            logger.warning("Could not push the metrics to %s: %s", self.pushgateway, exc)
            return [f"the push to {self.pushgateway} failed ({type(exc).__name__})"]
        return []


class _RunCollector:
    """Reads the run's counters each time the registry is collected."""

    def __init__(self, stats: Stats, labels: dict[str, str]) -> None:
        self.stats = stats
        self.labels = labels
        self.exit_code: int | None = None
        self._succeeded = 0
        self._last_success: float | None = None

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        stats, names, values = self.stats, list(self.labels), list(self.labels.values())
        if stats.whole_succeeded != self._succeeded:
            self._succeeded, self._last_success = stats.whole_succeeded, time.time()
        items = CounterMetricFamily("batchframe_items", "Items by outcome", labels=[*names, "outcome"])
        for outcome, count in (
            ("succeeded", stats.whole_succeeded),
            ("failed", stats.whole_failed),
            ("not_processed", stats.not_processed),
        ):
            items.add_metric([*values, outcome], count)
        yield items
        for name, help_text, value in (
            ("batchframe_retries", "Retries scheduled", stats.whole_retries),
            ("batchframe_rate_limited", "Attempts the API refused (RateLimited)", stats.whole_rate_limited),
        ):
            counter = CounterMetricFamily(name, help_text, labels=names)
            counter.add_metric(values, value)
            yield counter
        gauges = [
            ("batchframe_run_duration_seconds", "Running time of the run, pauses excluded", stats.elapsed_s),
            ("batchframe_run_in_progress", "1 while the run goes, 0 once it ended", float(self.exit_code is None)),
        ]
        if self.exit_code is not None:
            gauges.append(("batchframe_run_exit_code", "The run's exit code", float(self.exit_code)))
        if self._last_success is not None:
            gauges.append(
                ("batchframe_last_success_timestamp_seconds", "When an item last succeeded", self._last_success)
            )
        for name, help_text, number in gauges:
            gauge = GaugeMetricFamily(name, help_text, labels=names)
            gauge.add_metric(values, number)
            yield gauge
        latency = stats.report.latency
        histogram = HistogramMetricFamily(
            "batchframe_item_duration_seconds", "Duration of process per attempt (timed attempts)", labels=names
        )
        histogram.add_metric(values, buckets=_buckets(latency), sum_value=latency.total_s)
        yield histogram


def _buckets(latency: Latency) -> list[tuple[str, float]]:
    """Cumulative counts at ``BUCKETS_S`` (and +Inf) from the run's log-linear histogram (each entry at its middle)."""
    bounds = [*BUCKETS_S, float("inf")]
    counts = [0] * len(bounds)
    for index, count in enumerate(latency.buckets):
        if count:
            seconds = latency.bucket_middle_s(index)
            counts[next(i for i, bound in enumerate(bounds) if seconds <= bound)] += count
    cumulative, total = [], 0
    for bound, count in zip(bounds, counts, strict=True):
        total += count
        cumulative.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
    return cumulative
