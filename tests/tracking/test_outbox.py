"""The outbox against a real SMTP relay (aiosmtpd on loopback): delivery, retries, failures, crashes."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import select

from scanner.pipeline import MailPipeline, PipelineSettings
from scanner.smtp import TlsSMTP
from store.activities import timeline
from store.base import utcnow
from store.db import Store
from store.documents import add_document, documents_of
from store.errors import AuthError, ValidationError
from store.identity import index_record
from store.models import Attachment, Contact, Email, MailOptOut, OutboxEntry, SentRecipient
from tests.peers.local import free_port
from tests.peers.tls import self_signed
from tests.scanner.test_pipeline import ingest
from tracking.compose import Sender
from tracking.outbox import INTERRUPTED_TWICE, Draft, OutboxSender, RelaySettings, queue_mail
from tracking.tokens import TokenSigner

BASE = "https://t.rapport.test"
SENDER = Sender("sales@rapport.test", "销售部", reply_to="zhang.wei@rapport.test")
SIGNER = TokenSigner([b"outbox-test-key-0123456789"])
HTML = '<html><body><p>您好，<a href="https://example.cn/quote?id=7&amp;v=2">报价单</a></p></body></html>'


class Relay:
    """An SMTP relay that takes mail, or answers what a test tells it to."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []
        self.data_answers: list[str] = []
        self.refuse: dict[str, str] = {}

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_answers:
            return self.data_answers.pop(0)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 OK"


@pytest.fixture
def relay() -> Iterator[tuple[Relay, int]]:
    handler = Relay()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def outbox(store: Store, port: int) -> OutboxSender:
    return OutboxSender(
        store, RelaySettings("127.0.0.1", port, security="plain"), SENDER, SIGNER, BASE
    )


async def contact(store: Store, address: str) -> int:
    async with store.session() as session, session.begin():
        person = Contact(first_name="芳", last_name="王", email=address)
        session.add(person)
        await session.flush()
        await index_record(session, person)
        return person.id


async def recipients(store: Store, email_id: int) -> dict[str, SentRecipient]:
    async with store.session() as session:
        rows = await session.scalars(
            select(SentRecipient).where(SentRecipient.email_id == email_id)
        )
        return {r.address: r for r in rows}


async def entry_of(store: Store, email_id: int) -> OutboxEntry:
    async with store.session() as session:
        entry = await session.scalar(select(OutboxEntry).where(OutboxEntry.email_id == email_id))
        assert entry is not None
        return entry


async def test_each_recipient_gets_the_same_mail_with_its_own_tracking(
    store: Store, relay: tuple[Relay, int]
) -> None:
    handler, port = relay
    contact_id = await contact(store, "wang.fang@jinlong.cn")
    email_id = await queue_mail(store, Draft(to=["Wang.Fang@JinLong.cn"], cc=["li@jinlong.cn"],
                                             subject="报价单", text="请见报价。", html=HTML), SENDER)  # fmt: skip
    assert await outbox(store, port).deliver_due() == 1

    assert sorted(rcpt for rcpts, _ in handler.messages for rcpt in rcpts) == [
        "li@jinlong.cn", "wang.fang@jinlong.cn"
    ]  # fmt: skip
    ids = {m["Message-ID"] for _, m in handler.messages}
    assert len(ids) == 1  # one mail, so replies thread back to it
    sent = await recipients(store, email_id)
    for rcpts, message in handler.messages:
        assert message["Subject"] == "报价单" and message["Reply-To"] == "zhang.wei@rapport.test"
        assert "wang.fang@jinlong.cn" in message["To"] and "li@jinlong.cn" in message["Cc"]
        html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
        token = SIGNER.sign(sent[rcpts[0]].id)
        assert f"{BASE}/c/{token}/0" in html and f"{BASE}/o/{token}.gif" in html
        assert "example.cn" not in html  # every recorded link goes through the listener
        assert "请见报价" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "List-Unsubscribe" not in message  # not bulk
    assert {r.delivery for r in sent.values()} == {"sent"}
    entry = await entry_of(store, email_id)
    assert entry.state == "sent" and entry.attempts == 1
    async with store.session() as session:
        stored = await session.get(Email, email_id)
        assert stored is not None and stored.sent_at is not None
        assert f"<{stored.message_id}>" in ids and stored.message_id.endswith("@rapport.test")  # type: ignore[union-attr]
        history = await timeline(session, "contact", contact_id)
    assert [a.email_id for a in history] == [email_id]


async def test_a_4xx_is_retried_later_and_then_delivered(
    store: Store, relay: tuple[Relay, int]
) -> None:
    handler, port = relay
    handler.data_answers = ["451 4.3.0 mailbox busy, try later"]
    email_id = await queue_mail(store, Draft(to=["a@jinlong.cn"], subject="跟进", text="x"), SENDER)
    sender = outbox(store, port)
    await sender.deliver_due()
    entry = await entry_of(store, email_id)
    assert entry.state == "queued" and "451 4.3.0 mailbox busy" in (entry.last_error or "")
    assert entry.next_attempt_at > utcnow()
    assert await sender.deliver_due() == 0  # not due yet
    assert await sender.deliver_due(now=utcnow() + dt.timedelta(minutes=5)) == 1
    assert (await entry_of(store, email_id)).state == "sent" and len(handler.messages) == 1


async def test_a_5xx_fails_that_recipient_with_the_servers_reason(
    store: Store, relay: tuple[Relay, int]
) -> None:
    handler, port = relay
    handler.refuse["nobody@jinlong.cn"] = "550 5.1.1 <nobody@jinlong.cn>: no such user"
    email_id = await queue_mail(
        store, Draft(to=["nobody@jinlong.cn", "a@jinlong.cn"], subject="s", text="x"), SENDER
    )
    await outbox(store, port).deliver_due()
    sent = await recipients(store, email_id)
    assert sent["nobody@jinlong.cn"].delivery == "failed"
    assert sent["nobody@jinlong.cn"].delivery_error == "550 5.1.1 <nobody@jinlong.cn>: no such user"
    assert sent["a@jinlong.cn"].delivery == "sent"
    assert (await entry_of(store, email_id)).state == "sent"


async def test_a_crash_mid_send_resends_at_most_once(
    store: Store, relay: tuple[Relay, int]
) -> None:
    handler, port = relay
    email_id = await queue_mail(
        store, Draft(to=["once@jinlong.cn", "twice@jinlong.cn"], subject="s", text="x"), SENDER
    )
    async with store.session() as session, session.begin():
        # As a crash leaves them: one copy was being handed over once, one twice.
        for row in await session.scalars(
            select(SentRecipient).where(SentRecipient.email_id == email_id)
        ):
            row.delivery, row.send_attempts = "sending", 1 if row.address.startswith("once") else 2
    await outbox(store, port).deliver_due()
    sent = await recipients(store, email_id)
    assert sent["once@jinlong.cn"].delivery == "sent" and sent["once@jinlong.cn"].send_attempts == 2
    assert sent["twice@jinlong.cn"].delivery == "failed"
    assert sent["twice@jinlong.cn"].delivery_error == INTERRUPTED_TWICE
    assert [rcpts for rcpts, _ in handler.messages] == [["once@jinlong.cn"]]


async def test_a_relay_that_is_down_leaves_the_mail_queued(store: Store) -> None:
    email_id = await queue_mail(store, Draft(to=["a@jinlong.cn"], subject="s", text="x"), SENDER)
    await outbox(store, free_port()).deliver_due()
    entry = await entry_of(store, email_id)
    assert entry.state == "queued" and "ConnectionRefusedError" in (entry.last_error or "")
    assert (await recipients(store, email_id))["a@jinlong.cn"].delivery == "queued"


async def test_bulk_mail_skips_opt_outs_and_offers_one_click_unsubscribe(
    store: Store, relay: tuple[Relay, int]
) -> None:
    handler, port = relay
    async with store.session() as session, session.begin():
        session.add(MailOptOut(address="gone@jinlong.cn", reason="unsubscribed"))
    email_id = await queue_mail(
        store,
        Draft(to=["gone@jinlong.cn", "stay@jinlong.cn"], subject="新品", text="x", bulk=True),
        SENDER,
    )
    await outbox(store, port).deliver_due()
    sent = await recipients(store, email_id)
    assert (
        sent["gone@jinlong.cn"].delivery == "skipped" and sent["stay@jinlong.cn"].delivery == "sent"
    )
    ((rcpts, message),) = handler.messages
    assert rcpts == ["stay@jinlong.cn"]
    token = SIGNER.sign(sent["stay@jinlong.cn"].id)
    assert message["List-Unsubscribe"] == f"<{BASE}/u/{token}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_a_reply_to_a_sent_mail_joins_its_thread(
    store: Store, relay: tuple[Relay, int]
) -> None:
    handler, port = relay
    contact_id = await contact(store, "wang.fang@jinlong.cn")
    email_id = await queue_mail(
        store, Draft(to=["wang.fang@jinlong.cn"], subject="报价单", text="x"), SENDER
    )
    await outbox(store, port).deliver_due()
    message_id = handler.messages[0][1]["Message-ID"]
    reply = (
        f"From: wang.fang@jinlong.cn\r\nTo: sales@rapport.test\r\nSubject: Re: 报价单\r\n"
        f"Message-ID: <r1@jinlong.cn>\r\nIn-Reply-To: {message_id}\r\n\r\n好的".encode()
    )
    outcome = await MailPipeline(store, PipelineSettings()).process(
        await ingest(store, reply, "smtp:r1")
    )
    assert outcome.lead_ids == []
    async with store.session() as session:
        sent, answer = (
            await session.get(Email, email_id),
            await session.get(Email, outcome.email_id),
        )
        assert sent is not None and answer is not None and answer.thread_id == sent.thread_id
        history = await timeline(session, "contact", contact_id)
    assert [a.email_id for a in history] == [outcome.email_id, email_id]
    # The reply proves the mail was read, though no pixel was ever loaded.
    answered = (await recipients(store, email_id))["wang.fang@jinlong.cn"]
    assert answered.replied_at is not None and answered.first_human_open_at is not None


async def test_bad_input_is_refused_with_every_problem(store: Store) -> None:
    with pytest.raises(ValidationError) as refused:
        await queue_mail(store, Draft(to=["not an address"], subject=" ", text="x"), SENDER)
    assert set(refused.value.errors) == {"to", "subject"}


class TlsController(Controller):
    """aiosmtpd's own STARTTLS stalls on Python 3.11; the daemon's ingress class works."""

    def factory(self) -> TlsSMTP:
        return TlsSMTP(self.handler, **self.SMTP_kwargs)


@pytest.fixture
def tls_relay(tmp_path: Path) -> Iterator[tuple[Relay, int, str]]:
    """A relay that insists on STARTTLS and a login, as a real company relay does."""
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        good = isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"crm",
            b"relay-pass",
        )
        return AuthResult(success=good, handled=False)  # False: let the server answer 535

    handler, port = Relay(), free_port()
    controller = TlsController(handler, hostname="127.0.0.1", port=port, tls_context=context,
                            require_starttls=True, authenticator=authenticator, auth_required=True)  # fmt: skip
    controller.start()
    try:
        yield handler, port, cert
    finally:
        controller.stop()


async def test_starttls_and_login_and_a_refused_login_stops_the_sender(
    store: Store, tls_relay: tuple[Relay, int, str]
) -> None:
    handler, port, ca = tls_relay
    email_id = await queue_mail(store, Draft(to=["a@jinlong.cn"], subject="s", text="x"), SENDER)
    wrong = RelaySettings("127.0.0.1", port, "starttls", "crm", "not-the-password", ca_file=ca)
    with pytest.raises(AuthError, match="refused the login of 'crm'"):
        await OutboxSender(store, wrong, SENDER, SIGNER, BASE).deliver_due()
    assert (await entry_of(store, email_id)).state == "queued"  # nothing lost, nothing failed
    assert (await recipients(store, email_id))["a@jinlong.cn"].delivery == "queued"

    right = RelaySettings("127.0.0.1", port, "starttls", "crm", "relay-pass", ca_file=ca)
    await OutboxSender(store, right, SENDER, SIGNER, BASE).deliver_due()
    assert (await entry_of(store, email_id)).state == "sent" and len(handler.messages) == 1


async def test_a_records_documents_go_out_as_attachments(
    store: Store, relay: tuple[Relay, int]
) -> None:
    handler, port = relay
    contact_id = await contact(store, "wang.fang@jinlong.cn")
    pdf = b"%PDF-1.7\n" + bytes(range(256)) * 64
    async with store.session() as session, session.begin():
        quote = await add_document(session, store.blobs, ("contact", contact_id),
                                   "报价单 2026-11.pdf", pdf)  # fmt: skip
        sheet = await add_document(session, store.blobs, ("contact", contact_id),
                                   "C:\\Users\\销售\\价格表.xlsx", b"PK\x03\x04 sheet")  # fmt: skip
        listed = [d.filename for d in await documents_of(session, ("contact", contact_id))]
    assert sorted(listed) == ["价格表.xlsx", "报价单 2026-11.pdf"]  # a path is never kept
    draft = Draft(to=["wang.fang@jinlong.cn"], subject="报价单", text="附件是报价单。",
                  records=[("contact", contact_id)], documents=[quote.id, sheet.id])  # fmt: skip
    email_id = await queue_mail(store, draft, SENDER)
    assert await outbox(store, port).deliver_due() == 1
    ((_, message),) = handler.messages
    files = {part.get_filename(): part for part in message.iter_attachments()}
    assert set(files) == {"报价单 2026-11.pdf", "价格表.xlsx"}
    assert files["报价单 2026-11.pdf"].get_content() == pdf
    assert files["报价单 2026-11.pdf"].get_content_type() == "application/pdf"
    assert "附件是报价单" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    async with store.session() as session:
        stored = await session.get(Email, email_id)
        kept = list(
            await session.scalars(select(Attachment).where(Attachment.email_id == email_id))
        )
    assert stored is not None and {a.filename for a in kept} == set(files)

    # A document that is gone (or never was) refuses the mail, naming it.
    with pytest.raises(ValidationError) as refused:
        await queue_mail(store, Draft(to=["a@b.cn"], subject="x", text="y", documents=[9999]),
                         SENDER)  # fmt: skip
    assert "9999" in refused.value.errors["documents"]
