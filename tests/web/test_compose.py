"""Mail from a record's page: who may compose, sending through the real outbox, templates, errors."""

from __future__ import annotations

import html
import re

import pytest
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from sqlalchemy import func, select

from store.db import Store
from store.documents import add_document
from store.identity import index_record
from store.models import (
    Account,
    AccountContact,
    Attachment,
    Contact,
    Email,
    MailTemplate,
    OutboxEntry,
    RecordScope,
    Role,
)
from tests.web.browsing import make_user, post_form, sign_in
from tracking.compose import Sender
from tracking.mail_api import OutboxApi
from web.app import create_app
from web.compose import addresses

SENDER = Sender("sales@rapport.test", "销售部")


@pytest.fixture(autouse=True)
def cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 at its cheapest: these tests are about mail, not the strength of a hash."""
    monkeypatch.setattr(
        "store.users._hasher", PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    )


def _app(store: Store) -> object:
    return create_app(store, mail=OutboxApi(store, SENDER))


async def _contact(store: Store, owner: int, team: int | None = None) -> tuple[int, int]:
    """王芳 of 金龙贸易, owned by ``owner``, with a quote to attach; (contact id, document id)."""
    async with store.session() as session, session.begin():
        person = Contact(first_name="芳", last_name="王", email="wang.fang@jinlong.cn",
                         owner_id=owner, team_id=team)  # fmt: skip
        session.add(person)
        await session.flush()
        await index_record(session, person)
        document = await add_document(session, store.blobs, ("contact", person.id),
                                      "报价单.pdf", b"%PDF-1.7 quote")  # fmt: skip
        return person.id, document.id


async def _templates(store: Store) -> None:
    async with store.session() as session, session.begin():
        session.add_all([
            MailTemplate(name="hello", language="zh-CN",
                         subject="{{ contact.last_name }}{{ contact.first_name }}，您好",
                         text="您好，{{ contact.last_name }}女士：\n来自 {{ sender.display_name }}",
                         html="<p>{{ contact.last_name }}您好</p>"),
            MailTemplate(name="hello", language="en",
                         subject="Hello {{ contact.first_name }} {{ contact.last_name }}",
                         text="Dear {{ contact.last_name }},\nfrom {{ sender.display_name }}"),
            MailTemplate(name="broken", language="zh-CN", subject="x",
                         text="line one\n{{ contact.no_such_field }}"),
        ])  # fmt: skip


async def _queued(store: Store) -> int:
    async with store.session() as session:
        return await session.scalar(select(func.count()).select_from(Email)) or 0


def _value(page: str, name: str) -> str:
    """An input's value or a textarea's text on a page, unescaped."""
    found = re.search(rf'<input id="f-{name}" name="{name}" value="([^"]*)"', page) or re.search(
        rf'<textarea id="f-{name}" name="{name}"[^>]*>(.*?)</textarea>', page, re.DOTALL
    )
    assert found, f"no field {name}"
    return html.unescape(found.group(1))


def test_addresses_are_read_as_people_type_them() -> None:
    typed = "王芳 <Wang.Fang@JinLong.cn>；li.na@jinlong.cn，zhao@jinlong.cn\nqian@x.cn sun@x.cn"
    assert addresses(typed) == (
        ["wang.fang@jinlong.cn", "li.na@jinlong.cn", "zhao@jinlong.cn", "qian@x.cn", "sun@x.cn"],
        [],
    )
    assert addresses("a@b.cn, not an address, 李 <nope>") == (
        ["a@b.cn"],
        ["not an address", "李 <nope>"],
    )
    assert addresses(" ,; ") == ([], [])


async def test_the_button_shows_for_a_role_that_may_mail_and_only_with_an_outbox(
    store: Store,
) -> None:
    owner = await make_user(store, "wang", "agent", email="wang.wei@rapport.test")
    async with store.session() as session, session.begin():
        session.add(Role(name="reader", scope=RecordScope.ALL,
                         permissions={"contacts": ["view"], "emails": ["view"]}))  # fmt: skip
    await make_user(store, "lin", "reader")
    contact_id, _ = await _contact(store, owner)
    button = f'href="/contacts/{contact_id}/mail"'
    async with TestClient(TestServer(_app(store))) as client:
        await sign_in(client, "wang")
        assert button in await (await client.get(f"/contacts/{contact_id}")).text()
        page = await (await client.get(f"/contacts/{contact_id}/mail")).text()
        assert _value(page, "to") == "wang.fang@jinlong.cn"  # the record's address
        assert "报价单.pdf" in page and 'value="hello"' not in page  # no templates yet
    async with TestClient(TestServer(_app(store))) as client:
        csrf = await sign_in(client, "lin")  # may see the contact, may not write mail
        assert button not in await (await client.get(f"/contacts/{contact_id}")).text()
        assert (await client.get(f"/contacts/{contact_id}/mail")).status == 403
        refused = await post_form(client, f"/contacts/{contact_id}/mail", csrf,
                                  {"to": "a@b.cn", "subject": "x", "action": "send"})  # fmt: skip
        assert refused.status == 403
    async with TestClient(TestServer(create_app(store))) as client:  # no outbox
        csrf = await sign_in(client, "wang")
        assert button not in await (await client.get(f"/contacts/{contact_id}")).text()
        page = await client.get(f"/contacts/{contact_id}/mail")
        assert page.status == 200 and "Mail sending is not configured" in await page.text()
        posted = await post_form(client, f"/contacts/{contact_id}/mail", csrf,
                                 {"to": "a@b.cn", "subject": "x", "action": "send"})  # fmt: skip
        assert posted.status == 503 and "Mail sending is not configured" in await posted.text()
    assert await _queued(store) == 0


async def test_mail_sent_from_a_contact_is_queued_and_shown_on_its_timeline(store: Store) -> None:
    owner = await make_user(store, "wang", "agent", email="wang.wei@rapport.test")
    contact_id, document_id = await _contact(store, owner)
    async with TestClient(TestServer(_app(store))) as client:
        csrf = await sign_in(client, "wang")
        sent = await post_form(client, f"/contacts/{contact_id}/mail", csrf, {
            "to": "王芳 <Wang.Fang@JinLong.cn>", "cc": "li.na@jinlong.cn；zhao@jinlong.cn",
            "subject": "报价单", "text": "王女士：\n附件是报价单。", "html": "",
            "document": str(document_id), "action": "send",
        }, allow_redirects=False)  # fmt: skip
        assert sent.status == 303, await sent.text()
        assert sent.headers["Location"] == f"/contacts/{contact_id}?mailed=1"
        page = await (await client.get(sent.headers["Location"])).text()
        assert "Your mail is queued in the outbox" in page
        timeline = page[page.index('id="timeline-h"') :]
        assert "报价单" in timeline and "wang.fang@jinlong.cn" in timeline
        assert '<table class="reads">' in timeline  # each recipient's opens and clicks
    async with store.session() as session:
        email = await session.scalar(select(Email))
        assert email is not None and email.subject == "报价单"
        assert [r["address"] for r in email.to] == ["wang.fang@jinlong.cn"]
        assert [r["address"] for r in email.cc] == ["li.na@jinlong.cn", "zhao@jinlong.cn"]
        assert email.reply_to == [{"name": "", "address": "wang.wei@rapport.test"}]
        assert email.from_address == "sales@rapport.test" and email.html_body is None
        entry = await session.scalar(select(OutboxEntry).where(OutboxEntry.email_id == email.id))
        assert entry is not None and entry.state == "queued" and entry.queued_by_id == owner
        files = await session.scalars(select(Attachment).where(Attachment.email_id == email.id))
        assert [f.filename for f in files] == ["报价单.pdf"]


async def test_a_template_fills_the_form_in_chinese_and_in_english(store: Store) -> None:
    owner = await make_user(store, "wang", "agent", display_name="王伟", locale="zh_CN")
    contact_id, _ = await _contact(store, owner)
    await _templates(store)
    url = f"/contacts/{contact_id}/mail"
    async with TestClient(TestServer(_app(store))) as client:
        csrf = await sign_in(client, "wang")
        page = await (await client.get(url)).text()
        assert "写邮件" in page and '<option value="zh-CN" selected>' in page
        typed = {"to": "wang.fang@jinlong.cn", "cc": "li.na@jinlong.cn", "template": "hello",
                 "subject": "", "text": "", "action": "preview"}  # fmt: skip
        chinese = await post_form(client, url, csrf, {**typed, "language": "zh-CN"})
        assert chinese.status == 200
        page = await chinese.text()
        assert _value(page, "subject") == "王芳，您好"
        assert _value(page, "text") == "您好，王女士：\n来自 王伟"
        assert _value(page, "html") == "<p>王您好</p>"
        assert _value(page, "cc") == "li.na@jinlong.cn"  # what was typed stays
        english = await (await post_form(client, url, csrf, {**typed, "language": "en"})).text()
        assert _value(english, "subject") == "Hello 芳 王"
        assert _value(english, "text") == "Dear 王,\nfrom 王伟"

        # What compose.js asks: the same preview as JSON, with the session's CSRF header.
        asked = await client.post(f"{url}/preview", json={"template": "hello", "language": "en"},
                                  headers={"X-CSRF-Token": csrf})  # fmt: skip
        assert asked.status == 200
        assert (await asked.json())["subject"] == "Hello 芳 王"
        no_csrf = await client.post(f"{url}/preview", json={"template": "hello"})
        assert no_csrf.status == 403
        broken = await client.post(f"{url}/preview", json={"template": "broken"},
                                   headers={"X-CSRF-Token": csrf})  # fmt: skip
        assert broken.status == 422 and "line 2" in (await broken.json())["errors"]["template"]

        filled = await post_form(client, url, csrf, {
            "to": "wang.fang@jinlong.cn", "subject": _value(page, "subject"),
            "text": _value(page, "text"), "html": _value(page, "html"), "action": "send",
        }, allow_redirects=False)  # fmt: skip
        assert filled.status == 303
    async with store.session() as session:
        subjects = (await session.scalars(select(Email.subject))).all()
        html_body = await session.scalar(select(Email.html_body))
    assert subjects == ["王芳，您好"] and html_body == "<p>王您好</p>"  # previews queue nothing


async def test_bad_values_are_shown_beside_their_fields_and_nothing_is_queued(
    store: Store,
) -> None:
    owner = await make_user(store, "wang", "agent")
    contact_id, document_id = await _contact(store, owner)
    await _templates(store)
    url = f"/contacts/{contact_id}/mail"
    async with TestClient(TestServer(_app(store))) as client:
        csrf = await sign_in(client, "wang")
        bad = await post_form(client, url, csrf, {
            "to": "wang.fang@jinlong.cn, not-an-address", "cc": "li.na@", "subject": "  ",
            "text": "我写的正文", "document": str(document_id + 99), "action": "send",
        })  # fmt: skip
        assert bad.status == 422
        page = await bad.text()
        assert "Not an email address: not-an-address" in page
        assert "Not an email address: li.na@" in page
        assert 'id="error-subject"' in page and "Write a subject." in page
        assert "Choose among the record&#39;s documents." in page
        assert _value(page, "to") == "wang.fang@jinlong.cn, not-an-address"
        assert _value(page, "text") == "我写的正文"

        nobody = await post_form(client, url, csrf, {"to": "", "subject": "x", "action": "send"})
        assert "Give at least one recipient." in await nobody.text()
        crowd = ", ".join(f"buyer{n}@jinlong.cn" for n in range(51))
        bulk = await post_form(client, url, csrf, {"to": crowd, "subject": "x", "action": "send"})
        assert "At most 50 recipients." in await bulk.text()

        broken = await post_form(client, url, csrf, {
            "to": "wang.fang@jinlong.cn", "subject": "我的主题", "text": "我写的正文",
            "template": "broken", "language": "zh-CN", "action": "preview",
        })  # fmt: skip
        assert broken.status == 422
        page = await broken.text()
        error = re.search(r'id="error-template"[^>]*>([^<]*)<', page)
        assert error is not None and "The template could not be rendered" in error.group(1)
        assert "line 2" in error.group(1) and "no_such_field" in html.unescape(error.group(1))
        assert _value(page, "subject") == "我的主题" and _value(page, "text") == "我写的正文"
    assert await _queued(store) == 0


async def test_an_agent_cannot_compose_on_another_teams_record(store: Store) -> None:
    east = await make_user(store, "a1", "agent", team="华东")
    await make_user(store, "b1", "agent", team="华南")
    contact_id, _ = await _contact(store, east)
    url = f"/contacts/{contact_id}/mail"
    async with TestClient(TestServer(_app(store))) as client:
        csrf = await sign_in(client, "b1")
        assert (await client.get(url)).status == 404
        sent = await post_form(client, url, csrf, {"to": "wang.fang@jinlong.cn", "subject": "x",
                                                   "action": "send"})  # fmt: skip
        assert sent.status == 404
        asked = await client.post(f"{url}/preview", json={"template": "hello"},
                                  headers={"X-CSRF-Token": csrf})  # fmt: skip
        assert asked.status == 404
    assert await _queued(store) == 0


async def test_a_send_without_the_csrf_token_is_refused(store: Store) -> None:
    owner = await make_user(store, "wang", "agent")
    contact_id, _ = await _contact(store, owner)
    async with TestClient(TestServer(_app(store))) as client:
        await sign_in(client, "wang")
        refused = await client.post(f"/contacts/{contact_id}/mail", data={
            "to": "wang.fang@jinlong.cn", "subject": "x", "action": "send"})  # fmt: skip
        assert refused.status == 403
    assert await _queued(store) == 0


async def test_from_an_account_its_contacts_are_offered_and_the_first_ticked_is_merged(
    store: Store,
) -> None:
    owner = await make_user(store, "wang", "agent", display_name="王伟")
    contact_id, _ = await _contact(store, owner)
    await _templates(store)
    async with store.session() as session, session.begin():
        account = Account(name="金龙贸易", email="info@jinlong.cn", owner_id=owner)
        session.add(account)
        await session.flush()
        session.add(AccountContact(account_id=account.id, contact_id=contact_id))
        account_id = account.id
    url = f"/accounts/{account_id}/mail"
    async with TestClient(TestServer(_app(store))) as client:
        csrf = await sign_in(client, "wang")
        assert f'href="{url}"' in await (await client.get(f"/accounts/{account_id}")).text()
        page = await (await client.get(url)).text()
        assert _value(page, "to") == "info@jinlong.cn"
        assert f'name="contact" value="{contact_id}"' in page and "wang.fang@jinlong.cn" in page
        filled = await post_form(client, url, csrf, {
            "to": "", "contact": str(contact_id), "template": "hello", "language": "zh-CN",
            "action": "preview",
        })  # fmt: skip
        assert _value(await filled.text(), "subject") == "王芳，您好"
        sent = await post_form(client, url, csrf, {
            "to": "", "contact": str(contact_id), "subject": "合作", "text": "您好",
            "action": "send",
        }, allow_redirects=False)  # fmt: skip
        assert sent.status == 303
        stranger = await post_form(client, url, csrf, {
            "to": "", "contact": str(contact_id + 1000), "subject": "x", "action": "send"})  # fmt: skip
        assert "Choose among the account&#39;s contacts." in await stranger.text()
    async with store.session() as session:
        email = await session.scalar(select(Email))
    assert email is not None and [r["address"] for r in email.to] == ["wang.fang@jinlong.cn"]
