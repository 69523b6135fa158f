"""Writing many new rows in few statements, on both engines.

The ORM flushes new objects of one table in a single multi-row INSERT only
when it can tell which generated id belongs to which object.  PostgreSQL says
so through RETURNING; SQLite cannot, and SQLAlchemy falls back to one INSERT
per object there.  So the hot paths hand out the ids themselves, for every
table they write, in ONE statement: PostgreSQL takes them from each table's
sequence; SQLite, which has one writer at a time, counts on from the largest
id while this transaction holds the write lock (as SQLite itself would).
Objects and rows that come with their ids go out with one executemany.

Use: ``lock_rows`` first (it takes the SQLite write lock); then
``allocate_ids`` and either set the ids on new objects before a flush, or
write plain rows with ``insert_rows`` (no objects at all: the cheapest way to
write thousands of rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import BigInteger

from store.base import Base

M = TypeVar("M", bound=Base)


def _is_sqlite(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def _table(model: type[Base]) -> Table:
    table: Table = model.__table__  # type: ignore[assignment]
    return table


async def lock_rows(session: AsyncSession, model: type[M], ids: Iterable[int]) -> list[M]:
    """The rows ``ids`` of ``model``, locked for this transaction, in id order.

    PostgreSQL locks just those rows.  SQLite takes the database's write lock
    (waiting its busy timeout for another writer): from here on this
    transaction reads the latest data and nobody else writes until it ends.
    """
    wanted = list(ids)
    key = model.id  # type: ignore[attr-defined]
    if _is_sqlite(session):
        # An UPDATE that changes nothing still opens a write transaction.
        locked = await session.scalars(
            update(model).where(key.in_(wanted)).values(id=key).returning(model),
            execution_options={"synchronize_session": False},
        )
        return sorted(locked, key=lambda row: row.id)  # type: ignore[attr-defined]
    rows = await session.scalars(
        select(model).where(key.in_(wanted)).order_by(key).with_for_update()
    )
    return list(rows)


async def allocate_ids(
    session: AsyncSession, counts: Mapping[type[Base], int]
) -> dict[type[Base], list[int]]:
    """New ids for ``counts[model]`` rows of each model, in one statement.

    SQLite: only after ``lock_rows`` in this transaction, and the ids must be
    used (inserted) before ``allocate_ids`` is asked again for the same table.
    """
    wanted = {model: count for model, count in counts.items() if count > 0}
    if not wanted:
        return {model: [] for model in counts}
    if _is_sqlite(session):
        largest = [select(func.max(_table(m).c.id)).scalar_subquery() for m in wanted]
        with session.no_autoflush:  # pending objects must not be flushed without their ids
            row = (await session.execute(select(*largest))).one()
        found = {
            model: list(range((top or 0) + 1, (top or 0) + 1 + count))
            for (model, count), top in zip(wanted.items(), row, strict=True)
        }
    else:
        arrays = [
            func.array(
                select(func.nextval(func.pg_get_serial_sequence(_table(m).name, "id")))
                .select_from(func.generate_series(1, count))
                .scalar_subquery(),
                type_=ARRAY(BigInteger),
            )
            for m, count in wanted.items()
        ]
        with session.no_autoflush:
            row = (await session.execute(select(*arrays))).one()
        found = {model: [int(i) for i in ids] for model, ids in zip(wanted, row, strict=True)}
    return {model: found.get(model, []) for model in counts}


async def assign_ids(session: AsyncSession, objects: Sequence[Base]) -> None:
    """Give the new objects (of any tables) their ids, so the flush writes each table at once."""
    by_model: dict[type[Base], list[Base]] = {}
    for obj in objects:
        if getattr(obj, "id", None) is None:
            by_model.setdefault(type(obj), []).append(obj)
    ids = await allocate_ids(session, {model: len(new) for model, new in by_model.items()})
    for model, new in by_model.items():
        for obj, new_id in zip(new, ids[model], strict=True):
            obj.id = new_id  # type: ignore[attr-defined]


async def insert_rows(
    session: AsyncSession, model: type[Base], rows: Sequence[dict[str, Any]]
) -> None:
    """Insert plain rows (column defaults applied) with one executemany; no objects made.

    Rows that name different columns go in separate statements (one per set of names).
    """
    shapes: dict[frozenset[str], list[dict[str, Any]]] = {}
    for row in rows:
        shapes.setdefault(frozenset(row), []).append(row)
    for group in shapes.values():
        await session.execute(insert(_table(model)), group)
