"""Calendars: a range of activities with repetitions expanded, and who may see whose."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from store.access import access_for
from store.activities import log_activity
from store.calendar import calendar_users, may_see_activity, occurrences
from store.models import Activity, ActivityStatus, Contact, RecordScope, Role, Team, User
from store.recurrence import Rule, finish, start_series

UTC = dt.UTC
MONDAY = dt.datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai


async def _user(session: AsyncSession, name: str, scope: RecordScope, team: Team | None) -> User:
    role = Role(name=f"r-{name}", scope=scope, permissions={"activities": ["view"]})
    user = User(username=name, role=role, team_id=team.id if team else None)
    session.add_all([role, user])
    await session.flush()
    return user


async def test_a_week_shows_rows_and_the_repetitions_not_made_yet(session: AsyncSession) -> None:
    team = Team(name="华东")
    session.add(team)
    await session.flush()
    li = await _user(session, "li", RecordScope.OWN, team)
    contact = Contact(last_name="王")
    session.add(contact)
    await session.flush()
    weekly = await log_activity(
        session, kind="meeting", subject="周会", records=[contact], owner_id=li.id,
        occurred_at=MONDAY, ends_at=MONDAY + dt.timedelta(hours=1),
        status=ActivityStatus.PLANNED,
    )  # fmt: skip
    start_series(weekly, Rule("weekly", count=3))
    task = await log_activity(
        session, kind="task", subject="报价", records=[contact], owner_id=li.id,
        occurred_at=MONDAY - dt.timedelta(days=30), due_at=MONDAY + dt.timedelta(days=8),
        status=ActivityStatus.PLANNED,
    )  # fmt: skip
    await log_activity(session, kind="note", subject="a note is no appointment",
                       records=[contact], owner_id=li.id, occurred_at=MONDAY)  # fmt: skip
    await session.flush()

    march = await occurrences(session, [li.id], MONDAY - dt.timedelta(days=1),
                              MONDAY + dt.timedelta(days=30))  # fmt: skip
    assert [(o.subject, o.at, o.upcoming) for o in march] == [
        ("周会", MONDAY, False),
        ("周会", MONDAY + dt.timedelta(days=7), True),
        ("报价", MONDAY + dt.timedelta(days=8), False),  # at its due time, not its creation
        ("周会", MONDAY + dt.timedelta(days=14), True),  # the third and last
    ]
    upcoming = march[1]
    assert upcoming.activity_id == weekly.id and upcoming.status == "planned"
    assert upcoming.ends_at == MONDAY + dt.timedelta(days=7, hours=1)
    # The second week alone, then the first occurrence finished: its row is the next one.
    second_week = (MONDAY + dt.timedelta(days=6), MONDAY + dt.timedelta(days=13))
    before = await occurrences(session, [li.id], *second_week)
    assert [(o.activity_id, o.upcoming) for o in before] == [(weekly.id, True), (task.id, False)]
    following = await finish(session, weekly)
    assert following is not None
    after = await occurrences(session, [li.id], *second_week)
    assert [(o.activity_id, o.upcoming) for o in after] == [(following.id, False),
                                                            (task.id, False)]  # fmt: skip
    with pytest.raises(ValueError):
        await occurrences(session, [li.id], MONDAY, MONDAY + dt.timedelta(days=100))


async def test_whose_calendar_a_user_may_see_follows_their_scope(session: AsyncSession) -> None:
    east, west = Team(name="east"), Team(name="west")
    session.add_all([east, west])
    await session.flush()
    lead = await _user(session, "boss", RecordScope.TEAM, east)
    mate = await _user(session, "mate", RecordScope.OWN, east)
    other = await _user(session, "other", RecordScope.OWN, west)
    everyone = await _user(session, "ceo", RecordScope.ALL, None)
    for user in (lead, mate, other, everyone):
        await session.refresh(user, ["role"])

    async def names(user: User) -> list[str]:
        return [u.name for u in await calendar_users(session, await access_for(session, user))]

    assert await names(lead) == ["boss", "mate"]
    assert await names(mate) == ["mate"]
    assert await names(everyone) == ["ceo", "boss", "mate", "other"]

    contact = Contact(last_name="赵", owner_id=mate.id, team_id=east.id)
    session.add(contact)
    await session.flush()
    theirs = await log_activity(session, kind="task", subject="x", records=[contact],
                                owner_id=other.id)  # fmt: skip
    hidden = await log_activity(session, kind="task", subject="y", records=[], owner_id=other.id)
    mates = await access_for(session, mate)
    # Another team's task is seen on a record of mine, not otherwise.
    assert await may_see_activity(session, mates, theirs)
    assert not await may_see_activity(session, mates, hidden)
    assert await may_see_activity(session, await access_for(session, everyone), hidden)
    hidden_row = await session.get_one(Activity, hidden.id)
    hidden_row.owner_id = mate.id
    assert await may_see_activity(session, await access_for(session, lead), hidden_row)
