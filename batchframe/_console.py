"""All rich rendering of the CLI: error panels, tables, lines that are never cut. rich is imported here, lazily.

Two rules hold at any width, on a terminal and off it: an identifier (a run folder, a parameter's
name, a path) is never cut or broken, and off a terminal (a file, a pipe, CI) nothing is padded or
wrapped to the console's width. Tables give up their other columns first (cut with an ellipsis, or dropped);
paths go on lines of their own, printed with ``soft_wrap`` so that only the terminal folds them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from batchframe._text import printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    from batchframe.errors import BatchframeError
    from batchframe.project.params import ParamSpec

_consoles: dict[str, Console] = {}


def console(*, stderr: bool = False) -> Console:
    """The shared rich console for stdout or stderr (re-created when the stream changes, e.g. in tests)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    key = "err" if stderr else "out"
    existing = _consoles.get(key)
    if existing is None or existing.file is not stream:
        existing = _consoles[key] = _quiet_on_broken_pipe(Console)(file=stream, stderr=stderr)
        # Off a terminal, a message printed as it is stays one line (rich would wrap it at 80 columns).
        existing.soft_wrap = not existing.is_terminal
    return existing


def restore_std_streams() -> bool:
    """Give ``sys.stdout``/``sys.stderr`` back when user code closed them (``sys.stdout.close()`` in ``process``).

    Python's standard streams do not own their file descriptors, so 1 and 2 are still open: new
    streams on them let the run print its summary. Returns whether one was restored.
    """
    restored = False
    for name, fd in (("stdout", 1), ("stderr", 2)):
        stream = getattr(sys, name)
        if stream is not None and not getattr(stream, "closed", False):
            continue
        try:
            os.fstat(fd)
            setattr(sys, name, open(fd, "w", buffering=1, closefd=False, errors="backslashreplace"))  # noqa: SIM115
        except OSError:
            continue
        _consoles.pop("out" if fd == 1 else "err", None)
        restored = True
    return restored


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


def print_line(text: str | Text, *, stderr: bool = False, style: str = "", prose: bool = False) -> None:
    """One line that is never cut or padded, nor wrapped inside a word.

    By default not wrapped at all (``soft_wrap``): a path stays whole, and only the terminal folds
    a line longer than itself. ``prose``: on a terminal, wrapped between words to its width (off a
    terminal, a line stays one line whatever it holds).
    """
    from rich.text import Text

    line = shown(text) if isinstance(text, Text) else Text(printable(text), style=style)
    out = console(stderr=stderr)
    for part in wrap_words(line, out.width) if prose and out.is_terminal else [line]:
        out.print(part, soft_wrap=True)


def wrap_words(text: Text, width: int) -> list[Text]:
    """``text`` wrapped to ``width`` between words only, with no space left at the end of a line.

    A word longer than ``width`` (a path) gets a line of its own, whole: the terminal folds it, and
    a copy of it from the screen is still the path. (rich would fold it with line breaks of its
    own, inside the word.)
    """
    import re

    from rich.cells import cell_len

    lines: list[Text] = []
    for source_line in text.split("\n", allow_blank=True):
        plain = source_line.plain
        breaks: list[int] = []
        column, words_on_line = len(plain) - len(plain.lstrip()), 0  # an indented line keeps its indent
        for word in re.finditer(r"\S+\s*", plain):
            if words_on_line and column + cell_len(word.group().rstrip()) > width:
                breaks.append(word.start())
                column, words_on_line = 0, 0
            column += cell_len(word.group())
            words_on_line += 1
        for part in source_line.divide(breaks):
            part.rstrip()
            lines.append(part)
    return lines


# ------------------------------------------------------------------------------------------- tables

_CELL_PADDING = 1
"""Spaces on each side of a cell (rich's default)."""


@dataclass(frozen=True)
class Col:
    """A table column, and how it gives way when the table is wider than the console.

    Attributes:
        header: the column's heading.
        justify: how its cells line up.
        cut_to: None for a column that is never cut (an identifier, a number); else the column may
            be narrowed down to this many cells, its cells cut with an ellipsis (or wrapped, with ``wrap``).
        wrap: free text that wraps onto more lines instead of being cut.
        drop: 0 for a column always shown; else the column goes when even the narrowest table does
            not fit, the highest first.
    """

    header: str
    justify: Literal["left", "right"] = "left"
    cut_to: int | None = None
    wrap: bool = False
    drop: int = 0


def print_table(
    title: str,
    columns: Sequence[Col],
    rows: Sequence[Sequence[str | Text]],
    *,
    stderr: bool = False,
    header: bool = True,
) -> None:
    """A table fitted to the console: the title (if any) on a line of its own, columns cut or dropped as they allow.

    When even the columns that cannot give way are wider than the console, the rows are printed as
    plain lines instead: nothing that identifies a row is ever cut.
    """
    out = console(stderr=stderr)
    if title:
        print_line(title, stderr=stderr, style="bold")
    cells = [[_as_text(cell) for cell in row] for row in rows]
    widths = fit_columns(columns, cells, out.width)
    if widths is None:
        for row in cells:
            print_line(_join(row), stderr=stderr)
        return
    out.print(_table(columns, cells, widths, header=header))


def _as_text(cell: str | Text) -> Text:
    from rich.text import Text

    if isinstance(cell, Text):
        return shown(cell)
    return Text(printable(cell))  # never markup: a "[x]" in a value stays as it is


def shown(text: Text) -> Text:
    """``text`` as it may reach a terminal: the control characters of user data written out as text."""
    from rich.text import Text

    plain = text.plain
    safe = printable(plain)
    return text if safe == plain else Text(safe, style=text.style)


def _join(row: Sequence[Text]) -> Text:
    from rich.text import Text

    return Text("  ").join(row)


def fit_columns(columns: Sequence[Col], rows: Sequence[Sequence[Text]], width: int) -> list[tuple[int, int]] | None:
    """The columns to show, as (index, width), so that the table fits ``width``; None when it cannot.

    Columns are first narrowed (each down to its ``cut_to``; a wrapped one, if it can, no narrower
    than its longest word), and only when that is not enough dropped, in ``drop`` order.
    """
    from rich.cells import cell_len

    texts = [[row[i].plain for row in rows] for i in range(len(columns))]
    natural = [_widest(column.header, texts[i], cell_len) for i, column in enumerate(columns)]
    for keep_words in (True, False):
        narrowest = [_narrowest(c, texts[i], natural[i], keep_words=keep_words) for i, c in enumerate(columns)]
        kept = _kept_columns(columns, narrowest, width)
        if kept is not None:
            return _narrowed(kept, natural, narrowest, width)
    return None


def _kept_columns(columns: Sequence[Col], narrowest: list[int], width: int) -> list[int] | None:
    """The columns left once enough are dropped for the narrowest table to fit ``width``; None if it never does."""
    kept = list(range(len(columns)))
    droppable = sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: -columns[i].drop)
    while sum(narrowest[i] for i in kept) + _borders(len(kept)) > width:
        if not droppable:
            return None
        kept.remove(droppable.pop(0))
    return kept


def _narrowed(kept: list[int], natural: list[int], narrowest: list[int], width: int) -> list[tuple[int, int]]:
    widths = {i: natural[i] for i in kept}
    excess = sum(widths.values()) + _borders(len(kept)) - width
    while excess > 0:  # narrow the column with the most to give, one cell at a time
        widest = max((i for i in kept if widths[i] > narrowest[i]), key=lambda i: widths[i] - narrowest[i])
        widths[widest] -= 1
        excess -= 1
    return [(i, widths[i]) for i in kept]


def _widest(header: str, cells: list[str], cell_len: Callable[[str], int]) -> int:
    return max([cell_len(header), *(cell_len(line) for cell in cells for line in cell.splitlines() or [""])])


def _narrowest(column: Col, cells: list[str], natural: int, *, keep_words: bool) -> int:
    """How narrow a column may get: a wrapped one keeps its longest word whole when it can (a name in a description)."""
    if column.cut_to is None:
        return natural
    if not column.wrap or not keep_words:
        return min(natural, column.cut_to)
    longest_word = max((len(word) for cell in cells for word in cell.split()), default=0)
    return min(natural, max(column.cut_to, min(longest_word, 2 * column.cut_to)))


def _borders(count: int) -> int:
    """Cells a table of ``count`` columns spends on borders and padding (rich's default box)."""
    return count * (1 + 2 * _CELL_PADDING) + 1


def _table(
    columns: Sequence[Col], rows: Sequence[Sequence[Text]], widths: list[tuple[int, int]], *, header: bool
) -> Table:
    from rich.table import Table

    table = Table(show_header=header)
    for index, width in widths:
        column = columns[index]
        # Every width is fixed: rich then never narrows a column the fit chose to keep whole.
        if column.wrap:
            table.add_column(column.header, justify=column.justify, width=width, overflow="fold")
        else:
            table.add_column(column.header, justify=column.justify, width=width, no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*(row[index] for index, _ in widths))
    return table


# ------------------------------------------------------------------------------------------- errors


def print_error(error: BatchframeError, *, show_traceback: bool) -> None:
    """What went wrong and what to do, then the user's frames when there are some; on stderr.

    On a terminal: a panel, then the frames as plain lines under it (a path in a panel would be
    broken at its edge); plain lines wrapped between words when a word of the message is too long
    for a panel. Off a terminal: plain lines only, no box padded to the console's width.
    """
    from batchframe.secret import has_secrets, redact

    error.message, error.user_traceback = redact(error.message), redact(error.user_traceback or "") or None
    error.message = printable(error.message)  # a message may quote user data: it never drives the terminal
    error.hint = printable(error.hint) if error.hint else error.hint
    error.user_traceback = printable(error.user_traceback) if error.user_traceback else None
    out = console(stderr=True)
    if out.is_terminal and _fits_a_panel(error, out.width):
        out.print(_panel(error))
    else:  # off a terminal; or on one, a word (a path) too long for a panel, which would break it
        from rich.text import Text

        print_line(Text.assemble((f"{error.title}: ", "bold red"), error.message), stderr=True, prose=True)
        if error.hint:
            print_line(error.hint, stderr=True, style="bold", prose=True)
    if error.user_traceback:
        for line in error.user_traceback.rstrip("\n").splitlines():
            print_line(line, stderr=True, style="dim")
    if show_traceback and sys.exc_info()[0] is not None:
        if out.is_terminal and not has_secrets():  # rich's traceback cannot be redacted: plain lines then
            out.print_exception(show_locals=False)
        else:
            import traceback

            print_line(redact(traceback.format_exc().rstrip("\n")), stderr=True)


def _fits_a_panel(error: BatchframeError, width: int) -> bool:
    """Whether every word of the message and hint fits inside a panel ``width`` wide (borders and padding: 4)."""
    from rich.cells import cell_len

    return all(cell_len(word) <= width - 4 for word in f"{error.message} {error.hint or ''}".split())


def _panel(error: BatchframeError) -> Panel:
    from rich.panel import Panel
    from rich.text import Text

    body = Text(error.message)
    if error.hint:
        body.append("\n\n")
        body.append(error.hint, style="bold")
    return Panel(body, title=error.title, title_align="left", border_style="red", expand=False)


# ------------------------------------------------------------------------------------------- params


def print_params(
    title: str,
    specs: Mapping[str, ParamSpec],
    values: Mapping[str, Any],
    sources: Mapping[str, str],
    *,
    unchosen_configs: Sequence[str] = (),
) -> None:
    """The project's own parameters, then batchframe's runtime settings: two tables, names never cut.

    ``values``: each parameter's value (absent: required and not given); ``sources``: where the
    values not from a default came from (``-p`` or an environment variable's name).
    ``unchosen_configs``: the project's configs when none was chosen (several, and no ``-c``); a
    line then says that ``-c`` adds a config's own parameters.
    """
    import dataclasses

    from batchframe.configuration import Configuration

    runtime = {field.name for field in dataclasses.fields(Configuration)}
    own = [spec for name, spec in specs.items() if name not in runtime]

    def row(spec: ParamSpec, owner: bool) -> list[str]:
        return _param_row(spec, values, sources.get(spec.name), owner=owner)

    if own:
        print_table(title, _PARAM_COLUMNS, [row(spec, True) for spec in own])
    else:
        print_line(f"{title}: none of its own.", style="bold")
    settings = [row(spec, False) for name, spec in specs.items() if name in runtime]
    print_table(
        "Runtime settings (batchframe's, in every project; set them with -p too)", _PARAM_COLUMNS[:-1], settings
    )
    aliases = [f"{alias} ({spec.name})" for spec in specs.values() for alias in spec.aliases]
    if aliases:
        print_line(f"Also accepted under their 0.0.1a13 names: {', '.join(aliases)}.", prose=True)
    variables = [source for source in sources.values() if source != "-p"]
    if variables:
        print_line(f"(env): from the environment, {', '.join(variables)}; -p would win over it.", prose=True)
    if unchosen_configs:
        names = ", ".join(unchosen_configs)
        print_line(
            f"The project has configs ({names}): -c NAME adds that config's own parameters and defaults, "
            f"e.g. -c {unchosen_configs[0]}.",
            style="yellow",
            prose=True,
        )


_PARAM_COLUMNS = (
    Col("name"),
    Col("type", cut_to=12, wrap=True),
    Col("value", cut_to=12, wrap=True),
    Col("description", cut_to=20, wrap=True),
    Col("owner", cut_to=12, drop=1),
)


def _param_row(spec: ParamSpec, values: Mapping[str, Any], source: str | None, *, owner: bool) -> list[str]:
    """name, type, value (with where it came from unless it is the default), description[, owner]."""
    import enum

    from batchframe.project.parsing import shown_value

    if spec.name not in values:
        value = "required"
    else:
        value = shown_value(values[spec.name])  # a Secret shows its mask
        if source is not None:
            value += " (-p)" if source == "-p" else " (env)"
    members = [m.name for m in spec.type] if isinstance(spec.type, type) and issubclass(spec.type, enum.Enum) else []
    kind = f"{spec.type_name}: {', '.join(members)}" if members else spec.type_name  # the names -p takes
    row = [spec.name, kind, value, spec.description]
    return [*row, spec.owner.__qualname__] if owner else row
