"""Progress while a run goes: a rich live display on a terminal, a log line every few seconds elsewhere.

Both read the driver's counters on their own clock (a few times a second, or every few seconds),
never per item, so progress costs the hot path nothing. While a ``RateLimited`` cool-down holds every
new start, both say "cooling down 12 s" (the seconds left); off a terminal a line is also logged as
soon as a cool-down begins, so a cool-down shorter than the interval is seen too.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from batchframe._text import clock

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from batchframe.runfolder.stats import Stats

logger = logging.getLogger(__name__)

REFRESH_PER_S = 4
LOG_INTERVAL_S = 5.0
COOLDOWN_POLL_S = 0.25
"""How often the log progress looks for a cool-down that began (to log a line at once)."""


class ProgressDisplay(Protocol):
    """What the supervisor needs of a progress display."""

    def __enter__(self) -> Any: ...
    def __exit__(self, *exc: object) -> None: ...
    def suspend(self) -> None:
        """Stop drawing (the pause shell takes the terminal)."""

    def resume(self) -> None:
        """Draw again."""


def describe(stats: Stats) -> str:
    """One line: done/total, percentage, failed, retrying, in flight, rate, ETA; the cool-down, if any."""
    total = f"/{stats.total:,}" if stats.total is not None else ""
    percent = f" ({100 * stats.completed / stats.total:.0f}%)" if stats.total else ""
    eta = _eta(stats)
    cooldown = cooldown_text(stats.cooldown_s)
    limit = stats.limits.shown
    return (
        f"{stats.completed:,}{total} done{percent}: {stats.whole_succeeded:,} succeeded, "
        f"{stats.whole_failed:,} failed, {stats.retrying:,} retrying, {stats.in_flight:,} in flight, "
        f"{stats.whole_retries:,} retries; "
        f"{stats.rate_per_s:,.1f} items/s"
        + (f", ETA {eta}" if eta else "")
        + (f"; {limit}" if limit else "")
        + (f"; {cooldown}" if cooldown else "")
    )


def cooldown_text(seconds: float) -> str:
    """``cooling down 12 s`` while a run-wide cool-down lasts (whole seconds, rounded up), else ``""``."""
    return f"cooling down {math.ceil(seconds)} s" if seconds > 0 else ""


def _eta(stats: Stats) -> str:
    seconds = stats.eta_s
    return "" if seconds is None else clock(seconds)


class LogProgress:
    """Off a terminal: log the progress line every ``interval_s`` seconds from a background thread."""

    def __init__(self, stats: Stats, *, interval_s: float = LOG_INTERVAL_S) -> None:
        self.stats = stats
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LogProgress:
        self._thread = threading.Thread(target=self._loop, name="batchframe-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        next_at = time.monotonic() + self.interval_s
        cooling = False
        while not self._stop.wait(min(self.interval_s, COOLDOWN_POLL_S)):
            began = not cooling and self.stats.cooldown_s > 0  # a cool-down began: say so now, not later
            cooling = self.stats.cooldown_s > 0
            if began or time.monotonic() >= next_at:
                self._log()
                next_at = time.monotonic() + self.interval_s

    def _log(self) -> None:
        state = run_state(self.stats)
        logger.info("Progress: %s%s", describe(self.stats), "" if state == "running" else f" ({state})")

    def suspend(self) -> None:
        """Nothing to hide: log lines do not fight the shell for the screen."""

    def resume(self) -> None:
        """Nothing to redraw."""


def run_state(stats: Stats) -> str:
    """running, or pausing / paused while the run is paused from outside (``batchframe ui``, control.json).

    The supervisor stops the run's clock for a pause (``Stats.pause_clock``): the clock tells the
    display, which sees only the counters. (The pause shell hides the display while it is open.)
    """
    if stats.paused_since is None:
        return "running"
    return "pausing" if stats.in_flight else "paused"


@dataclass(frozen=True)
class _Detail:
    """How much the live line shows; ``_DETAILS`` goes from everything to what fits 40 columns."""

    bar: int = 30
    zeros: bool = True  # "0 failed", "0 retrying"
    elapsed: bool = True
    label: bool = True  # "batchframe"
    in_flight: bool = True
    rate: bool = True
    ok: bool = True
    words: bool = True  # "failed", "retrying", "cooling down 12 s"; else "fail", "retry", "cooling 12s"
    counts: bool = True  # failed and retrying: only dropped when nothing else fits (a cool-down, say)
    retries: bool = True  # "12 retries" (retries so far; never "0 retries")
    limit: bool = True  # "limit 38/s" (with adaptive, or once tuned); only with the rate


_DETAILS = (
    _Detail(),
    _Detail(bar=20, zeros=False),
    _Detail(bar=20, zeros=False, elapsed=False),
    _Detail(bar=12, zeros=False, elapsed=False, label=False),
    _Detail(bar=12, zeros=False, elapsed=False, label=False, retries=False),
    _Detail(bar=12, zeros=False, elapsed=False, label=False, retries=False, in_flight=False),
    _Detail(bar=12, zeros=False, elapsed=False, label=False, retries=False, in_flight=False, limit=False),
    _Detail(bar=8, zeros=False, elapsed=False, label=False, retries=False, in_flight=False, rate=False),
    _Detail(bar=0, zeros=False, elapsed=False, label=False, retries=False, in_flight=False, rate=False),
    _Detail(bar=0, zeros=False, elapsed=False, label=False, retries=False, in_flight=False, rate=False, ok=False),
    _Detail(
        bar=0,
        zeros=False,
        elapsed=False,
        label=False,
        retries=False,
        in_flight=False,
        rate=False,
        ok=False,
        words=False,
    ),
    _Detail(
        bar=0,
        zeros=False,
        elapsed=False,
        label=False,
        retries=False,
        in_flight=False,
        rate=False,
        ok=False,
        words=False,
        counts=False,
    ),
)


def live_line(stats: Stats, *, width: int, state: str = "running", spinner: str = "") -> Text:
    """The live progress line, as much of it as fits ``width``.

    The count (``113/300``), the percentage, the ETA, the state and a cool-down (``cooling down
    12 s``) are always there; the rest gives way first: zero counts, the elapsed time, the label,
    the bar's length, items in flight, the rate.
    """
    for detail in _DETAILS:
        line = _line(stats, detail, state, spinner)
        if line.cell_len <= width:
            return line
    line.no_wrap, line.overflow = True, "ellipsis"  # narrower than the shortest line: rich cuts its end
    return line


def _line(stats: Stats, detail: _Detail, state: str, spinner: str) -> Text:
    from rich.text import Text

    parts: list[Text] = [Text(spinner)] if spinner else []
    if detail.label:
        parts.append(Text("batchframe", style="bold"))
    if state != "running":
        parts.append(Text(state, style="bold yellow"))
    cooldown = cooldown_text(stats.cooldown_s)
    if cooldown:
        short = f"cooling {math.ceil(stats.cooldown_s)}s"
        parts.append(Text(cooldown if detail.words else short, style="bold yellow"))
    if detail.bar and stats.total:
        parts.append(_bar(stats.completed / stats.total, detail.bar))
    total = f"/{stats.total:,}" if stats.total is not None else " done"
    parts.append(Text(f"{stats.completed:,}{total}"))
    if stats.total:
        parts.append(Text(f"{100 * stats.completed / stats.total:.0f}%"))
    if detail.counts:
        parts += _counts(stats, detail)
    if detail.rate:
        parts += _rate(stats, detail)
    if detail.elapsed:
        parts.append(Text(clock(stats.elapsed_s), style="yellow"))
    if stats.total is not None:
        parts.append(Text(f"ETA {_eta(stats) or '-:--:--'}"))
    return Text(" ").join(parts)


def _rate(stats: Stats, detail: _Detail) -> list[Text]:
    """``12/s``, and ``limit 38/s`` while the limit adapts or once it was tuned."""
    from rich.text import Text

    limit = stats.limits.shown if detail.limit else None
    return [Text(f"{stats.rate_per_s:,.0f}/s", style="cyan"), *([Text(limit, style="magenta")] if limit else [])]


def _counts(stats: Stats, detail: _Detail) -> list[Text]:
    from rich.text import Text

    failed, retrying = ("failed", "retrying") if detail.words else ("fail", "retry")
    counts = [  # (count, word, style, shown, shown when 0)
        (stats.whole_succeeded, "ok", "green", detail.ok, True),
        (stats.whole_failed, failed, "red", True, detail.zeros),
        (stats.retrying, retrying, "yellow", True, detail.zeros),
        (stats.whole_retries, "retries", "yellow", detail.retries, False),
        (stats.in_flight, "in flight", "", detail.in_flight, False),
    ]
    return [
        Text(f"{count:,} {word}", style=style)
        for count, word, style, shown, zero in counts
        if shown and (count or zero)
    ]


def _bar(done: float, width: int) -> Text:
    from rich.text import Text

    filled = round(min(max(done, 0.0), 1.0) * width)
    return Text.assemble(("━" * filled, "magenta"), ("━" * (width - filled), "bright_black"))


class LiveProgress:
    """On a terminal: one line with the run's counters, redrawn a few times a second, fitted to the terminal's width."""

    def __init__(self, stats: Stats, console: Console, *, refresh_per_s: float = REFRESH_PER_S) -> None:
        from rich.live import Live
        from rich.spinner import Spinner

        self.stats = stats
        self._console = console
        self._spinner = Spinner("dots")
        # get_renderable: the counters are read at draw time, a few times a second, never per item.
        self._live = Live(
            console=console, refresh_per_second=refresh_per_s, transient=False, get_renderable=self._render
        )

    def _render(self) -> Text:
        spinner = self._spinner.render(self._console.get_time())
        return live_line(self.stats, width=self._console.width, state=run_state(self.stats), spinner=str(spinner))

    def __enter__(self) -> LiveProgress:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()  # draws the last line, with the final counts

    def suspend(self) -> None:
        """Stop the live display so the pause shell owns the terminal."""
        self._live.stop()

    def resume(self) -> None:
        """Start drawing again after the shell."""
        self._live.start()


def make_progress(stats: Stats, *, console: Console, live: bool, interval_s: float = LOG_INTERVAL_S) -> ProgressDisplay:
    """A live display when ``live`` (a terminal), else periodic log lines."""
    if live:
        return LiveProgress(stats, console)
    return LogProgress(stats, interval_s=interval_s)
