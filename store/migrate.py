"""Alembic migrations run from code: ``upgrade_to_head`` at start and in tests."""

from __future__ import annotations

from collections.abc import Callable

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from store.engine import make_engine

SCRIPT_LOCATION = "store:migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)


def _downgrade(connection: Connection, revision: str) -> None:
    command.downgrade(alembic_config(connection), revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def upgrade_to_head(url: str) -> str:
    """Migrate the database at ``url`` to the newest schema; returns the revision."""
    return await upgrade(url, "head")


async def _migrate(url: str, step: Callable[[Connection, str], None], revision: str) -> str:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(step, revision)
            current = await conn.run_sync(_current)
    finally:
        await engine.dispose()
    return current or ""


async def upgrade(url: str, revision: str) -> str:
    """Migrate up to ``revision``; returns the revision the database is now at."""
    return await _migrate(url, _upgrade, revision)


async def downgrade(url: str, revision: str) -> str:
    """Migrate down to ``revision`` (``"base"`` empties the schema)."""
    return await _migrate(url, _downgrade, revision)


async def current_revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_current)
    finally:
        await engine.dispose()
