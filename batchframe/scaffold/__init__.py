"""Scaffolding from copier templates: ``init``, ``new-config``, ``update`` and the template history."""
