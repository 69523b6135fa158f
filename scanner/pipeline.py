"""The mail-in pipeline: journalled raw mail becomes an email, history and perhaps a lead.

One unit of work per message, the same for IMAP, SMTP and imports: parse (in a
thread), classify, then in ONE transaction thread, match, apply rules, create
the lead, write the email with its locations, attachments and activity, and
mark the journal entry processed.  Events are announced after the commit.  A
message that fails is quarantined with its error and never blocks the rest.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.classify import Classification, classify
from scanner.filing import file_mail
from scanner.parse import ParsedMail, parse_mail
from store.blobs import record_blob
from store.context import correlated
from store.db import Store
from store.errors import PermanentError
from store.models import Email, EmailLocation, InboundJournal, JournalState

log = logging.getLogger(__name__)

EMAIL_RECEIVED = "EmailReceived"
IMAP_ACTIONS_QUEUED = "ImapActionsQueued"
LEAD_CREATED = "LeadCreated"
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class PipelineSettings:
    # Mailboxes (configured names, "smtp", "import") whose unknown senders become leads.
    lead_mailboxes: frozenset[str] = frozenset({"smtp", "import"})
    # What bulk/list mail does: "history" (file it, no lead), "lead" (treat as normal), "skip".
    bulk_policy: str = "history"


@dataclass
class Outcome:
    journal_id: int
    state: str
    email_id: int | None = None
    lead_ids: list[int] = field(default_factory=list)
    duplicate: bool = False
    error: str | None = None


def location_of(journal: InboundJournal) -> tuple[str, str, int, int]:
    loc = journal.location or {}
    if loc:
        return (
            str(loc.get("mailbox", "")),
            str(loc.get("folder", "")),
            int(loc.get("uidvalidity", 0)),
            int(loc.get("uid", 0)),
        )
    # Without a recorded location (SMTP, imports) the journal id keeps locations unique.
    source, _, _rest = journal.source_key.partition(":")
    return source, "", 0, journal.id


async def _existing_email(session: AsyncSession, digest: str, mail: ParsedMail) -> Email | None:
    """The same mail seen before: same bytes, or same Message-ID from the same sender."""
    email = await session.scalar(select(Email).where(Email.raw_sha256 == digest))
    if email is not None or not mail.message_id:
        return email
    candidates = (
        await session.scalars(select(Email).where(Email.message_id == mail.message_id).limit(5))
    ).all()
    sender = (mail.from_addr or "").lower()
    for candidate in candidates:
        if (candidate.from_address or "").lower() == sender and candidate.subject == mail.subject:
            return candidate
    return None


async def _add_location(session: AsyncSession, email: Email, journal: InboundJournal) -> None:
    mailbox, folder, uidvalidity, uid = location_of(journal)
    exists = await session.scalar(
        select(EmailLocation.id).where(
            EmailLocation.mailbox == mailbox,
            EmailLocation.folder == folder,
            EmailLocation.uidvalidity == uidvalidity,
            EmailLocation.uid == uid,
        )
    )
    if exists is None:
        session.add(
            EmailLocation(
                email_id=email.id, mailbox=mailbox, folder=folder, uidvalidity=uidvalidity, uid=uid
            )
        )


class MailPipeline:
    """Processes journal entries; safe to call again for the same entry (it is a no-op)."""

    def __init__(self, store: Store, settings: PipelineSettings | None = None) -> None:
        self.store = store
        self.settings = settings or PipelineSettings()

    async def process(self, journal_id: int) -> Outcome:
        with correlated(f"journal-{journal_id}"):
            try:
                try:
                    return await self._process(journal_id)
                except IntegrityError:
                    # Another worker filed the same mail at the same moment: file it again,
                    # now as a further location of the email that one wrote.
                    return await self._process(journal_id)
            except Exception as err:
                log.warning("message %s quarantined: %s: %s", journal_id, type(err).__name__, err,
                            exc_info=not isinstance(err, PermanentError))  # fmt: skip
                reason = f"{type(err).__name__}: {err}"[:MAX_ERROR_CHARS]
                await self.quarantine(journal_id, reason)
                return Outcome(journal_id, JournalState.QUARANTINED.value, error=reason)

    async def quarantine(self, journal_id: int, reason: str) -> None:
        async with self.store.session() as session, session.begin():
            await session.execute(
                update(InboundJournal)
                .where(InboundJournal.id == journal_id)
                .values(
                    state=JournalState.QUARANTINED,
                    error=reason,
                    attempts=InboundJournal.attempts + 1,
                )
            )

    async def _process(self, journal_id: int) -> Outcome:
        async with self.store.session() as session:
            journal = await session.get(InboundJournal, journal_id)
        if journal is None:
            raise PermanentError(f"no journal entry {journal_id}")
        if journal.state != JournalState.PENDING:
            return Outcome(journal_id, journal.state.value, email_id=journal.email_id)
        raw = await self.store.blobs.read(journal.blob_sha256)
        mail = await asyncio.to_thread(parse_mail, raw)
        verdict = classify(mail)
        attachment_digests = [await self.store.blobs.write(a.payload) for a in mail.attachments]

        async with self.store.session() as session, session.begin():
            journal = await session.get(InboundJournal, journal_id, with_for_update=True)
            if journal is None or journal.state != JournalState.PENDING:
                return Outcome(journal_id, "gone")
            existing = await _existing_email(session, journal.blob_sha256, mail)
            if existing is not None:
                await _add_location(session, existing, journal)
                journal.state, journal.email_id, journal.error = (
                    JournalState.PROCESSED,
                    existing.id,
                    None,
                )
                return Outcome(journal_id, "processed", email_id=existing.id, duplicate=True)
            for attachment, digest in zip(mail.attachments, attachment_digests, strict=True):
                await record_blob(session, digest, attachment.size, attachment.content_type)
            mailbox = location_of(journal)[0]
            filed = await file_mail(
                session, mail, verdict, journal, attachment_digests,
                lead_mailbox=mailbox in self.settings.lead_mailboxes,
                bulk_policy=self.settings.bulk_policy,
            )  # fmt: skip
            # A new email has no locations yet: no need to ask before adding this one.
            mailbox_name, folder, uidvalidity, uid = location_of(journal)
            session.add(
                EmailLocation(
                    email_id=filed.email.id, mailbox=mailbox_name, folder=folder,
                    uidvalidity=uidvalidity, uid=uid,
                )
            )  # fmt: skip
            journal.state, journal.email_id, journal.error = (
                JournalState.PROCESSED,
                filed.email.id,
                None,
            )
        await self._announce(filed.email, verdict, filed.lead_ids)
        if filed.rules is not None and filed.rules.server_actions:
            await self.store.bus.publish(IMAP_ACTIONS_QUEUED, mailbox=mailbox)
        return Outcome(journal_id, "processed", email_id=filed.email.id, lead_ids=filed.lead_ids)

    async def _announce(self, email: Email, verdict: Classification, lead_ids: list[int]) -> None:
        for lead_id in lead_ids:
            await self.store.bus.publish(LEAD_CREATED, lead_id=lead_id, email_id=email.id)
        await self.store.bus.publish(EMAIL_RECEIVED, email_id=email.id, kind=verdict.kind)

    async def pending_ids(self, limit: int = 500) -> list[int]:
        async with self.store.session() as session:
            rows = await session.scalars(
                select(InboundJournal.id)
                .where(InboundJournal.state == JournalState.PENDING)
                .order_by(InboundJournal.id)
                .limit(limit)
            )
            return list(rows)

    async def replay(self, journal_id: int) -> Outcome:
        """Put a quarantined message back in line and process it again."""
        async with self.store.session() as session, session.begin():
            await session.execute(
                update(InboundJournal)
                .where(
                    InboundJournal.id == journal_id,
                    InboundJournal.state == JournalState.QUARANTINED,
                )
                .values(state=JournalState.PENDING)
            )
        return await self.process(journal_id)
