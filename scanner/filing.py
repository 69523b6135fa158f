"""Filing one parsed mail inside the pipeline's transaction: thread, match, rules, lead, write."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.classify import Classification
from scanner.parse import ParsedMail
from scanner.people import company_from_domain, is_no_reply, split_name
from scanner.rules import RuleOutcome, apply_rules
from store.activities import log_activity
from store.base import utcnow
from store.identity import index_record, normalise_email
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
    EmailParticipant,
    EmailThread,
    ImapAction,
    InboundJournal,
    Lead,
)
from store.tags import tag_record

PERSON_TYPES = ("lead", "contact", "account")
_LIVE_MODELS: dict[str, type[Lead] | type[Contact] | type[Account]] = {
    "lead": Lead,
    "contact": Contact,
    "account": Account,
}


@dataclass
class Filed:
    email: Email
    lead_ids: list[int] = field(default_factory=list)
    records: list[tuple[str, int]] = field(default_factory=list)
    rules: RuleOutcome | None = None


async def _owners(session: AsyncSession, addresses: list[str]) -> dict[str, list[tuple[str, int]]]:
    """address -> [(record_type, id)] for live leads, contacts, accounts and users."""
    if not addresses:
        return {}
    rows = (
        await session.execute(
            select(EmailIdentity.address, EmailIdentity.record_type, EmailIdentity.record_id).where(
                EmailIdentity.address.in_(addresses)
            )
        )
    ).all()
    binned: set[tuple[str, int]] = set()
    for record_type, model in _LIVE_MODELS.items():
        ids = [rid for _, rt, rid in rows if rt == record_type]
        if ids:
            gone = await session.scalars(
                select(model.id).where(model.id.in_(ids), model.deleted_at.is_not(None))
            )
            binned.update((record_type, rid) for rid in gone)
    found: dict[str, list[tuple[str, int]]] = {}
    for address, record_type, record_id in rows:
        if (record_type, record_id) not in binned:
            found.setdefault(address, []).append((record_type, record_id))
    return found


async def _thread(
    session: AsyncSession, mail: ParsedMail, now: dt.datetime
) -> tuple[EmailThread, list[int]]:
    """The conversation this mail belongs to, and the earlier emails of it that we know."""
    ids = list(dict.fromkeys(mail.in_reply_to + list(reversed(mail.references))))
    if ids:
        earlier = (
            await session.scalars(
                select(Email).where(Email.message_id.in_(ids), Email.thread_id.is_not(None))
            )
        ).all()
        if earlier:
            thread = await session.get(EmailThread, earlier[0].thread_id)
            if thread is not None:
                thread.last_at = now
                return thread, [e.id for e in earlier]
    thread = EmailThread(subject=mail.subject[:998], started_at=now, last_at=now)
    session.add(thread)
    await session.flush()
    return thread, []


async def _thread_records(session: AsyncSession, email_ids: list[int]) -> list[tuple[str, int]]:
    """The records the earlier mails of a conversation were filed under."""
    if not email_ids:
        return []
    rows = await session.execute(
        select(ActivityLink.record_type, ActivityLink.record_id)
        .join(Activity, Activity.id == ActivityLink.activity_id)
        .where(Activity.email_id.in_(email_ids))
    )
    return list(dict.fromkeys((rt, rid) for rt, rid in rows))


async def _new_lead(
    session: AsyncSession, name: str | None, address: str, rules: RuleOutcome
) -> Lead:
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
    session.add(lead)
    await index_record(session, lead, fresh=True)
    return lead


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


def _kind(verdict: Classification) -> EmailKind:
    return EmailKind(verdict.kind)


async def file_mail(
    session: AsyncSession,
    mail: ParsedMail,
    verdict: Classification,
    journal: InboundJournal,
    attachment_digests: list[str],
    *,
    lead_mailbox: bool,
    bulk_policy: str,
) -> Filed:
    now = utcnow()
    pairs = mail.addresses()
    normalised = {a: normalise_email(a) for _, a in pairs}
    owners = await _owners(session, [n for n in normalised.values() if n])
    staff = {n for n, recs in owners.items() if any(rt == "user" for rt, _ in recs)}
    sender = normalised.get(mail.from_addr or "") if mail.from_addr else None
    external = {n for n in normalised.values() if n and n not in staff}
    if sender in staff:
        direction = Direction.INTERNAL if not external else Direction.OUTBOUND
    else:
        direction = Direction.INBOUND

    thread, earlier = await _thread(session, mail, now)
    mailbox = (journal.location or {}).get("mailbox") or journal.source_key.partition(":")[0]
    rules = await apply_rules(session, mail, str(mailbox))

    # The person the mail is from: a web form's notification comes from a no-reply
    # address on behalf of the person in Reply-To.
    person_name, person = mail.from_name, sender
    if mail.reply_to and (is_no_reply(mail.from_addr) or sender is None):
        person_name, person = mail.reply_to[0][0] or None, normalise_email(mail.reply_to[0][1])

    records: list[tuple[str, int]] = []
    for address in [person, *sorted(external)]:
        for record in owners.get(address or "", []):
            if record[0] in PERSON_TYPES and record not in records:
                records.append(record)
    for record_type, record_id in list(records):
        if record_type == "contact":
            accounts = await session.scalars(
                select(AccountContact.account_id).where(AccountContact.contact_id == record_id)
            )
            records.extend(("account", a) for a in accounts if ("account", a) not in records)
    records.extend(r for r in await _thread_records(session, earlier) if r not in records)
    records.extend(r for r in rules.links if r not in records)

    lead_ids: list[int] = []
    wants_lead = (
        direction == Direction.INBOUND
        and person is not None
        and person not in staff
        and not earlier
        and not any(rt in ("lead", "contact") for rt, _ in owners.get(person, []))
        and (verdict.kind == "normal" or (verdict.kind == "bulk" and bulk_policy == "lead"))
        and lead_mailbox
    )
    if rules.create_lead is not None:
        wants_lead = rules.create_lead and person is not None and verdict.kind in ("normal", "bulk")
    if verdict.kind == "bulk" and bulk_policy == "skip" and rules.create_lead is not True:
        rules.skip = True
    if wants_lead and not rules.skip and person is not None:
        lead = await _new_lead(session, person_name, person, rules)
        lead_ids.append(lead.id)
        records.insert(0, ("lead", lead.id))

    email = Email(
        message_id=mail.message_id,
        in_reply_to=next(iter(mail.in_reply_to), None),
        references=mail.references,
        thread_id=thread.id,
        direction=direction,
        kind=_kind(verdict),
        from_address=sender,
        from_name=mail.from_name,
        to=[{"name": n, "address": a} for n, a in mail.to],
        cc=[{"name": n, "address": a} for n, a in mail.cc],
        bcc=[{"name": n, "address": a} for n, a in mail.bcc],
        reply_to=[{"name": n, "address": a} for n, a in mail.reply_to],
        subject=mail.subject,
        sent_at=mail.date,
        received_at=journal.received_at,
        text_body=mail.text,
        html_body=mail.html,
        raw_sha256=journal.blob_sha256,
        size=mail.size,
        defects=mail.defects
        + (["message over the size limit: headers only"] if journal.size_exceeded else []),
    )
    session.add(email)
    await session.flush()
    seen: set[tuple[str, str]] = set()
    for role, group in (("from", [(mail.from_name, mail.from_addr)]), ("reply_to", mail.reply_to),
                        ("to", mail.to), ("cc", mail.cc), ("bcc", mail.bcc)):  # fmt: skip
        for name, address in group:
            normal = normalise_email(address)
            if normal and (role, normal) not in seen:
                seen.add((role, normal))
                session.add(
                    EmailParticipant(
                        email_id=email.id, role=role, address=normal, name=name or None
                    )
                )
    for attachment, digest in zip(mail.attachments, attachment_digests, strict=True):
        session.add(
            Attachment(
                email_id=email.id,
                filename=attachment.filename[:500],
                content_type=attachment.content_type[:255],
                size=attachment.size,
                blob_sha256=digest,
                content_id=attachment.content_id,
                is_inline=attachment.inline,
            )
        )
    if verdict.kind == "bounce":
        await _mark_bounced(session, verdict, now)
    location = journal.location or {}
    if rules.server_actions and location.get("uid"):
        session.add_all(
            ImapAction(
                mailbox=str(location["mailbox"]),
                folder=str(location["folder"]),
                uidvalidity=int(location.get("uidvalidity", 0)),
                uid=int(location["uid"]),
                action=str(action["type"]),
                target=action.get("folder"),
            )
            for action in rules.server_actions
        )
    if records and not rules.skip:
        await log_activity(
            session, kind=ActivityKind.EMAIL, subject=mail.subject[:500], body=mail.text[:2000],
            records=records, occurred_at=mail.date or journal.received_at, email_id=email.id,
            owner_id=rules.owner_id,
        )  # fmt: skip
        for tag in rules.tags:
            for record_type, record_id in records:
                await tag_record(session, record_type, record_id, tag)
    return Filed(email=email, lead_ids=lead_ids, records=records, rules=rules)
