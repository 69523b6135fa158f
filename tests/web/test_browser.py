"""The UI in a real browser: Debian's headless Chromium driven by Playwright.

The web application runs on a loopback port over a migrated SQLite store (the
pages are the same on PostgreSQL; the HTTP tests run both).  Each test leaves
screenshots of the pages it passed through at desktop (1280 px) and phone
(390 px) widths in ``test-artifacts/``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select

from store.activities import log_activity
from store.base import utcnow
from store.db import Store, open_store
from store.migrate import upgrade_to_head
from store.models import (
    Account,
    ActivityKind,
    Call,
    CallDisposition,
    Direction,
    Email,
    Opportunity,
    PipelineStage,
)
from store.pipeline import enter_stage
from store.users import create_user
from tests.peers.local import free_port
from web.app import create_app
from web.phone import PhoneConfig

PASSWORD = "browser password 1"
WIDTHS = {"desktop": 1280, "phone": 390}


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[str, Store]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ui.db'}"
    await upgrade_to_head(url)
    async with open_store(url, tmp_path / "blobs") as store:
        async with store.session() as session, session.begin():
            await create_user(session, "wang", PASSWORD, role="manager", display_name="王伟")
        runner = web.AppRunner(create_app(store, PhoneConfig(b"s" * 32)), access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield f"http://127.0.0.1:{port}", store
        finally:
            await runner.cleanup()


async def _page(browser: Any, width: int = 1280) -> Any:
    context = await browser.new_context(viewport={"width": width, "height": 900}, locale="en-US")
    return await context.new_page()


async def _sign_in(page: Any, base: str) -> None:
    await page.goto(f"{base}/login")
    await page.get_by_label("User name").fill("wang")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base}/")


async def _shots(browser: Any, base: str, artifacts: Path, name: str, path: str) -> None:
    """Screenshots of one page at both widths, signed in."""
    for label, width in WIDTHS.items():
        page = await _page(browser, width)
        await _sign_in(page, base)
        await page.goto(base + path)
        await page.screenshot(path=str(artifacts / f"{name}-{label}.png"), full_page=True)
        # Nothing may run off the side of a phone screen (tables scroll in their own box).
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{name} is {overflow}px wider than a {width}px screen"
        await page.context.close()


async def test_log_in_create_a_lead_and_convert_it(
    site: tuple[str, Store], browser: Any, artifacts_dir: Path
) -> None:
    base, _store = site
    page = await _page(browser)
    await page.goto(f"{base}/leads")
    await page.screenshot(path=str(artifacts_dir / "login-desktop.png"))
    await page.get_by_label("User name").fill("wang")
    await page.get_by_label("Password").fill("wrong password")
    await page.get_by_role("button", name="Sign in").click()
    assert await page.get_by_role("alert").inner_text() == "Wrong user name or password."
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base}/leads")
    await page.get_by_role("link", name="New").click()
    await page.get_by_label("Last name").fill("陈")
    await page.get_by_label("First name").fill("静")
    await page.get_by_label("Company").fill("金龙贸易")
    await page.get_by_label("Email").fill("not an address")
    await page.get_by_role("button", name="Save").click()
    assert "Not an email address." in await page.locator("#error-email").inner_text()
    await page.get_by_label("Email").fill("chen.jing@jinlong.cn")
    await page.get_by_role("button", name="Save").click()
    await page.get_by_role("heading", name="陈静").wait_for()
    await page.get_by_label("Add a note").fill("展会上认识，需要报价")
    await page.get_by_role("button", name="Save note").click()
    await page.get_by_role("link", name="Convert").click()
    await page.get_by_label("Create an opportunity").check()
    await page.get_by_label("Amount").fill("50000")
    await page.get_by_role("button", name="Convert").click()
    await page.wait_for_url(f"{base}/contacts/*")
    text = await page.locator("main").inner_text()
    assert "展会上认识，需要报价" in text and "金龙贸易" in text
    await page.screenshot(path=str(artifacts_dir / "contact-detail-desktop.png"), full_page=True)
    for name, path in (("home", "/"), ("leads", "/leads"), ("contacts", "/contacts"),
                       ("accounts", "/accounts"), ("opportunities", "/opportunities"),
                       ("settings", "/settings")):  # fmt: skip
        await _shots(browser, base, artifacts_dir, name, path)
    await page.context.close()


async def test_drag_a_deal_to_the_next_stage_and_fill_the_required_field(
    site: tuple[str, Store], browser: Any, artifacts_dir: Path
) -> None:
    base, store = site
    async with store.session() as session, session.begin():
        stages = {s.name: s for s in await session.scalars(select(PipelineStage))}
        deal = Opportunity(name="年度采购", stage_id=stages["Needs analysis"].id, probability=40,
                           owner_id=1)  # fmt: skip
        session.add(deal)
        await session.flush()
        enter_stage(session, deal, stages["Needs analysis"], user_id=1, now=utcnow())
        deal_id = deal.id
    page = await _page(browser)
    await _sign_in(page, base)
    await page.goto(f"{base}/pipeline")
    card = page.locator(f"#deal-{deal_id}")
    target = page.locator(f'.column[data-stage="{stages["Proposal"].id}"]')
    await card.drag_to(target)
    dialog = page.locator("dialog#stage-fields")
    await dialog.wait_for(state="visible")
    await dialog.get_by_label("Amount").fill("120000")
    await dialog.get_by_label("Expected close").fill("2026-12-31")
    await dialog.get_by_role("button", name="Move").click()
    await target.locator(f"#deal-{deal_id}").wait_for()
    await page.screenshot(path=str(artifacts_dir / "pipeline-desktop.png"), full_page=True)
    async with store.session() as session:
        moved = await session.get(Opportunity, deal_id)
        assert moved is not None and moved.stage_id == stages["Proposal"].id
        assert str(moved.amount) == "120000.00"
    await page.context.close()
    await _shots(browser, base, artifacts_dir, "pipeline", "/pipeline")


async def test_an_accounts_timeline_shows_an_email_and_a_call(
    site: tuple[str, Store], browser: Any, artifacts_dir: Path
) -> None:
    base, store = site
    async with store.session() as session, session.begin():
        account = Account(name="金龙贸易", owner_id=1)
        session.add(account)
        await session.flush()
        email = Email(direction=Direction.INBOUND, subject="询价：不锈钢管", from_address="wang.fang@jinlong.cn",
                      html_body="<p>请报价 <b>304</b> 不锈钢管</p><script>document.title='owned'</script>")  # fmt: skip
        call = Call(pbx="pbx", uniqueid="1.1", direction=Direction.INBOUND, external_number_raw="13800138000",
                    disposition=CallDisposition.ANSWERED, started_at=utcnow(),
                    talk_seconds=61.0)  # fmt: skip
        session.add_all([email, call])
        await session.flush()
        await log_activity(session, kind=ActivityKind.EMAIL, subject=email.subject,
                           records=[account], email_id=email.id)  # fmt: skip
        await log_activity(session, kind=ActivityKind.CALL, subject="来电 13800138000",
                           records=[account], call_id=call.id)  # fmt: skip
        account_id = account.id
    page = await _page(browser)
    await _sign_in(page, base)
    await page.goto(f"{base}/accounts/{account_id}")
    frame = page.frame_locator("iframe[title='询价：不锈钢管']")
    await frame.locator("b", has_text="304").wait_for()
    assert await page.title() != "owned"
    assert "61 s talk" in await page.locator(".timeline").inner_text()
    await page.screenshot(path=str(artifacts_dir / "account-timeline-desktop.png"), full_page=True)
    await page.context.close()
    await _shots(browser, base, artifacts_dir, "account", f"/accounts/{account_id}")


async def test_a_ring_pops_up_within_a_second(site: tuple[str, Store], browser: Any) -> None:
    base, store = site
    page = await _page(browser)
    await _sign_in(page, base)
    await page.goto(f"{base}/leads")
    await page.wait_for_function("window.rapport && window.rapport.phoneSocket() && "
                                 "window.rapport.phoneSocket().readyState === 1")  # fmt: skip
    panel = page.locator("#phone-panel")
    started = time.monotonic()
    await store.bus.publish(
        "CallRinging", user_id=1, call="7.1", number="13800138000", did="4008001234"
    )
    await panel.get_by_text("Incoming call: 13800138000").wait_for(timeout=1000)
    assert time.monotonic() - started < 1.0
    await store.bus.publish("CallerIdentified", user_id=1, call="7.1", number="13800138000",
                            matches=[], unknown=True, create={"phone": "13800138000"})  # fmt: skip
    await panel.get_by_role("link", name="New lead").wait_for(timeout=1000)
    await panel.get_by_role("link", name="New lead").click()
    await page.wait_for_url("**/leads/new?phone=13800138000")
    assert await page.get_by_label("Phone", exact=True).input_value() == "13800138000"
    await page.context.close()


async def test_switch_to_chinese(
    site: tuple[str, Store], browser: Any, artifacts_dir: Path
) -> None:
    base, _store = site
    page = await _page(browser, 390)
    await _sign_in(page, base)
    await page.goto(f"{base}/settings")
    await page.get_by_label("Language").select_option("zh_CN")
    await page.get_by_role("button", name="Save").click()
    await page.get_by_text("已保存。").wait_for()
    await page.locator("label.menu-button").click()
    nav = await page.locator("nav.main-nav").inner_text()
    assert "线索" in nav and "客户" in nav and "销售漏斗" in nav
    await page.goto(f"{base}/leads/new")
    assert await page.get_by_role("button", name="保存").count() == 1
    await page.screenshot(path=str(artifacts_dir / "lead-form-zh-phone.png"), full_page=True)
    await page.context.close()
