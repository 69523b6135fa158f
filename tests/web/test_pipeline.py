"""The pipeline board over real HTTP: moving deals, required fields, scope, weighted totals."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from store.db import Store
from store.models import Opportunity, PipelineStage, StageHistory
from store.pipeline import enter_stage
from tests.web.browsing import csrf_of, make_user, post_form, sign_in
from web.app import create_app


async def _stages(store: Store) -> dict[str, PipelineStage]:
    async with store.session() as session:
        return {s.name: s for s in await session.scalars(select(PipelineStage))}


async def _deal(
    store: Store, name: str, owner: int, stage: PipelineStage, amount: str | None
) -> int:
    async with store.session() as session, session.begin():
        deal = Opportunity(name=name, owner_id=owner, stage_id=stage.id, probability=stage.probability,
                           amount=Decimal(amount) if amount else None)  # fmt: skip
        session.add(deal)
        await session.flush()
        enter_stage(session, deal, stage, user_id=owner, now=dt.datetime.now(dt.UTC))
        return deal.id


async def test_a_deal_moves_and_a_stage_that_needs_fields_asks_for_them(store: Store) -> None:
    wang = await make_user(store, "wang", "agent")
    stages = await _stages(store)
    deal = await _deal(store, "金龙 年度采购", wang, stages["Needs analysis"], None)
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "wang")
        board = await (await client.get("/pipeline")).text()
        assert f'data-deal="{deal}"' in board and "<svg" in board
        headers = {"X-CSRF-Token": csrf}
        proposal = stages["Proposal"].id
        refused = await client.post("/pipeline/move", json={"opportunity": deal, "stage": proposal},
                                    headers=headers)  # fmt: skip
        assert refused.status == 422
        said = await refused.json()
        assert sorted(said["errors"]) == ["amount", "expected_close"]
        assert {f["name"] for f in said["fields"]} == {"amount", "expected_close"}
        bad = await client.post("/pipeline/move", headers=headers, json={
            "opportunity": deal, "stage": proposal,
            "values": {"amount": "很多", "expected_close": "2026-12-31"}})  # fmt: skip
        assert bad.status == 422 and (await bad.json())["errors"] == {"amount": "Not an amount."}
        done = await client.post("/pipeline/move", headers=headers, json={
            "opportunity": deal, "stage": proposal,
            "values": {"amount": "120000", "expected_close": "2026-12-31"}})  # fmt: skip
        assert done.status == 200
        # The plain form (no script) moves it on as well.
        moved = await post_form(client, "/pipeline/move", csrf,
                                {"opportunity": str(deal), "stage": str(stages["Negotiation"].id)},
                                allow_redirects=False)  # fmt: skip
        assert moved.status == 303
    async with store.session() as session:
        row = await session.get(Opportunity, deal)
        assert row is not None and row.stage_id == stages["Negotiation"].id
        assert row.amount == Decimal("120000.00") and row.probability == 80
        history = (await session.scalars(
            select(StageHistory).where(StageHistory.opportunity_id == deal).order_by(StageHistory.id)
        )).all()  # fmt: skip
        assert [h.stage_id for h in history] == [stages[n].id for n in
                                                 ("Needs analysis", "Proposal", "Negotiation")]  # fmt: skip
        assert history[0].left_at is not None and history[-1].left_at is None


async def test_the_form_fallback_asks_for_missing_fields_on_a_page(store: Store) -> None:
    wang = await make_user(store, "wang", "agent")
    stages = await _stages(store)
    deal = await _deal(store, "Deal", wang, stages["Prospecting"], None)
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "wang")
        asked = await post_form(client, "/pipeline/move", csrf,
                                {"opportunity": str(deal), "stage": str(stages["Closed won"].id)})  # fmt: skip
        assert asked.status == 422
        page = await asked.text()
        assert 'name="amount"' in page and "Needed to enter this stage." in page
        assert csrf_of(page) == csrf


async def test_an_agent_cannot_see_or_move_anothers_deal(store: Store) -> None:
    wang = await make_user(store, "wang", "agent")
    await make_user(store, "zhao", "agent")
    stages = await _stages(store)
    deal = await _deal(store, "王的单子", wang, stages["Prospecting"], "5000")
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "zhao")
        assert "王的单子" not in await (await client.get("/pipeline")).text()
        refused = await client.post("/pipeline/move", headers={"X-CSRF-Token": csrf},
                                    json={"opportunity": deal, "stage": stages["Qualification"].id})  # fmt: skip
        assert refused.status == 404
        forged = await client.post("/pipeline/move",
                                   json={"opportunity": deal, "stage": stages["Qualification"].id})  # fmt: skip
        assert forged.status == 403  # no CSRF token


async def test_column_totals_weigh_amounts_by_probability(store: Store) -> None:
    wang = await make_user(store, "wang", "agent")
    stages = await _stages(store)
    await _deal(store, "A", wang, stages["Proposal"], "100000")
    await _deal(store, "B", wang, stages["Proposal"], "33333.33")
    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "wang")
        board = await (await client.get("/pipeline")).text()
    # Proposal is 60%: (100000 + 33333.33) × 0.6 = 80000.00 (rounded to the cent)
    assert "2 deals · CN¥133,333.33" in board and "weighted CN¥80,000.00" in board
