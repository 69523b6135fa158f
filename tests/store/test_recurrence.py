"""Repeating activities: the rule's arithmetic, its expansion over a range, the next occurrence."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import log_activity
from store.models import Activity, ActivityLink, ActivityStatus, Contact, User
from store.recurrence import Rule, finish, follow_up, start_series
from store.reminders import set_reminder

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")


def test_a_rule_reads_back_what_it_writes_and_refuses_the_rest() -> None:
    for rule in (Rule("daily"), Rule("weekly", 2, count=10),
                 Rule("monthly", 3, until=dt.date(2027, 6, 30))):  # fmt: skip
        assert Rule.parse(rule.text()) == rule
    assert Rule("weekly", 2, count=10).text() == "FREQ=WEEKLY;INTERVAL=2;COUNT=10"
    for bad in ("FREQ=YEARLY", "INTERVAL=2", "FREQ=DAILY;INTERVAL=0", "FREQ=DAILY;BYDAY=MO",
                "FREQ=DAILY;COUNT=2;UNTIL=20270101", "FREQ=DAILY;FREQ=DAILY", "nonsense"):  # fmt: skip
        with pytest.raises(ValueError):
            Rule.parse(bad)


def test_months_clamp_to_short_months_and_come_back_to_the_day() -> None:
    start = dt.datetime(2026, 1, 31, 9, 0, tzinfo=SHANGHAI)
    monthly = Rule("monthly")
    days = [monthly.nth(start, n, SHANGHAI).astimezone(SHANGHAI) for n in range(4)]
    assert [d.date() for d in days] == [dt.date(2026, 1, 31), dt.date(2026, 2, 28),
                                        dt.date(2026, 3, 31), dt.date(2026, 4, 30)]  # fmt: skip
    assert {d.time() for d in days} == {dt.time(9, 0)}
    # Every 5 months from November crosses the year.
    assert Rule("monthly", 5).nth(start.replace(month=11, day=30), 1, SHANGHAI).date() == dt.date(
        2027, 4, 30
    )


def test_wall_clock_time_holds_across_daylight_saving() -> None:
    # Berlin moves its clocks on 29 March 2026: a daily 09:00 stays 09:00 local.
    start = dt.datetime(2026, 3, 27, 9, 0, tzinfo=BERLIN)
    times = [Rule("daily").nth(start, n, BERLIN) for n in range(4)]
    assert [t.astimezone(BERLIN).hour for t in times] == [9, 9, 9, 9]
    assert [t.hour for t in times] == [8, 8, 7, 7]  # UTC


def test_a_range_gets_only_its_occurrences_within_the_rules_end() -> None:
    start = dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.UTC)  # a Monday
    fortnightly = Rule("weekly", 2, count=4)
    lower, upper = dt.datetime(2026, 3, 20, tzinfo=dt.UTC), dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    found = fortnightly.between(start, SHANGHAI, 0, lower, upper)
    assert found == [(2, dt.datetime(2026, 3, 30, 1, 0, tzinfo=dt.UTC)),
                     (3, dt.datetime(2026, 4, 13, 1, 0, tzinfo=dt.UTC))]  # fmt: skip
    # Those at or below ``after`` exist as rows already.
    assert fortnightly.between(start, SHANGHAI, 2, lower, upper) == found[1:]
    until = Rule("daily", until=dt.date(2026, 3, 4))
    assert len(until.between(start, SHANGHAI, 0, start, upper)) == 2  # 3 and 4 March
    # Ten years ahead, a daily rule without an end gives one week: not ten years of rows.
    far = dt.datetime(2036, 3, 2, tzinfo=dt.UTC)
    week = Rule("daily").between(start, SHANGHAI, 0, far, far + dt.timedelta(days=7))
    assert len(week) == 7 and week[0][1] >= far


async def _series(session: AsyncSession, rule: Rule, **fields: object) -> tuple[Activity, int]:
    owner = User(username="li", timezone="Asia/Shanghai")
    contact = Contact(last_name="王")
    session.add_all([owner, contact])
    await session.flush()
    task = await log_activity(
        session, kind="task", subject="周报", records=[contact], owner_id=owner.id,
        occurred_at=dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.UTC),
        due_at=dt.datetime(2026, 3, 2, 2, 0, tzinfo=dt.UTC), status=ActivityStatus.PLANNED,
        **fields,
    )  # fmt: skip
    start_series(task, rule)
    set_reminder(task, 30)
    await session.flush()
    return task, contact.id


async def test_completing_an_occurrence_makes_the_next_once(session: AsyncSession) -> None:
    task, contact_id = await _series(session, Rule("weekly", count=3), location="上海")
    task.reminder_sent_at = task.remind_at
    following = await finish(session, task)
    assert task.status == ActivityStatus.DONE
    assert following is not None and following.id != task.id
    assert (following.series_id, following.series_index) == (task.id, 1)
    assert following.status == ActivityStatus.PLANNED
    assert following.occurred_at == dt.datetime(2026, 3, 9, 1, 0, tzinfo=dt.UTC)
    assert following.due_at == dt.datetime(2026, 3, 9, 2, 0, tzinfo=dt.UTC)
    assert (following.subject, following.location, following.remind_minutes) == ("周报", "上海", 30)
    # Its reminder is armed afresh, 30 minutes before its own due time.
    assert following.remind_at == dt.datetime(2026, 3, 9, 1, 30, tzinfo=dt.UTC)
    assert following.reminder_sent_at is None
    linked = await session.scalars(
        select(ActivityLink.record_id).where(ActivityLink.activity_id == following.id)
    )
    assert list(linked) == [contact_id]
    # Finishing it again, or asking again, makes no second copy.
    assert await finish(session, task) is None
    assert (await follow_up(session, task)) is following
    # The third is the last of COUNT=3; cancelling one goes on too.
    third = await finish(session, following, ActivityStatus.CANCELLED)
    assert third is not None and third.series_index == 2
    assert await finish(session, third) is None
    count = await session.scalar(
        select(func.count()).select_from(Activity).where(Activity.series_id == task.id)
    )
    assert count == 3


async def test_a_single_activity_has_no_next(session: AsyncSession) -> None:
    task, _ = await _series(session, Rule("daily"))
    start_series(task, None)
    assert await finish(session, task) is None
    assert task.status == ActivityStatus.DONE
