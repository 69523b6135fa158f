"""The mail-in pipeline: journalled raw mail becomes an email, history and perhaps a lead.

The same for IMAP, SMTP and imports, a batch of journal entries at a time: each
mail is read (parsed and classified, in worker processes), then the whole batch
is filed in ONE transaction (thread, match, rules, lead, email with its
locations, attachments and activity, journal entries marked processed) and
events are announced after the commit.  When a batch fails, its mails are
filed one by one, so a mail that cannot be filed is quarantined with its error
and never holds up the rest.  Processing an entry again is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from scanner.filing import Filed, Incoming, file_batch, location_of
from scanner.reading import MailReader, Reading
from store.bulk import lock_rows
from store.context import correlated
from store.db import Store
from store.errors import PermanentError
from store.models import InboundJournal, JournalState

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
    # Processes that parse mail; 0 parses in a thread of this process.
    parse_workers: int = 0


@dataclass
class Outcome:
    journal_id: int
    state: str
    email_id: int | None = None
    lead_ids: list[int] = field(default_factory=list)
    duplicate: bool = False
    error: str | None = None


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:MAX_ERROR_CHARS]


class MailPipeline:
    """Processes journal entries; safe to call again for the same entry (it is a no-op)."""

    def __init__(self, store: Store, settings: PipelineSettings | None = None) -> None:
        self.store = store
        self.settings = settings or PipelineSettings()
        self.reader = MailReader(store.blobs.root, self.settings.parse_workers)

    def close(self) -> None:
        self.reader.close()

    async def process(self, journal_id: int) -> Outcome:
        return (await self.process_many([journal_id]))[0]

    async def process_many(self, journal_ids: Sequence[int]) -> list[Outcome]:
        """Read, then file, a batch of journal entries; one outcome per id, in order."""
        return await self.file_read(await self.read_many(journal_ids))

    async def read_many(self, journal_ids: Sequence[int]) -> list[tuple[int, Reading | Outcome]]:
        """Each pending entry's reading (or why it has none, or its state if not pending)."""
        async with self.store.session() as session:
            rows = await session.scalars(
                select(InboundJournal).where(InboundJournal.id.in_(list(journal_ids)))
            )
            journals = {journal.id: journal for journal in rows}

        async def one(journal_id: int) -> tuple[int, Reading | Outcome]:
            journal = journals.get(journal_id)
            if journal is None:
                reason = f"PermanentError: no journal entry {journal_id}"
                return journal_id, Outcome(journal_id, "missing", error=reason)
            if journal.state != JournalState.PENDING:
                return journal_id, Outcome(
                    journal_id, journal.state.value, email_id=journal.email_id
                )
            try:
                return journal_id, await self.reader.read(journal.blob_sha256)
            except Exception as err:
                log.warning("message %s quarantined: %s", journal_id, _reason(err),
                            exc_info=not isinstance(err, PermanentError))  # fmt: skip
                await self.quarantine(journal_id, _reason(err))
                return journal_id, Outcome(
                    journal_id, JournalState.QUARANTINED.value, error=_reason(err)
                )

        return list(await asyncio.gather(*(one(journal_id) for journal_id in journal_ids)))

    async def file_read(self, read: Sequence[tuple[int, Reading | Outcome]]) -> list[Outcome]:
        """File the entries that have a reading; the others keep the outcome they have."""
        readings = {jid: r for jid, r in read if isinstance(r, Reading)}
        filed: dict[int, Outcome] = {}
        if readings:
            ids = list(readings)
            tag = f"journal-{ids[0]}" if len(ids) == 1 else f"journals-{ids[0]}..{ids[-1]}"
            with correlated(tag):
                filed = await self._file(readings)
        return [r if isinstance(r, Outcome) else filed[jid] for jid, r in read]

    async def _file(self, readings: dict[int, Reading]) -> dict[int, Outcome]:
        try:
            try:
                return await self._file_once(readings)
            except IntegrityError:
                # Another worker filed the same mail at the same moment: file it again,
                # now as a further location of the email that one wrote.
                return await self._file_once(readings)
        except Exception as err:
            if len(readings) > 1:
                log.info("a batch of %d messages failed (%s); filing them one by one",
                         len(readings), _reason(err))  # fmt: skip
                outcomes: dict[int, Outcome] = {}
                for journal_id, reading in readings.items():
                    outcomes.update(await self._file({journal_id: reading}))
                return outcomes
            (journal_id,) = readings
            log.warning("message %s quarantined: %s", journal_id, _reason(err),
                        exc_info=not isinstance(err, PermanentError))  # fmt: skip
            await self.quarantine(journal_id, _reason(err))
            return {
                journal_id: Outcome(journal_id, JournalState.QUARANTINED.value, error=_reason(err))
            }

    async def _file_once(self, readings: dict[int, Reading]) -> dict[int, Outcome]:
        outcomes: dict[int, Outcome] = {}
        if any(reading.attachments for reading in readings.values()):
            await self.store.blobs.sync()  # the attachments the readers wrote, in one flush
        async with self.store.session() as session, session.begin():
            batch = []
            for journal in await lock_rows(session, InboundJournal, readings):
                if journal.state != JournalState.PENDING:
                    outcomes[journal.id] = Outcome(journal.id, "gone", email_id=journal.email_id)
                    continue
                mailbox = location_of(journal)[0]
                lead_mailbox = mailbox in self.settings.lead_mailboxes
                batch.append(Incoming(journal, readings[journal.id], lead_mailbox))
            filed = await file_batch(session, batch, bulk_policy=self.settings.bulk_policy)
        for one in filed:
            outcomes[one.journal_id] = Outcome(
                one.journal_id, JournalState.PROCESSED.value, email_id=one.email_id,
                lead_ids=one.lead_ids, duplicate=one.duplicate,
            )  # fmt: skip
        await self._announce(filed)
        return outcomes

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

    async def _announce(self, filed: list[Filed]) -> None:
        mailboxes: set[str] = set()
        for one in filed:
            if one.duplicate:
                continue
            for lead_id in one.lead_ids:
                await self.store.bus.publish(LEAD_CREATED, lead_id=lead_id, email_id=one.email_id)
            await self.store.bus.publish(EMAIL_RECEIVED, email_id=one.email_id, kind=one.kind)
            if one.rules is not None and one.rules.server_actions:
                mailboxes.add(one.mailbox)
        for mailbox in sorted(mailboxes):
            await self.store.bus.publish(IMAP_ACTIONS_QUEUED, mailbox=mailbox)

    async def pending_ids(self, limit: int = 500, after: int = 0) -> list[int]:
        """The ids of pending entries after ``after``, oldest first."""
        async with self.store.session() as session:
            rows = await session.scalars(
                select(InboundJournal.id)
                .where(InboundJournal.state == JournalState.PENDING, InboundJournal.id > after)
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
