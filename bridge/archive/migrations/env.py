"""Alembic's entry: run with the connection ``bridge.archive.store.migrate`` hands it."""

from __future__ import annotations

from alembic import context

from bridge.archive.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
