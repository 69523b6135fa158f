"""What a CRM record carries with it (identities, tags) moved between records, and who acts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.identity import ALIAS_FIELD
from store.models.identity import EmailIdentity, PhoneIdentity
from store.models.meta import Tagging

RecordRef = tuple[str, int]


@contextlib.contextmanager
def acting_as(session: AsyncSession, user_id: int | None) -> Iterator[None]:
    """Attribute the audit rows flushed in the block to ``user_id`` (when one is given).

    The audit listener reads the actor from ``session.info``; an operation told
    explicitly who performs it must not be logged as someone else, or as no one.
    """
    if user_id is None:
        yield
        return
    missing = object()
    before = session.info.get("user_id", missing)
    session.info["user_id"] = user_id
    try:
        yield
    finally:
        if before is missing:
            session.info.pop("user_id", None)
        else:
            session.info["user_id"] = before


async def move_identities(session: AsyncSession, source: RecordRef, target: RecordRef) -> None:
    """Hand every email and phone identity of ``source`` to ``target`` (as aliases).

    A key the target owns already is dropped from the source rather than doubled
    (one row per (key, record)).  ``index_record(target)`` afterwards turns the
    alias of an address the target now holds in a column back into its own row.
    """
    models: tuple[tuple[type[EmailIdentity] | type[PhoneIdentity], str], ...] = (
        (EmailIdentity, "address"),
        (PhoneIdentity, "match_key"),
    )
    for model, key in models:
        rows: Sequence[Any] = (
            await session.scalars(
                select(model).where(model.record_type == source[0], model.record_id == source[1])
            )
        ).all()
        if not rows:
            continue
        owned = set(
            (
                await session.scalars(
                    select(getattr(model, key)).where(
                        model.record_type == target[0], model.record_id == target[1]
                    )
                )
            ).all()
        )
        for row in rows:
            if getattr(row, key) in owned:
                await session.delete(row)
            else:
                row.record_type, row.record_id, row.field = target[0], target[1], ALIAS_FIELD
                owned.add(getattr(row, key))
    await session.flush()


async def copy_tags(
    session: AsyncSession, source: RecordRef, target: RecordRef, *, move: bool = False
) -> None:
    """Put every tag of ``source`` on ``target`` too (``move``: and take them off the source)."""
    tag_ids = (
        await session.scalars(
            select(Tagging.tag_id).where(
                Tagging.record_type == source[0], Tagging.record_id == source[1]
            )
        )
    ).all()
    if not tag_ids:
        return
    have = set(
        (
            await session.scalars(
                select(Tagging.tag_id).where(
                    Tagging.record_type == target[0], Tagging.record_id == target[1]
                )
            )
        ).all()
    )
    session.add_all(
        Tagging(tag_id=tag_id, record_type=target[0], record_id=target[1])
        for tag_id in tag_ids
        if tag_id not in have
    )
    await session.flush()
    if move:
        await session.execute(
            delete(Tagging).where(Tagging.record_type == source[0], Tagging.record_id == source[1])
        )
