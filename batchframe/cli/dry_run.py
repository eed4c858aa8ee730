"""``batchframe exec --dry-run``: what a run would process, without running it.

The project is loaded and its parameters resolved exactly as ``exec`` does (prompts included), the
Source and the Service are built, and the Source is read only to count its items (up to
``--limit``) and show the first few. No ``process``, no Service hook, no run folder: the run-folder
static (``_current_run_output_dir``) names a scratch folder that is removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchframe._console import console, print_line
from batchframe._text import format_exception, safe_repr, safe_str, storable_text
from batchframe.errors import RunError
from batchframe.run.prepare import prepare
from batchframe.runfolder.logs import run_logging
from batchframe.runfolder.outcome import EXIT_OK, EXIT_SIGINT
from batchframe.service import retryable_exceptions
from batchframe.source import (
    check_limit,
    check_source,
    first_async_items,
    is_async_source,
    iter_async_source,
    iter_sync_source,
    source_length,
)

if TYPE_CHECKING:
    from rich.text import Text

    from batchframe.run.prepare import AskMissing

SHOWN = 5
"""How many of the first items a dry run shows."""


@dataclass
class DryRun:
    """What a dry run found.

    Attributes:
        path: the project, as given.
        counted: the items read from the Source (at most ``limit``).
        first: one-line reprs of the first ``SHOWN`` items.
        length: what the Source's ``__len__`` says, or None (none, or a broken one).
        limit: ``--limit N``, or None.
        interrupted: Ctrl-C stopped the count (``counted`` is how far it got).
    """

    path: str
    counted: int = 0
    first: list[str] = field(default_factory=list)
    length: int | None = None
    limit: int | None = None
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """0, or 130 when Ctrl-C cut the count short."""
        return EXIT_SIGINT if self.interrupted else EXIT_OK

    def add(self, item: Any) -> None:
        """Count one item (and keep its repr if it is one of the first)."""
        if len(self.first) < SHOWN:
            self.first.append(one_line(item))
        self.counted += 1


def dry_run(
    path: str | Path,
    *,
    config: str | None = None,
    params: Sequence[str] = (),
    ask_missing: AskMissing | None = None,
    output_dir: Path,
    limit: int | None = None,
    verbosity: int = 0,
) -> DryRun:
    """Prepare the run as ``exec`` would, build its objects and count the Source's items.

    Raises:
        UsageError: a bad path, project, config or parameter (exit code 2).
        RunError: a constructor raised, or the Source raised while it was read (exit code 1).
    """
    check_limit(limit)
    prepared = prepare(path, config=config, params=params, ask_missing=ask_missing)
    with (
        run_logging(None, verbosity=verbosity),
        tempfile.TemporaryDirectory(prefix="batchframe-dry-run-", ignore_cleanup_errors=True) as scratch,
    ):
        statics = {
            "_output_directory": Path(output_dir).resolve(),
            "_current_run_start": dt.datetime.now(),
            "_current_run_output_dir": Path(scratch),
        }
        wired = prepared.build(statics)
        retryable_exceptions(wired.service)  # checked before a run starts: a bad one is a usage error
        check_source(wired.source)  # an async def next() would be counted forever
        report = DryRun(str(path), length=source_length(wired.source), limit=limit)
        with _counting(report):
            _count(wired.source, report)
    return report


class _Counter:
    """What the terminal shows while a long Source is counted (redrawn by rich's thread, not per item)."""

    def __init__(self, report: DryRun) -> None:
        self.report = report

    def __rich__(self) -> Text:
        from rich.text import Text

        return Text(f"Counting the Source's items: {self.report.counted:,} (Ctrl-C stops)", style="dim")


@contextlib.contextmanager
def _counting(report: DryRun) -> Iterator[None]:
    """On a terminal, a transient line with the count so far; off a terminal, nothing."""
    out = console(stderr=True)
    if not out.is_terminal:
        yield
        return
    from rich.live import Live

    with Live(_Counter(report), console=out, transient=True, refresh_per_second=4):
        yield


def _count(source: Any, report: DryRun) -> None:
    """Read the Source as a run would (sync or async), at most ``report.limit`` items; never past it."""
    try:
        if is_async_source(source):
            asyncio.run(_count_async(source, report))
        else:
            for item in itertools.islice(iter_sync_source(source), report.limit):
                report.add(item)
    except KeyboardInterrupt:
        report.interrupted = True
    except BaseException as exc:  # the Source's own error (SystemExit, a CancelledError of its own too)
        raise RunError(
            f"Reading the source failed after {report.counted:,} items: {type(exc).__name__}: {safe_str(exc)}",
            hint="Fix the Source (frames below are from your code); a run would stop on the same error.",
            user_traceback=format_exception(exc, headers=False),
        ) from exc


async def _count_async(source: Any, report: DryRun) -> None:
    items = iter_async_source(source)
    async for item in items if report.limit is None else first_async_items(items, report.limit):
        report.add(item)


def one_line(item: Any) -> str:
    """A short ``repr`` of an item on one line: bounded length and depth; line breaks and control characters escaped."""
    text = storable_text(safe_repr(item))
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


# ------------------------------------------------------------------------------------------ report


def show(report: DryRun) -> None:
    """The count and the first items on stdout (each cut to one line of the console); an interrupt on stderr."""
    from rich.text import Text

    print_line(_headline(report), prose=True)
    if report.first:
        print_line("First items:" if report.counted > len(report.first) else "Items:", style="bold")
        width = console().width
        for position, text in enumerate(report.first):
            prefix = f"  [{position}] "
            line = Text(text)
            line.truncate(max(width - len(prefix), 8), overflow="ellipsis")
            print_line(Text.assemble((prefix, "dim"), line))
    for note in _notes(report):
        print_line(note, style="yellow", prose=True)
    print_line("Dry run: nothing was processed and no run folder was created.", style="dim", prose=True)
    if report.interrupted:
        print_line("Interrupted.", stderr=True)


def _headline(report: DryRun) -> str:
    count, limit = report.counted, report.limit
    items = f"{count:,} item{'' if count == 1 else 's'}"
    if report.interrupted:
        return f"{report.path}: {items} counted before the interrupt; the Source has more (the count is not complete)."
    if limit is not None and count >= limit:
        return (
            f"{report.path}: a run with --limit {limit:,} would process the first {items} "
            "(the Source was not read further)."
        )
    if limit is not None:
        return f"{report.path}: a run with --limit {limit:,} would process {items}, all the Source has."
    if not count:
        return f"{report.path}: the Source yields no items; a run would process none."
    return f"{report.path}: a run would process {items}."


def _notes(report: DryRun) -> list[str]:
    """A ``__len__`` that disagrees with what the Source yields (progress would show a wrong total)."""
    length, count = report.length, report.counted
    if length is None or report.interrupted:
        return []
    read_all = report.limit is None or count < report.limit
    if read_all and length != count:
        yielded = f"{count:,}"
    elif not read_all and length < count:
        yielded = f"at least {count:,}"
    else:
        return []
    return [f"The Source's __len__ says {length:,}, but it yielded {yielded}: a run's progress total would be wrong."]
