"""The few statements whose spelling differs between SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    func,
    literal_column,
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
