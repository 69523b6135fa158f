"""The few statements whose spelling differs between SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import BindParameter, cast, column, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from store.base import Base


def insert_ignoring(session: AsyncSession, model: type[Base], unique: Sequence[str]) -> Any:
    """``INSERT ... ON CONFLICT (unique) DO NOTHING`` for the session's engine."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(model).on_conflict_do_nothing(index_elements=list(unique))


def json_rows(session: AsyncSession, payload: BindParameter[Any], columns: dict[str, Any]) -> Any:
    """A FROM-able set of rows read from a JSON array of objects bound as ONE parameter.

    ``columns`` maps each key to its SQL type.  With it a thousand rows go in
    one statement with one parameter: no executemany, which on SQLite hands the
    GIL to the driver thread and back for every row while the event loop waits.
    Timestamps travel as text: ``json_timestamp`` writes them.
    """
    if session.get_bind().dialect.name == "postgresql":
        table = (
            func.json_to_recordset(cast(payload, postgresql.JSON))
            .table_valued(*(column(name, type_) for name, type_ in columns.items()))
            .render_derived(with_types=True)
        )
        return select(*(table.c[name] for name in columns)).subquery()
    each = func.json_each(payload).table_valued("value")
    return (
        select(*(func.json_extract(each.c.value, f"$.{name}").label(name) for name in columns))
        .select_from(each)
        .subquery()
    )


def json_timestamps(session: AsyncSession) -> Callable[[dt.datetime], str]:
    """How to write an aware timestamp as the text this engine reads into a UTC column."""
    postgres = session.get_bind().dialect.name == "postgresql"

    def write(value: dt.datetime) -> str:
        utc = value if value.tzinfo is dt.UTC else value.astimezone(dt.UTC)
        text = utc.isoformat(sep=" ", timespec="microseconds")  # ...+00:00
        # SQLite: the form SQLAlchemy stores a DATETIME in, without the offset.
        return text if postgres else text[:26]

    return write
