"""The calendar: a month or a week of one person's activities, or of a team's.

Days are the viewer's, in their time zone, and weeks start on their locale's
first day (Monday in China).  A person's calendar is theirs to open, their
team's, or anyone's, as the viewer's record scope allows; a team calendar
shows every member the viewer may see, each entry with its owner's name.
Repeating activities show every occurrence in the range (``store.calendar``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web
from babel import Locale
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.calendar import CalendarUser, calendar_users, occurrences
from store.db import Store
from store.models import RecordScope, Team
from web.auth import Viewer, permitted
from web.modules import db_int
from web.render import render

CALENDAR_STORE_KEY = web.AppKey("calendar_store", Store)
VIEWS = ("month", "week")



def first_weekday(locale: str) -> int:
    """0 for Monday ... 6 for Sunday: where the locale's weeks begin."""
    return int(Locale.parse(locale).first_week_day)


def grid(view: str, day: dt.date, week_start: int) -> tuple[dt.date, int]:
    """The first day shown and how many: whole weeks around ``day``'s month, or its week."""
    first = day.replace(day=1) if view == "month" else day
    start = first - dt.timedelta(days=(first.weekday() - week_start) % 7)
    if view == "week":
        return start, 7
    following = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    weeks = -(-((following - start).days) // 7)
    return start, weeks * 7


def _shift(view: str, day: dt.date, steps: int) -> dt.date:
    if view == "week":
        return day + dt.timedelta(days=7 * steps)
    months = day.month - 1 + steps
    return dt.date(day.year + months // 12, months % 12 + 1, 1)


async def _teams(session: AsyncSession, viewer: Viewer, people: list[CalendarUser]) -> list[Team]:
    """Teams whose calendar the viewer may open: those of the people they may see."""
    ids = {u.team_id for u in people if u.team_id is not None}
    access = viewer.access
    if not (access.is_admin or access.scope == RecordScope.ALL):
        ids &= set(access.team_ids)
    if not ids:
        return []
    return list(await session.scalars(select(Team).where(Team.id.in_(sorted(ids)))
                                      .order_by(Team.name)))  # fmt: skip


def _day(request: web.Request, today: dt.date) -> dt.date:
    """The day the URL asks for (one in the calendar's years), else today."""
    try:
        day = dt.date.fromisoformat(request.query.get("day", "") or today.isoformat())
    except ValueError:
        return today
    return min(max(day, dt.date(1971, 1, 1)), dt.date(9998, 1, 1))


def _whose(
    request: web.Request, viewer: Viewer, people: list[CalendarUser], teams: list[Team]
) -> tuple[CalendarUser | None, Team | None]:
    """The person or the team the URL asks for, among those the viewer may see; else them."""
    # The picker sends "who=user:3" or "who=team:2"; links send user= or team=.
    kind, _, number = request.query.get("who", "").partition(":")
    chosen = {kind: number} if kind in ("user", "team") else request.query
    team_id = db_int(chosen.get("team", ""))
    team = next((tm for tm in teams if tm.id == team_id), None)
    if team is not None:
        return None, team
    wanted = db_int(chosen.get("user", "")) or viewer.user_id
    return next((u for u in people if u.id == wanted), people[0] if people else None), None


async def calendar_page(request: web.Request) -> web.Response:
    viewer = permitted(request, ("activities", "view"))
    t = viewer.t
    view = request.query.get("view", "month")
    view = view if view in VIEWS else "month"
    today = t.local(dt.datetime.now(dt.UTC)).date()
    day = _day(request, today)
    start, length = grid(view, day, first_weekday(t.locale))
    lower = dt.datetime.combine(start, dt.time(), tzinfo=t.zone).astimezone(dt.UTC)
    upper = dt.datetime.combine(start + dt.timedelta(days=length), dt.time(),
                                tzinfo=t.zone).astimezone(dt.UTC)  # fmt: skip
    async with request.app[CALENDAR_STORE_KEY].session() as session:
        people = await calendar_users(session, viewer.access)
        teams = await _teams(session, viewer, people)
        person, team = _whose(request, viewer, people, teams)
        shown = [u for u in people if u.team_id == team.id] if team else [person] if person else []
        found = await occurrences(session, [u.id for u in shown], lower, upper)
    names = {u.id: u.name for u in people}
    days: list[dict[str, Any]] = [
        {"date": start + dt.timedelta(days=n), "entries": []} for n in range(length)
    ]
    for entry in found:
        index = (t.local(entry.at).date() - start).days
        if 0 <= index < length:
            days[index]["entries"].append({"o": entry, "owner": names.get(entry.owner_id or 0, "")})
    return render(request, "calendar.html", {
        "view": view, "day": day, "today": today, "days": days, "month": day.month,
        "weekdays": [days[n]["date"] for n in range(7)], "people": people, "teams": teams,
        "person": person, "team": team,
        "previous": _shift(view, day, -1), "next": _shift(view, day, 1),
    })  # fmt: skip


def add_calendar_routes(app: web.Application, store: Store) -> None:
    app[CALENDAR_STORE_KEY] = store
    app.router.add_get("/calendar", calendar_page)
