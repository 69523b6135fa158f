"""The home page: my tasks (overdue marked), today's and missed calls, deals, charts."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from store.activities import log_activity
from store.base import utcnow
from store.db import Store
from store.models import (
    ActivityKind,
    Call,
    CallDisposition,
    Direction,
    Lead,
    Opportunity,
    PipelineStage,
)
from tests.web.browsing import make_user, sign_in
from web.app import create_app


async def test_the_home_page_shows_what_needs_me_today(store: Store) -> None:
    wang = await make_user(store, "wang", "agent")
    zhao = await make_user(store, "zhao", "agent")
    now = utcnow()
    async with store.session() as session, session.begin():
        lead = Lead(last_name="新", first_name="客户", company="华美", owner_id=wang)
        session.add(lead)
        await session.flush()
        await log_activity(session, kind=ActivityKind.TASK, subject="回电 王芳", records=[lead],
                           owner_id=wang, due_at=now - dt.timedelta(hours=2), status="planned")  # fmt: skip
        await log_activity(session, kind=ActivityKind.TASK, subject="赵的任务", records=[lead],
                           owner_id=zhao, due_at=now, status="planned")  # fmt: skip
        session.add_all([
            Call(pbx="p", uniqueid="1", direction=Direction.INBOUND, external_number_raw="13800138000",
                 disposition=CallDisposition.ANSWERED, started_at=now, talk_seconds=42, agent_id=wang),
            Call(pbx="p", uniqueid="2", direction=Direction.INBOUND, external_number_raw="13900139000",
                 disposition=CallDisposition.MISSED, started_at=now),
        ])  # fmt: skip
        stages = {s.name: s for s in await session.scalars(select(PipelineStage))}
        session.add_all([
            Opportunity(name="报价中的单子", stage_id=stages["Negotiation"].id, owner_id=wang,
                        amount=Decimal("80000"), expected_close=dt.date.today() + dt.timedelta(days=10)),
            Opportunity(name="赢下的单子", stage_id=stages["Closed won"].id, owner_id=wang,
                        amount=Decimal("12345"), closed_at=now),
            Opportunity(name="别人的单子", stage_id=stages["Negotiation"].id, owner_id=zhao,
                        amount=Decimal("1")),
        ])  # fmt: skip
    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "wang")
        page = await (await client.get("/")).text()
    tasks = page[page.index("My open tasks") : page.index("Today&#39;s calls")]
    assert "回电 王芳" in tasks and "overdue" in tasks and "赵的任务" not in tasks
    assert "42 s talk" in page and "13900139000" in page  # answered today; missed, for anyone
    assert "新客户" in page and "报价中的单子" in page and "别人的单子" not in page
    closing = page[page.index("Closing within 30 days") : page.index("Proposals and negotiations")]
    assert "报价中的单子" in closing and "CN¥80,000.00" in closing
    assert page.count("<svg") == 2 and "CN¥12,345.00" in page  # won this month, in the chart
