"""The few statements whose spelling differs between SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    cast,
    column,
    func,
    literal_column,
    select,
    type_coerce,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import operators
from sqlalchemy.sql.expression import UnaryExpression

from store.base import Base


def insert_ignoring(session: AsyncSession, model: type[Base], unique: Sequence[str]) -> Any:
    """``INSERT ... ON CONFLICT (unique) DO NOTHING`` for the session's engine."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(model).on_conflict_do_nothing(index_elements=list(unique))


def json_array_rows(
    session: AsyncSession, payload: BindParameter[Any], columns: dict[str, Any]
) -> Any:
    """A FROM-able set of rows read from a JSON array of arrays bound as ONE parameter.

    ``columns`` maps each position's name to its SQL type, in order.  With it
    thousands of rows go in one statement with one parameter, passed through as
    the text it arrived as: no executemany (on SQLite that hands the GIL to the
    driver thread and back for every row) and no Python work per row.
    """
    if session.get_bind().dialect.name == "postgresql":
        each = func.json_array_elements(cast(payload, postgresql.JSON)).table_valued(
            column("value", postgresql.JSON)
        )
        picked = [
            cast(each.c.value[n].astext, type_).label(name)
            for n, (name, type_) in enumerate(columns.items())
        ]
    else:
        each = func.json_each(payload).table_valued("value")
        picked = [
            func.json_extract(each.c.value, f"$[{n}]").label(name) for n, name in enumerate(columns)
        ]
    return select(*picked).select_from(each).subquery()


def epoch_us_timestamp(session: AsyncSession, micros: Any) -> Any:
    """A UTC timestamp column's value from whole microseconds since 1970, computed in SQL."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_timestamp(micros / 1_000_000.0)
    # The text SQLAlchemy stores a DATETIME as on SQLite: 2026-11-23 09:10:11.123456
    whole = type_coerce(micros, BigInteger)
    return func.strftime("%Y-%m-%d %H:%M:%S", whole // 1_000_000, "unixepoch").op("||")(
        func.printf(".%06d", whole % 1_000_000)
    )


def likely(session: AsyncSession, condition: Any) -> Any:
    """``condition``, marked as true for nearly every row where the engine needs telling.

    SQLite otherwise serves ``deleted_at IS NULL`` (true for almost all rows)
    from its index and sorts the whole table, instead of walking the index of
    the ORDER BY and stopping after one page.
    """
    if session.get_bind().dialect.name == "sqlite":
        return func.likelihood(condition, literal_column("0.99"))
    return condition


def unindexed(session: AsyncSession, column: Any) -> Any:
    """``column``, spelt so that SQLite does not serve a condition on it from an index.

    SQLite's unary ``+`` (https://sqlite.org/optoverview.html#disqualifying_where_clause_terms_using_unary_):
    without it, a search's OR of name ranges read each branch through the
    ``deleted_at`` index (every live row) instead of the name's own index.
    """
    if session.get_bind().dialect.name == "sqlite":
        return UnaryExpression(column, operator=operators.custom_op("+"), type_=column.type)
    return column
