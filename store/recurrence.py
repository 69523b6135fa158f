"""Repeating activities: a rule, its occurrences in a range, the next one made on completion.

A rule is daily, weekly or monthly, every ``interval`` of them, ending after
``count`` occurrences, on a last day, or never.  It is kept in the activity's
``recurrence`` column in the iCalendar RRULE spelling (RFC 5545 §3.3.10), the
subset written here only: ``FREQ=WEEKLY;INTERVAL=2;COUNT=10``.

Only the series' newest occurrence exists as a row ahead of time: completing
(or cancelling) it makes the next one, so a task list never fills with a
year of copies, and a calendar expands the rule over the range it shows and
no further.  Occurrence ``n`` is counted from the series' first time in the
owner's wall-clock time, so a 09:00 meeting stays at 09:00 across a
daylight-saving change and a monthly one on the 31st falls on the last day of
shorter months and on the 31st again after them.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import new_activity
from store.models import Activity, ActivityLink, ActivityStatus, User

FREQUENCIES = ("daily", "weekly", "monthly")
MAX_INTERVAL = 99
MAX_COUNT = 999
# One series gives a calendar range at most this many occurrences (a month of a daily rule
# is 31); the bound keeps a malformed range from expanding without end.
MAX_EXPANDED = 400
DEFAULT_ZONE = "Asia/Shanghai"
_DAYS = {"daily": 1, "weekly": 7}


@dataclass(frozen=True)
class Rule:
    """Every ``interval`` days, weeks or months; ``count`` occurrences or until ``until``."""

    freq: str
    interval: int = 1
    count: int | None = None
    # The last day (in the owner's time zone) an occurrence may fall on.
    until: dt.date | None = None

    def __post_init__(self) -> None:
        if self.freq not in FREQUENCIES:
            raise ValueError(f"frequency {self.freq!r} is not one of {FREQUENCIES}")
        if not 1 <= self.interval <= MAX_INTERVAL:
            raise ValueError(f"interval {self.interval} is not from 1 to {MAX_INTERVAL}")
        if self.count is not None and not 1 <= self.count <= MAX_COUNT:
            raise ValueError(f"count {self.count} is not from 1 to {MAX_COUNT}")
        if self.count is not None and self.until is not None:
            raise ValueError("a rule ends after a count or on a day, not both")

    def text(self) -> str:
        parts = [f"FREQ={self.freq.upper()}", f"INTERVAL={self.interval}"]
        if self.count is not None:
            parts.append(f"COUNT={self.count}")
        if self.until is not None:
            parts.append(f"UNTIL={self.until:%Y%m%d}")
        return ";".join(parts)

    @classmethod
    def parse(cls, text: str) -> Rule:
        """The rule ``text()`` wrote; ``ValueError`` for anything else."""
        fields: dict[str, str] = {}
        for part in text.split(";"):
            key, sep, value = part.partition("=")
            if not sep or key in fields:
                raise ValueError(f"not a rule: {text!r}")
            fields[key] = value
        unknown = set(fields) - {"FREQ", "INTERVAL", "COUNT", "UNTIL"}
        if unknown or "FREQ" not in fields:
            raise ValueError(f"not a rule: {text!r}")
        until = fields.get("UNTIL")
        return cls(
            freq=fields["FREQ"].lower(),
            interval=int(fields.get("INTERVAL", "1")),
            count=int(fields["COUNT"]) if "COUNT" in fields else None,
            until=dt.datetime.strptime(until, "%Y%m%d").date() if until else None,
        )

    def nth(self, start: dt.datetime, n: int, zone: ZoneInfo) -> dt.datetime:
        """Occurrence ``n`` (0 is ``start``) of a series that began at ``start``, in UTC."""
        local = start.astimezone(zone)
        if self.freq == "monthly":
            months = local.month - 1 + n * self.interval
            year, month = local.year + months // 12, months % 12 + 1
            day = dt.date(year, month, min(local.day, calendar.monthrange(year, month)[1]))
        else:
            day = local.date() + dt.timedelta(days=_DAYS[self.freq] * self.interval * n)
        return dt.datetime.combine(day, local.time(), tzinfo=zone).astimezone(dt.UTC)

    def includes(self, n: int, at: dt.datetime, zone: ZoneInfo) -> bool:
        """Whether occurrence ``n``, at ``at``, is still within the rule's end."""
        if self.count is not None and n >= self.count:
            return False
        return self.until is None or at.astimezone(zone).date() <= self.until

    def between(
        self, start: dt.datetime, zone: ZoneInfo, after: int, lower: dt.datetime,
        upper: dt.datetime,
    ) -> list[tuple[int, dt.datetime]]:  # fmt: skip
        """Occurrences numbered above ``after`` within ``[lower, upper)``, as (n, time)."""
        days = (lower - start).days
        step = 31 if self.freq == "monthly" else _DAYS[self.freq]
        # An occurrence number at or below the first one in range: never skips one.
        first = max(after + 1, days // (step * self.interval) - 1)
        found: list[tuple[int, dt.datetime]] = []
        for n in range(first, first + MAX_EXPANDED * 2):
            at = self.nth(start, n, zone)
            if at >= upper or not self.includes(n, at, zone) or len(found) >= MAX_EXPANDED:
                break
            if at >= lower:
                found.append((n, at))
        return found


def rule_of(activity: Activity) -> Rule | None:
    """The activity's rule, or None when it does not repeat (or its rule cannot be read)."""
    if not activity.recurrence:
        return None
    try:
        return Rule.parse(activity.recurrence)
    except ValueError:
        return None


def zone_named(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or DEFAULT_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_ZONE)


async def owner_zone(session: AsyncSession, owner_id: int | None) -> ZoneInfo:
    """The time zone a series is counted in: its owner's."""
    name = await session.scalar(select(User.timezone).where(User.id == owner_id))
    return zone_named(name)


def start_series(activity: Activity, rule: Rule | None) -> None:
    """Make ``activity`` (flushed, with its id) the first occurrence of ``rule``, or a single one.

    Called when an activity is made and when its rule or time changes: the
    series then counts again from this occurrence.
    """
    activity.recurrence = rule.text() if rule is not None else None
    activity.series_id = activity.id if rule is not None else None
    activity.series_index = 0
    activity.series_start = activity.occurred_at if rule is not None else None


async def is_newest(session: AsyncSession, activity: Activity) -> bool:
    """No later occurrence of the activity's series exists (deleted ones count too)."""
    if activity.series_id is None:
        return True
    later = await session.scalar(
        select(Activity.id)
        .where(Activity.series_id == activity.series_id,
               Activity.series_index > activity.series_index)
        .limit(1)
    )  # fmt: skip
    return later is None


async def follow_up(session: AsyncSession, activity: Activity) -> Activity | None:
    """The occurrence after ``activity`` (made now unless it exists), or None if the series ends.

    The next one keeps the records, owner, words, length, due offset and
    reminder of this one; it is planned whatever this one became.
    """
    rule = rule_of(activity)
    if rule is None or activity.series_id is None or activity.series_start is None:
        return None
    n = activity.series_index + 1
    zone = await owner_zone(session, activity.owner_id)
    at = rule.nth(activity.series_start, n, zone)
    if not rule.includes(n, at, zone):
        return None
    existing = await session.scalar(
        select(Activity).where(Activity.series_id == activity.series_id,
                               Activity.series_index == n)
    )  # fmt: skip
    if existing is not None:
        return existing
    shift = at - activity.occurred_at
    links = await session.execute(
        select(ActivityLink.record_type, ActivityLink.record_id)
        .where(ActivityLink.activity_id == activity.id)
        .order_by(ActivityLink.id)
    )
    following = new_activity(
        session, kind=activity.kind, subject=activity.subject, body=activity.body,
        records=[(record_type, record_id) for record_type, record_id in links],
        occurred_at=at, owner_id=activity.owner_id, status=ActivityStatus.PLANNED,
        ends_at=activity.ends_at + shift if activity.ends_at else None,
        due_at=activity.due_at + shift if activity.due_at else None,
        priority=activity.priority, location=activity.location,
        recurrence=activity.recurrence, series_id=activity.series_id, series_index=n,
        series_start=activity.series_start, remind_minutes=activity.remind_minutes,
        remind_at=activity.remind_at + shift if activity.remind_at else None,
    )  # fmt: skip
    await session.flush()
    return following


async def finish(
    session: AsyncSession, activity: Activity, status: ActivityStatus = ActivityStatus.DONE
) -> Activity | None:
    """Mark a planned activity done (or cancelled); returns its series' next occurrence if any."""
    was_planned = activity.status == ActivityStatus.PLANNED
    activity.status = status
    if not was_planned or status == ActivityStatus.PLANNED:
        return None
    return await follow_up(session, activity)
