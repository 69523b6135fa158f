"""The audit trail: every field change of a CRM record, written in the same flush.

A listener on every ORM session records creations, field updates, moves to and
from the recycle bin and purges of records whose class names a
``__record_type__``.  Who did it comes from ``session.info["user_id"]``; the
correlation id from ``store.context``.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from decimal import Decimal
from typing import Any

from sqlalchemy import event, insert, inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, UOWTransaction

from store.base import utcnow
from store.context import correlation_id
from store.models.meta import AuditEntry

# Columns whose changes say nothing a person needs to read.
UNAUDITED_COLUMNS = frozenset({"updated_at", "created_at", "deleted_by_id", "password_hash"})
AUDITED_TYPES = frozenset({"lead", "contact", "account", "opportunity", "campaign", "user"})


def _render(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal | int | float | str | bool):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _record_type(obj: object) -> str | None:
    record_type = getattr(type(obj), "__record_type__", None)
    return record_type if record_type in AUDITED_TYPES else None


def _entry(session: Session, obj: Any, action: str, **values: Any) -> dict[str, Any]:
    return {
        "record_type": _record_type(obj),
        "record_id": obj.id,
        "action": action,
        "user_id": session.info.get("user_id"),
        "correlation_id": correlation_id.get(),
        "at": utcnow(),
        "field": None,
        "old_value": None,
        "new_value": None,
        **values,
    }


def _changes(session: Session, obj: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    state = inspect(obj)
    for attr in state.mapper.column_attrs:
        key = attr.key
        if key in UNAUDITED_COLUMNS:
            continue
        history = state.attrs[key].history
        if not history.has_changes():
            continue
        old = history.deleted[0] if history.deleted else None
        new = history.added[0] if history.added else None
        if old == new:
            continue
        if key == "deleted_at":
            rows.append(_entry(session, obj, "delete" if new is not None else "restore"))
            continue
        rows.append(
            _entry(
                session, obj, "update", field=key, old_value=_render(old), new_value=_render(new)
            )
        )
    return rows


_PENDING_KEY = "_audit_pending"


def _before_flush(session: Session, _flush_context: UOWTransaction, _instances: object) -> None:
    # Changes are read before the flush (attribute history is reset by it); new
    # records get their ids only during it, so their rows are finished after it.
    changes: list[dict[str, Any]] = []
    for obj in session.dirty:
        if _record_type(obj) and session.is_modified(obj, include_collections=False):
            changes.extend(_changes(session, obj))
    for obj in session.deleted:
        if _record_type(obj):
            changes.append(_entry(session, obj, "purge"))
    created = [obj for obj in session.new if _record_type(obj)]
    pending = session.info.setdefault(_PENDING_KEY, ([], []))
    pending[0].extend(changes)
    pending[1].extend(created)


def _after_flush(session: Session, _flush_context: UOWTransaction) -> None:
    changes, created = session.info.pop(_PENDING_KEY, ([], []))
    rows = [_entry(session, obj, "create") for obj in created] + changes
    if rows:
        session.connection().execute(insert(AuditEntry), rows)


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


class AuditedSession(Session):
    """The ORM session every part of Rapport uses: it writes the audit trail."""


event.listen(AuditedSession, "before_flush", _before_flush)
event.listen(AuditedSession, "after_rollback", _after_rollback)
event.listen(AuditedSession, "after_flush", _after_flush)


async def record_action(
    session: AsyncSession,
    record_type: str,
    record_id: int,
    action: str,
    detail: str | None = None,
) -> None:
    """Record a whole-record action (convert, merge, ...) with a free-text detail."""
    session.add(
        AuditEntry(
            record_type=record_type,
            record_id=record_id,
            action=action,
            new_value=detail,
            user_id=session.info.get("user_id"),
            correlation_id=correlation_id.get(),
        )
    )
    await session.flush()
