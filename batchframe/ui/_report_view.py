"""The run page's report: latency, attempts, a throughput chart drawn on the server, the top errors.

The chart is an inline SVG built here from summary.json's timeline: no script, no CDN, and only
presentation attributes (no ``style``), so it fits the UI's Content-Security-Policy as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from batchframe.runfolder.summary import latency_text, seconds_text

CHART_WIDTH = 640
CHART_HEIGHT = 140
_PAD_LEFT, _PAD_BOTTOM, _PAD_TOP = 48, 22, 8


@dataclass(frozen=True)
class ReportView:
    """What the run page shows of a finished run's report (summary.json schema 2)."""

    latency: str | None = None
    latency_p99: str | None = None
    attempts: str | None = None
    chart: Markup | None = None
    top_errors: list[dict[str, Any]] = field(default_factory=list)


def report_view(summary: dict[str, Any] | None) -> ReportView | None:
    """The report of a summary.json, or None for a run without one (live, or an older batchframe's)."""
    report = summary.get("report") if isinstance(summary, dict) else None
    if not isinstance(report, dict):
        return None
    latency = report.get("latency")
    p99 = latency.get("p99_s") if isinstance(latency, dict) else None
    attempts = report.get("attempts")
    timeline = report.get("timeline")
    top = report.get("top_errors")
    return ReportView(
        latency=latency_text(latency),
        latency_p99=seconds_text(p99) if isinstance(p99, (int, float)) else None,
        attempts=", ".join(f"{count:,} x {tries}" for tries, count in attempts.items())
        if isinstance(attempts, dict) and attempts
        else None,
        chart=throughput_svg(timeline) if isinstance(timeline, dict) else None,
        top_errors=[error for error in top if isinstance(error, dict)] if isinstance(top, list) else [],
    )


def throughput_svg(timeline: dict[str, Any]) -> Markup | None:
    """Items finished per second over the run, as an SVG area chart with its peak and length marked."""
    rates = [rate for rate in timeline.get("rate_per_s") or [] if isinstance(rate, (int, float)) and rate >= 0]
    interval = timeline.get("interval_s")
    if len(rates) < 2 or not isinstance(interval, (int, float)) or interval <= 0:
        return None
    peak = max(rates) or 1.0
    plot_w = CHART_WIDTH - _PAD_LEFT
    plot_h = CHART_HEIGHT - _PAD_BOTTOM - _PAD_TOP
    step = plot_w / (len(rates) - 1)
    points = [(_PAD_LEFT + i * step, _PAD_TOP + plot_h * (1 - rate / peak)) for i, rate in enumerate(rates)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    base = _PAD_TOP + plot_h
    area = f"{_PAD_LEFT},{base} {line} {CHART_WIDTH},{base}"
    length = seconds_text(interval * len(rates))
    markup = (
        f'<svg class="chart" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img" '
        f'aria-label="Items finished per second, peak {peak:,.0f}/s over {length}">'
        f'<polygon points="{area}" fill="#c7d2fe" />'
        f'<polyline points="{line}" fill="none" stroke="#4338ca" stroke-width="2" />'
        f'<line x1="{_PAD_LEFT}" y1="{base}" x2="{CHART_WIDTH}" y2="{base}" stroke="#9ca3af" />'
        f'<line x1="{_PAD_LEFT}" y1="{_PAD_TOP}" x2="{_PAD_LEFT}" y2="{base}" stroke="#9ca3af" />'
        f'<text x="{_PAD_LEFT - 6}" y="{_PAD_TOP + 10}" text-anchor="end" font-size="11" fill="#374151">'
        f"{peak:,.0f}/s</text>"
        f'<text x="{_PAD_LEFT - 6}" y="{base}" text-anchor="end" font-size="11" fill="#374151">0</text>'
        f'<text x="{_PAD_LEFT}" y="{CHART_HEIGHT - 6}" font-size="11" fill="#374151">0 s</text>'
        f'<text x="{CHART_WIDTH}" y="{CHART_HEIGHT - 6}" text-anchor="end" font-size="11" fill="#374151">'
        f"{length}</text>"
        "</svg>"
    )
    return Markup(markup)  # safe: numbers and our own words only, nothing from the run's data
