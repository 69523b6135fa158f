"""Languages in the browser: a user switches to Chinese and the whole UI follows."""

from __future__ import annotations

from tests.browser.conftest import World, screenshot


async def test_switch_to_chinese_at_phone_width(world: World) -> None:
    page = await world.page("li", width=390)
    await page.goto(f"{world.base}/settings")
    await page.get_by_label("Language").select_option("zh_CN")
    await page.get_by_role("button", name="Save").click()
    await page.get_by_text("已保存。").wait_for()
    assert await page.locator("html").get_attribute("lang") == "zh-CN"
    # At phone width the menu folds behind its button.
    nav = page.locator("nav.main-nav")
    assert await nav.is_hidden()
    await page.locator("label.menu-button").click()
    text = await nav.inner_text()
    assert "线索" in text and "客户" in text and "销售漏斗" in text
    await page.goto(f"{world.base}/leads/new")
    assert await page.get_by_role("button", name="保存").count() == 1
    assert await page.get_by_label("姓 *", exact=True).count() == 1
    # The phone panel's words come from the page in the user's language too.
    words = page.locator("#phone-words")
    assert await words.get_attribute("data-ringing") == "来电"
    assert await words.get_attribute("data-new-lead") == "新建线索"
    await screenshot(page, "lead-form-zh-phone")
    # The calendar: the month's name, the weekdays from Monday, the buttons.
    await page.goto(f"{world.base}/calendar")
    heading = await page.locator(".calendar-nav strong").inner_text()
    assert heading.endswith("月") and "年" in heading
    assert await page.get_by_role("link", name="今天").count() == 1
    assert await page.locator(".weekdays div").first.inner_text() == "周一"
    await page.goto(f"{world.base}/activities/new?kind=task")
    assert await page.get_by_label("提醒我").count() == 1
    await page.get_by_role("button", name="保存").click()
    assert await page.locator("#error-subject").inner_text() == "此项必填。"
    await screenshot(page, "activity-form-zh-phone")
    await page.context.close()
