"""Records in the browser: sign in, a lead from form to conversion, an account's timeline."""

from __future__ import annotations

from tests.browser.conftest import PASSWORD, World, screenshot


async def test_sign_in_create_a_lead_and_convert_it(world: World) -> None:
    page = await world.page(None)
    await page.goto(f"{world.base}/leads")
    await page.wait_for_url(f"{world.base}/login?next=/leads")
    await page.get_by_label("User name").fill("wang")
    await page.get_by_label("Password").fill("wrong password")
    await page.get_by_role("button", name="Sign in").click()
    assert await page.get_by_role("alert").inner_text() == "Wrong user name or password."
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{world.base}/leads")  # back where they were going

    await page.get_by_role("link", name="New", exact=True).click()
    await page.get_by_label("Last name").fill("陈")
    await page.get_by_label("First name").fill("静")
    await page.get_by_label("Company").fill("银河科技")
    await page.get_by_label("Email").fill("not an address")
    await page.get_by_role("button", name="Save").click()
    # The bad value is named beside its field; nothing typed is lost.
    assert "Not an email address." in await page.locator("#error-email").inner_text()
    assert await page.get_by_label("Company").input_value() == "银河科技"
    await page.get_by_label("Email").fill("chen.jing@yinhe.cn")
    await page.get_by_role("button", name="Save").click()
    await page.get_by_role("heading", name="陈静").wait_for()
    await page.get_by_label("Add a note").fill("展会上认识，需要报价")
    await page.get_by_role("button", name="Save note").click()
    await page.locator(".timeline", has_text="展会上认识，需要报价").wait_for()

    await page.get_by_role("link", name="Convert").click()
    await page.get_by_label("Create an opportunity").check()
    await page.get_by_label("Amount").fill("50000")
    await page.get_by_role("button", name="Convert").click()
    await page.wait_for_url(f"{world.base}/contacts/*")
    text = await page.locator("main").inner_text()
    # The contact carries the lead's history and works for the account made from its company.
    assert "展会上认识，需要报价" in text and "银河科技" in text
    await screenshot(page, "converted-contact-desktop")
    await page.context.close()


async def test_an_accounts_timeline_shows_an_email_and_a_call(world: World) -> None:
    page = await world.page("wang")
    await page.goto(f"{world.base}/accounts/{world.ids['account']}")
    # The mail is shown in a sandboxed frame: its markup renders, its script never runs.
    frame = page.frame_locator("iframe[title='询价：不锈钢管']")
    await frame.locator("b", has_text="304").wait_for()
    assert await page.title() != "owned"
    timeline = page.locator(".timeline")
    assert "61 s talk" in await timeline.inner_text()
    assert await timeline.get_by_role("link", name="13812345678").count() >= 1
    await screenshot(page, "account-timeline-desktop")
    await page.context.close()
