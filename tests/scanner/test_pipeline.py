"""The mail-in pipeline on both engines: leads, threads, matching, rules, quarantine."""

from __future__ import annotations

import base64

from sqlalchemy import func, select

from scanner.pipeline import MailPipeline, PipelineSettings
from store.activities import timeline
from store.db import Store
from store.identity import index_record
from store.journal import journal_inbound
from store.models import (
    Attachment,
    Contact,
    Email,
    EmailIdentity,
    EmailLocation,
    InboundJournal,
    JournalState,
    Lead,
    MailRule,
)
from store.tags import tags_of
from store.users import create_user


def mail(
    sender: str = "张伟 <zhang.wei@huaxin-tech.cn>",
    subject: str = "询价",
    extra: str = "",
    body: str = "请报价",
    message_id: str = "m1@huaxin-tech.cn",
) -> bytes:
    encoded = base64.b64encode(subject.encode()).decode()
    name, _, address = sender.rpartition(" ")
    name_word = f"=?utf-8?B?{base64.b64encode(name.encode()).decode()}?= " if name else ""
    return (
        f"From: {name_word}{address}\r\nTo: sales@rapport.test\r\nSubject: =?utf-8?B?{encoded}?=\r\n"
        f"Message-ID: <{message_id}>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0800\r\n{extra}"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode() + body.encode()


async def ingest(
    store: Store, raw: bytes, key: str, location: dict[str, object] | None = None
) -> int:
    receipt = await journal_inbound(store, key, raw)
    if location:
        async with store.session() as session, session.begin():
            row = await session.get(InboundJournal, receipt.journal_id)
            assert row is not None
            row.location = location
    return receipt.journal_id


async def count(store: Store, model: type) -> int:
    async with store.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_unknown_sender_becomes_a_lead_with_history(store: Store) -> None:
    pipeline = MailPipeline(store)
    async with store.bus.subscribe("LeadCreated", "EmailReceived") as events:
        outcome = await pipeline.process(await ingest(store, mail(), "smtp:1"))
        assert outcome.state == "processed" and len(outcome.lead_ids) == 1
        assert {(await events.get()).type for _ in range(2)} == {"LeadCreated", "EmailReceived"}
    async with store.session() as session:
        lead = await session.get(Lead, outcome.lead_ids[0])
        assert lead is not None
        assert (lead.last_name, lead.first_name, lead.company, lead.email, lead.source) == (
            "张",
            "伟",
            "Huaxin-tech",
            "zhang.wei@huaxin-tech.cn",
            "email",
        )
        history = await timeline(session, "lead", lead.id)
        assert [a.subject for a in history] == ["询价"]
        email = await session.get(Email, outcome.email_id)
        assert email is not None and email.kind.value == "normal" and email.text_body == "请报价"

    # The same sender again: no second lead, the mail joins the lead's history.
    again = await pipeline.process(
        await ingest(store, mail(subject="再问", message_id="m2@x"), "smtp:2")
    )
    assert again.lead_ids == []
    assert await count(store, Lead) == 1
    async with store.session() as session:
        assert len(await timeline(session, "lead", outcome.lead_ids[0])) == 2


async def test_reply_joins_its_thread_not_a_new_lead(store: Store) -> None:
    pipeline = MailPipeline(store)
    first = await pipeline.process(await ingest(store, mail(), "smtp:1"))
    # A colleague of the customer answers in the thread from another address.
    reply = mail(
        sender="Li Na <li.na@partner.example>",
        subject="Re: 询价",
        message_id="m3@partner.example",
        extra="In-Reply-To: <m1@huaxin-tech.cn>\r\nReferences: <m1@huaxin-tech.cn>\r\n",
    )
    outcome = await pipeline.process(await ingest(store, reply, "smtp:2"))
    assert outcome.lead_ids == []
    async with store.session() as session:
        one = await session.get(Email, first.email_id)
        two = await session.get(Email, outcome.email_id)
        assert one is not None and two is not None and one.thread_id == two.thread_id
        assert len(await timeline(session, "lead", first.lead_ids[0])) == 2


async def test_known_contact_is_linked_and_auto_replies_make_no_lead(store: Store) -> None:
    async with store.session() as session, session.begin():
        contact = Contact(first_name="Na", last_name="Li", email="li.na@customer.cn")
        session.add(contact)
        await index_record(session, contact)
        contact_id = contact.id
    pipeline = MailPipeline(store)
    linked = await pipeline.process(
        await ingest(store, mail(sender="Li <LI.NA@customer.cn>"), "smtp:1")
    )
    assert linked.lead_ids == []
    away = mail(
        sender="Wang <wang@other.cn>",
        subject="自动回复: 询价",
        message_id="m9@o",
        extra="Auto-Submitted: auto-replied\r\n",
    )
    quiet = await pipeline.process(await ingest(store, away, "smtp:2"))
    assert quiet.lead_ids == [] and await count(store, Lead) == 0
    async with store.session() as session:
        assert [a.email_id for a in await timeline(session, "contact", contact_id)] == [
            linked.email_id
        ]
        email = await session.get(Email, quiet.email_id)
        assert email is not None and email.kind.value == "auto_reply"


async def test_web_form_notification_belongs_to_reply_to(store: Store) -> None:
    form = mail(
        sender="Website <no-reply@rapport-customer.cn>",
        subject="New enquiry",
        extra="Reply-To: =?utf-8?B?5p2O5piO?= <liming@qq.com>\r\n",
    )
    outcome = await MailPipeline(store).process(await ingest(store, form, "smtp:1"))
    async with store.session() as session:
        lead = await session.get(Lead, outcome.lead_ids[0])
        assert lead is not None
        assert (lead.email, lead.last_name, lead.first_name, lead.company) == (
            "liming@qq.com",
            "李",
            "明",
            None,
        )


async def test_staff_mail_is_outbound_and_bounces_mark_addresses(store: Store) -> None:
    async with store.session() as session, session.begin():
        await create_user(session, "li", "password-123", email="li@rapport.test")
    pipeline = MailPipeline(store)
    sent = mail(sender="Li <li@rapport.test>", message_id="sent-1@rapport.test").replace(
        b"To: sales@rapport.test", b"To: gone@customer.cn"
    )
    out = await pipeline.process(
        await ingest(store, sent, "imap:sent", {"mailbox": "sales", "folder": "Sent"})
    )
    assert out.lead_ids == []
    dsn = (
        b"From: MAILER-DAEMON@mx.customer.cn\r\nTo: li@rapport.test\r\nSubject: Undelivered Mail\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=R\r\n\r\n"
        b"--R\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--R\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx\r\n\r\nFinal-Recipient: rfc822; gone@customer.cn\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"--R\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <sent-1@rapport.test>\r\nTo: gone@customer.cn\r\n\r\n--R--\r\n"
    )
    async with store.session() as session, session.begin():
        lead = Lead(last_name="Gone", email="gone@customer.cn")
        session.add(lead)
        await index_record(session, lead)
    bounce = await pipeline.process(await ingest(store, dsn, "smtp:9"))
    assert bounce.lead_ids == []
    async with store.session() as session:
        original = await session.get(Email, out.email_id)
        assert original is not None and original.direction.value == "outbound"
        assert original.bounced_at is not None
        flags = await session.scalars(
            select(EmailIdentity.undeliverable).where(EmailIdentity.address == "gone@customer.cn")
        )
        assert list(flags) == [True]


async def test_one_mail_in_two_folders_is_one_email_with_two_locations(store: Store) -> None:
    pipeline = MailPipeline(store, PipelineSettings(lead_mailboxes=frozenset({"sales"})))
    raw = mail()
    a = await pipeline.process(
        await ingest(
            store,
            raw,
            "imap:a",
            {"mailbox": "sales", "folder": "INBOX", "uidvalidity": 7, "uid": 1},
        )
    )
    b = await pipeline.process(
        await ingest(
            store,
            raw,
            "imap:b",
            {"mailbox": "sales", "folder": "[Gmail]/All Mail", "uidvalidity": 9, "uid": 4},
        )
    )
    # A CC'd colleague's copy differs in its Received headers but is the same mail.
    copy = b"Received: from mx by box2\r\n" + raw
    c = await pipeline.process(
        await ingest(
            store, copy, "imap:c", {"mailbox": "li", "folder": "INBOX", "uidvalidity": 1, "uid": 1}
        )
    )
    assert a.email_id == b.email_id == c.email_id and b.duplicate and c.duplicate
    assert await count(store, Email) == 1 and await count(store, EmailLocation) == 3
    assert await count(store, Lead) == 1


async def test_rules_skip_tag_assign_and_create(store: Store) -> None:
    async with store.session() as session, session.begin():
        users = [await create_user(session, f"agent{n}", "password-123") for n in range(2)]
        session.add_all(
            [
                MailRule(
                    name="newsletters",
                    position=1,
                    conditions=[{"field": "subject", "op": "contains", "value": "newsletter"}],
                    actions=[{"type": "skip"}],
                ),
                MailRule(
                    name="vip",
                    position=2,
                    match="any",
                    conditions=[
                        {"field": "from", "op": "domain", "value": "bigcorp.cn"},
                        {"field": "header:X-Priority", "op": "equals", "value": "1"},
                    ],
                    actions=[
                        {"type": "tag", "tag": "VIP"},
                        {
                            "type": "assign",
                            "mode": "round_robin",
                            "user_ids": [u.id for u in users],
                        },
                    ],
                ),
                MailRule(
                    name="bad regex",
                    position=0,
                    conditions=[{"field": "subject", "op": "regex", "value": "(["}],
                    actions=[{"type": "skip"}],
                ),
            ]
        )
    pipeline = MailPipeline(store)
    skipped = await pipeline.process(
        await ingest(store, mail(sender="x@spam.cn", subject="Our newsletter"), "smtp:1")
    )
    assert skipped.lead_ids == [] and skipped.state == "processed"
    owners = []
    for n in range(3):
        outcome = await pipeline.process(
            await ingest(store, mail(sender=f"p{n}@bigcorp.cn", message_id=f"v{n}@b"), f"smtp:v{n}")
        )
        async with store.session() as session:
            lead = await session.get(Lead, outcome.lead_ids[0])
            assert lead is not None
            owners.append(lead.owner_id)
            assert await tags_of(session, "lead", lead.id) == ["VIP"]
    assert owners == [users[0].id, users[1].id, users[0].id]


async def test_failures_are_quarantined_and_replayable(store: Store) -> None:
    pipeline = MailPipeline(store)
    journal_id = await ingest(store, b"   \r\n", "smtp:empty")
    outcome = await pipeline.process(journal_id)
    assert outcome.state == "quarantined" and "empty message" in (outcome.error or "")
    async with store.session() as session:
        row = await session.get(InboundJournal, journal_id)
        assert row is not None and row.state == JournalState.QUARANTINED and row.attempts == 1
    # The next message is not blocked by it.
    assert (await pipeline.process(await ingest(store, mail(), "smtp:ok"))).state == "processed"
    again = await pipeline.replay(journal_id)
    assert again.state == "quarantined"
    async with store.session() as session:
        row = await session.get(InboundJournal, journal_id)
        assert row is not None and row.attempts == 2


async def test_attachments_are_stored_once_by_content(store: Store) -> None:
    raw = (
        b"From: a@b.cn\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n--B\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename=q.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQ=\r\n--B--\r\n"
    )
    outcome = await MailPipeline(store, PipelineSettings()).process(
        await ingest(store, raw, "smtp:1")
    )
    async with store.session() as session:
        rows = (
            await session.scalars(select(Attachment).where(Attachment.email_id == outcome.email_id))
        ).all()
    assert [(r.filename, r.size) for r in rows] == [("q.pdf", 8)]
    assert await store.blobs.read(rows[0].blob_sha256) == b"%PDF-1.4"
