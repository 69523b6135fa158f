"""Activity pages and the calendar: make, repeat, remind, finish, list; who sees whose."""

from __future__ import annotations

import datetime as dt
import re

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from store.activities import log_activity
from store.base import utcnow
from store.db import Store
from store.models import Activity, ActivityLink, ActivityStatus, Contact, User
from tests.web.browsing import make_user, post_form, sign_in
from web.app import create_app
from web.calendar import grid
from web.i18n import Translator

SHANGHAI = Translator("en").zone


async def _contact(store: Store, owner_id: int, name: str = "王") -> int:
    async with store.session() as session, session.begin():
        team_id = (await session.get_one(User, owner_id)).team_id
        contact = Contact(last_name=name, first_name="芳", owner_id=owner_id, team_id=team_id)
        session.add(contact)
        await session.flush()
        return contact.id


def _local(moment: dt.datetime) -> str:
    return moment.astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M")


async def test_a_weekly_meeting_made_on_a_contact_repeats_reminds_and_moves_on(
    store: Store,
) -> None:
    wang = await make_user(store, "wang", "agent", team="华东", email="wang@rapport.test")
    contact_id = await _contact(store, wang)
    soon = (utcnow() + dt.timedelta(minutes=10)).replace(second=0, microsecond=0)
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "wang")
        page = await (await client.get(f"/contacts/{contact_id}")).text()
        assert f'/activities/new?kind=meeting&amp;record=contacts:{contact_id}' in page
        form = await client.get(f"/activities/new?kind=meeting&record=contacts:{contact_id}")
        assert form.status == 200 and "王芳" in await form.text()
        made = await post_form(client, "/activities/new", csrf, {
            "record": f"contacts:{contact_id}", "kind": "meeting", "subject": "周例会",
            "status": "planned", "priority": "normal", "start": _local(soon),
            "end": _local(soon + dt.timedelta(hours=1)), "location": "上海办公室",
            "owner_id": str(wang), "remind": "15", "repeat": "weekly", "interval": "1",
            "repeat_end": "count", "repeat_count": "3",
        }, allow_redirects=False)  # fmt: skip
        assert made.status == 303, await made.text()
        assert made.headers["Location"] == f"/contacts/{contact_id}"
        async with store.session() as session:
            meeting = await session.scalar(select(Activity).where(Activity.subject == "周例会"))
            assert meeting is not None
            link = await session.scalar(select(ActivityLink).where(
                ActivityLink.activity_id == meeting.id))  # fmt: skip
        assert (link.record_type, link.record_id) == ("contact", contact_id)
        assert meeting.occurred_at == soon and meeting.recurrence == "FREQ=WEEKLY;INTERVAL=1;COUNT=3"
        assert meeting.remind_at == soon - dt.timedelta(minutes=15)

        # Its reminder has come: the panel's poll and the list show it.
        due = await (await client.get("/activities/reminders.json")).json()
        assert [r["subject"] for r in due["reminders"]] == ["周例会"]
        assert due["reminders"][0]["url"] == f"/activities/{meeting.id}"
        listed = await (await client.get("/activities")).text()
        assert "周例会" in listed and 'class="warning reminders-now"' in listed

        # The calendar shows this week's row and the two later weeks as upcoming.
        local_day = soon.astimezone(SHANGHAI).date()
        month = await (await client.get(f"/calendar?view=month&day={local_day}")).text()
        week = await (await client.get(f"/calendar?view=week&day={local_day}")).text()
        assert week.count('title="周例会"') == 1 and " upcoming" not in week.split('class="days"')[1]
        later = local_day + dt.timedelta(days=14)
        third = await (await client.get(f"/calendar?view=week&day={later}")).text()
        assert third.count('title="周例会"') == 1
        assert "entry kind-meeting status-planned upcoming" in third
        assert month.count('title="周例会"') >= 1

        # Done: the next occurrence is a row of its own, a week on, with its reminder.
        done = await post_form(client, f"/activities/{meeting.id}/status", csrf,
                               {"status": "done", "next": "/activities"},
                               allow_redirects=False)  # fmt: skip
        assert done.status == 303 and done.headers["Location"] == "/activities"
        async with store.session() as session:
            rows = list(await session.scalars(
                select(Activity).where(Activity.series_id == meeting.id)
                .order_by(Activity.series_index)))  # fmt: skip
        assert [(r.series_index, r.status) for r in rows] == [
            (0, ActivityStatus.DONE), (1, ActivityStatus.PLANNED)]  # fmt: skip
        assert rows[1].occurred_at == soon + dt.timedelta(days=7)
        assert rows[1].remind_at == rows[1].occurred_at - dt.timedelta(minutes=15)
        # Pressing done twice (a second tab) makes no second next one.
        await post_form(client, f"/activities/{meeting.id}/status", csrf, {"status": "done"})
        async with store.session() as session:
            count = len(list(await session.scalars(
                select(Activity.id).where(Activity.series_id == meeting.id))))  # fmt: skip
        assert count == 2


async def test_a_bad_activity_form_names_each_problem_and_keeps_what_was_typed(
    store: Store,
) -> None:
    wang = await make_user(store, "wang", "agent", locale="zh_CN")
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "wang")
        bad = await post_form(client, "/activities/new", csrf, {
            "kind": "meeting", "subject": "", "status": "planned", "priority": "normal",
            "start": "2026-13-40T25:00", "end": "", "owner_id": str(wang), "remind": "15",
            "repeat": "weekly", "interval": "0", "repeat_end": "until",
            "repeat_until": "next tuesday", "location": "北京",
        })  # fmt: skip
        assert bad.status == 422
        page = await bad.text()
        errors = dict(re.findall(r'id="error-(\w+)" role="alert">([^<]+)<', page))
        assert set(errors) == {"subject", "start", "interval", "repeat_until"}
        assert errors["subject"] == "此项必填。"
        assert errors["interval"] == "请输入 1 到 99 之间的整数。"
        assert 'value="北京"' in page and 'value="next tuesday"' in page
        ends = await post_form(client, "/activities/new", csrf, {
            "kind": "meeting", "subject": "回访", "status": "planned", "priority": "normal",
            "start": "2026-12-08T10:00", "end": "2026-12-08T09:00", "owner_id": str(wang),
        })  # fmt: skip
        assert "结束时间不能早于开始时间。" in await ends.text()
        async with store.session() as session:
            assert await session.scalar(select(Activity.id)) is None


async def test_an_agent_sees_only_their_own_activities_and_a_manager_the_teams(
    store: Store,
) -> None:
    li = await make_user(store, "li", "agent", team="华东")
    zhao = await make_user(store, "zhao", "agent", team="华南")
    await make_user(store, "boss", "manager", team="华东")
    at = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=2)
    async with store.session() as session, session.begin():
        visit = await log_activity(session, kind="visit", subject="赵的拜访", records=[],
                                   owner_id=zhao, occurred_at=at, status="planned")  # fmt: skip
        lis = await log_activity(session, kind="task", subject="李的任务", records=[],
                                 owner_id=li, occurred_at=at, due_at=at, status="planned")  # fmt: skip
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "li")
        assert (await client.get(f"/activities/{visit.id}")).status == 404
        assert (await client.get(f"/activities/{visit.id}/edit")).status == 404
        refused = await post_form(client, f"/activities/{visit.id}/status", csrf,
                                  {"status": "done"})  # fmt: skip
        assert refused.status == 404
        # Asking for someone else's calendar or list shows one's own.
        day = at.astimezone(SHANGHAI).date()
        page = await (await client.get(f"/calendar?view=week&day={day}&user={zhao}")).text()
        assert "赵的拜访" not in page and "李的任务" in page
        listed = await (await client.get(f"/activities?owner={zhao}")).text()
        assert "赵的拜访" not in listed and "李的任务" in listed
    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "boss")
        async with store.session() as session:
            east = (await session.get_one(User, li)).team_id
        team_page = await (await client.get(f"/calendar?view=week&day={day}&team={east}")).text()
        assert "李的任务" in team_page and "赵的拜访" not in team_page
        # The page's picker says the same as a link; another team's is not on offer.
        picked = await (await client.get(f"/calendar?view=week&day={day}&who=team:{east}")).text()
        assert "李的任务" in picked and "赵的拜访" not in picked
        async with store.session() as session:
            south = (await session.get_one(User, zhao)).team_id
        other = await (await client.get(f"/calendar?view=week&day={day}&who=team:{south}")).text()
        assert f'value="team:{south}"' not in other and "赵的拜访" not in other
        assert (await client.get(f"/activities/{lis.id}")).status == 200
        assert (await client.get(f"/activities/{visit.id}")).status == 404


async def test_editing_an_occurrence_and_finishing_it_from_the_form(store: Store) -> None:
    wang = await make_user(store, "wang", "agent")
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "wang")
        made = await post_form(client, "/activities/new", csrf, {
            "kind": "task", "subject": "每日跟进", "status": "planned", "priority": "high",
            "due": "2030-01-07T17:00", "owner_id": str(wang), "repeat": "daily",
            "interval": "1", "repeat_end": "never",
        }, allow_redirects=False)  # fmt: skip
        assert made.status == 303
        activity_id = int(made.headers["Location"].rsplit("/", 1)[1])
        edit = await (await client.get(f"/activities/{activity_id}/edit")).text()
        assert 'value="2030-01-07T17:00"' in edit and 'value="daily" selected' in edit
        saved = await post_form(client, f"/activities/{activity_id}/edit", csrf, {
            "kind": "task", "subject": "每日跟进（改）", "status": "done", "priority": "high",
            "due": "2030-01-07T17:00", "owner_id": str(wang), "repeat": "daily",
            "interval": "1", "repeat_end": "never",
        }, allow_redirects=False)  # fmt: skip
        assert saved.status == 303
        async with store.session() as session:
            rows = list(await session.scalars(select(Activity).order_by(Activity.id)))
        assert [(r.subject, r.status.value) for r in rows] == [
            ("每日跟进（改）", "done"), ("每日跟进（改）", "planned")]  # fmt: skip
        assert rows[1].due_at == rows[0].due_at + dt.timedelta(days=1)
        # An agent's role may not delete: no button, and the post is refused.
        page = await (await client.get(f"/activities/{rows[1].id}")).text()
        assert f"/activities/{rows[1].id}/delete" not in page
        refused = await post_form(client, f"/activities/{rows[1].id}/delete", csrf)
        assert refused.status == 403
    await make_user(store, "root", "admin")
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "root")
        gone = await post_form(client, f"/activities/{rows[1].id}/delete", csrf,
                               allow_redirects=False)  # fmt: skip
        assert gone.status == 303
        assert (await client.get(f"/activities/{rows[1].id}")).status == 404


def test_a_month_grid_is_whole_weeks_from_the_locales_first_day() -> None:
    start, length = grid("month", dt.date(2026, 2, 14), 0)  # Monday first
    assert start == dt.date(2026, 1, 26) and length == 35
    start, length = grid("month", dt.date(2026, 2, 14), 6)  # Sunday first: Feb 1 is a Sunday
    assert start == dt.date(2026, 2, 1) and length == 28
    assert grid("week", dt.date(2026, 12, 5), 0) == (dt.date(2026, 11, 30), 7)


async def test_the_reminder_poll_does_not_keep_an_idle_session_alive(store: Store) -> None:
    from store.models import WebSession

    await make_user(store, "wang", "agent")
    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "wang")
        earlier = utcnow() - dt.timedelta(minutes=30)
        async with store.session() as session, session.begin():
            for row in await session.scalars(select(WebSession)):
                row.last_seen_at = earlier
        assert (await client.get("/activities/reminders.json")).status == 200
        async with store.session() as session:
            seen = await session.scalar(select(WebSession.last_seen_at))
        assert seen == earlier  # the page's own timer is not a person
        assert (await client.get("/activities")).status == 200
        async with store.session() as session:
            seen = await session.scalar(select(WebSession.last_seen_at))
        assert seen is not None and seen > earlier
