"""A company site's lead form over real HTTP: filed, refused, dropped, limited, from listed sites."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from store.activities import timeline
from store.db import Store
from store.models import Lead, WebForm
from store.web_forms import create_web_form
from tests.web.browsing import make_user
from web.api_webforms import FORM_LIMIT_KEY, FormRateLimit
from web.app import create_app

SITE = "https://www.jinlong.cn"
THANKS = "https://www.jinlong.cn/thanks.html"


async def _form(store: Store, thank_you_url: str | None = None) -> tuple[str, int]:
    owner = await make_user(store, "sales", "agent", team="华东")
    async with store.session() as session, session.begin():
        key = await create_web_form(session, "contact-us", owner="sales", origins=[SITE],
                                    thank_you_url=thank_you_url)  # fmt: skip
    return key, owner


async def _leads(store: Store) -> list[Lead]:
    async with store.session() as session:
        return list((await session.scalars(select(Lead).order_by(Lead.id))).all())


async def test_a_posted_form_becomes_a_web_lead_with_a_note(store: Store) -> None:
    key, owner = await _form(store, thank_you_url=THANKS)
    async with TestClient(TestServer(create_app(store))) as client:
        posted = await client.post("/forms/lead", headers={"Origin": SITE}, allow_redirects=False,
                                   data={"_form_key": key, "name": "陈先生", "email": "chen@jinlong.cn",
                                         "company": "金龙贸易", "product": "冷库", "message": "请报价",
                                         "homepage": ""})  # fmt: skip
        assert posted.status == 303 and posted.headers["Location"] == THANKS
        assert posted.headers["Access-Control-Allow-Origin"] == SITE
        # A script posts JSON with the key in a header, and gets JSON back.
        scripted = await client.post("/forms/lead", headers={"X-Form-Key": key, "Origin": SITE},
                                     json={"last_name": "李", "phone": "13800138000"})  # fmt: skip
        assert scripted.status == 201 and await scripted.json() == {"status": "received"}
        # The same person again is the same lead, its blank fields filled.
        again = await client.post("/forms/lead", headers={"X-Form-Key": key},
                                  json={"name": "陈", "email": "CHEN@jinlong.cn",
                                        "phone": "13900001111", "message": "再问"})  # fmt: skip
        assert again.status == 201
        bad = await client.post("/forms/lead", headers={"X-Form-Key": key},
                                json={"email": "not an address", "website": "w" * 300})  # fmt: skip
        assert bad.status == 422
        assert set((await bad.json())["errors"]) == {"email", "website", "last_name"}
    leads = await _leads(store)
    assert [(lead.last_name, lead.source, lead.owner_id) for lead in leads] == [
        ("陈先生", "web", owner), ("李", "web", owner)]  # fmt: skip
    chen = leads[0]
    assert (chen.company, chen.phone, chen.team_id is not None) == ("金龙贸易", "13900001111", True)
    async with store.session() as session:
        notes = await timeline(session, "lead", chen.id)
        form = await session.scalar(select(WebForm))
    assert [n.body for n in notes] == ["再问", "请报价\n\nproduct: 冷库"]
    assert notes[0].subject == "Web form: contact-us"
    assert form is not None and form.last_used_at is not None


async def test_wrong_keys_other_sites_and_honeypots_store_nothing(store: Store) -> None:
    key, _ = await _form(store, thank_you_url=THANKS)
    lead = {"last_name": "王", "email": "wang@jinlong.cn"}
    app = create_app(store)
    app[FORM_LIMIT_KEY] = FormRateLimit(most=100)  # every try below counts; none is refused for it
    async with TestClient(TestServer(app)) as client:
        for headers in (
            {},
            {"X-Form-Key": key[:-1] + ("x" if key[-1] != "x" else "y")},
            {"X-Form-Key": "rpt_" + key[4:]},
        ):
            refused = await client.post("/forms/lead", headers=headers, json=lead)
            assert refused.status == 401 and "error" in await refused.json()
        in_url = await client.post(f"/forms/lead?_form_key={key}", json=lead)
        assert in_url.status == 401  # a key in the URL ends up in logs: not taken there
        elsewhere = await client.post("/forms/lead", json=lead,
                                      headers={"X-Form-Key": key, "Origin": "https://evil.example"})  # fmt: skip
        assert elsewhere.status == 403 and "Access-Control-Allow-Origin" not in elsewhere.headers
        bot = await client.post("/forms/lead", allow_redirects=False,
                                data={**lead, "_form_key": key, "homepage": "http://spam.example"})  # fmt: skip
        assert bot.status == 303 and bot.headers["Location"] == THANKS  # looks filed
        scripted_bot = await client.post("/forms/lead", headers={"X-Form-Key": key},
                                         json={**lead, "homepage": "x"})  # fmt: skip
        assert scripted_bot.status == 201 and await scripted_bot.json() == {"status": "received"}
        assert (await client.post("/forms/lead", headers={"X-Form-Key": key},
                                  data=b"x" * 20_000)).status == 413  # fmt: skip
        assert (await client.post("/forms/lead", headers={"X-Form-Key": key,
                                  "Content-Type": "text/plain"}, data=b"hi")).status == 415  # fmt: skip
    async with store.session() as session:
        assert await session.scalar(select(func.count()).select_from(Lead)) == 0


async def test_cors_is_for_listed_sites_and_posts_are_limited_per_address(store: Store) -> None:
    key, _ = await _form(store)
    app = create_app(store)
    app[FORM_LIMIT_KEY] = FormRateLimit(most=3, window_s=600)
    async with TestClient(TestServer(app)) as client:
        asked = await client.options("/forms/lead", headers={
            "Origin": SITE, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-form-key"})  # fmt: skip
        assert asked.status == 204
        assert asked.headers["Access-Control-Allow-Origin"] == SITE
        assert "X-Form-Key" in asked.headers["Access-Control-Allow-Headers"]
        stranger = await client.options("/forms/lead", headers={"Origin": "https://evil.example"})
        assert stranger.status == 403 and "Access-Control-Allow-Origin" not in stranger.headers
        statuses = []
        for n in range(5):
            answer = await client.post("/forms/lead", headers={"X-Form-Key": key}, json={
                "last_name": f"客户{n}", "email": f"c{n}@jinlong.cn"})  # fmt: skip
            statuses.append(answer.status)
        assert statuses == [201, 201, 201, 429, 429]
        assert int(answer.headers["Retry-After"]) > 500
    assert len(await _leads(store)) == 3


def test_the_limit_is_a_sliding_window() -> None:
    limit = FormRateLimit(most=2, window_s=60)
    assert [limit.wait_s("1.2.3.4", t) for t in (0, 10, 20)] == [0, 0, 40]
    assert limit.wait_s("5.6.7.8", 20) == 0  # another address has its own
    assert limit.wait_s("1.2.3.4", 61) == 0  # the first post left the window
    assert limit.wait_s("1.2.3.4", 62) == 8
