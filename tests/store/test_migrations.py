"""Migrations go from empty to head (and back) on SQLite and PostgreSQL alike."""

from __future__ import annotations

from sqlalchemy import inspect

from store.base import Base
from store.engine import make_engine
from store.migrate import current_revision, downgrade, head_revision, upgrade_to_head


async def _table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_empty_to_head_creates_every_model_table(db_url: str) -> None:
    assert await current_revision(db_url) is None
    assert await upgrade_to_head(db_url) == head_revision()
    tables = await _table_names(db_url)
    assert set(Base.metadata.tables) <= tables
    # Running it again is a no-op, as it is at every daemon start.
    assert await upgrade_to_head(db_url) == head_revision()


async def test_schema_matches_models(db_url: str) -> None:
    """Autogenerate finds nothing to add: the migrations and the models agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    await upgrade_to_head(db_url)
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_downgrade_to_base_removes_everything(db_url: str) -> None:
    await upgrade_to_head(db_url)
    await downgrade(db_url, "base")
    assert await _table_names(db_url) <= {"alembic_version"}
