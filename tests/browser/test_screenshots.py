"""Each main page at desktop and phone width: a screenshot for people, no sideways scrolling.

The pictures land in ``test-artifacts/screenshots/<page>-<width>.png``; nothing
compares them.  What is checked: every page answers, has its heading, and at
390 px nothing runs off the side (wide tables scroll inside their own box).
"""

from __future__ import annotations

import pytest

from tests.browser.conftest import WIDTHS, World, screenshot

# (name, path) of the pages a user spends their day on; ids filled from the seeded store.
PAGES = [
    ("home", "/"),
    ("leads", "/leads"),
    ("lead", "/leads/{lead}"),
    ("contacts", "/contacts"),
    ("contact", "/contacts/{contact}"),
    ("accounts", "/accounts"),
    ("account", "/accounts/{account}"),
    ("opportunities", "/opportunities"),
    ("opportunity", "/opportunities/{deal}"),
    ("compose", "/contacts/{contact}/mail"),
    ("compose-account", "/accounts/{account}/mail"),
    ("pipeline", "/pipeline"),
    ("funnel", "/pipeline/funnel"),
    ("activities", "/activities?owner={wang}"),
    ("activity", "/activities/{meeting}"),
    ("activity-form", "/activities/new?kind=meeting&record=contacts:{contact}"),
    ("calendar", "/calendar?user={wang}"),
    ("calendar-week", "/calendar?view=week&user={wang}"),
    ("admin", "/admin"),
    ("admin-users", "/admin/users"),
    ("admin-stages", "/admin/stages"),
    ("settings", "/settings"),
]


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("width", sorted(WIDTHS))
async def test_each_main_page_at_each_width(world: World, width: str, language: str) -> None:
    pixels = WIDTHS[width]
    suffix = width if language == "en" else f"{width}-zh"
    if language == "en":
        page = await world.page(None, width=pixels)
        await page.goto(f"{world.base}/login")
        await screenshot(page, f"login-{width}")
        await page.context.close()

    page = await world.page("admin" if language == "en" else "chen", width=pixels)
    too_wide = {}
    for name, path in PAGES:
        response = await page.goto(world.base + path.format(**world.ids))
        assert response is not None and response.status == 200, f"{path}: {response}"
        await page.locator("main h1").first.wait_for()
        if language == "zh":
            assert await page.locator("html").get_attribute("lang") == "zh-CN", name
        await screenshot(page, f"{name}-{suffix}")
        overflow = await page.evaluate(
            "() => document.documentElement.scrollWidth - window.innerWidth"
        )
        if overflow > 1:
            too_wide[name] = overflow
    assert not too_wide, f"{language} pages wider than {pixels} px (px too wide): {too_wide}"
    await page.context.close()
