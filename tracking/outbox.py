"""The shared outbox: mail to send is a row first, then OutboxSender hands it to the relay.

``queue_mail`` writes the email, its recipients and links, the outbox entry and
the activity on every record it concerns in one transaction, so a mail the
CRM says was sent exists.  ``OutboxSender`` delivers each recipient its own
copy (same Message-ID, own tracking token) through the configured relay:

- a recipient is marked ``sending`` (committed) before its copy is handed
  over and ``sent`` after the relay's 250, so a crash in between is seen at
  the next start; such a copy is sent once more at most (the relay may or
  may not have taken it), never a third time;
- a 4xx answer or a connection failure leaves the recipient queued and the
  entry retries with exponential backoff; a 5xx answer fails the recipient
  with the server's words on the record;
- bulk mail is never sent to an address that opted out or bounced.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import RecordRef, log_activity
from store.base import utcnow
from store.db import Store
from store.documents import live_documents
from store.errors import AuthError, ValidationError
from store.identity import normalise_email
from store.models import (
    ActivityKind,
    Attachment,
    Direction,
    Email,
    EmailIdentity,
    EmailKind,
    EmailThread,
    MailOptOut,
    OutboxEntry,
    SentRecipient,
    TrackedLink,
)
from store.service import ServiceStatus
from tracking.compose import (
    Attached,
    Sender,
    build_message,
    links_of,
    new_message_id,
    tracked_html,
)
from tracking.sent import record_sent
from tracking.tokens import TokenSigner

log = logging.getLogger(__name__)
OUTBOX_QUEUED = "OutboxQueued"
POLL_S = 5.0
# What relays commonly take for one message, attachments included (before base64).
MAX_ATTACHMENT_BYTES = 20 * 1024 * 1024
BACKOFF_FIRST_S = 30.0
BACKOFF_MAX_S = 3600.0
MAX_ATTEMPTS = 12  # about half a day of retries
PERSON_TYPES = ("lead", "contact", "account")
INTERRUPTED_TWICE = (
    "interrupted twice while being handed to the relay; not sent again (it may have arrived)"
)


@dataclass
class Draft:
    """A mail to send, as a user or a workflow writes it."""

    to: Sequence[str]
    subject: str
    text: str
    html: str | None = None
    cc: Sequence[str] = ()
    bcc: Sequence[str] = ()
    records: Sequence[RecordRef] = ()
    in_reply_to: str | None = None
    bulk: bool = False
    # Documents (``store.documents``) to attach, by id: a quote's PDF, a price list.
    documents: Sequence[int] = ()


@dataclass(frozen=True)
class RelaySettings:
    host: str
    port: int = 587
    security: str = "starttls"  # starttls | tls | plain
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    # A private CA to trust for the relay's certificate (an in-house relay), else the system's.
    ca_file: str | None = None


def _addresses(draft: Draft) -> tuple[list[tuple[str, str]], dict[str, str]]:
    recipients, errors = [], {}
    for role, group in (("to", draft.to), ("cc", draft.cc), ("bcc", draft.bcc)):
        for raw in group:
            address = normalise_email(raw)
            if address is None:
                errors[role] = f"not an email address: {raw!r}"
            else:
                recipients.append((role, address))
    if not recipients and "to" not in errors:
        errors["to"] = "a mail needs at least one recipient"
    if not draft.subject.strip():
        errors["subject"] = "a mail needs a subject"
    return recipients, errors


async def queue_mail(
    store: Store, draft: Draft, sender: Sender, *, user_id: int | None = None
) -> int:
    """Queue ``draft`` in the outbox; returns the email's id.  Bad input: ``ValidationError``."""
    recipients, errors = _addresses(draft)
    if errors:
        raise ValidationError(errors)
    message_id = new_message_id(sender.address)
    async with store.session() as session, session.begin():
        thread_id = await _thread_of(session, draft)
        if thread_id is None:
            thread = EmailThread(subject=draft.subject[:998])
            session.add(thread)
            await session.flush()
            thread_id = thread.id
        email = Email(
            message_id=message_id, in_reply_to=draft.in_reply_to,
            references=[draft.in_reply_to] if draft.in_reply_to else [], thread_id=thread_id,
            direction=Direction.OUTBOUND, kind=EmailKind.NORMAL,
            from_address=normalise_email(sender.address), from_name=sender.name or None,
            to=[{"name": "", "address": a} for r, a in recipients if r == "to"],
            cc=[{"name": "", "address": a} for r, a in recipients if r == "cc"],
            bcc=[{"name": "", "address": a} for r, a in recipients if r == "bcc"],
            reply_to=[{"name": "", "address": sender.reply_to}] if sender.reply_to else [],
            subject=draft.subject, text_body=draft.text, html_body=draft.html,
        )  # fmt: skip
        session.add(email)
        await session.flush()
        attached = await live_documents(session, draft.documents)
        if sum(d.size for d in attached) > MAX_ATTACHMENT_BYTES:
            raise ValidationError({"documents": "together larger than the relay takes (20 MB)"})
        session.add_all(
            Attachment(email_id=email.id, filename=d.filename, content_type=d.content_type,
                       size=d.size, blob_sha256=d.blob_sha256)
            for d in attached
        )  # fmt: skip
        await record_sent(session, email.id, recipients, links_of(draft.html))
        session.add(OutboxEntry(email_id=email.id, bulk=draft.bulk, queued_by_id=user_id))
        records = list(dict.fromkeys([*draft.records, *await _owners(session, recipients)]))
        if records:
            await log_activity(
                session, kind=ActivityKind.EMAIL, subject=draft.subject[:500],
                body=draft.text[:2000], records=records, email_id=email.id, owner_id=user_id,
            )  # fmt: skip
    await store.bus.publish(OUTBOX_QUEUED, email_id=email.id)
    return email.id


async def _thread_of(session: AsyncSession, draft: Draft) -> int | None:
    if not draft.in_reply_to:
        return None
    return await session.scalar(
        select(Email.thread_id).where(
            Email.message_id == draft.in_reply_to, Email.thread_id.is_not(None)
        )
    )


async def _owners(session: AsyncSession, recipients: list[tuple[str, str]]) -> list[RecordRef]:
    rows = await session.execute(
        select(EmailIdentity.record_type, EmailIdentity.record_id)
        .where(
            EmailIdentity.address.in_([a for _, a in recipients]),
            EmailIdentity.record_type.in_(PERSON_TYPES),
        )
        .order_by(EmailIdentity.id)
    )
    return [(record_type, record_id) for record_type, record_id in rows]


class _Uncertain(Exception):
    """The connection broke while a copy was being handed over: it may have been taken."""


class OutboxSender:
    name = "outbox"

    def __init__(
        self, store: Store, relay: RelaySettings, sender: Sender, signer: TokenSigner,
        base_url: str, poll_s: float = POLL_S,
    ) -> None:  # fmt: skip
        self.store = store
        self.relay = relay
        self.sender = sender
        self.signer = signer
        self.base_url = base_url.rstrip("/")
        self.poll_s = poll_s

    async def run(self, status: ServiceStatus) -> None:
        async with self.store.bus.subscribe(OUTBOX_QUEUED, lossy=True) as queued:
            status.ready(f"relay {self.relay.host}:{self.relay.port}")
            while True:
                await self.deliver_due()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queued.get(), self.poll_s)
                    queued.drain()

    async def deliver_due(self, now: dt.datetime | None = None) -> int:
        """Deliver every entry that is due; returns how many were worked on."""
        async with self.store.session() as session:
            due = list(
                await session.scalars(
                    select(OutboxEntry.id)
                    .where(
                        OutboxEntry.state == "queued",
                        OutboxEntry.next_attempt_at <= (now or utcnow()),
                    )
                    .order_by(OutboxEntry.id)
                    .limit(100)
                )
            )
        for entry_id in due:
            await self.deliver(entry_id)
        return len(due)

    async def deliver(self, entry_id: int) -> None:
        async with self.store.session() as session:
            entry = await session.get(OutboxEntry, entry_id)
            if entry is None or entry.state != "queued":
                return
            email = await session.get(Email, entry.email_id)
            assert email is not None
            recipients = list(
                await session.scalars(
                    select(SentRecipient)
                    .where(
                        SentRecipient.email_id == email.id,
                        SentRecipient.delivery.in_(["queued", "sending"]),
                    )
                    .order_by(SentRecipient.id)
                )
            )
            links = list(
                await session.scalars(
                    select(TrackedLink.url)
                    .where(TrackedLink.email_id == email.id)
                    .order_by(TrackedLink.position)
                )
            )
            blocked = (
                await self._blocked(session, [r.address for r in recipients])
                if entry.bulk
                else set()
            )
            files = list(
                await session.scalars(
                    select(Attachment)
                    .where(Attachment.email_id == email.id)
                    .order_by(Attachment.id)
                )
            )
        attachments = [
            Attached(f.filename, f.content_type, await self.store.blobs.read(f.blob_sha256))
            for f in files
        ]
        error: str | None = None
        connection: smtplib.SMTP | None = None
        try:
            for recipient in recipients:
                if recipient.address in blocked:
                    await self._mark(
                        recipient.id, "skipped", "opted out or undeliverable: bulk mail not sent"
                    )
                    continue
                if recipient.delivery == "sending" and recipient.send_attempts >= 2:
                    await self._mark(recipient.id, "failed", INTERRUPTED_TWICE)
                    continue
                if connection is None:  # before "sending": a relay that is down took nothing
                    connection = await asyncio.to_thread(self._connect)
                await self._mark(recipient.id, "sending", None, attempt=True)
                raw = self._copy(email, recipient, links, entry.bulk, attachments)
                try:
                    await asyncio.to_thread(self._send, connection, recipient.address, raw)
                except _Uncertain as err:
                    error = str(err)
                    connection = None
                    break  # it stays "sending": one more attempt at most
                except smtplib.SMTPResponseException as err:
                    reason = f"{err.smtp_code} {_text(err.smtp_error)}"
                    if 500 <= err.smtp_code < 600:
                        await self._mark(recipient.id, "failed", reason)
                    else:
                        await self._mark(recipient.id, "queued", reason)
                        error = reason
                else:
                    await self._mark(recipient.id, "sent", None)
        except (OSError, smtplib.SMTPException) as err:
            error = f"relay {self.relay.host}:{self.relay.port}: {type(err).__name__}: {err}"
        finally:
            if connection is not None:
                with contextlib.suppress(OSError, smtplib.SMTPException):
                    await asyncio.to_thread(connection.quit)
        await self._settle(entry_id, error)

    def _copy(
        self, email: Email, recipient: SentRecipient, links: list[str], bulk: bool,
        attachments: Sequence[Attached] = (),
    ) -> bytes:  # fmt: skip
        token = self.signer.sign(recipient.id)
        html = (
            tracked_html(email.html_body, self.base_url, token, links) if email.html_body else None
        )
        message = build_message(
            sender=self.sender, message_id=email.message_id or new_message_id(self.sender.address),
            to=[a["address"] for a in email.to], cc=[a["address"] for a in email.cc],
            subject=email.subject, text=email.text_body, html=html, in_reply_to=email.in_reply_to,
            unsubscribe_url=f"{self.base_url}/u/{token}" if bulk else None,
            attachments=attachments,
        )  # fmt: skip
        return message.as_bytes()

    def _connect(self) -> smtplib.SMTP:
        relay = self.relay
        context = ssl.create_default_context(cafile=relay.ca_file)
        connection: smtplib.SMTP
        if relay.security == "tls":
            connection = smtplib.SMTP_SSL(
                relay.host, relay.port, timeout=relay.timeout_s, context=context
            )
        else:
            connection = smtplib.SMTP(relay.host, relay.port, timeout=relay.timeout_s)
            if relay.security == "starttls":
                connection.starttls(context=context)
        if relay.username:
            try:
                connection.login(relay.username, relay.password or "")
            except smtplib.SMTPAuthenticationError as err:
                with contextlib.suppress(OSError, smtplib.SMTPException):
                    connection.quit()
                # Retrying cannot help: stop the sender and show it (the mail stays queued).
                raise AuthError(
                    f"relay {relay.host}:{relay.port} refused the login of {relay.username!r}: "
                    f"{err.smtp_code} {_text(err.smtp_error)}"
                ) from err
        return connection

    def _send(self, connection: smtplib.SMTP, address: str, raw: bytes) -> None:
        try:
            refused = connection.sendmail(self.sender.address, [address], raw)
        except smtplib.SMTPRecipientsRefused as err:
            code, text = err.recipients[address]
            raise smtplib.SMTPResponseException(code, text) from err
        except smtplib.SMTPResponseException:
            raise  # the relay answered: it did not take the mail
        except (smtplib.SMTPServerDisconnected, OSError) as err:  # SMTP errors are OSErrors too
            raise _Uncertain(f"the relay went away while taking the mail: {err}") from err
        if refused:
            code, text = refused[address]
            raise smtplib.SMTPResponseException(code, text)

    async def _blocked(self, session: AsyncSession, addresses: list[str]) -> set[str]:
        opted = await session.scalars(
            select(MailOptOut.address).where(MailOptOut.address.in_(addresses))
        )
        bounced = await session.scalars(
            select(EmailIdentity.address).where(
                EmailIdentity.address.in_(addresses), EmailIdentity.undeliverable.is_(True)
            )
        )
        return set(opted) | set(bounced)

    async def _mark(
        self, recipient_id: int, delivery: str, error: str | None, attempt: bool = False
    ) -> None:
        values: dict[str, object] = {"delivery": delivery, "delivery_error": error}
        if attempt:
            values["send_attempts"] = SentRecipient.send_attempts + 1
        if delivery == "sent":
            values["delivered_at"] = utcnow()
        async with self.store.session() as session, session.begin():
            await session.execute(
                update(SentRecipient).where(SentRecipient.id == recipient_id).values(**values)
            )

    async def _settle(self, entry_id: int, error: str | None) -> None:
        """After an attempt: done, failed, or queued again with backoff."""
        now = utcnow()
        async with self.store.session() as session, session.begin():
            entry = await session.get(OutboxEntry, entry_id)
            assert entry is not None
            states = list(
                await session.scalars(
                    select(SentRecipient.delivery).where(SentRecipient.email_id == entry.email_id)
                )
            )
            entry.attempts += 1
            entry.last_error = error
            open_ = [s for s in states if s in ("queued", "sending")]
            if open_ and entry.attempts >= MAX_ATTEMPTS:
                await session.execute(
                    update(SentRecipient)
                    .where(
                        SentRecipient.email_id == entry.email_id,
                        SentRecipient.delivery.in_(["queued", "sending"]),
                    )
                    .values(
                        delivery="failed",
                        delivery_error=f"gave up after {entry.attempts} attempts: {error}",
                    )
                )
                open_ = []
            if open_:
                delay = min(BACKOFF_FIRST_S * 2 ** (entry.attempts - 1), BACKOFF_MAX_S)
                entry.next_attempt_at = now + dt.timedelta(seconds=delay)
                log.warning(
                    "outbox mail %s: will try again in %.0f s: %s", entry.email_id, delay, error
                )
                return
            delivered = "sent" in states
            entry.state = "sent" if delivered else "failed"
            entry.finished_at = now
            if delivered:
                await session.execute(
                    update(Email).where(Email.id == entry.email_id).values(sent_at=now)
                )


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
