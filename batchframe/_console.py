"""All rich rendering of the CLI: error panels, tables. rich is imported here, lazily."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from batchframe.errors import BatchframeError

_consoles: dict[str, Console] = {}


def console(*, stderr: bool = False) -> Console:
    """The shared rich console for stdout or stderr (re-created when the stream changes, e.g. in tests)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    key = "err" if stderr else "out"
    existing = _consoles.get(key)
    if existing is None or existing.file is not stream:
        existing = _consoles[key] = _quiet_on_broken_pipe(Console)(file=stream, stderr=stderr)
    return existing


def _quiet_on_broken_pipe(console_cls: type[Console]) -> type[Console]:
    class PipeTolerantConsole(console_cls):  # type: ignore[valid-type,misc]
        """A console that goes quiet when its pipe closes (``| head``; ``| tee`` and Ctrl-C).

        rich's own exits the process (SystemExit), but a run must go on and write its records.
        """

        def on_broken_pipe(self) -> None:
            self.quiet = True
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.file.fileno())  # later writes (and the exit-time flush) go nowhere

    return PipeTolerantConsole


def print_error(error: BatchframeError, *, show_traceback: bool) -> None:
    """One panel on stderr: what went wrong, what to do, and the user's frames when there are some."""
    from rich.markup import escape
    from rich.panel import Panel

    body = escape(error.message)
    if error.user_traceback:
        body += "\n\n[dim]" + escape(error.user_traceback) + "[/dim]"
    if error.hint:
        body += "\n\n[bold]" + escape(error.hint) + "[/bold]"
    out = console(stderr=True)
    out.print(Panel(body, title=error.title, title_align="left", border_style="red", expand=False))
    if show_traceback:
        out.print_exception(show_locals=False) if sys.exc_info()[0] else None


def print_table(title: str, columns: list[str], rows: list[list[Any]], *, stderr: bool = False) -> None:
    """A simple rich table."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    console(stderr=stderr).print(table)
