"""Alembic environment: migrations run on a connection handed in by store.migrate."""

from __future__ import annotations

from alembic import context

import store.models
from store.base import Base

_ = store.models  # registers every table on Base.metadata

target_metadata = Base.metadata


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through store.migrate (rapport migrate)")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
