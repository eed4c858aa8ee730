"""How ``--help`` reads: arguments in capitals (``exec [OPTIONS] PATH``), command summaries never cut.

typer 0.29 writes a required argument as ``{path}`` in the usage line, with its type as ``<path>``,
and cuts the summaries in ``batchframe --help`` with "..." to fit one line. The app uses ``Group``
and each command ``Command``, which change only that.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from typer.core import TyperCommand, TyperGroup

if TYPE_CHECKING:
    from typer._click import Context, HelpFormatter, Parameter
    from typer._click.shell_completion import CompletionItem


def _is_argument(param: Parameter) -> bool:
    return param.param_type_name == "argument"


def _argument_name(param: Parameter) -> str:
    """``PATH`` for an argument named ``path``, or its metavar."""
    name = param.metavar or (param.name or "").upper()
    return name if param.nargs == 1 else f"{name}..."


class Command(TyperCommand):
    """A command whose help names its arguments as its usage line does: ``PATH``, ``[PATH]``."""

    def collect_usage_pieces(self, ctx: Context) -> list[str]:
        """``[OPTIONS] PATH`` for a required argument, ``[OPTIONS] [PATH]`` for an optional one."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if not _is_argument(param):
                pieces.extend(param.get_usage_pieces(ctx))
            elif param.required:
                pieces.append(_argument_name(param))
            else:
                pieces.append(f"[{_argument_name(param)}]")
        return pieces

    def shell_complete(self, ctx: Context, incomplete: str) -> list[CompletionItem]:
        """Also the values of ``-p NAME=VALUE`` in bash, where they reach the command (see ``_completion``)."""
        from batchframe.cli.completion import bash_split_values

        values = bash_split_values(ctx)  # type: ignore[arg-type]  # a typer.Context at run time
        if values:
            return [_completion_item(value) for value in values]
        return super().shell_complete(ctx, incomplete)

    def format_options(self, ctx: Context, formatter: HelpFormatter) -> None:
        """The Arguments section (names only, no ``<path>`` type), then the Options section."""
        arguments: list[tuple[str, str]] = []
        options: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if _is_argument(param):
                arguments.append((_argument_name(param), record[1]))
            else:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _completion_item(value: str) -> CompletionItem:
    try:
        from typer._click.shell_completion import CompletionItem
    except ImportError:  # typer before 0.29 uses click itself
        from click.shell_completion import CompletionItem  # type: ignore[assignment]
    return CompletionItem(value)


class Group(TyperGroup):
    """The ``batchframe`` group: its command list wraps each summary instead of cutting it with "..."."""

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        """Each command with the first paragraph of its help, whole."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=sys.maxsize)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
