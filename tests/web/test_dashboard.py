"""The home page: my tasks (overdue marked), today's and missed calls, deals, charts."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from store.activities import log_activity
from store.base import utcnow
from store.db import Store
from store.models import (
    ActivityKind,
    Call,
    CallBack,
    CallDisposition,
    CallSegment,
    Direction,
    Lead,
    Opportunity,
    PipelineStage,
)
from tests.web.browsing import make_user, sign_in
from web.app import create_app
from web.charts import Bar, bars, funnel
from web.dashboard import month_starts
from web.i18n import Translator


def _section(page: str, section_id: str) -> str:
    start = page.index(f'id="{section_id}"')
    return page[start : page.index("</section>", start)]


async def _stages(store: Store) -> dict[str, PipelineStage]:
    async with store.session() as session:
        return {s.name: s for s in await session.scalars(select(PipelineStage))}


async def test_the_home_page_shows_what_needs_me_today(store: Store) -> None:
    wang = await make_user(store, "wang", "agent")
    zhao = await make_user(store, "zhao", "agent")
    now = utcnow()
    today = Translator("en").local(now).date()  # the users' zone: Asia/Shanghai
    stages = await _stages(store)
    async with store.session() as session, session.begin():
        lead = Lead(last_name="新", first_name="客户", company="华美", owner_id=wang)
        old_lead = Lead(last_name="旧", first_name="线索", owner_id=wang,
                        created_at=now - dt.timedelta(days=8))  # fmt: skip
        zhaos_lead = Lead(last_name="赵", first_name="的线索", owner_id=zhao)
        session.add_all([lead, old_lead, zhaos_lead])
        await session.flush()
        await log_activity(session, kind=ActivityKind.TASK, subject="发报价单", records=[lead],
                           owner_id=wang, due_at=now + dt.timedelta(days=1), status="planned")  # fmt: skip
        await log_activity(session, kind=ActivityKind.TASK, subject="回电 王芳", records=[lead],
                           owner_id=wang, due_at=now - dt.timedelta(hours=2), status="planned")  # fmt: skip
        await log_activity(session, kind=ActivityKind.TASK, subject="做完了", records=[lead],
                           owner_id=wang, due_at=now - dt.timedelta(hours=3), status="done")  # fmt: skip
        await log_activity(session, kind=ActivityKind.TASK, subject="赵的任务", records=[lead],
                           owner_id=zhao, due_at=now - dt.timedelta(hours=5), status="planned")  # fmt: skip
        rang_me = Call(pbx="p", uniqueid="3", direction=Direction.INBOUND,
                       external_number_raw="13700137000", disposition=CallDisposition.MISSED,
                       started_at=now - dt.timedelta(minutes=5))  # fmt: skip
        rang_me.segments = [CallSegment(agent_id=wang, extension="801")]
        zhao_took = Call(pbx="p", uniqueid="7", direction=Direction.INBOUND,
                         external_number_raw="13300133000", disposition=CallDisposition.ANSWERED,
                         started_at=now, talk_seconds=55, agent_id=zhao)  # fmt: skip
        zhao_took.segments = [CallSegment(agent_id=wang, extension="801"),
                              CallSegment(agent_id=zhao, extension="802")]  # fmt: skip
        mine_by_callback = Call(pbx="p", uniqueid="4", direction=Direction.INBOUND,
                                external_number_raw="13600136000", external_number_e164="+8613600136000",
                                disposition=CallDisposition.MISSED, started_at=now - dt.timedelta(minutes=9))  # fmt: skip
        session.add_all([
            Call(pbx="p", uniqueid="1", direction=Direction.INBOUND, external_number_raw="13800138000",
                 disposition=CallDisposition.ANSWERED, started_at=now, talk_seconds=42, agent_id=wang),
            Call(pbx="p", uniqueid="2", direction=Direction.INBOUND, external_number_raw="13900139000",
                 disposition=CallDisposition.MISSED, started_at=now),
            Call(pbx="p", uniqueid="5", direction=Direction.INBOUND, external_number_raw="13500135000",
                 disposition=CallDisposition.ANSWERED, started_at=now, talk_seconds=7, agent_id=zhao),
            Call(pbx="p", uniqueid="6", direction=Direction.INBOUND, external_number_raw="13400134000",
                 disposition=CallDisposition.ANSWERED, talk_seconds=99, agent_id=wang,
                 started_at=dt.datetime.combine(today, dt.time(), tzinfo=dt.UTC)
                 - dt.timedelta(hours=9)),  # yesterday in Shanghai
            rang_me, mine_by_callback, zhao_took,
        ])  # fmt: skip
        await session.flush()
        callback_task = await log_activity(
            session, kind=ActivityKind.TASK, subject="Call back 13600136000", records=[lead],
            owner_id=wang, due_at=mine_by_callback.started_at + dt.timedelta(hours=1),
            status="planned", call_id=mine_by_callback.id,
        )  # fmt: skip
        session.add(CallBack(match_key="+8613600136000", number="13600136000",
                             activity_id=callback_task.id, first_missed_at=mine_by_callback.started_at,
                             last_missed_at=mine_by_callback.started_at,
                             last_call_id=mine_by_callback.id))  # fmt: skip
        session.add_all([
            Opportunity(name="报价中的单子", stage_id=stages["Negotiation"].id, owner_id=wang,
                        amount=Decimal("80000"), expected_close=today + dt.timedelta(days=10)),
            Opportunity(name="下季度的单子", stage_id=stages["Qualification"].id, owner_id=wang,
                        amount=Decimal("5"), expected_close=today + dt.timedelta(days=31)),
            Opportunity(name="拖延的单子", stage_id=stages["Qualification"].id, owner_id=wang,
                        amount=Decimal("6"), expected_close=today - dt.timedelta(days=1)),
            Opportunity(name="赢下的单子", stage_id=stages["Closed won"].id, owner_id=wang,
                        amount=Decimal("12345"), closed_at=now, expected_close=today),
            Opportunity(name="别人的单子", stage_id=stages["Negotiation"].id, owner_id=zhao,
                        amount=Decimal("1"), expected_close=today),
        ])  # fmt: skip
    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "wang")
        page = await (await client.get("/")).text()
    tasks = _section(page, "my-tasks")
    assert "赵的任务" not in tasks and "做完了" not in tasks
    # Due soonest first; only the past one is overdue.
    assert tasks.index("回电 王芳") < tasks.index("Call back 13600136000") < tasks.index("发报价单")
    assert tasks.count(">overdue<") == 1 and re.search(
        r'class="overdue"><a href="/leads/\d+">回电 王芳', tasks
    )
    calls = _section(page, "my-calls")
    talked, missed = calls.split("Missed calls")
    assert "42 s talk" in talked and "7 s talk" not in talked and "99 s talk" not in talked
    assert "13300133000" not in calls  # it rang me too, but zhao took it
    assert "13700137000" in missed  # it rang me
    assert "13600136000" in missed and "Call-back task" in missed  # its callback is mine
    assert "13900139000" not in page  # rang nobody: an agent does not see it
    leads = _section(page, "new-leads")
    assert "新客户" in leads and "旧线索" not in leads and "赵的线索" not in leads
    closing = _section(page, "closing")
    assert "报价中的单子" in closing and "CN¥80,000.00" in closing
    assert (
        "下季度的单子" not in closing
        and "拖延的单子" not in closing
        and "赢下的单子" not in closing
    )
    quotes = _section(page, "quotes")
    assert "报价中的单子" in quotes and "别人的单子" not in page
    won = _section(page, "won")
    assert won.count("<text") == 12 and "CN¥12,345.00" in won  # six months, label and value


async def test_an_admin_sees_missed_calls_that_rang_nobody(store: Store) -> None:
    await make_user(store, "boss", "admin")
    async with store.session() as session, session.begin():
        session.add(Call(pbx="p", uniqueid="2", direction=Direction.INBOUND,
                         external_number_raw="13900139000", disposition=CallDisposition.ABANDONED,
                         started_at=utcnow()))  # fmt: skip
    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "boss")
        page = await (await client.get("/")).text()
    missed = _section(page, "my-calls").split("Missed calls")[1]
    assert "13900139000" in missed and "abandoned" in missed


async def test_the_funnel_and_won_chart_add_up_exactly(store: Store) -> None:
    wang = await make_user(store, "wang", "agent", locale="zh_CN")
    stages = await _stages(store)
    now = utcnow()
    t = Translator("zh_CN")
    months = month_starts(t.local(now).date())
    last_month = dt.datetime.combine(months[-2], dt.time(12), tzinfo=t.zone)
    async with store.session() as session, session.begin():
        session.add_all([
            Opportunity(name="a", stage_id=stages["Proposal"].id, owner_id=wang, probability=60,
                        amount=Decimal("100000")),
            Opportunity(name="b", stage_id=stages["Proposal"].id, owner_id=wang, probability=60,
                        amount=Decimal("33333.33")),
            Opportunity(name="c", stage_id=stages["Closed won"].id, owner_id=wang, probability=100,
                        amount=Decimal("0.10"), closed_at=last_month),
            Opportunity(name="d", stage_id=stages["Closed won"].id, owner_id=wang, probability=100,
                        amount=Decimal("0.20"), closed_at=last_month),
            Opportunity(name="e", stage_id=stages["Closed won"].id, owner_id=wang, probability=100,
                        amount=Decimal("7"), closed_at=last_month, currency="USD"),
        ])  # fmt: skip
    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "wang")
        page = await (await client.get("/")).text()
    funnel_svg = _section(page, "funnel")
    assert "方案报价 · 2" in funnel_svg and "¥133,333.33 · 加权 ¥80,000.00" in funnel_svg
    assert "赢单 · 3" in funnel_svg  # two in CNY and one in USD, counted together
    won = _section(page, "won")
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", won)
    # Per month its name, then the amount; USD is not in CNY.
    assert texts[-4:] == [f"{months[-2].month}月", "¥0.30", f"{months[-1].month}月", "¥0.00"]
    assert "<h2>近六个月每月赢单金额</h2>" in won
    assert "我的待办任务" in page and "今日通话" in page and "未接来电" in page


def test_month_starts_cross_the_year() -> None:
    assert month_starts(dt.date(2026, 2, 28)) == [
        dt.date(2025, 9, 1), dt.date(2025, 10, 1), dt.date(2025, 11, 1), dt.date(2025, 12, 1),
        dt.date(2026, 1, 1), dt.date(2026, 2, 1),
    ]  # fmt: skip


def test_chart_text_is_escaped() -> None:
    evil = '<script>alert("x")</script>'
    for svg in (bars([Bar(evil, 1.0, evil)], evil), funnel([Bar(evil, 1.0, evil, 0.5)], evil)):
        assert "<script>" not in svg and "&lt;script&gt;" in svg
        assert svg.startswith("<svg") and svg.endswith("</svg>")


async def test_todays_appointments_are_mine_of_today_with_repetitions(store: Store) -> None:
    from store.recurrence import Rule, start_series

    wang = await make_user(store, "wang", "agent")
    zhao = await make_user(store, "zhao", "agent")
    t = Translator("en")  # the users' zone: Asia/Shanghai
    today = t.local(utcnow()).date()
    noon = dt.datetime.combine(today, dt.time(12), tzinfo=t.zone).astimezone(dt.UTC)
    async with store.session() as session, session.begin():
        lead = Lead(last_name="新", owner_id=wang)
        session.add(lead)
        await session.flush()
        await log_activity(session, kind=ActivityKind.MEETING, subject="午餐会", records=[lead],
                           owner_id=wang, occurred_at=noon, status="planned",
                           location="外滩")  # fmt: skip
        await log_activity(session, kind=ActivityKind.VISIT, subject="明天的拜访", records=[lead],
                           owner_id=wang, occurred_at=noon + dt.timedelta(days=1),
                           status="planned")  # fmt: skip
        await log_activity(session, kind=ActivityKind.MEETING, subject="赵的会", records=[lead],
                           owner_id=zhao, occurred_at=noon, status="planned")  # fmt: skip
        daily = await log_activity(session, kind=ActivityKind.MEETING, subject="晨会",
                                   records=[lead], owner_id=wang, status="planned",
                                   occurred_at=noon - dt.timedelta(days=3, hours=3))  # fmt: skip
        start_series(daily, Rule("daily"))
    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "wang")
        agenda = _section(await (await client.get("/")).text(), "agenda")
    assert "午餐会" in agenda and "外滩" in agenda and "12:00" in agenda
    assert "09:00 晨会" in agenda  # today's occurrence of a series begun three days ago
    assert "明天的拜访" not in agenda and "赵的会" not in agenda
