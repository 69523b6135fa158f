"""Mail from a lead's page on a phone: a template fills the form, a bad address is named, send."""

from __future__ import annotations

from tests.browser.conftest import World, screenshot


async def test_compose_from_a_lead_with_a_template_at_phone_width(world: World) -> None:
    page = await world.page("wang", width=390)
    lead = f"{world.base}/leads/{world.ids['lead']}"
    await page.goto(lead)
    await page.get_by_role("link", name="Compose mail").click()
    await page.wait_for_url(f"{lead}/mail")
    assert await page.get_by_label("To *").input_value() == "liu.yang@xingchen.cn"

    # Choosing a template (and its language) fills the subject and body from its preview.
    await page.get_by_label("Language").select_option("zh-CN")
    await page.get_by_label("Mail template").select_option("greeting")
    subject = page.get_by_label("Subject *")
    await page.wait_for_function(
        "() => document.getElementById('f-subject').value === '刘洋，您好'"
    )
    assert await page.get_by_label("Text").input_value() == "星辰文化的朋友们好！"
    await page.get_by_label("Language").select_option("en")
    await page.wait_for_function(
        "() => document.getElementById('f-subject').value === 'Hello 洋 刘'"
    )

    await page.get_by_label("Cc").fill("not an address")
    await subject.fill("星辰文化合作")
    await page.get_by_role("button", name="Send", exact=True).click()
    assert "Not an email address: not an address" in await page.locator("#error-cc").inner_text()
    assert await subject.input_value() == "星辰文化合作"  # what was typed stays
    await screenshot(page, "compose-errors-phone")
    overflow = await page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the compose page is {overflow} px wider than a phone"

    await page.get_by_label("Cc").fill("")
    await page.get_by_role("button", name="Send", exact=True).click()
    await page.wait_for_url(f"{lead}?mailed=1")
    assert "queued in the outbox" in await page.get_by_role("status").inner_text()
    await page.locator(".timeline", has_text="星辰文化合作").wait_for()
    await page.context.close()
