"""The JSON API's mail calls: token auth, queueing through the outbox, template previews."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from store.activities import timeline
from store.api_tokens import create_api_token
from store.db import Store
from store.documents import add_document
from store.identity import index_record
from store.models import Attachment, Contact, Email, MailTemplate, OutboxEntry
from store.users import create_user
from tracking.compose import Sender
from tracking.mail_api import OutboxApi
from web.app import create_app

SENDER = Sender("sales@rapport.test", "销售部")


async def _setup(store: Store) -> tuple[str, int, int]:
    async with store.session() as session, session.begin():
        await create_user(session, "zhang", None, email="zhang.wei@rapport.test")
        token = await create_api_token(session, "zhang", "crm integration")
        person = Contact(first_name="芳", last_name="王", email="wang.fang@jinlong.cn")
        session.add(person)
        await session.flush()
        await index_record(session, person)
        session.add(MailTemplate(name="hello", language="zh-CN",
                                 subject="{{ contact.last_name }}{{ contact.first_name }}，您好",
                                 text="来自 {{ sender.display_name or sender.username }}",
                                 html="<p>{{ contact.last_name }}您好</p>"))  # fmt: skip
        session.add(MailTemplate(name="broken", language="zh-CN", subject="x",
                                 text="line one\n{{ contact.no_such_field }}"))  # fmt: skip
        document = await add_document(session, store.blobs, ("contact", person.id),
                                      "报价单.pdf", b"%PDF-1.7 quote")  # fmt: skip
        return token, person.id, document.id


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_mail_is_queued_for_a_token_holder_and_filed(store: Store) -> None:
    token, contact_id, document_id = await _setup(store)
    app = create_app(store, mail=OutboxApi(store, SENDER))
    async with TestClient(TestServer(app)) as client:
        assert (await client.post("/api/v1/mail", json={})).status == 401
        wrong = await client.post("/api/v1/mail", json={}, headers=_auth("rpt_forged"))
        assert wrong.status == 401 and "error" in await wrong.json()

        body = {"to": ["Wang.Fang@JinLong.cn"], "subject": "报价单", "text": "附件是报价单。",
                "records": [f"contact:{contact_id}"], "documents": [document_id]}  # fmt: skip
        resp = await client.post("/api/v1/mail", json=body, headers=_auth(token))
        assert resp.status == 202
        email_id = (await resp.json())["email_id"]

        bad = await client.post("/api/v1/mail", headers=_auth(token),
                                json={"to": [], "records": ["nonsense"], "documents": "x"})  # fmt: skip
        assert bad.status == 422
        errors: dict[str, Any] = (await bad.json())["errors"]
        assert {"records", "documents"} <= set(errors)
        empty = await client.post("/api/v1/mail", headers=_auth(token), json={"to": ["a@b.cn"]})
        assert (await empty.json())["errors"] == {"subject": "a mail needs a subject"}
    async with store.session() as session:
        email = await session.get_one(Email, email_id)
        assert email.reply_to == [{"name": "", "address": "zhang.wei@rapport.test"}]
        assert email.from_address == "sales@rapport.test"
        entry = await session.scalar(select(OutboxEntry).where(OutboxEntry.email_id == email_id))
        assert entry is not None and entry.state == "queued"
        files = await session.scalars(select(Attachment).where(Attachment.email_id == email_id))
        assert [f.filename for f in files] == ["报价单.pdf"]
        history = await timeline(session, "contact", contact_id)
        assert [a.email_id for a in history] == [email_id]


async def test_templates_preview_and_queue_with_their_errors_shown(store: Store) -> None:
    token, contact_id, _ = await _setup(store)
    app = create_app(store, mail=OutboxApi(store, SENDER))
    async with TestClient(TestServer(app)) as client:
        template = {"name": "hello", "language": "zh-CN", "contact_id": contact_id}
        preview = await client.post("/api/v1/mail/preview", headers=_auth(token),
                                    json={"template": template})  # fmt: skip
        assert preview.status == 200
        shown = await preview.json()
        assert shown["subject"] == "王芳，您好" and shown["html"] == "<p>王您好</p>"
        assert shown["text"] == "来自 zhang"
        async with store.session() as session:
            assert await session.scalar(select(Email.id)) is None  # a preview queues nothing

        sent = await client.post("/api/v1/mail", headers=_auth(token),
                                 json={"to": ["wang.fang@jinlong.cn"], "template": template})  # fmt: skip
        assert sent.status == 202
        both = await client.post("/api/v1/mail", headers=_auth(token),
                                 json={"to": ["a@b.cn"], "subject": "x", "template": template})  # fmt: skip
        assert "not both" in (await both.json())["errors"]["template"]
        broken = await client.post("/api/v1/mail/preview", headers=_auth(token), json={
            "template": {"name": "broken", "contact_id": contact_id}})  # fmt: skip
        assert broken.status == 422
        assert "line 2" in (await broken.json())["errors"]["text"]
        missing = await client.post("/api/v1/mail/preview", headers=_auth(token),
                                    json={"template": {"name": "nope"}})  # fmt: skip
        assert "no mail template" in (await missing.json())["errors"]["template"]
    async with store.session() as session:
        queued = (await session.scalars(select(Email))).all()
    assert [e.subject for e in queued] == ["王芳，您好"]


async def test_without_an_outbox_mail_calls_say_so(store: Store) -> None:
    token, _, _ = await _setup(store)
    async with TestClient(TestServer(create_app(store))) as client:
        resp = await client.post("/api/v1/mail", json={"to": ["a@b.cn"]}, headers=_auth(token))
        assert resp.status == 503 and "from_address" in (await resp.json())["error"]
