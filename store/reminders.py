"""Reminders: an activity's owner is told ahead of its time, on their pages and by one mail.

A reminder is minutes before the activity's time (a task's due time, else its
start); the moment is kept in ``remind_at`` so the due ones are one index
range.  ``due_soon`` lists the user's reminders that have come, for the
pages; ``send_due_reminders`` mails each due one to its owner.

A reminder is mailed once: it is claimed (``reminder_sent_at`` set) and its
mail queued in one transaction.  The queueing code opens its own sessions, so
it is handed a ``Store`` whose sessions join that transaction and cannot
commit it; if queueing fails nothing is kept and the next round tries again,
and of two daemons looking at the same minute only one claims the row.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from store.activities import RecordRef
from store.base import utcnow
from store.db import Store
from store.errors import ValidationError
from store.models import Activity, ActivityKind, ActivityLink, ActivityStatus, User

log = logging.getLogger(__name__)

MAX_REMIND_MINUTES = 7 * 24 * 60
# A reminder stays on the owner's pages until this long after the activity's time, and a
# mail not sent by then (the daemon was down) is dropped rather than sent late.
SOON_AFTER = dt.timedelta(hours=1)
BATCH = 100


def time_of(activity: Activity) -> dt.datetime | None:
    """When the activity is due (a task) or starts (the rest); a task without a due time: None."""
    if activity.kind == ActivityKind.TASK:
        return activity.due_at
    return activity.occurred_at


def set_reminder(activity: Activity, minutes: int | None) -> None:
    """Remind ``minutes`` before the activity's time (None: no reminder).

    A reminder whose moment moves is armed again; one whose moment stays (the
    subject was edited) is not mailed a second time.
    """
    if minutes is not None and not 0 <= minutes <= MAX_REMIND_MINUTES:
        raise ValidationError({"remind_minutes": f"from 0 to {MAX_REMIND_MINUTES} minutes"})
    when = time_of(activity)
    moment = None if minutes is None or when is None else when - dt.timedelta(minutes=minutes)
    activity.remind_minutes = minutes if moment is not None else None
    if moment != activity.remind_at:
        activity.remind_at = moment
        activity.reminder_sent_at = None


def _planned_reminders(now: dt.datetime) -> list[ColumnElement[bool]]:
    """Reminders that have come for activities whose time can still be ahead (bounded range)."""
    earliest = now - SOON_AFTER - dt.timedelta(minutes=MAX_REMIND_MINUTES)
    return [
        Activity.remind_at <= now,
        Activity.remind_at >= earliest,
        Activity.status == ActivityStatus.PLANNED,
        Activity.deleted_at.is_(None),
    ]


def _current(activity: Activity, now: dt.datetime) -> bool:
    when = time_of(activity)
    return when is not None and when + SOON_AFTER >= now


async def due_soon(
    session: AsyncSession, user_id: int, now: dt.datetime | None = None, limit: int = 20
) -> list[Activity]:
    """The user's planned activities whose reminder has come, soonest first."""
    now = now or utcnow()
    rows = await session.scalars(
        select(Activity)
        .where(Activity.owner_id == user_id, *_planned_reminders(now))
        .order_by(Activity.remind_at, Activity.id)
        .limit(limit * 4)
    )
    found = [a for a in rows if _current(a, now)]
    found.sort(key=lambda a: (time_of(a), a.id))
    return found[:limit]


@dataclass(frozen=True)
class Reminder:
    """What a reminder mail says and to whom: the activity and its owner."""

    activity_id: int
    owner_id: int
    address: str
    locale: str
    timezone: str
    kind: str
    subject: str
    at: dt.datetime
    minutes: int
    location: str | None
    records: tuple[RecordRef, ...]


# Queues one reminder's mail with the given store (whose sessions join the claim's transaction).
ReminderQueue = Callable[[Store, Reminder], Awaitable[object]]


def joined_store(store: Store, connection: AsyncConnection) -> Store:
    """``store`` whose sessions work inside ``connection``'s transaction and never commit it.

    SQLAlchemy's "joining a session into an external transaction": a session's
    commit only flushes, its rollback rolls the whole transaction back.
    """
    made = store.sessionmaker
    sessions = async_sessionmaker(
        class_=made.class_,
        **{**made.kw, "bind": connection, "join_transaction_mode": "rollback_only"},
    )
    return replace(store, sessionmaker=sessions)


async def due_reminder_ids(store: Store, now: dt.datetime, limit: int = BATCH) -> list[int]:
    async with store.session() as session:
        rows = await session.scalars(
            select(Activity.id)
            .where(*_planned_reminders(now), Activity.reminder_sent_at.is_(None))
            .order_by(Activity.remind_at, Activity.id)
            .limit(limit)
        )
        return list(rows)


async def send_due_reminders(
    store: Store, queue: ReminderQueue, now: dt.datetime | None = None
) -> int:
    """Mail every reminder that is due and not yet sent; returns how many were queued."""
    now = now or utcnow()
    sent = 0
    for activity_id in await due_reminder_ids(store, now):
        try:
            sent += await _send_one(store, queue, activity_id, now)
        except ValidationError as err:
            # The mail can never be made as it is (say, the owner's address is wrong): the
            # reminder is dropped, so it does not fail again every minute.
            log.warning("reminder for activity %s not mailed: %s", activity_id, err)
            await _claim_only(store, activity_id, now)
        except Exception:
            # Nothing was kept; the next round tries again, and the others go on now.
            log.warning("reminder for activity %s not mailed, retrying", activity_id,
                        exc_info=True)  # fmt: skip
    return sent


async def _claim(connection: AsyncConnection, activity_id: int, now: dt.datetime) -> bool:
    claimed = await connection.execute(
        update(Activity)
        .where(Activity.id == activity_id, Activity.reminder_sent_at.is_(None))
        .values(reminder_sent_at=now)
    )
    return claimed.rowcount == 1


async def _claim_only(store: Store, activity_id: int, now: dt.datetime) -> None:
    async with store.engine.begin() as connection:
        await _claim(connection, activity_id, now)


async def _send_one(store: Store, queue: ReminderQueue, activity_id: int, now: dt.datetime) -> int:
    async with store.engine.connect() as connection:
        await connection.begin()
        # The claim comes first: it starts the write transaction (SQLite) and holds the row
        # (PostgreSQL), so another daemon's claim waits for this one and then finds it taken.
        if not await _claim(connection, activity_id, now):
            await connection.rollback()
            return 0
        joined = joined_store(store, connection)
        reminder = await _reminder(joined, activity_id, now)
        if reminder is not None:
            await queue(joined, reminder)
        await connection.commit()
        return 1 if reminder is not None else 0


async def _reminder(store: Store, activity_id: int, now: dt.datetime) -> Reminder | None:
    """The reminder to mail, or None when there is none to send (kept as handled)."""
    async with store.session() as session:
        activity = await session.get(Activity, activity_id)
        if activity is None or activity.owner_id is None:
            return None
        owner = await session.get(User, activity.owner_id)
        when = time_of(activity)
        if owner is None or not owner.is_active or not owner.email or when is None:
            log.info("reminder for activity %s: its owner has no address to mail", activity_id)
            return None
        if not _current(activity, now):
            log.info("reminder for activity %s dropped: its time has passed", activity_id)
            return None
        links = await session.execute(
            select(ActivityLink.record_type, ActivityLink.record_id)
            .where(ActivityLink.activity_id == activity.id)
            .order_by(ActivityLink.id)
        )
        return Reminder(
            activity_id=activity.id, owner_id=owner.id, address=owner.email,
            locale=owner.locale, timezone=owner.timezone, kind=activity.kind.value,
            subject=activity.subject, at=when, minutes=activity.remind_minutes or 0,
            location=activity.location, records=tuple((rt, rid) for rt, rid in links),
        )  # fmt: skip
