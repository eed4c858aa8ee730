"""The command line: the typer app (``batchframe`` is ``batchframe.cli:app``), help, completion, prompts, dry run."""

from batchframe.cli.app import app

__all__ = ["app"]
