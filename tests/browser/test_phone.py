"""The phone in the browser: a ring recorded on a real PBX pops up on the agent's screen."""

from __future__ import annotations

import asyncio
import time

from playwright.async_api import Page

from tests.browser.conftest import World, screenshot

RINGING_BY_S = 1.0  # the caller's number rang at 0.52 s in both traces
ANSWERED_BY_S = 10.0


async def _connected(page: Page) -> None:
    # Open, and the server said it knows us ("ready"): rings from now on reach this page.
    await page.wait_for_function("() => window.rapport && window.rapport.phoneReady === true")


async def test_a_ring_pops_up_within_a_second_and_follows_the_call(world: World) -> None:
    page = await world.page("wang")
    await page.goto(f"{world.base}/leads")
    await _connected(page)
    panel = page.locator("#phone-panel")
    assert await panel.is_hidden()

    started = time.monotonic()
    await world.ring("inbound_answered", until_s=RINGING_BY_S)
    await panel.get_by_role("heading", name="Incoming call: +8613812345678").wait_for(timeout=1000)
    took = time.monotonic() - started
    assert took < 1.0, f"the pop took {took:.3f} s"
    assert "Dialled 02885550100" in await panel.inner_text()
    await panel.locator("section.caller").wait_for()
    assert "Dialled 02885550100" in await panel.inner_text()  # kept when the card comes

    # The card follows: the caller, their account, their open deal, their history.
    card = panel.locator("section.caller")
    await card.wait_for()
    name = card.get_by_role("link", name="张伟")
    assert await name.get_attribute("href") == f"/contacts/{world.ids['contact']}"
    account = card.get_by_role("link", name="金龙贸易")
    assert await account.get_attribute("href") == f"/accounts/{world.ids['account']}"
    deal = card.get_by_role("link", name="年度采购")
    assert await deal.get_attribute("href") == f"/opportunities/{world.ids['deal']}"
    assert "询价：不锈钢管" in await card.inner_text()
    await screenshot(page, "screen-pop-desktop")

    await world.ring("inbound_answered", since_s=RINGING_BY_S, until_s=ANSWERED_BY_S)
    await panel.locator(".status", has_text="Answered").wait_for()
    await world.ring("inbound_answered", since_s=ANSWERED_BY_S)
    # Ended once the call is written: it is then the contact's and the account's.
    await panel.locator(".status", has_text="Call ended").wait_for()
    await panel.get_by_role("button", name="Close").click()
    assert await panel.is_hidden()
    await page.context.close()


async def test_an_unknown_caller_can_become_a_lead_from_the_pop(world: World) -> None:
    page = await world.page("wang", width=390)
    await page.goto(f"{world.base}/")
    await _connected(page)
    panel = page.locator("#phone-panel")
    await world.ring("inbound_missed", until_s=RINGING_BY_S)
    await panel.get_by_text("Unknown caller").wait_for()
    new_contact = panel.get_by_role("link", name="New contact")
    assert await new_contact.get_attribute("href") == "/contacts/new?phone=4008352114"
    await screenshot(page, "screen-pop-phone")
    await world.ring("inbound_missed", since_s=RINGING_BY_S)  # the caller gives up
    await panel.locator(".status", has_text="Stopped ringing").wait_for()
    await panel.get_by_role("link", name="New lead").click()
    await page.wait_for_url(f"{world.base}/leads/new?phone=4008352114")
    assert await page.get_by_label("Phone", exact=True).input_value() == "4008352114"
    await page.context.close()


async def test_a_phone_number_dials_through_the_pbx(world: World) -> None:
    page = await world.page("wang")
    await page.goto(f"{world.base}/contacts/{world.ids['contact']}")
    await _connected(page)
    before = len(world.ami.originates)
    await page.locator("main").get_by_role("link", name="13812345678").first.click()
    panel = page.locator("#phone-panel")
    await panel.get_by_role("heading", name="Calling 13812345678").wait_for()
    for _ in range(100):
        if len(world.ami.originates) > before:
            break
        await asyncio.sleep(0.05)
    originate = world.ami.originates[before]
    # The agent's own phone rings first; then the PBX calls the customer.
    assert originate["Channel"] == "Local/1001@from-internal"
    assert originate["Exten"] == "13812345678"
    # The call is tied to the record it was dialled from.
    sent = [a for a in world.ami.actions if ("Action", "Originate") in a][-1]
    assert ("Variable", f"RAPPORT_ORIGIN=contact:{world.ids['contact']}") in sent
    assert page.url.endswith(f"/contacts/{world.ids['contact']}")  # the tel: link was not followed
    await panel.locator(".status", has_text="Your phone rings").wait_for()
    await page.context.close()


async def test_without_the_right_to_dial_a_number_stays_a_tel_link(world: World) -> None:
    page = await world.page("zhao")
    await page.goto(f"{world.base}/contacts/{world.ids['contact']}")
    await _connected(page)
    assert await page.locator("body").get_attribute("data-can-dial") == "no"
    number = page.locator("main").get_by_role("link", name="13812345678").first
    assert await number.get_attribute("href") == "tel:13812345678"
    # The click reaches the page's last listener untouched (the browser would open tel:).
    prevented = await page.evaluate(
        """() => new Promise((done) => {
            window.addEventListener("click", (e) => { done(e.defaultPrevented); e.preventDefault(); },
                                    { once: true });
            document.querySelector("main [data-dial]").click();
        })"""
    )
    assert prevented is False
    assert await page.locator("#phone-panel").is_hidden()
    await page.context.close()


async def test_a_dial_the_pbx_side_refuses_says_so(world: World) -> None:
    page = await world.page("admin")  # may dial, but sits at no extension
    await page.goto(f"{world.base}/contacts/{world.ids['contact']}")
    await _connected(page)
    before = len(world.ami.originates)
    await page.locator("main").get_by_role("link", name="13812345678").first.click()
    panel = page.locator("#phone-panel")
    await panel.locator(".status", has_text="The call could not be placed.").wait_for()
    assert len(world.ami.originates) == before
    await page.context.close()


async def test_a_contact_made_from_the_pop_gets_the_call(world: World) -> None:
    page = await world.page("wang")
    await page.goto(f"{world.base}/contacts")
    await _connected(page)
    panel = page.locator("#phone-panel")
    await world.ring("transfer_blind", until_s=RINGING_BY_S)  # 135 1111 2222 rings 1001
    await panel.get_by_text("Unknown caller").wait_for()
    await panel.get_by_role("link", name="New contact").click()
    await page.wait_for_url(f"{world.base}/contacts/new?phone=13511112222")
    await page.get_by_label("Last name").fill("周")
    await page.get_by_label("First name").fill("杰")
    # Saved without the number: only the pop's link can file the call on this contact.
    await page.get_by_label("Phone", exact=True).fill("")
    await page.get_by_role("button", name="Save").click()
    await page.get_by_role("heading", name="周杰").wait_for()
    contact_path = page.url.removeprefix(world.base)
    await page.wait_for_function("() => window.rapport.linked !== undefined")
    assert (
        await page.evaluate("() => window.rapport.linked")
        == "contact:" + contact_path.split("/")[-1]
    )

    await world.ring("transfer_blind", since_s=RINGING_BY_S)  # answered, transferred, ended
    timeline = page.locator(".timeline")
    for _ in range(50):
        await page.reload()
        if await timeline.get_by_role("link", name="13511112222").count():
            break
        await asyncio.sleep(0.1)
    assert await timeline.get_by_role("link", name="13511112222").count() == 1
    await page.context.close()
