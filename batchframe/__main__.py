"""``python -m batchframe`` runs the CLI."""

from batchframe.cli import app

app(prog_name="batchframe")
