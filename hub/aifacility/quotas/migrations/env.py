"""Alembic environment: run with the connection the policy store hands over (see store.PolicyStore.upgrade).

Its own version table, so that the policies may share a PostgreSQL database with the accounting ledger."""

from __future__ import annotations

from alembic import context

from aifacility.quotas.schema import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                  version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
