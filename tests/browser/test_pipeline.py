"""The pipeline board in the browser: a deal dragged on asks for what its next stage needs."""

from __future__ import annotations

from sqlalchemy import select

from store.db import open_store
from store.models import Opportunity
from tests.browser.conftest import World, screenshot


async def test_drag_a_deal_to_the_next_stage_and_fill_the_required_field(world: World) -> None:
    deal_id, proposal = world.ids["board_deal"], world.ids["stage:Proposal"]
    page = await world.page("wang")
    await page.goto(f"{world.base}/pipeline")
    card = page.locator(f"#deal-{deal_id}")
    target = page.locator(f'.column[data-stage="{proposal}"]')
    await card.drag_to(target)
    # Proposal needs an amount and an expected close date: the board asks for them.
    dialog = page.locator("dialog#stage-fields")
    await dialog.wait_for(state="visible")
    await dialog.get_by_label("Amount").fill("120000")
    await dialog.get_by_label("Expected close").fill("2026-12-31")
    await dialog.get_by_role("button", name="Move").click()
    await target.locator(f"#deal-{deal_id}").wait_for()
    await screenshot(page, "pipeline-moved-desktop")
    async with open_store(world.store_url, world.blobs) as store, store.session() as session:
        moved = await session.scalar(select(Opportunity).where(Opportunity.id == deal_id))
    assert moved is not None and moved.stage_id == proposal
    assert str(moved.amount) == "120000.00" and str(moved.expected_close) == "2026-12-31"
    await page.context.close()
