"""The run folder: its file names, records, journal, failed items, summary, history, live status and logs.

Nothing here imports :mod:`batchframe.run`: ``batchframe runs``, the UI and readers never load the engine.
"""
