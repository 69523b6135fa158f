"""Record pages over real HTTP: forms, duplicates, scope, keyset paging, search, conversion."""

from __future__ import annotations

import base64
import csv
import io
import json
import re

import pytest
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from sqlalchemy import func, select, text

from store.access import access_for
from store.db import Store
from store.identity import index_record
from store.models import Account, AccountContact, Contact, Lead, Opportunity, User
from store.tags import tags_of
from tests.web.browsing import make_user, post_form, sign_in
from web.app import create_app
from web.auth import Viewer
from web.i18n import Translator
from web.modules import MODULES
from web.record_query import filtered


@pytest.fixture(autouse=True)
def cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 at its cheapest: these tests are about records, not the strength of a hash."""
    monkeypatch.setattr(
        "store.users._hasher", PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    )


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
        # A view keeps the list's query and nothing else; a colleague cannot delete it.
        saved = await post_form(client, "/leads/views", csrf,
                                {"name": "new", "query": "status=new&after=abc\r\nX: y"},
                                allow_redirects=False)  # fmt: skip
        assert saved.headers["Location"] == "/leads?status=new"
        listed = await (await client.get("/leads")).text()
        view_ids = re.findall(r'action="/leads/views/(\d+)/delete"', listed)
        assert len(view_ids) == 2
    await make_user(store, "zhao", "manager")
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "zhao")
        for view_id in view_ids:
            await post_form(client, f"/leads/views/{view_id}/delete", csrf)
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "wang")
        await post_form(client, f"/leads/views/{view_ids[0]}/delete", csrf)
        page = await (await client.get("/leads")).text()
        assert len(re.findall(r'action="/leads/views/\d+/delete"', page)) == 1


async def test_the_record_pages_speak_chinese(store: Store) -> None:
    uid = await make_user(store, "li", "agent", locale="zh_CN")
    lead = await add(store, Lead(last_name="王", status="qualified", owner_id=uid))
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "li")
        page = await (await client.get("/leads/new")).text()
        assert "姓" in page and "保存" in page and "新建" in page
        bad = await (await post_form(client, "/leads/new", csrf, {"status": "new"})).text()
        assert "此项必填。" in bad
        listed = await (await client.get("/leads")).text()
        assert "<h1>线索</h1>" in listed and "搜索" in listed and ">合格<" in listed
        detail = await (await client.get(f"/leads/{lead}")).text()
        assert "沟通记录" in detail and "添加备注" in detail and "Timeline" not in detail


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


async def _teams(store: Store) -> dict[str, int]:
    """Two teams of an agent and a manager each, and an admin; user ids by name."""
    ids = {name: await make_user(store, name, role, team=team)
           for name, role, team in (("a1", "agent", "华东"), ("a2", "agent", "华东"),
                                    ("m", "manager", "华东"), ("b1", "agent", "华南"),
                                    ("mb", "manager", "华南"))}  # fmt: skip
    async with store.session() as session:
        for name in list(ids):
            team = (await session.get(User, ids[name])).team_id  # type: ignore[union-attr]
            ids[f"team:{name}"] = team or 0
    return ids


async def test_a_manager_reaches_their_teams_records_and_nothing_of_another_team(
    store: Store,
) -> None:
    ids = await _teams(store)
    east = await add(store, Account(name="East Co", owner_id=ids["a1"], team_id=ids["team:a1"]))
    south = await add(store, Account(name="South Co", owner_id=ids["b1"],
                                     team_id=ids["team:b1"], phone="020-8888 1234"))  # fmt: skip
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "m")
        assert (await client.get(f"/accounts/{east}")).status == 200
        for path in (f"/accounts/{south}", f"/accounts/{south}/edit"):
            assert (await client.get(path)).status == 404
        assert (await post_form(client, f"/accounts/{south}/delete", csrf)).status == 404
        assert "South Co" not in await (await client.get("/accounts?q=020 8888 1234")).text()
        assert "South Co" not in await (await client.get("/accounts?q=South")).text()
        found = await (await client.get("/accounts/lookup?q=")).json()
        assert [r["name"] for r in found] == ["East Co"]
        exported = (await (await client.get("/accounts/export.csv")).read()).decode("utf-8-sig")
        assert "East Co" in exported and "South Co" not in exported
        await post_form(client, "/accounts/bulk", csrf,
                        {"id": [str(east), str(south)], "action": "tag", "tag": "重点"})  # fmt: skip
        # A manager deletes (into the recycle bin): gone from lists and pages, kept in the store.
        gone = await post_form(client, f"/accounts/{east}/delete", csrf, allow_redirects=False)
        assert gone.status == 303
        assert (await client.get(f"/accounts/{east}")).status == 404
        assert "East Co" not in await (await client.get("/accounts")).text()
    async with store.session() as session:
        assert await tags_of(session, "account", east) == ["重点"]
        assert await tags_of(session, "account", south) == []
        kept = await session.get(Account, east)
        assert kept is not None and kept.deleted_at is not None
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "b1")  # agents may not delete, even their own
        assert (await post_form(client, f"/accounts/{south}/delete", csrf)).status == 403


async def test_a_new_record_is_the_viewers_unless_handed_to_a_teammate(store: Store) -> None:
    ids = await _teams(store)
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "a1")
        form = await (await client.get("/contacts/new")).text()
        assert f'<option value="{ids["a1"]}" selected>' in form
        assert f'value="{ids["b1"]}"' not in form  # not in the agent's team
        refused = await post_form(client, "/contacts/new", csrf,
                                  {"last_name": "周", "owner_id": str(ids["b1"])})  # fmt: skip
        assert refused.status == 422 and 'id="error-owner_id"' in await refused.text()
        mine = await post_form(client, "/contacts/new", csrf, {"last_name": "吴"},
                               allow_redirects=False)  # fmt: skip
        handed = await post_form(client, "/contacts/new", csrf,
                                 {"last_name": "郑", "owner_id": str(ids["a2"])},
                                 allow_redirects=False)  # fmt: skip
        assert mine.status == handed.status == 303
        # Handed on, it is out of the agent's own scope.
        assert (await client.get(handed.headers["Location"])).status == 404
    async with store.session() as session:
        rows = {c.last_name: c for c in await session.scalars(select(Contact))}
        assert (rows["吴"].owner_id, rows["吴"].team_id) == (ids["a1"], ids["team:a1"])
        assert (rows["郑"].owner_id, rows["郑"].team_id) == (ids["a2"], ids["team:a2"])


async def test_lists_filter_by_status_source_and_owner_and_sort(store: Store) -> None:
    boss = await make_user(store, "boss", "admin")
    other = await make_user(store, "li", "agent")
    for name, status, source, owner in (("Alpha", "new", "web", boss),
                                        ("Bravo", "qualified", "web", other),
                                        ("Charlie", "qualified", "referral", boss)):  # fmt: skip
        await add(store, Lead(last_name=name, status=status, source=source, owner_id=owner))

    async def names(client: TestClient, query: str) -> list[str]:
        page = await (await client.get(f"/leads?{query}")).text()
        return re.findall(r'<a href="/leads/\d+">([A-Za-z]+)</a>', page)

    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "boss")
        assert await names(client, "status=qualified&sort=last_name") == ["Bravo", "Charlie"]
        assert await names(client, "status=qualified&source=web") == ["Bravo"]
        assert await names(client, "owner=me&sort=-last_name") == ["Charlie", "Alpha"]
        assert await names(client, f"owner={other}") == ["Bravo"]
        assert await names(client, "q=alp") == ["Alpha"]  # the capitalised prefix too


async def test_converting_into_a_named_or_an_existing_account(store: Store) -> None:
    ids = await _teams(store)
    theirs = await add(store, Account(name="华南贸易", owner_id=ids["b1"], team_id=ids["team:b1"]))
    ours = await add(store, Account(name="华东贸易", owner_id=ids["a1"], team_id=ids["team:a1"]))
    first = await add(store, Lead(last_name="孙", company="孙氏", owner_id=ids["a1"],
                                  team_id=ids["team:a1"]))  # fmt: skip
    second = await add(store, Lead(last_name="钱", owner_id=ids["a1"], team_id=ids["team:a1"]))
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "a1")
        form = await (await client.get(f"/leads/{first}/convert")).text()
        assert 'value="孙氏"' in form and "华东贸易" in form and "华南贸易" not in form
        named = await post_form(client, f"/leads/{first}/convert", csrf,
                                {"account_name": "孙氏集团有限公司"}, allow_redirects=False)  # fmt: skip
        assert named.status == 303
        again = await client.get(f"/leads/{first}/convert", allow_redirects=False)
        assert again.status == 303 and again.headers["Location"] == f"/leads/{first}"
        lead_page = await (await client.get(f"/leads/{first}")).text()
        assert "孙氏集团有限公司" in lead_page  # the links to what it became
        refused = await post_form(client, f"/leads/{second}/convert", csrf,
                                  {"account_id": str(theirs)})  # fmt: skip
        assert refused.status == 422 and 'id="error-account_id"' in await refused.text()
        joined = await post_form(client, f"/leads/{second}/convert", csrf,
                                 {"account_id": str(ours)}, allow_redirects=False)  # fmt: skip
        assert joined.status == 303
        account_page = await (await client.get(f"/accounts/{ours}")).text()
        assert f'href="{joined.headers["Location"]}"' in account_page
    async with store.session() as session:
        names = set(await session.scalars(select(Account.name)))
        assert names == {"华南贸易", "华东贸易", "孙氏集团有限公司"}


async def test_a_contacts_page_names_the_records_with_its_address(store: Store) -> None:
    boss = await make_user(store, "boss", "admin")
    one = await add(store, Contact(last_name="Ma", email="ma@jinlong.cn", owner_id=boss))
    twin = await add(store, Lead(last_name="Ma Yun", email="MA@jinlong.cn", owner_id=boss))
    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "boss")
        page = await (await client.get(f"/contacts/{one}")).text()
        assert "Same email or phone as:" in page and f'<a href="/leads/{twin}">' in page


async def test_on_sqlite_a_search_reads_the_name_indexes_and_a_list_its_sort_index(
    store: Store,
) -> None:
    """What keeps pages fast with 100,000 contacts (bench/web.py): no step reads every row."""
    if store.engine.dialect.name != "sqlite":
        pytest.skip("the plans are SQLite's; PostgreSQL plans by its statistics")
    boss = await make_user(store, "boss", "admin")
    async with store.session() as session:
        user = await session.get(User, boss)
        assert user is not None
        viewer = Viewer(user_id=boss, username="boss", display_name="boss", locale="en",
                        timezone="UTC", csrf="", access=await access_for(session, user),
                        t=Translator("en"))  # fmt: skip

        async def plan(module: str, query: dict[str, str], order: str) -> str:
            found, _ = await filtered(session, MODULES[module], viewer, query)
            model = MODULES[module].model
            ordered = found.order_by(getattr(model, order).desc()).limit(51)
            sql = ordered.compile(store.engine, compile_kwargs={"literal_binds": True})
            rows = await session.execute(text(f"EXPLAIN QUERY PLAN {sql}"))
            return " | ".join(str(row[-1]) for row in rows)

        searched = await plan("contacts", {"q": "王芳"}, "created_at")
        assert "ix_contacts_last_name" in searched and "ix_contacts_first_name" in searched
        assert "deleted_at" not in searched and "SCAN" not in searched, searched
        for module in ("contacts", "accounts", "leads", "opportunities"):
            # The sorts of lists, and the name order of record pickers.
            for order in ("created_at", "updated_at", MODULES[module].names[0]):
                listed = await plan(module, {}, order)
                assert listed == f"SCAN {module} USING INDEX ix_{module}_{order}", listed
        by_company = await plan("leads", {"q": "金龙"}, "created_at")
        assert "ix_leads_company" in by_company and "SCAN" not in by_company, by_company


async def test_export_is_the_filtered_list_in_utf8_with_bom_for_excel(store: Store) -> None:
    boss = await make_user(store, "boss", "manager", team="华东", locale="zh_CN",
                           display_name="赵经理")  # fmt: skip
    async with store.session() as session:
        team = (await session.get(User, boss)).team_id  # type: ignore[union-attr]
    await add(store, Lead(last_name="王", first_name="芳", status="qualified", owner_id=boss,
                          team_id=team, company="=HYPERLINK(\"http://evil\")"))  # fmt: skip
    await add(store, Lead(last_name="李", status="new", owner_id=boss, team_id=team))
    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "boss")
        answer = await client.get("/leads/export.csv?status=qualified")
        assert answer.headers["Content-Disposition"].startswith('attachment; filename="leads-')
        raw = await answer.read()
        assert raw.startswith("\ufeff".encode())
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
        assert rows[0][:3] == ["id", "姓", "名"] and rows[0][-2] == "负责人"
        assert len(rows) == 2 and rows[1][1:3] == ["王", "芳"] and rows[1][-2] == "赵经理"
        assert '\'=HYPERLINK("http://evil")' in rows[1]  # never a formula in Excel
