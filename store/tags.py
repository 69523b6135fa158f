"""Tags on any CRM record."""

from __future__ import annotations

from sqlalchemy import and_, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.models.meta import Tag, Tagging


async def get_or_create_tag(session: AsyncSession, name: str) -> Tag:
    name = name.strip()
    if not name:
        raise ValueError("a tag needs a name")
    tag = await session.scalar(select(Tag).where(Tag.name == name))
    if tag is None:
        tag = Tag(name=name)
        session.add(tag)
        await session.flush()
    return tag


async def tag_record(session: AsyncSession, record_type: str, record_id: int, name: str) -> Tag:
    """Put a tag on a record (idempotent)."""
    tag = await get_or_create_tag(session, name)
    exists = await session.scalar(
        select(Tagging.id).where(
            and_(
                Tagging.tag_id == tag.id,
                Tagging.record_type == record_type,
                Tagging.record_id == record_id,
            )
        )
    )
    if exists is None:
        session.add(Tagging(tag_id=tag.id, record_type=record_type, record_id=record_id))
        await session.flush()
    return tag


async def untag_record(session: AsyncSession, record_type: str, record_id: int, name: str) -> None:
    tag = await session.scalar(select(Tag).where(Tag.name == name))
    if tag is not None:
        await session.execute(
            delete(Tagging).where(
                and_(
                    Tagging.tag_id == tag.id,
                    Tagging.record_type == record_type,
                    Tagging.record_id == record_id,
                )
            )
        )


async def tags_of(session: AsyncSession, record_type: str, record_id: int) -> list[str]:
    rows = await session.scalars(
        select(Tag.name)
        .join(Tagging, Tagging.tag_id == Tag.id)
        .where(and_(Tagging.record_type == record_type, Tagging.record_id == record_id))
        .order_by(Tag.name)
    )
    return list(rows)
