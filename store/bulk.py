"""Writing many new rows in few statements, on both engines.

The ORM flushes new objects of one table in a single multi-row INSERT when it
can tell which generated id belongs to which object.  PostgreSQL reports that
through RETURNING; SQLite cannot, so SQLAlchemy falls back to one INSERT per
object there.  SQLite has one writer at a time, though: a transaction that
holds the write lock can hand out the next ids itself (as SQLite would: one
more than the largest), and objects that come with their ids are inserted with
one executemany.  ``take_write_lock`` first, then ``assign_ids`` before the flush.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from store.base import Base


def _is_sqlite(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "sqlite"


async def take_write_lock(session: AsyncSession, model: type[Base], ids: Iterable[int]) -> None:
    """Lock the rows ``ids`` of ``model`` for this transaction.

    PostgreSQL locks just those rows.  SQLite takes the database's write lock
    (waiting its busy timeout for another writer): from here on this
    transaction reads the latest data and nobody else writes until it ends.
    """
    table: Table = model.__table__  # type: ignore[assignment]
    key = table.c.id
    wanted = list(ids)
    if _is_sqlite(session):
        # An UPDATE that changes nothing still opens a write transaction.
        await session.execute(update(table).where(key.in_(wanted)).values(id=key))
    else:
        await session.execute(select(key).where(key.in_(wanted)).with_for_update())


async def assign_ids(session: AsyncSession, objects: Iterable[Base]) -> None:
    """Give new objects their ids now, on SQLite, so the flush writes each table at once.

    Only after ``take_write_lock`` in the same transaction.  On PostgreSQL
    (or for objects that have an id) nothing changes.
    """
    if not _is_sqlite(session):
        return
    by_table: dict[Table, list[Base]] = {}
    for obj in objects:
        if getattr(obj, "id", None) is None:
            by_table.setdefault(obj.__table__, []).append(obj)  # type: ignore[arg-type]
    for table, new in by_table.items():
        with session.no_autoflush:  # the new objects must not be flushed without their ids
            largest = await session.scalar(select(func.max(table.c.id)))
        for offset, obj in enumerate(new, start=1):
            obj.id = (largest or 0) + offset  # type: ignore[attr-defined]
