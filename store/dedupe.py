"""Finding and merging duplicate leads and contacts by email address or phone number."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import copy_links
from store.audit import record_action
from store.base import utcnow
from store.errors import NotFound, ValidationError
from store.identity import index_record, lookup_email, lookup_phone
from store.models.crm import AccountContact, Contact, Lead, LeadStatus, Opportunity
from store.models.identity import EmailIdentity, PhoneIdentity
from store.records import acting_as, copy_tags, move_identities

PERSON_TYPES: dict[str, type[Lead] | type[Contact]] = {"lead": Lead, "contact": Contact}
# Fields a merge fills on the kept record from the merged ones when the kept one has none.
MERGE_FIELDS: dict[str, tuple[str, ...]] = {
    "lead": ("first_name", "last_name", "company", "title", "email", "phone", "mobile",
             "website", "source", "campaign_id", "owner_id", "team_id", "description"),
    "contact": ("first_name", "last_name", "title", "email", "phone", "mobile", "source",
                "owner_id", "team_id", "description"),
}  # fmt: skip


@dataclass
class DuplicateMatch:
    record_type: str
    record_id: int
    reasons: list[str] = field(default_factory=list)


async def _live_ids(session: AsyncSession, record_type: str, ids: set[int]) -> set[int]:
    model = PERSON_TYPES[record_type]
    if not ids:
        return set()
    rows = await session.scalars(
        select(model.id).where(model.id.in_(ids), model.deleted_at.is_(None))
    )
    return set(rows)


async def find_duplicates(
    session: AsyncSession, record_type: str, record_id: int
) -> list[DuplicateMatch]:
    """Leads and contacts that share an email address or phone number with this record."""
    if record_type not in PERSON_TYPES:
        raise ValidationError({"record_type": "duplicates are looked for among leads and contacts"})
    matches: dict[tuple[str, int], DuplicateMatch] = {}
    for model, key, label in (
        (EmailIdentity, EmailIdentity.address, "email"),
        (PhoneIdentity, PhoneIdentity.match_key, "phone"),
    ):
        own = select(key).where(model.record_type == record_type, model.record_id == record_id)
        rows = await session.execute(
            select(model.record_type, model.record_id, key).where(
                key.in_(own), model.record_type.in_(list(PERSON_TYPES))
            )
        )
        for rt, rid, value in rows:
            if (rt, rid) == (record_type, record_id):
                continue
            match = matches.setdefault((rt, rid), DuplicateMatch(rt, rid))
            reason = f"{label} {value}"
            if reason not in match.reasons:
                match.reasons.append(reason)
    live = {
        rt: await _live_ids(session, rt, {rid for (t, rid) in matches if t == rt})
        for rt in PERSON_TYPES
    }
    return [m for (rt, rid), m in sorted(matches.items()) if rid in live[rt]]


async def find_known(
    session: AsyncSession, *, email: str | None = None, phones: Sequence[str] = ()
) -> list[DuplicateMatch]:
    """Live leads and contacts that have this address or one of these numbers.

    ``find_duplicates`` before a record exists: for something about to be made
    (a web form's lead), on the same identity index and keys.
    """
    matches: dict[tuple[str, int], DuplicateMatch] = {}
    found = await lookup_email(session, email, list(PERSON_TYPES)) if email else []
    for number in phones:
        found += await lookup_phone(session, number, record_types=list(PERSON_TYPES))
    for hit in found:
        match = matches.setdefault((hit.record_type, hit.record_id),
                                   DuplicateMatch(hit.record_type, hit.record_id))  # fmt: skip
        label = "email" if "@" in hit.via else "phone"
        if f"{label} {hit.via}" not in match.reasons:
            match.reasons.append(f"{label} {hit.via}")
    live = {
        rt: await _live_ids(session, rt, {rid for (t, rid) in matches if t == rt})
        for rt in PERSON_TYPES
    }
    return [m for (rt, rid), m in sorted(matches.items()) if rid in live[rt]]


async def find_duplicate_groups(session: AsyncSession, record_type: str) -> list[list[int]]:
    """Every group of live records of one type that share an address or a number."""
    if record_type not in PERSON_TYPES:
        raise ValidationError({"record_type": "duplicates are looked for among leads and contacts"})
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    person = PERSON_TYPES[record_type]
    for model, key in (
        (EmailIdentity, EmailIdentity.address),
        (PhoneIdentity, PhoneIdentity.match_key),
    ):
        # Records in the recycle bin are left out before joining groups: one must
        # not tie together two live records that share nothing with each other.
        rows = await session.execute(
            select(key, model.record_id)
            .join(person, person.id == model.record_id)
            .where(model.record_type == record_type, person.deleted_at.is_(None))
            .order_by(key, model.record_id)
        )
        first_of: dict[str, int] = {}
        for value, rid in rows:
            if value in first_of:
                parent[find(rid)] = find(first_of[value])
            else:
                first_of[value] = rid
    groups: dict[int, list[int]] = {}
    for rid in sorted(parent):
        groups.setdefault(find(rid), []).append(rid)
    return [ids for ids in groups.values() if len(ids) > 1]


async def _live(
    session: AsyncSession, model: type[Lead] | type[Contact], record_type: str, record_id: int
) -> Lead | Contact:
    record: Lead | Contact | None = await session.get(
        model, record_id, with_for_update=True, populate_existing=True
    )
    if record is None or record.deleted_at is not None:
        raise NotFound(f"{record_type} {record_id} does not exist")
    if isinstance(record, Lead) and record.status == LeadStatus.CONVERTED:
        # Its history and identities went to a contact: merge that contact instead.
        raise ValidationError({"merge_ids": f"lead {record_id} was converted; merge its contact"})
    return record


async def merge_records(
    session: AsyncSession,
    record_type: str,
    keep_id: int,
    merge_ids: Sequence[int],
    *,
    user_id: int | None,
    now: dt.datetime | None = None,
) -> Lead | Contact:
    """Merge records into ``keep_id``: fields, history, identities, tags; the rest go to the bin.

    The kept record's empty fields are filled from the merged ones, in the order given.
    """
    model = PERSON_TYPES.get(record_type)
    if model is None:
        raise ValidationError({"record_type": "only leads and contacts are merged"})
    if keep_id in merge_ids or not merge_ids:
        raise ValidationError({"merge_ids": "name other records than the one kept"})
    keep = await _live(session, model, record_type, keep_id)
    others = [await _live(session, model, record_type, i) for i in dict.fromkeys(merge_ids)]

    now = now or utcnow()
    target = (record_type, keep_id)
    with acting_as(session, user_id):
        for other in others:
            for name in MERGE_FIELDS[record_type]:
                if getattr(keep, name) in (None, "") and getattr(other, name) not in (None, ""):
                    setattr(keep, name, getattr(other, name))
            source = (record_type, other.id)
            await copy_links(session, source, [target], move=True)
            await move_identities(session, source, target)
            await copy_tags(session, source, target, move=True)
            if record_type == "contact":
                await _merge_contact_links(session, other.id, keep_id)
            other.deleted_at = now
            other.deleted_by_id = user_id
            await session.flush()
            await record_action(
                session, record_type, other.id, "merge", f"merged into {record_type} {keep_id}"
            )
        await index_record(session, keep)
    return keep


async def _merge_contact_links(session: AsyncSession, old_id: int, new_id: int) -> None:
    """A merged contact's accounts, deals and the lead it came from now go to the contact kept."""
    kept_accounts = set(
        await session.scalars(
            select(AccountContact.account_id).where(AccountContact.contact_id == new_id)
        )
    )
    for row in (
        await session.scalars(select(AccountContact).where(AccountContact.contact_id == old_id))
    ).all():
        if row.account_id not in kept_accounts:
            session.add(
                AccountContact(
                    account_id=row.account_id,
                    contact_id=new_id,
                    role=row.role,
                    is_primary=row.is_primary,
                )
            )
        await session.delete(row)
    for table, column in (
        (Opportunity, Opportunity.contact_id),
        (Lead, Lead.converted_contact_id),
    ):
        await session.execute(
            update(table)
            .where(column == old_id)
            .values({column: new_id})
            .execution_options(synchronize_session="fetch")
        )
