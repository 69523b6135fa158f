"""SmtpIngress over a real SMTP conversation with smtplib on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from scanner.smtp import SmtpIngress, SmtpIngressSettings, accepts
from store.db import Store
from store.models import InboundJournal, JournalState
from tests.peers.local import WatchedStatus, free_port
from tests.peers.tls import self_signed

MESSAGE = (
    b"From: =?gb2312?B?1cXI/Q==?= <zhang@example.cn>\r\n"
    b"To: sales@rapport.test\r\n"
    b"Subject: hello\r\n"
    b"Message-ID: <1@example.cn>\r\n\r\n"
    b"body\r\n"
)


@contextlib.asynccontextmanager
async def running(store: Store, **overrides: object) -> AsyncIterator[int]:
    port = free_port()
    settings = SmtpIngressSettings(port=port, **overrides)  # type: ignore[arg-type]
    status = WatchedStatus()
    task = asyncio.create_task(SmtpIngress(store, settings).run(status), name="smtp-ingress-test")
    try:
        await asyncio.wait_for(status.is_ready.wait(), 5)
        yield port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _send(port: int, rcpts: list[str], data: bytes) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        return client.sendmail("zhang@example.cn", rcpts, data)


def test_accepts() -> None:
    assert accepts("x@anything.example", [])
    assert accepts("<Sales@Rapport.TEST>", ["rapport.test"])
    assert accepts("info@other.test", ["rapport.test", "info@other.test"])
    assert not accepts("sales@evil.test", ["rapport.test"])


async def test_message_is_journalled_before_250(store: Store) -> None:
    async with running(store, domains=("rapport.test",)) as port:
        refused = await asyncio.to_thread(_send, port, ["sales@rapport.test"], MESSAGE)
    assert refused == {}
    async with store.session() as session:
        rows = (await session.scalars(select(InboundJournal))).all()
    assert len(rows) == 1
    assert rows[0].source_key.startswith("smtp:") and rows[0].state == JournalState.PENDING
    assert await store.blobs.read(rows[0].blob_sha256) == MESSAGE


async def test_unknown_domain_is_refused_with_550(store: Store) -> None:
    async with running(store, domains=("rapport.test",)) as port:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as err:
            await asyncio.to_thread(_send, port, ["someone@elsewhere.test"], MESSAGE)
    code, reply = err.value.recipients["someone@elsewhere.test"]
    assert code == 550 and reply.startswith(b"5.7.1")


def _send_without_size(port: int, data: bytes) -> tuple[int, bytes]:
    """MAIL FROM without the SIZE parameter, so the limit is met only at DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        assert client.mail("zhang@example.cn")[0] == 250
        assert client.rcpt("a@rapport.test")[0] == 250
        return client.data(data)


async def test_oversize_message_is_refused_with_552(store: Store) -> None:
    big = MESSAGE + (b"x" * 70 + b"\r\n") * 60
    async with running(store, max_message_size=1024) as port:
        # A client that declares SIZE is refused at MAIL FROM (RFC 1870)...
        with pytest.raises(smtplib.SMTPSenderRefused) as err:
            await asyncio.to_thread(_send, port, ["a@rapport.test"], big)
        assert err.value.smtp_code == 552
        # ... one that does not, at the end of DATA.
        code, _ = await asyncio.to_thread(_send_without_size, port, big)
        assert code == 552
    async with store.session() as session:
        assert (await session.scalars(select(InboundJournal))).all() == []


async def test_store_failure_answers_451_and_keeps_nothing_half_done(store: Store) -> None:
    async with running(store) as port:
        await store.engine.dispose()
        async with store.engine.begin() as conn:  # break the store: the journal table is gone
            await conn.exec_driver_sql("ALTER TABLE inbound_journal RENAME TO inbound_journal_away")
        try:
            with pytest.raises(smtplib.SMTPDataError) as err:
                await asyncio.to_thread(_send, port, ["a@rapport.test"], MESSAGE)
        finally:
            async with store.engine.begin() as conn:
                await conn.exec_driver_sql(
                    "ALTER TABLE inbound_journal_away RENAME TO inbound_journal"
                )
    assert err.value.smtp_code == 451 and err.value.smtp_error.startswith(b"4.3.0")


async def test_mail_over_smtp_becomes_a_lead_quickly_and_lmtp_works(store: Store) -> None:
    import time

    from scanner.pipeline import MailPipeline
    from scanner.processor import MailProcessor
    from store.models import Lead

    processor = asyncio.create_task(
        MailProcessor(MailPipeline(store)).run(WatchedStatus()), name="processor"
    )
    try:
        for lmtp in (False, True):
            async with running(store, lmtp=lmtp) as port:
                sender = f"buyer-{int(lmtp)}@factory.cn"
                raw = f"From: Buyer <{sender}>\r\nTo: sales@rapport.test\r\nSubject: RFQ\r\n\r\nhi\r\n".encode()

                def deliver(lmtp: bool, sender: str, raw: bytes, port: int) -> None:
                    client = (
                        smtplib.LMTP("127.0.0.1", port) if lmtp else smtplib.SMTP("127.0.0.1", port)
                    )
                    with client:
                        assert client.sendmail(sender, ["sales@rapport.test"], raw) == {}

                await asyncio.to_thread(deliver, lmtp, sender, raw, port)
                began = time.monotonic()
                while time.monotonic() - began < 5:
                    async with store.session() as session:
                        if await session.scalar(select(Lead.id).where(Lead.email == sender)):
                            break
                    await asyncio.sleep(0.01)
                else:
                    pytest.fail(f"no lead from {sender} within 5 s (lmtp={lmtp})")
                assert time.monotonic() - began < 1.0
    finally:
        processor.cancel()
        await asyncio.gather(processor, return_exceptions=True)


async def test_starttls_and_auth_are_required_when_configured(store: Store, tmp_path: Path) -> None:
    import ssl

    cert, key = self_signed(tmp_path)
    options = {"tls_cert": cert, "tls_key": key, "require_tls": True,
               "auth_username": "relay", "auth_password": "s3cret-pass"}  # fmt: skip
    client_tls = ssl.create_default_context()
    client_tls.check_hostname = False
    client_tls.verify_mode = ssl.CERT_NONE

    def transcript(port: int, password: str | None, tls: bool) -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo()
            if tls:
                client.starttls(context=client_tls)
                client.ehlo()
            if password is not None:
                try:
                    client.login("relay", password)
                except smtplib.SMTPAuthenticationError as err:
                    return err.smtp_code, err.smtp_error
            code, reply = client.mail("a@example.cn")
            if code != 250:
                return code, reply
            client.rcpt("sales@rapport.test")
            return client.data(MESSAGE)

    async with running(store, **options) as port:
        assert (await asyncio.to_thread(transcript, port, None, False))[0] == 530  # STARTTLS first
        assert (await asyncio.to_thread(transcript, port, None, True))[0] == 530  # then AUTH
        assert (await asyncio.to_thread(transcript, port, "wrong", True))[0] == 535
        assert (await asyncio.to_thread(transcript, port, "s3cret-pass", True))[0] == 250
    async with store.session() as session:
        assert len((await session.scalars(select(InboundJournal))).all()) == 1
