"""Record pages over real HTTP: forms, duplicates, scope, keyset paging, search, conversion."""

from __future__ import annotations

import base64
import csv
import io
import json
import re

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from store.db import Store
from store.identity import index_record
from store.models import Account, AccountContact, Contact, Lead, Opportunity
from tests.web.browsing import make_user, post_form, sign_in
from web.app import create_app


async def add(store: Store, record: object) -> int:
    async with store.session() as session, session.begin():
        session.add(record)
        await session.flush()
        await index_record(session, record)  # type: ignore[arg-type]
        return record.id  # type: ignore[attr-defined]


async def test_a_bad_form_shows_each_problem_beside_its_field_and_keeps_what_was_typed(
    store: Store,
) -> None:
    uid = await make_user(store, "wang", "agent")
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "wang")
        bad = await post_form(client, "/leads/new", csrf,
                              {"first_name": "芳", "email": "not-an-address", "phone": "??",
                               "status": "new", "company": "金龙贸易"})  # fmt: skip
        page = await bad.text()
        assert bad.status == 422
        assert 'id="error-last_name"' in page and "This field is required." in page
        assert 'id="error-email"' in page and "Not an email address." in page
        assert 'id="error-phone"' in page and 'value="金龙贸易"' in page
        good = await post_form(client, "/leads/new", csrf,
                               {"last_name": "王", "first_name": "芳", "status": "new",
                                "email": "wang.fang@jinlong.cn", "phone": "138 0013 8000"},
                               allow_redirects=False)  # fmt: skip
        assert good.status == 303
        detail = await (await client.get(good.headers["Location"])).text()
        assert "王芳" in detail and 'data-dial="138 0013 8000"' in detail
    async with store.session() as session:
        lead = await session.scalar(select(Lead))
        assert lead is not None and lead.owner_id == uid


async def test_creating_a_duplicate_warns_and_creates_only_when_confirmed(store: Store) -> None:
    await make_user(store, "wang", "agent")
    await add(store, Contact(last_name="李", first_name="雷", email="li.lei@jinlong.cn"))
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "wang")
        form = {"last_name": "Li", "email": "LI.LEI@jinlong.cn", "status": "new"}
        warned = await post_form(client, "/leads/new", csrf, form)
        assert warned.status == 409
        text = await warned.text()
        assert "Records with the same email or phone exist" in text
        assert "a record you may not see" in text  # the contact is not the agent's
        made = await post_form(client, "/leads/new", csrf, {**form, "confirm_duplicate": "1"},
                               allow_redirects=False)  # fmt: skip
        assert made.status == 303
    async with store.session() as session:
        assert await session.scalar(select(func.count()).select_from(Lead)) == 1


async def test_agents_see_their_own_and_managers_their_teams(store: Store) -> None:
    a1 = await make_user(store, "a1", "agent", team="华东")
    m = await make_user(store, "m", "manager", team="华东")
    b1 = await make_user(store, "b1", "agent", team="华南")
    async with store.session() as session:
        from store.models import User

        east = (await session.get(User, a1)).team_id  # type: ignore[union-attr]
        south = (await session.get(User, b1)).team_id  # type: ignore[union-attr]
    mine = await add(store, Lead(last_name="Mine", owner_id=a1, team_id=east))
    theirs = await add(store, Lead(last_name="Theirs", owner_id=b1, team_id=south,
                                   email="theirs@south.cn"))  # fmt: skip
    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "a1")
        listed = await (await client.get("/leads")).text()
        assert "Mine" in listed and "Theirs" not in listed
        assert (await client.get(f"/leads/{theirs}")).status == 404
        assert (await client.get(f"/leads/{theirs}/edit")).status == 404
        searched = await (await client.get("/leads?q=theirs@south.cn")).text()
        assert "Theirs" not in searched
        assert (await client.get("/leads/export.csv")).status == 403  # agents may not export
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "m")
        listed = await (await client.get("/leads")).text()
        assert "Mine" in listed and "Theirs" not in listed
        exported = await client.get("/leads/export.csv")
        rows = list(csv.reader(io.StringIO((await exported.read()).decode("utf-8-sig"))))
        assert [r[0] for r in rows[1:]] == [str(mine)]
        # A bulk action names both; only the one in scope changes hands.
        await post_form(client, "/leads/bulk", csrf,
                        {"id": [str(mine), str(theirs)], "action": "assign", "owner_id": str(m)})  # fmt: skip
    async with store.session() as session:
        assert (await session.get(Lead, mine)).owner_id == m  # type: ignore[union-attr]
        assert (await session.get(Lead, theirs)).owner_id == b1  # type: ignore[union-attr]
    assert m


async def test_lists_page_by_keyset_and_search_by_email_phone_and_name(store: Store) -> None:
    await make_user(store, "boss", "admin")
    async with store.session() as session, session.begin():
        for n in range(120):
            contact = Contact(last_name=f"张{n:03d}", email=f"c{n}@example.cn",
                              phone=f"0571-8800{n:04d}")  # fmt: skip
            session.add(contact)
            await session.flush()
            await index_record(session, contact)
    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "boss")
        seen: list[str] = []
        url = "/contacts?sort=last_name"
        pages = 0
        while url:
            page = await (await client.get(url)).text()
            seen += re.findall(r'<a href="/contacts/\d+">(张\d+)</a>', page)
            found = re.search(r'<a href="(\?[^"]*after=[^"]*)" rel="next">', page)
            url = "/contacts" + found.group(1).replace("&amp;", "&") if found else ""
            pages += 1
        assert pages == 3 and seen == [f"张{n:03d}" for n in range(120)]
        back = re.search(r'<a href="(\?[^"]*before=[^"]*)" rel="prev">', page)
        assert back is not None
        previous = await (
            await client.get("/contacts" + back.group(1).replace("&amp;", "&"))
        ).text()
        assert re.findall(r">(张\d+)</a>", previous) == [f"张{n:03d}" for n in range(50, 100)]
        by_mail = await (await client.get("/contacts?q=C7@Example.cn")).text()
        assert re.findall(r">(张\d+)</a>", by_mail) == ["张007"]
        by_phone = await (await client.get("/contacts?q=%2B86 571 88000042")).text()
        assert re.findall(r">(张\d+)</a>", by_phone) == ["张042"]
        by_name = await (await client.get("/contacts?q=张11")).text()
        assert len(re.findall(r">(张11\d)</a>", by_name)) == 10


async def test_a_lead_converts_into_account_contact_and_opportunity(store: Store) -> None:
    await make_user(store, "wang", "agent")
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "wang")
        made = await post_form(client, "/leads/new", csrf,
                               {"last_name": "陈", "first_name": "静", "company": "金龙贸易",
                                "status": "qualified", "email": "chen@jinlong.cn"},
                               allow_redirects=False)  # fmt: skip
        lead_url = made.headers["Location"]
        await post_form(client, f"{lead_url}/notes", csrf, {"note": "电话沟通，需要报价"})
        bad = await post_form(client, f"{lead_url}/convert", csrf,
                              {"create_opportunity": "1", "amount": "lots"})  # fmt: skip
        assert bad.status == 422 and "Not an amount." in await bad.text()
        done = await post_form(client, f"{lead_url}/convert", csrf,
                               {"create_opportunity": "1", "opportunity_name": "金龙 年度采购",
                                "amount": "88000", "expected_close": "2026-12-31"},
                               allow_redirects=False)  # fmt: skip
        assert done.status == 303 and done.headers["Location"].startswith("/contacts/")
        contact_page = await (await client.get(done.headers["Location"])).text()
        assert "电话沟通，需要报价" in contact_page  # the history came along
        assert "金龙 年度采购" in contact_page and "金龙贸易" in contact_page
    async with store.session() as session:
        account = await session.scalar(select(Account))
        assert account is not None and account.name == "金龙贸易"
        assert await session.scalar(select(func.count()).select_from(AccountContact)) == 1
        deal = await session.scalar(select(Opportunity))
        assert deal is not None and deal.account_id == account.id and str(deal.amount) == "88000.00"


async def test_saved_views_and_tags(store: Store) -> None:
    uid = await make_user(store, "wang", "manager")
    lead = await add(store, Lead(last_name="Tagged", status="qualified", owner_id=uid))
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "wang")
        await post_form(
            client, "/leads/views", csrf, {"name": "合格线索", "query": "status=qualified"}
        )
        page = await (await client.get("/leads")).text()
        assert '<a href="/leads?status=qualified">合格线索</a>' in page
        await post_form(
            client, "/leads/bulk", csrf, {"id": str(lead), "action": "tag", "tag": "VIP"}
        )
        assert "<span>VIP</span>" in await (await client.get(f"/leads/{lead}")).text()


async def test_the_record_pages_speak_chinese(store: Store) -> None:
    await make_user(store, "li", "agent", locale="zh_CN")
    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "li")
        page = await (await client.get("/leads/new")).text()
        assert "姓" in page and "保存" in page and "新建" in page


async def test_a_chinese_full_name_finds_surname_and_given_name(store: Store) -> None:
    await make_user(store, "boss", "admin")
    await add(store, Contact(last_name="欧阳", first_name="娜娜"))
    await add(store, Contact(last_name="王", first_name="芳"))
    await add(store, Contact(last_name="王", first_name="伟"))
    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "boss")
        for term, found in (("王芳", ["王芳"]), ("欧阳娜", ["欧阳娜娜"]), ("王", ["王伟", "王芳"])):
            page = await (await client.get(f"/contacts?q={term}&sort=last_name")).text()
            names = re.findall(r'<a href="/contacts/\d+">([^<]+)</a>', page)
            assert sorted(names) == sorted(found), term


async def test_a_new_opportunity_starts_in_the_first_open_stage(store: Store) -> None:
    await make_user(store, "wang", "agent")
    account = await add(store, Account(name="金龙贸易"))
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "wang")
        hidden = await post_form(client, "/opportunities/new", csrf,
                                 {"name": "x", "currency": "CNY", "account_id": str(account)})  # fmt: skip
        assert hidden.status == 422 and "Choose a record." in await hidden.text()  # not in scope
        made = await post_form(client, "/opportunities/new", csrf,
                               {"name": "年度采购", "currency": "CNY", "amount": "¥88,000"},
                               allow_redirects=False)  # fmt: skip
        assert made.status == 303
        page = await (await client.get(made.headers["Location"])).text()
        assert "Prospecting" in page and "CN¥88,000.00" in page


async def test_urls_edited_by_hand_answer_empty_or_not_found_never_an_error(store: Store) -> None:
    await make_user(store, "boss", "admin")
    lead = await add(store, Lead(last_name="Kept", status="converted"))

    def cursor(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps([value, 1]).encode()).decode()

    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "boss")
        huge = "9" * 25
        for url in (
            "/leads?status=bogus", f"/leads?owner={huge}", "/opportunities?stage_id=abc",
            f"/opportunities?stage_id={huge}", f"/contacts?after={cursor('x')}",
            f"/contacts?sort=last_name&before={cursor(7)}", "/contacts?after=%%%",
            f"/contacts?after={cursor({'t': '2026-01-01T00:00:00'})}", "/leads?owner=١٢",
        ):  # fmt: skip
            answer = await client.get(url)
            assert answer.status == 200, url
        for url in (f"/leads/{huge}", f"/emails/{huge}/body", f"/leads/{huge}/edit"):
            assert (await client.get(url)).status == 404, url
        assert (await client.get(f"/leads/{lead}?older={cursor('x')}")).status == 200
        # A converted lead is found by its status though no form may set it.
        converted = await (await client.get("/leads?status=converted")).text()
        assert f'<a href="/leads/{lead}">Kept</a>' in converted
        assert "Kept" not in await (await client.get("/leads?status=bogus")).text()
