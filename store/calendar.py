"""Calendars: whose activities a user may see, and a time range of them with repetitions expanded.

A calendar shows what is planned or was done at a time: tasks at their due
time, meetings, visits and calls at their start.  Mail and notes have no
place on it, and neither do calls the PBX logged (they are history, one a
minute on a busy line); a call planned or logged by hand is shown.

A repeating series exists as rows up to its newest occurrence only
(``store.recurrence``); the occurrences after it that fall in the range are
computed from the rule and shown as ``planned`` ones yet to be made.  An
activity's team is its owner's: a team calendar is its members' activities,
and who sees whose follows the viewer's record scope.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.access import Access
from store.models import (
    RECORD_TYPES,
    Activity,
    ActivityKind,
    ActivityLink,
    ActivityStatus,
    RecordScope,
    User,
)
from store.recurrence import rule_of, zone_named
from store.reminders import time_of

SHOWN_KINDS = (ActivityKind.TASK, ActivityKind.MEETING, ActivityKind.CALL, ActivityKind.VISIT)
# A range is at most this long (a month view with its leading and trailing days is 42).
MAX_RANGE = dt.timedelta(days=62)
# At most this many entries in one range: a calendar is read by a person, not exported.
MAX_ENTRIES = 2000


@dataclass(frozen=True)
class Occurrence:
    """One entry of a calendar: a row, or a repetition of one not made yet (``upcoming``)."""

    activity_id: int
    kind: str
    subject: str
    status: str
    at: dt.datetime
    ends_at: dt.datetime | None
    owner_id: int | None
    location: str | None
    priority: str
    repeats: bool
    # A later occurrence of the series ``activity_id`` belongs to, computed from its rule.
    upcoming: bool = False


@dataclass(frozen=True)
class CalendarUser:
    id: int
    name: str
    team_id: int | None


def _scoped_users(access: Access) -> ColumnElement[bool]:
    """The users whose activities ``access`` may see: its own, its teams' or everyone's."""
    if access.is_admin or access.scope == RecordScope.ALL:
        return User.is_active.is_(True)
    if access.scope == RecordScope.TEAM and access.team_ids:
        return or_(User.id == access.user_id, User.team_id.in_(sorted(access.team_ids)))
    return User.id == access.user_id


async def calendar_users(session: AsyncSession, access: Access) -> list[CalendarUser]:
    """Everyone whose calendar the viewer may open, the viewer first."""
    rows = await session.execute(
        select(User.id, User.display_name, User.username, User.team_id)
        .where(_scoped_users(access))
        .order_by(User.username)
    )
    users = [CalendarUser(uid, display or name, team) for uid, display, name, team in rows]
    users.sort(key=lambda u: u.id != access.user_id)
    return users


def shown_at(activity: Activity) -> dt.datetime:
    """Where an activity stands on a calendar or a list: its time (``store.reminders.time_of``:
    a task's due time, else its start), or when it was made for a task without a due time."""
    return time_of(activity) or activity.occurred_at


def _in_range(lower: dt.datetime, upper: dt.datetime) -> ColumnElement[bool]:
    timed = and_(Activity.kind != ActivityKind.TASK,
                 Activity.occurred_at >= lower, Activity.occurred_at < upper)  # fmt: skip
    due = and_(Activity.kind == ActivityKind.TASK,
               Activity.due_at >= lower, Activity.due_at < upper)  # fmt: skip
    return or_(timed, due)


def _entry(activity: Activity, at: dt.datetime | None = None) -> Occurrence:
    shift = (at - shown_at(activity)) if at is not None else dt.timedelta(0)
    upcoming = at is not None
    return Occurrence(
        activity_id=activity.id, kind=activity.kind.value, subject=activity.subject,
        status=ActivityStatus.PLANNED.value if upcoming else activity.status.value,
        at=shown_at(activity) + shift,
        ends_at=activity.ends_at + shift if activity.ends_at is not None else None,
        owner_id=activity.owner_id, location=activity.location, priority=activity.priority,
        repeats=activity.recurrence is not None, upcoming=upcoming,
    )  # fmt: skip


async def occurrences(
    session: AsyncSession, owner_ids: Sequence[int], lower: dt.datetime, upper: dt.datetime
) -> list[Occurrence]:
    """The owners' activities in ``[lower, upper)``, repetitions included, in time order."""
    if upper <= lower or upper - lower > MAX_RANGE:
        raise ValueError(f"a calendar range is from a moment up to {MAX_RANGE.days} days on")
    if not owner_ids:
        return []
    owners = sorted(set(owner_ids))
    live = (Activity.owner_id.in_(owners), Activity.deleted_at.is_(None),
            Activity.kind.in_(SHOWN_KINDS),
            or_(Activity.kind != ActivityKind.CALL, Activity.call_id.is_(None)))  # fmt: skip
    rows = await session.scalars(
        select(Activity).where(*live, _in_range(lower, upper)).limit(MAX_ENTRIES)
    )
    found = [_entry(a) for a in rows]
    # The planned newest occurrence of each series that starts before the range ends.
    heads = await session.scalars(
        select(Activity).where(
            *live, Activity.recurrence.is_not(None), Activity.status == ActivityStatus.PLANNED,
            Activity.occurred_at < upper,
        )
    )
    zones = dict((await session.execute(
        select(User.id, User.timezone).where(User.id.in_(owners))
    )).all())  # fmt: skip
    for head in heads:
        rule = rule_of(head)
        if rule is None or head.series_start is None:
            continue
        offset = shown_at(head) - head.occurred_at
        zone = zone_named(zones.get(head.owner_id or 0))
        for _, at in rule.between(head.series_start, zone, head.series_index,
                                  lower - offset, upper - offset):  # fmt: skip
            found.append(_entry(head, at + offset))
    found.sort(key=lambda o: (o.at, o.activity_id, o.upcoming))
    return found[:MAX_ENTRIES]


async def may_see_activity(session: AsyncSession, access: Access, activity: Activity) -> bool:
    """The viewer may see an activity of someone in their scope, or one on a record they see."""
    if activity.deleted_at is not None:
        return False
    if access.is_admin or access.scope == RecordScope.ALL or activity.owner_id == access.user_id:
        return True
    if access.scope == RecordScope.TEAM and activity.owner_id is not None:
        team = await session.scalar(select(User.team_id).where(User.id == activity.owner_id))
        if team is not None and team in access.team_ids:
            return True
    links = await session.execute(
        select(ActivityLink.record_type, ActivityLink.record_id)
        .where(ActivityLink.activity_id == activity.id)
    )
    for record_type, record_id in links:
        model = RECORD_TYPES.get(record_type)
        if model is None or not hasattr(model, "owner_id"):
            continue
        record: Any = await session.get(model, record_id)
        if record is not None and record.deleted_at is None and access.may_see(record):
            return True
    return False
