"""Activities in the browser: a repeating meeting planned from a contact, on the calendar,
its reminder popping up on every page until dismissed, and marked done."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from tests.browser.conftest import World, screenshot

SHANGHAI = ZoneInfo("Asia/Shanghai")  # the seeded users' time zone


async def test_plan_a_weekly_meeting_see_it_remind_and_mark_it_done(world: World) -> None:
    page = await world.page("wang")
    contact = world.ids["planned_with"]
    await page.goto(f"{world.base}/contacts/{contact}")
    await page.get_by_role("link", name="New meeting").click()
    soon = dt.datetime.now(SHANGHAI).replace(second=0, microsecond=0) + dt.timedelta(minutes=10)
    await page.get_by_label("Subject *").fill("季度回顾：孙丽")
    await page.get_by_label("Starts").fill(soon.strftime("%Y-%m-%dT%H:%M"))
    await page.get_by_label("Ends", exact=True).fill(
        (soon + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))  # fmt: skip
    await page.get_by_label("Remind me").select_option("15")
    await page.get_by_label("Repeats", exact=True).select_option("weekly")
    await page.get_by_label("Repeat ends").select_option("count")
    await page.get_by_label("Times").fill("0")
    await page.get_by_role("button", name="Save").click()
    # A bad value is named beside its field and the rest is kept.
    assert "1 to 999" in await page.locator("#error-repeat_count").inner_text()
    assert await page.get_by_label("Subject *").input_value() == "季度回顾：孙丽"
    await page.get_by_label("Times").fill("3")
    await page.get_by_role("button", name="Save").click()
    await page.wait_for_url(f"{world.base}/contacts/{contact}")
    await page.locator(".timeline", has_text="季度回顾：孙丽").wait_for()

    # Its reminder has come (15 minutes before, it is 10 away): the panel shows it.
    panel = page.locator("#reminders")
    await panel.get_by_role("link", name="季度回顾：孙丽").wait_for()
    await screenshot(page, "reminder-desktop")
    await panel.get_by_role("button", name="Dismiss").click()
    assert await panel.is_hidden()
    await page.reload()
    await page.wait_for_timeout(500)  # the poll has answered
    assert await panel.is_hidden()  # dismissed stays dismissed

    # The calendar's week holds it, and two weeks on it is there as an occurrence to come.
    day = soon.date()
    await page.goto(f"{world.base}/calendar?view=week&day={day}")
    entry = page.locator(".entry", has_text="季度回顾：孙丽")
    assert await entry.count() == 1
    await page.goto(f"{world.base}/calendar?view=week&day={day + dt.timedelta(days=14)}")
    assert await page.locator(".entry.upcoming", has_text="季度回顾：孙丽").count() == 1
    await page.goto(f"{world.base}/calendar?view=week&day={day + dt.timedelta(days=21)}")
    assert await page.locator(".entry", has_text="季度回顾：孙丽").count() == 0  # three only

    await page.goto(f"{world.base}/calendar?view=week&day={day}")
    await entry.get_by_role("link").click()
    await page.get_by_role("button", name="Mark done").click()
    status = page.locator("dl.fields dd").nth(1)
    assert await status.inner_text() == "done"
    # The next week's occurrence is now a row of its own.
    await page.goto(f"{world.base}/calendar?view=week&day={day + dt.timedelta(days=7)}")
    nxt = page.locator(".entry", has_text="季度回顾：孙丽")
    assert await nxt.count() == 1 and "upcoming" not in (await nxt.get_attribute("class") or "")
    await page.context.close()
