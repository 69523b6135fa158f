"""Filing read mail inside the pipeline's transaction: thread, match, rules, lead, write.

Mail is filed a batch at a time, set-wise.  What the store knows about the
batch (its addresses' owners, the conversations it continues, the mail seen
before) is read in a handful of queries; each mail is then decided in memory,
in journal order, so a later mail of the batch finds the lead, thread or email
an earlier one made; and the rows go out in a few multi-row statements.  A
batch of one is the same code and makes the same decisions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.classify import Classification
from scanner.parse import ParsedMail
from scanner.people import company_from_domain, is_no_reply, split_name
from scanner.reading import Reading
from scanner.rules import RuleBook, RuleOutcome, apply_rules, load_rules
from store.activities import ActivityDraft, log_activities
from store.base import Base, utcnow
from store.blobs import record_blobs
from store.bulk import allocate_ids, assign_ids, insert_rows
from store.dialect import insert_ignoring
from store.identity import new_identities, normalise_email
from store.models import (
    Account,
    AccountContact,
    Activity,
    ActivityKind,
    ActivityLink,
    Attachment,
    Contact,
    Direction,
    Email,
    EmailIdentity,
    EmailKind,
    EmailLocation,
    EmailParticipant,
    EmailThread,
    ImapAction,
    InboundJournal,
    JournalState,
    Lead,
    SentRecipient,
)
from store.tags import tag_record

PERSON_TYPES = ("lead", "contact", "account")
_LIVE_MODELS: dict[str, type[Lead] | type[Contact] | type[Account]] = {
    "lead": Lead,
    "contact": Contact,
    "account": Account,
}
IN_CHUNK = 500  # values per IN (...) list: well inside every engine's parameter limit

# A record a mail is filed under; a lead this batch creates has no id until it is written.
Ref = tuple[str, "int | Lead"]
Thread = int | EmailThread
T = TypeVar("T")


@dataclass
class Incoming:
    """One journalled mail to file, with the pipeline's reading of it."""

    journal: InboundJournal
    reading: Reading
    lead_mailbox: bool


@dataclass(eq=False)
class KnownEmail:
    """An email as filing sees it: one stored before, or one this batch writes."""

    id: int | None
    raw_sha256: str | None
    message_id: str | None
    from_address: str | None
    subject: str
    kind: str
    thread: Thread | None = None
    filed_under: list[Ref] = field(default_factory=list)


@dataclass
class Filed:
    journal_id: int
    mailbox: str
    email_id: int
    kind: str
    duplicate: bool = False
    lead_ids: list[int] = field(default_factory=list)
    records: list[tuple[str, int]] = field(default_factory=list)
    rules: RuleOutcome | None = None


@dataclass
class _Plan:
    """What filing decided for one mail, before the rows are written."""

    incoming: Incoming
    email: KnownEmail
    duplicate: bool = False
    row: dict[str, Any] = field(default_factory=dict)
    thread: Thread | None = None
    lead: Lead | None = None
    records: list[Ref] = field(default_factory=list)
    rules: RuleOutcome | None = None
    # Stored emails this one answers: if Rapport sent them, the reply proves they were read.
    answers: list[int] = field(default_factory=list)


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


def _chunks(values: Iterable[T]) -> Iterator[list[T]]:
    items = list(dict.fromkeys(values))
    for start in range(0, len(items), IN_CHUNK):
        yield items[start : start + IN_CHUNK]


def _thread_ids(mail: ParsedMail) -> list[str]:
    """The Message-IDs a mail answers, the most telling first."""
    return list(dict.fromkeys(mail.in_reply_to + list(reversed(mail.references))))


def _id(record: int | Lead | EmailThread) -> int:
    return record if isinstance(record, int) else record.id


class _Known:
    """What the store knows about a batch, kept up to date as each mail is decided."""

    def __init__(self, book: RuleBook) -> None:
        self.book = book
        self.owners: dict[str, list[Ref]] = {}
        self.accounts: dict[int, list[int]] = {}
        self.by_sha: dict[str, KnownEmail] = {}
        self.by_message_id: dict[str, list[KnownEmail]] = {}
        self.new_threads: list[EmailThread] = []
        self.new_leads: list[Lead] = []
        self.touched_threads: set[int] = set()

    def remember(self, email: KnownEmail) -> None:
        if email.raw_sha256:
            self.by_sha.setdefault(email.raw_sha256, email)
        if email.message_id:
            self.by_message_id.setdefault(email.message_id, []).append(email)


async def _load(session: AsyncSession, batch: Sequence[Incoming]) -> _Known:
    known = _Known(await load_rules(session))
    mails = [item.reading.mail for item in batch]
    columns = select(Email.id, Email.raw_sha256, Email.message_id, Email.from_address,
                     Email.subject, Email.kind, Email.thread_id)  # fmt: skip
    stored: dict[int, KnownEmail] = {}
    message_ids = [m.message_id for m in mails if m.message_id]
    message_ids += [mid for m in mails for mid in _thread_ids(m)]
    wheres = [
        Email.raw_sha256.in_(digests)
        for digests in _chunks(item.journal.blob_sha256 for item in batch)
    ]
    wheres += [Email.message_id.in_(chunk) for chunk in _chunks(message_ids)]  # fmt: skip
    for where in wheres:
        for email_id, sha, message_id, sender, subject, kind, thread_id in await session.execute(
            columns.where(where)
        ):
            stored[email_id] = KnownEmail(
                email_id, sha, message_id, sender, subject, EmailKind(kind).value, thread_id
            )
    for email in sorted(stored.values(), key=lambda e: e.id or 0):
        known.remember(email)
    for email_ids in _chunks(stored):
        rows = await session.execute(
            select(Activity.email_id, ActivityLink.record_type, ActivityLink.record_id)
            .join(Activity, Activity.id == ActivityLink.activity_id)
            .where(Activity.email_id.in_(email_ids))
        )
        for linked_email, record_type, record_id in rows:
            if linked_email is None:
                continue
            records = stored[linked_email].filed_under
            if (record_type, record_id) not in records:
                records.append((record_type, record_id))

    addresses = {normalise_email(a) for m in mails for _, a in m.addresses()}
    known.owners = await _owners(session, [a for a in addresses if a])
    contacts = [
        rid for refs in known.owners.values() for rt, rid in refs if rt == "contact"
        if isinstance(rid, int)
    ]  # fmt: skip
    for contact_ids in _chunks(contacts):
        for contact_id, account_id in await session.execute(
            select(AccountContact.contact_id, AccountContact.account_id).where(
                AccountContact.contact_id.in_(contact_ids)
            )
        ):
            known.accounts.setdefault(contact_id, []).append(account_id)
    return known


async def _owners(session: AsyncSession, addresses: list[str]) -> dict[str, list[Ref]]:
    """address -> [(record_type, id)] for live leads, contacts, accounts and users."""
    rows: list[tuple[str, str, int]] = []
    for chunk in _chunks(addresses):
        rows.extend(
            (address, record_type, record_id)
            for address, record_type, record_id in await session.execute(
                select(
                    EmailIdentity.address, EmailIdentity.record_type, EmailIdentity.record_id
                ).where(EmailIdentity.address.in_(chunk))
            )
        )
    binned: set[tuple[str, int]] = set()
    for record_type, model in _LIVE_MODELS.items():
        for record_ids in _chunks(rid for _, rt, rid in rows if rt == record_type):
            gone = await session.scalars(
                select(model.id).where(model.id.in_(record_ids), model.deleted_at.is_not(None))
            )
            binned.update((record_type, rid) for rid in gone)
    found: dict[str, list[Ref]] = {}
    for address, record_type, record_id in rows:
        if (record_type, record_id) not in binned:
            found.setdefault(address, []).append((record_type, record_id))
    return found


def _duplicate_of(known: _Known, digest: str, mail: ParsedMail) -> KnownEmail | None:
    """The same mail seen before: same bytes, or same Message-ID from the same sender."""
    email = known.by_sha.get(digest)
    if email is not None or not mail.message_id:
        return email
    sender = (mail.from_addr or "").lower()
    for candidate in known.by_message_id.get(mail.message_id, []):
        if (candidate.from_address or "").lower() == sender and candidate.subject == mail.subject:
            return candidate
    return None


def _conversation(
    known: _Known, mail: ParsedMail, now: dt.datetime
) -> tuple[Thread, list[KnownEmail]]:
    """The thread this mail belongs to, and the earlier emails of it that we know."""
    earlier = [
        email
        for message_id in _thread_ids(mail)
        for email in known.by_message_id.get(message_id, [])
        if email.thread is not None
    ]
    if earlier:
        thread = earlier[0].thread
        assert thread is not None
        if isinstance(thread, int):
            known.touched_threads.add(thread)
        return thread, list(dict.fromkeys(earlier))
    new = EmailThread(subject=mail.subject[:998], started_at=now, last_at=now)
    known.new_threads.append(new)
    return new, []


def _new_lead(known: _Known, name: str | None, address: str, rules: RuleOutcome) -> Lead:
    first, last = split_name(name, address)
    lead = Lead(
        first_name=first,
        last_name=last,
        email=address,
        company=company_from_domain(address),
        source="email",
        owner_id=rules.owner_id,
        team_id=rules.team_id,
    )
    known.new_leads.append(lead)
    known.owners.setdefault(address, []).append(("lead", lead))
    if rules.owner_id is not None:
        known.book.assigned[rules.owner_id] += 1
    return lead


async def _decide(
    session: AsyncSession, known: _Known, item: Incoming, bulk_policy: str, now: dt.datetime
) -> _Plan:
    journal, mail, verdict = item.journal, item.reading.mail, item.reading.verdict
    existing = _duplicate_of(known, journal.blob_sha256, mail)
    if existing is not None:
        return _Plan(item, existing, duplicate=True)

    normalised = {a: normalise_email(a) for _, a in mail.addresses()}
    owners = known.owners
    staff = {
        n for n in normalised.values() if n and any(rt == "user" for rt, _ in owners.get(n, []))
    }
    sender = normalised.get(mail.from_addr or "") if mail.from_addr else None
    external = {n for n in normalised.values() if n and n not in staff}
    if sender in staff:
        direction = Direction.INTERNAL if not external else Direction.OUTBOUND
    else:
        direction = Direction.INBOUND

    thread, earlier = _conversation(known, mail, now)
    mailbox = location_of(journal)[0]
    rules = await apply_rules(session, mail, mailbox, known.book)

    # The person the mail is from: a web form's notification comes from a no-reply
    # address on behalf of the person in Reply-To.
    person_name, person = mail.from_name, sender
    if mail.reply_to and (is_no_reply(mail.from_addr) or sender is None):
        person_name, person = mail.reply_to[0][0] or None, normalise_email(mail.reply_to[0][1])

    records: list[Ref] = []
    for address in [person, *sorted(external)]:
        for record in owners.get(address or "", []):
            if record[0] in PERSON_TYPES and record not in records:
                records.append(record)
    for record_type, record_id in list(records):
        if record_type == "contact" and isinstance(record_id, int):
            accounts = known.accounts.get(record_id, [])
            records.extend(("account", a) for a in accounts if ("account", a) not in records)
    for email in earlier:
        records.extend(r for r in email.filed_under if r not in records)
    records.extend(r for r in rules.links if r not in records)

    wants_lead = (
        direction == Direction.INBOUND
        and person is not None
        and person not in staff
        and not earlier
        and not any(rt in ("lead", "contact") for rt, _ in owners.get(person, []))
        and (verdict.kind == "normal" or (verdict.kind == "bulk" and bulk_policy == "lead"))
        and item.lead_mailbox
    )
    if rules.create_lead is not None:
        wants_lead = rules.create_lead and person is not None and verdict.kind in ("normal", "bulk")
    if verdict.kind == "bulk" and bulk_policy == "skip" and rules.create_lead is not True:
        rules.skip = True
    lead = None
    if wants_lead and not rules.skip and person is not None:
        lead = _new_lead(known, person_name, person, rules)
        records.insert(0, ("lead", lead))

    row = {
        "message_id": mail.message_id,
        "in_reply_to": next(iter(mail.in_reply_to), None),
        "references": mail.references,
        "direction": direction,
        "kind": EmailKind(verdict.kind),
        "from_address": sender,
        "from_name": mail.from_name,
        "to": [{"name": n, "address": a} for n, a in mail.to],
        "cc": [{"name": n, "address": a} for n, a in mail.cc],
        "bcc": [{"name": n, "address": a} for n, a in mail.bcc],
        "reply_to": [{"name": n, "address": a} for n, a in mail.reply_to],
        "subject": mail.subject,
        "sent_at": mail.date,
        "received_at": journal.received_at,
        "text_body": mail.text,
        "html_body": mail.html,
        "raw_sha256": journal.blob_sha256,
        "size": mail.size,
        "defects": mail.defects
        + (["message over the size limit: headers only"] if journal.size_exceeded else []),
    }
    email = KnownEmail(
        id=None, raw_sha256=journal.blob_sha256, message_id=mail.message_id,
        from_address=sender, subject=mail.subject, kind=verdict.kind, thread=thread,
        filed_under=[] if rules.skip else records,
    )  # fmt: skip
    known.remember(email)
    answers = [e.id for e in earlier if e.id is not None]
    return _Plan(item, email, row=row, thread=thread, lead=lead, records=records, rules=rules,
                 answers=answers)  # fmt: skip


def _participants(email_id: int, mail: ParsedMail) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for role, group in (("from", [(mail.from_name, mail.from_addr)]), ("reply_to", mail.reply_to),
                        ("to", mail.to), ("cc", mail.cc), ("bcc", mail.bcc)):  # fmt: skip
        for name, address in group:
            normal = normalise_email(address)
            if normal and (role, normal) not in rows:
                rows[(role, normal)] = {
                    "email_id": email_id,
                    "role": role,
                    "address": normal,
                    "name": name or None,
                }
    return list(rows.values())


@dataclass
class _Rows:
    """The rows that hang off the batch's new emails, one list per table."""

    participants: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    locations: list[dict[str, Any]] = field(default_factory=list)
    imap_actions: list[dict[str, Any]] = field(default_factory=list)

    def add(self, plan: _Plan, email_id: int) -> None:
        journal, reading = plan.incoming.journal, plan.incoming.reading
        self.participants += _participants(email_id, reading.mail)
        self.attachments += [
            {"email_id": email_id, "filename": a.filename[:500],
             "content_type": a.content_type[:255], "size": a.size, "blob_sha256": a.digest,
             "content_id": a.content_id, "is_inline": a.inline}
            for a in reading.attachments
        ]  # fmt: skip
        mailbox, folder, uidvalidity, uid = location_of(journal)
        self.locations.append({"email_id": email_id, "mailbox": mailbox, "folder": folder,
                               "uidvalidity": uidvalidity, "uid": uid})  # fmt: skip
        location = journal.location or {}
        if plan.rules is not None and plan.rules.server_actions and location.get("uid"):
            self.imap_actions += [
                {"mailbox": str(location["mailbox"]), "folder": str(location["folder"]),
                 "uidvalidity": int(location.get("uidvalidity", 0)), "uid": int(location["uid"]),
                 "action": str(action["type"]), "target": action.get("folder")}
                for action in plan.rules.server_actions
            ]  # fmt: skip

    async def write(self, session: AsyncSession) -> None:
        await insert_rows(session, EmailParticipant, self.participants)
        await insert_rows(session, Attachment, self.attachments)
        await insert_rows(session, EmailLocation, self.locations)
        await insert_rows(session, ImapAction, self.imap_actions)


async def _mark_replied(
    session: AsyncSession, email_ids: list[int], sender: str, now: dt.datetime
) -> None:
    """A recipient answered mail we sent: it was read, whatever the pixel saw."""
    await session.execute(
        update(SentRecipient)
        .where(SentRecipient.email_id.in_(email_ids), SentRecipient.address == sender)
        .values(
            replied_at=func.coalesce(SentRecipient.replied_at, now),
            first_human_open_at=func.coalesce(SentRecipient.first_human_open_at, now),
            last_activity_at=now,
        )
        .execution_options(synchronize_session=False)
    )


async def _mark_bounced(session: AsyncSession, verdict: Classification, now: dt.datetime) -> None:
    if verdict.bounced_message_id:
        await session.execute(
            update(Email)
            .where(
                Email.message_id == verdict.bounced_message_id,
                Email.direction == Direction.OUTBOUND,
            )
            .values(bounced_at=now)
        )
    addresses = [a for a in (normalise_email(r) for r in verdict.bounced_recipients) if a]
    if addresses:
        await session.execute(
            update(EmailIdentity)
            .where(EmailIdentity.address.in_(addresses))
            .values(undeliverable=True)
        )


async def _add_locations(session: AsyncSession, plans: list[_Plan]) -> None:
    """Further locations of emails filed before; one seen there already is left as it is."""
    rows = []
    for plan in plans:
        mailbox, folder, uidvalidity, uid = location_of(plan.incoming.journal)
        rows.append({"email_id": _known_id(plan.email), "mailbox": mailbox, "folder": folder,
                     "uidvalidity": uidvalidity, "uid": uid})  # fmt: skip
    if rows:
        unique = ["mailbox", "folder", "uidvalidity", "uid"]
        await session.execute(insert_ignoring(session, EmailLocation, unique), rows)


async def _write(session: AsyncSession, objects: Sequence[Base]) -> None:
    """Insert new objects, each table in one statement (the ids are handed out first)."""
    await assign_ids(session, objects)
    session.add_all(objects)
    await session.flush()


def _known_id(email: KnownEmail) -> int:
    assert email.id is not None, "an email of the batch is written before it is referred to"
    return email.id


def _resolved(records: list[Ref]) -> list[tuple[str, int]]:
    return list(dict.fromkeys((record_type, _id(record)) for record_type, record in records))


async def file_batch(
    session: AsyncSession, batch: Sequence[Incoming], *, bulk_policy: str
) -> list[Filed]:
    """File every mail of ``batch`` (journal entries locked and pending) in ``session``."""
    now = utcnow()
    known = await _load(session, batch)
    plans = [await _decide(session, known, item, bulk_policy, now) for item in batch]
    new = [plan for plan in plans if not plan.duplicate]

    writing = [plan for plan in new if plan.records and plan.rules and not plan.rules.skip]
    ids = await allocate_ids(session, {EmailThread: len(known.new_threads),
                                       Lead: len(known.new_leads), Email: len(new),
                                       Activity: len(writing)})  # fmt: skip
    for thread, thread_id in zip(known.new_threads, ids[EmailThread], strict=True):
        thread.id = thread_id
    for lead, lead_id in zip(known.new_leads, ids[Lead], strict=True):
        lead.id = lead_id
    # Threads and leads first: emails and activities refer to them.
    session.add_all([*known.new_threads, *known.new_leads])
    await session.flush()
    await _write(session, new_identities(known.new_leads))
    for plan, email_id in zip(new, ids[Email], strict=True):
        assert plan.thread is not None
        plan.email.id = plan.row["id"] = email_id
        plan.row["thread_id"] = _id(plan.thread)
    await insert_rows(session, Email, [plan.row for plan in new])

    await record_blobs(
        session,
        [(a.digest, a.size, a.content_type) for p in new for a in p.incoming.reading.attachments],
    )
    rows = _Rows()
    for plan in new:
        rows.add(plan, _known_id(plan.email))
    drafts = []
    for plan in writing:
        assert plan.rules is not None
        mail, journal = plan.incoming.reading.mail, plan.incoming.journal
        drafts.append(
            ActivityDraft(
                kind=ActivityKind.EMAIL, subject=mail.subject[:500], body=mail.text[:2000],
                records=_resolved(plan.records), occurred_at=mail.date or journal.received_at,
                owner_id=plan.rules.owner_id, fields={"email_id": plan.email.id},
            )
        )  # fmt: skip
    await rows.write(session)
    await log_activities(session, drafts, ids[Activity])
    await _add_locations(session, [plan for plan in plans if plan.duplicate])
    for chunk in _chunks(known.touched_threads):
        await session.execute(
            update(EmailThread).where(EmailThread.id.in_(chunk)).values(last_at=now)
        )
    for plan in new:
        if (
            plan.answers
            and plan.email.from_address
            and plan.incoming.reading.verdict.kind == "normal"
        ):
            await _mark_replied(session, plan.answers, plan.email.from_address, now)
        if plan.incoming.reading.verdict.kind == "bounce":
            await _mark_bounced(session, plan.incoming.reading.verdict, now)
        if plan.rules is not None and not plan.rules.skip:
            for tag in plan.rules.tags:
                for record_type, record_id in _resolved(plan.records):
                    await tag_record(session, record_type, record_id, tag)
    await session.execute(
        update(InboundJournal),
        [{"id": plan.incoming.journal.id, "state": JournalState.PROCESSED,
          "email_id": plan.email.id, "error": None} for plan in plans],
    )  # fmt: skip
    return [
        Filed(
            journal_id=plan.incoming.journal.id,
            mailbox=location_of(plan.incoming.journal)[0],
            email_id=_known_id(plan.email),
            kind=plan.email.kind,
            duplicate=plan.duplicate,
            lead_ids=[plan.lead.id] if plan.lead is not None else [],
            records=_resolved(plan.records),
            rules=plan.rules,
        )
        for plan in plans
    ]
