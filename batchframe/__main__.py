"""``python -m batchframe`` runs the CLI."""

from batchframe.cli.app import app

app(prog_name="batchframe")
