"""The pipeline board over real HTTP: moving deals, required fields, scope, weighted totals."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from store.base import utcnow
from store.db import Store
from store.models import Opportunity, PipelineStage, RecordScope, Role, StageHistory, Team
from store.pipeline import enter_stage
from tests.web.browsing import csrf_of, make_user, post_form, sign_in
from web.app import create_app


async def _stages(store: Store) -> dict[str, PipelineStage]:
    async with store.session() as session:
        return {s.name: s for s in await session.scalars(select(PipelineStage))}


async def _deal(
    store: Store, name: str, owner: int, stage: PipelineStage, amount: str | None,
    *, currency: str = "CNY", probability: int | None = None, closed_days_ago: int = 0,
) -> int:  # fmt: skip
    async with store.session() as session, session.begin():
        deal = Opportunity(name=name, owner_id=owner, stage_id=stage.id, currency=currency,
                           probability=stage.probability if probability is None else probability,
                           amount=Decimal(amount) if amount else None)  # fmt: skip
        session.add(deal)
        await session.flush()
        enter_stage(session, deal, stage, user_id=owner,
                    now=utcnow() - dt.timedelta(days=closed_days_ago))  # fmt: skip
        return deal.id


def _column(board: str, stage: PipelineStage) -> str:
    """One column's HTML from the board."""
    start = board.index(f'data-stage="{stage.id}"')
    end = board.find("</section>", start)
    return board[start:end]


async def test_a_deal_moves_and_a_stage_that_needs_fields_asks_for_them(store: Store) -> None:
    wang = await make_user(store, "wang", "agent")
    stages = await _stages(store)
    deal = await _deal(store, "金龙 年度采购", wang, stages["Needs analysis"], None)
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "wang")
        board = await (await client.get("/pipeline")).text()
        assert f'data-deal="{deal}"' in _column(board, stages["Needs analysis"])
        headers = {"X-CSRF-Token": csrf}
        proposal = stages["Proposal"].id
        refused = await client.post("/pipeline/move", json={"opportunity": deal, "stage": proposal},
                                    headers=headers)  # fmt: skip
        assert refused.status == 422
        said = await refused.json()
        assert said["errors"] == {"amount": "Needed to enter this stage.",
                                  "expected_close": "Needed to enter this stage."}  # fmt: skip
        assert {(f["name"], f["kind"]) for f in said["fields"]} == {
            ("amount", "money"), ("expected_close", "date")}  # fmt: skip
        bad = await client.post("/pipeline/move", headers=headers, json={
            "opportunity": deal, "stage": proposal,
            "values": {"amount": "很多", "expected_close": "2026-12-31"}})  # fmt: skip
        assert bad.status == 422 and (await bad.json())["errors"] == {"amount": "Not an amount."}
        done = await client.post("/pipeline/move", headers=headers, json={
            "opportunity": deal, "stage": proposal,
            "values": {"amount": "120,000", "expected_close": "2026-12-31"}})  # fmt: skip
        assert done.status == 200 and await done.json() == {"ok": True, "stage": proposal}
        # The plain form (no script) moves it on as well.
        moved = await post_form(client, "/pipeline/move", csrf,
                                {"opportunity": str(deal), "stage": str(stages["Negotiation"].id)},
                                allow_redirects=False)  # fmt: skip
        assert moved.status == 303 and moved.headers["Location"] == f"/pipeline#deal-{deal}"
        board = await (await client.get("/pipeline")).text()
        assert f'data-deal="{deal}"' in _column(board, stages["Negotiation"])
        # The deal's own page shows the stage history with time per stage.
        detail = await (await client.get(f"/opportunities/{deal}")).text()
        assert "Stage history" in detail and "Needs analysis" in detail
    async with store.session() as session:
        row = await session.get(Opportunity, deal)
        assert row is not None and row.stage_id == stages["Negotiation"].id
        assert row.amount == Decimal("120000.00") and row.probability == 80
        assert row.expected_close == dt.date(2026, 12, 31)
        history = (await session.scalars(
            select(StageHistory).where(StageHistory.opportunity_id == deal).order_by(StageHistory.id)
        )).all()  # fmt: skip
        assert [h.stage_id for h in history] == [stages[n].id for n in
                                                 ("Needs analysis", "Proposal", "Negotiation")]  # fmt: skip
        assert [h.entered_by_id for h in history[1:]] == [wang, wang]
        assert history[0].left_at is not None and history[-1].left_at is None


async def test_the_form_fallback_asks_for_missing_fields_on_a_page_and_keeps_them(
    store: Store,
) -> None:
    wang = await make_user(store, "wang", "agent")
    stages = await _stages(store)
    deal = await _deal(store, "Deal", wang, stages["Prospecting"], None)
    won = str(stages["Closed won"].id)
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "wang")
        asked = await post_form(client, "/pipeline/move", csrf,
                                {"opportunity": str(deal), "stage": won})  # fmt: skip
        assert asked.status == 422
        page = await asked.text()
        assert 'name="amount"' in page and "Needed to enter this stage." in page
        assert csrf_of(page) == csrf
        typo = await post_form(client, "/pipeline/move", csrf,
                               {"opportunity": str(deal), "stage": won, "amount": "12x"})  # fmt: skip
        page = await typo.text()
        assert typo.status == 422 and 'value="12x"' in page and "Not an amount." in page
        done = await post_form(client, "/pipeline/move", csrf,
                               {"opportunity": str(deal), "stage": won, "amount": "9000"},
                               allow_redirects=False)  # fmt: skip
        assert done.status == 303
    async with store.session() as session:
        row = await session.get(Opportunity, deal)
        assert row is not None and row.stage_id == stages["Closed won"].id
        assert row.amount == Decimal("9000.00") and row.closed_at is not None


async def test_the_board_shows_only_deals_in_scope_and_agents_move_only_their_own(
    store: Store,
) -> None:
    wang = await make_user(store, "wang", "agent", team="east")
    zhao = await make_user(store, "zhao", "agent", team="east")
    await make_user(store, "li", "manager", team="east")
    stages = await _stages(store)
    deal = await _deal(store, "王的单子", wang, stages["Prospecting"], "5000")
    mine = await _deal(store, "赵的单子", zhao, stages["Prospecting"], "7000")
    gone = await _deal(store, "删掉的单子", zhao, stages["Prospecting"], "1")
    async with store.session() as session, session.begin():
        east = await session.scalar(select(Team.id).where(Team.name == "east"))
        for row_id in (deal, mine, gone):
            (await session.get_one(Opportunity, row_id)).team_id = east
        (await session.get_one(Opportunity, gone)).deleted_at = utcnow()
    qualification = stages["Qualification"].id
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "zhao")
        board = await (await client.get("/pipeline")).text()
        assert "赵的单子" in board and "王的单子" not in board and "删掉的单子" not in board
        assert "1 deals · CN¥7,000.00" in board  # totals count what the viewer may see
        refused = await client.post("/pipeline/move", headers={"X-CSRF-Token": csrf},
                                    json={"opportunity": deal, "stage": qualification})  # fmt: skip
        assert refused.status == 404
        deleted = await client.post("/pipeline/move", headers={"X-CSRF-Token": csrf},
                                    json={"opportunity": gone, "stage": qualification})  # fmt: skip
        assert deleted.status == 404
        forged = await client.post("/pipeline/move",
                                   json={"opportunity": deal, "stage": qualification})  # fmt: skip
        assert forged.status == 403  # no CSRF token
    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "li")  # a manager sees the team's deals
        board = await (await client.get("/pipeline")).text()
        assert "赵的单子" in board and "王的单子" in board and "删掉的单子" not in board
    async with store.session() as session:
        row = await session.get_one(Opportunity, deal)
        assert row.stage_id == stages["Prospecting"].id


async def test_without_the_edit_right_a_deal_cannot_be_moved(store: Store) -> None:
    async with store.session() as session, session.begin():
        session.add(Role(name="looker", scope=RecordScope.ALL,
                         permissions={"opportunities": ["view"]}))  # fmt: skip
    await make_user(store, "kan", "looker")
    wang = await make_user(store, "wang", "agent")
    stages = await _stages(store)
    deal = await _deal(store, "看得见的单子", wang, stages["Prospecting"], "5000")
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "kan")
        board = await (await client.get("/pipeline")).text()
        assert "看得见的单子" in board and 'action="/pipeline/move"' not in board
        refused = await client.post("/pipeline/move", headers={"X-CSRF-Token": csrf},
                                    json={"opportunity": deal, "stage": stages["Qualification"].id})  # fmt: skip
        assert refused.status == 403


async def test_hand_made_moves_are_refused_cleanly(store: Store) -> None:
    wang = await make_user(store, "wang", "agent")
    stages = await _stages(store)
    deal = await _deal(store, "Deal", wang, stages["Prospecting"], "10")
    async with store.session() as session, session.begin():
        other = PipelineStage(pipeline="renewals", name="Renew", position=1, probability=50)
        inactive = PipelineStage(name="Old stage", position=99, is_active=False)
        session.add_all([other, inactive])
        await session.flush()
        other_id, inactive_id = other.id, inactive.id
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "wang")
        headers = {"X-CSRF-Token": csrf, "Content-Type": "application/json"}
        for body, status in (
            ("not json", 400),
            ("[1, 2]", 400),
            ('{"opportunity": "x", "stage": 1}', 400),
            (f'{{"opportunity": {deal}, "stage": 1, "values": []}}', 400),
            (f'{{"opportunity": {2**63}, "stage": {stages["Qualification"].id}}}', 404),
            (f'{{"opportunity": {deal}, "stage": {other_id}}}', 404),
            (f'{{"opportunity": {deal}, "stage": {inactive_id}}}', 404),
        ):
            answer = await client.post("/pipeline/move", data=body, headers=headers)
            assert answer.status == status, body
        # Only the fields a move may set are read: a name sent along changes nothing.
        moved = await client.post("/pipeline/move", headers={"X-CSRF-Token": csrf}, json={
            "opportunity": deal, "stage": stages["Qualification"].id,
            "values": {"name": "renamed", "next_step": "call Monday"}})  # fmt: skip
        assert moved.status == 200
    async with store.session() as session:
        row = await session.get_one(Opportunity, deal)
        assert (row.name, row.next_step) == ("Deal", "call Monday")


async def test_column_totals_and_the_funnel_weigh_amounts_exactly(store: Store) -> None:
    wang = await make_user(store, "wang", "agent")
    zhao = await make_user(store, "zhao", "agent")
    stages = await _stages(store)
    await _deal(store, "A", wang, stages["Proposal"], "100000")
    await _deal(store, "B", wang, stages["Proposal"], "33333.33")
    await _deal(store, "C", wang, stages["Proposal"], "0.05", probability=50)  # overridden
    await _deal(store, "D", wang, stages["Proposal"], None)
    await _deal(store, "E", wang, stages["Proposal"], "1000", currency="USD")
    await _deal(store, "F", wang, stages["Negotiation"], "0.01")
    await _deal(store, "W", wang, stages["Closed won"], "500", closed_days_ago=3)
    await _deal(store, "Old", wang, stages["Closed won"], "999", closed_days_ago=200)
    await _deal(store, "Z", zhao, stages["Proposal"], "777")
    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "wang")
        board = await (await client.get("/pipeline")).text()
        funnel = await (await client.get("/pipeline/funnel")).text()
    proposal = _column(board, stages["Proposal"])
    # 60% of (100000 + 33333.33) + 50% of 0.05 = 80000.00 - 0.002 + 0.025 = 80000.023 → 80000.02
    assert "5 deals · CN¥133,333.38 + $1,000.00" in proposal
    assert "weighted CN¥80,000.02 + $600.00" in proposal
    # 80% of 0.01 is 0.008, rounded half up to the cent
    assert "weighted CN¥0.01" in _column(board, stages["Negotiation"])
    won = _column(board, stages["Closed won"])
    assert "1 deals · CN¥500.00" in won and ">W</a>" in won and "Old" not in won

    def row(html: str, key: object) -> list[str]:
        found = re.search(rf'<tr id="funnel-{key}">(.*?)</tr>', html, re.S)
        assert found, key
        return re.findall(r'<td class="num">(.*?)</td>', found.group(1))

    assert row(funnel, stages["Proposal"].id) == ["5", "CN¥133,333.38 + $1,000.00",
                                                  "CN¥80,000.02 + $600.00"]  # fmt: skip
    assert row(funnel, stages["Closed won"].id) == ["1", "CN¥500.00", "CN¥500.00"]
    assert row(funnel, stages["Prospecting"].id) == ["0", "CN¥0.00", "CN¥0.00"]
    # Open: 5 in Proposal and 1 in Negotiation; 80000.023 + 0.008 = 80000.031 → 80000.03
    assert row(funnel, "open") == ["6", "CN¥133,333.39 + $1,000.00", "CN¥80,000.03 + $600.00"]
    chart = funnel[funnel.index("<svg") : funnel.index("</svg>")]
    assert "CN¥133,333.38 · weighted CN¥80,000.02" in chart and "Closed lost" not in chart


async def test_the_board_speaks_chinese_to_a_chinese_user(store: Store) -> None:
    wang = await make_user(store, "wang", "agent", locale="zh_CN")
    stages = await _stages(store)
    await _deal(store, "年度采购", wang, stages["Proposal"], "100000")
    bare = await _deal(store, "新商机", wang, stages["Prospecting"], None)
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "wang")
        board = await (await client.get("/pipeline")).text()
        asked = await client.post("/pipeline/move", headers={"X-CSRF-Token": csrf},
                                  json={"opportunity": bare, "stage": stages["Closed won"].id})  # fmt: skip
        said = await asked.json()
        funnel = await (await client.get("/pipeline/funnel")).text()
    assert "<h1>销售漏斗</h1>" in board and ">移动</button>" in board
    proposal = _column(board, stages["Proposal"])
    assert "方案报价" in proposal
    assert "1 个商机 · ¥100,000.00" in proposal and "加权 ¥60,000.00" in proposal
    assert asked.status == 422
    assert said["fields"][0]["label"] == "金额" and said["errors"] == {
        "amount": "进入此阶段必须填写。"
    }
    assert "商机数" in funnel and "按概率加权" in funnel and "进行中合计" in funnel
