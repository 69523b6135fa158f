"""The recycle bin: soft delete, restore, list and purge CRM records."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.base import Base, SoftDeleteMixin, utcnow
from store.errors import NotFound
from store.identity import drop_identities
from store.models import RECORD_TYPES


def _model(record_type: str) -> type[Base]:
    model = RECORD_TYPES.get(record_type)
    if model is None or not issubclass(model, SoftDeleteMixin):
        raise NotFound(f"no recycle bin for {record_type!r}")
    return model


async def _get(session: AsyncSession, record_type: str, record_id: int) -> SoftDeleteMixin:
    record = await session.get(_model(record_type), record_id)
    if record is None:
        raise NotFound(f"{record_type} {record_id} does not exist")
    assert isinstance(record, SoftDeleteMixin)
    return record


async def soft_delete(
    session: AsyncSession,
    record_type: str,
    record_id: int,
    user_id: int | None,
    now: dt.datetime | None = None,
) -> None:
    """Move a record to the recycle bin (idempotent)."""
    record = await _get(session, record_type, record_id)
    if record.deleted_at is None:
        record.deleted_at = now or utcnow()
        record.deleted_by_id = user_id
        await session.flush()


async def restore(session: AsyncSession, record_type: str, record_id: int) -> None:
    """Take a record out of the recycle bin."""
    record = await _get(session, record_type, record_id)
    if record.deleted_at is None:
        raise NotFound(f"{record_type} {record_id} is not in the recycle bin")
    record.deleted_at = None
    record.deleted_by_id = None
    await session.flush()


@dataclass(frozen=True)
class BinEntry:
    record_type: str
    record_id: int
    name: str
    deleted_at: dt.datetime
    deleted_by_id: int | None


async def list_bin(session: AsyncSession, record_type: str, limit: int = 100) -> list[BinEntry]:
    """The records of one type in the recycle bin, most recently deleted first."""
    model = _model(record_type)
    column = model.deleted_at  # type: ignore[attr-defined]
    rows = (
        await session.scalars(
            select(model).where(column.is_not(None)).order_by(column.desc()).limit(limit)
        )
    ).all()
    return [
        BinEntry(record_type, r.id, r.display_name, r.deleted_at, r.deleted_by_id)  # type: ignore[attr-defined]
        for r in rows
    ]


async def purge(session: AsyncSession, record_type: str, record_id: int) -> None:
    """Delete a binned record for good, with its identities."""
    record = await _get(session, record_type, record_id)
    if record.deleted_at is None:
        raise NotFound(f"{record_type} {record_id} must be in the recycle bin to be purged")
    await drop_identities(session, record_type, record_id)
    await session.delete(record)
    await session.flush()
