"""The activity timeline: log an activity against every record it concerns, read it back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.base import Base, utcnow
from store.bulk import allocate_ids, insert_rows
from store.identity import record_type_of
from store.models.activity import Activity, ActivityKind, ActivityLink

RecordRef = tuple[str, int]
P = ParamSpec("P")


def as_ref(record: RecordRef | Base) -> RecordRef:
    if isinstance(record, tuple):
        return record
    return record_type_of(record), record.id  # type: ignore[attr-defined]


def _link_row(activity: Activity, record_type: str, record_id: int) -> ActivityLink:
    return ActivityLink(
        record_type=record_type, record_id=record_id, occurred_at=activity.occurred_at
    )


async def link(session: AsyncSession, activity: Activity, record_type: str, record_id: int) -> bool:
    """Link an activity to one more record; False when it was linked already."""
    exists = await session.scalar(
        select(ActivityLink.id).where(
            ActivityLink.activity_id == activity.id,
            ActivityLink.record_type == record_type,
            ActivityLink.record_id == record_id,
        )
    )
    if exists is not None:
        return False
    row = _link_row(activity, record_type, record_id)
    row.activity_id = activity.id
    session.add(row)
    await session.flush()
    return True


def new_activity(
    session: AsyncSession,
    /,
    *,
    kind: ActivityKind | str,
    subject: str,
    records: Iterable[RecordRef | Base],
    body: str = "",
    occurred_at: dt.datetime | None = None,
    owner_id: int | None = None,
    **fields: Any,
) -> Activity:
    """An activity linked to every record it concerns, added to ``session`` but not flushed.

    The records must have their ids.  Many activities added this way go out in
    one flush (the mail-in hot path); ``log_activity`` flushes one at once.
    """
    activity = Activity(
        kind=ActivityKind(kind),
        subject=subject,
        body=body,
        occurred_at=occurred_at or utcnow(),
        owner_id=owner_id,
        created_by_id=session.info.get("user_id"),
        **fields,
    )
    # A new activity has no links yet: add them without asking the database first.
    activity.links = [
        _link_row(activity, record_type, record_id)
        for record_type, record_id in dict.fromkeys(as_ref(r) for r in records)
    ]
    session.add(activity)
    return activity


def _flushed(
    make: Callable[Concatenate[AsyncSession, P], Activity],
) -> Callable[Concatenate[AsyncSession, P], Awaitable[Activity]]:
    """``make``, then a flush: the activity comes back with its id and links written."""

    async def made(session: AsyncSession, /, *args: P.args, **kwargs: P.kwargs) -> Activity:
        activity = make(session, *args, **kwargs)
        await session.flush()
        return activity

    return made


# One activity (mail, call, meeting, task, note, visit) linked to every record it concerns:
# ``new_activity``'s arguments, flushed at once.
log_activity = _flushed(new_activity)


@dataclass
class ActivityDraft:
    """One activity for ``log_activities``: what ``log_activity`` takes, as data."""

    kind: ActivityKind
    subject: str
    records: Sequence[RecordRef]
    body: str = ""
    occurred_at: dt.datetime | None = None
    owner_id: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)


async def log_activities(
    session: AsyncSession, drafts: Sequence[ActivityDraft], ids: Sequence[int] | None = None
) -> list[int]:
    """Many activities at once, each linked to its records: two multi-row INSERTs, no objects.

    For the hot paths (mail-in files a hundred mails at a time).  SQLite needs
    ``store.bulk.lock_rows`` first.  ``ids``: ones the caller allocated already
    (``store.bulk.allocate_ids``), one per draft.  Returns the ids in order.
    """
    if ids is None:
        ids = (await allocate_ids(session, {Activity: len(drafts)}))[Activity]
    now, user_id = utcnow(), session.info.get("user_id")
    activities, links = [], []
    for activity_id, draft in zip(ids, drafts, strict=True):
        occurred_at = draft.occurred_at or now
        activities.append({
            "id": activity_id, "kind": draft.kind, "subject": draft.subject, "body": draft.body,
            "occurred_at": occurred_at, "owner_id": draft.owner_id, "created_by_id": user_id,
            **draft.fields,
        })  # fmt: skip
        links += [
            {"activity_id": activity_id, "record_type": record_type, "record_id": record_id,
             "occurred_at": occurred_at}
            for record_type, record_id in dict.fromkeys(draft.records)
        ]  # fmt: skip
    await insert_rows(session, Activity, activities)
    await insert_rows(session, ActivityLink, links)
    return list(ids)


async def timeline(
    session: AsyncSession,
    record_type: str,
    record_id: int,
    *,
    kinds: Sequence[ActivityKind | str] | None = None,
    before: tuple[dt.datetime, int] | None = None,
    limit: int = 50,
) -> list[Activity]:
    """A record's live activities, newest first.

    Keyset pagination: ``before`` is the (occurred_at, id) of the last activity
    of the previous page, so pages stay right while new activities arrive.
    """
    query = (
        select(Activity)
        .join(ActivityLink, ActivityLink.activity_id == Activity.id)
        .where(
            ActivityLink.record_type == record_type,
            ActivityLink.record_id == record_id,
            Activity.deleted_at.is_(None),
        )
    )
    if kinds is not None:  # an empty selection shows nothing, not everything
        query = query.where(Activity.kind.in_([ActivityKind(k) for k in kinds]))
    if before is not None:
        at, activity_id = before
        query = query.where(
            or_(
                ActivityLink.occurred_at < at,
                and_(ActivityLink.occurred_at == at, Activity.id < activity_id),
            )
        )
    query = query.order_by(ActivityLink.occurred_at.desc(), Activity.id.desc()).limit(limit)
    return list((await session.scalars(query)).all())


async def copy_links(
    session: AsyncSession, source: RecordRef, targets: Sequence[RecordRef], *, move: bool = False
) -> int:
    """Give every activity of ``source`` a link to each target too (or move them over)."""
    links = (
        await session.scalars(
            select(ActivityLink).where(
                ActivityLink.record_type == source[0], ActivityLink.record_id == source[1]
            )
        )
    ).all()
    if not links or not targets:
        return 0
    query = select(
        ActivityLink.activity_id, ActivityLink.record_type, ActivityLink.record_id
    ).where(
        or_(
            *(
                and_(ActivityLink.record_type == rt, ActivityLink.record_id == rid)
                for rt, rid in targets
            )
        ),
        ActivityLink.activity_id.in_([old.activity_id for old in links]),
    )
    existing: set[tuple[int, str, int]] = {
        (aid, rt, rid) for aid, rt, rid in await session.execute(query)
    }
    added = 0
    for old in links:
        for record_type, record_id in targets:
            if (old.activity_id, record_type, record_id) in existing:
                continue
            existing.add((old.activity_id, record_type, record_id))
            session.add(
                ActivityLink(
                    activity_id=old.activity_id,
                    record_type=record_type,
                    record_id=record_id,
                    occurred_at=old.occurred_at,
                )
            )
            added += 1
        if move:
            await session.delete(old)
    await session.flush()
    return added
