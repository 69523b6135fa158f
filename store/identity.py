"""The identity indexes: keep them in step with records, and look addresses and numbers up.

Each record owns the identity rows whose ``field`` names one of its own columns
(``email``, ``phone``, ``mobile``); ``index_record`` reconciles exactly those.
Rows with any other field (``alias``: an address moved over by a merge or a
lead conversion, or one seen in mail) are left alone, so re-indexing a record
never forgets what was learnt about it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.base import Base
from store.models.identity import EmailIdentity, PhoneIdentity
from store.phones import DEFAULT_REGION, PhoneRegion, normalise_phone

EMAIL_FIELDS: dict[str, tuple[str, ...]] = {
    "lead": ("email",),
    "contact": ("email",),
    "account": ("email",),
    "user": ("email",),
}
PHONE_FIELDS: dict[str, tuple[str, ...]] = {
    "lead": ("phone", "mobile"),
    "contact": ("phone", "mobile"),
    "account": ("phone",),
}
ALIAS_FIELD = "alias"


def normalise_email(value: str | None) -> str | None:
    """Lower-case an address and strip what surrounds it; None if it is not an address."""
    if not value:
        return None
    text = unicodedata.normalize("NFKC", value).strip().strip("<>").strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain or any(ch.isspace() for ch in text) or "." not in domain:
        return None
    try:
        domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return None
    return f"{local}@{domain.rstrip('.')}".lower()


def record_type_of(record: Base) -> str:
    record_type = getattr(type(record), "__record_type__", None)
    if not isinstance(record_type, str):
        raise TypeError(f"{type(record).__name__} is not a CRM record")
    return record_type


def _wanted_emails(record: Base, record_type: str) -> dict[str, str]:
    """address -> the record's own column that holds it."""
    wanted: dict[str, str] = {}
    for field in EMAIL_FIELDS.get(record_type, ()):
        address = normalise_email(getattr(record, field, None))
        if address and address not in wanted:
            wanted[address] = field
    return wanted


def _wanted_phones(
    record: Base, record_type: str, region: PhoneRegion
) -> dict[str, tuple[str, str | None, str]]:
    """match key -> (the record's own column, E.164, raw) for each number it holds."""
    wanted: dict[str, tuple[str, str | None, str]] = {}
    for field in PHONE_FIELDS.get(record_type, ()):
        key = normalise_phone(getattr(record, field, None), region)
        if key and key.match_key not in wanted:
            wanted[key.match_key] = (field, key.e164, key.raw)
    return wanted


def new_identities(
    records: Sequence[Base], region: PhoneRegion = DEFAULT_REGION
) -> list[EmailIdentity | PhoneIdentity]:
    """The identity rows of records written in this transaction, which have none yet.

    For the hot paths that create many records at once (mail-in): the caller
    adds the rows and they go out in one flush, where ``index_record`` would
    flush once per record.  The records must have their ids.
    """
    rows: list[EmailIdentity | PhoneIdentity] = []
    for record in records:
        record_type = record_type_of(record)
        record_id: int = record.id  # type: ignore[attr-defined]
        rows.extend(
            EmailIdentity(
                address=address, record_type=record_type, record_id=record_id, field=field
            )
            for address, field in _wanted_emails(record, record_type).items()
        )
        rows.extend(
            PhoneIdentity(e164=e164, raw=raw, match_key=match_key, record_type=record_type,
                          record_id=record_id, field=field)
            for match_key, (field, e164, raw) in _wanted_phones(record, record_type, region).items()
        )  # fmt: skip
    return rows


async def index_record(
    session: AsyncSession,
    record: Base,
    region: PhoneRegion = DEFAULT_REGION,
    *,
    fresh: bool = False,
) -> None:
    """Make the record's own identity rows match its email and phone columns now.

    ``fresh``: the record was created in this transaction and has no identity
    rows yet, so there is nothing to read back first (the mail-in hot path).
    """
    record_type = record_type_of(record)
    await session.flush()  # a new record needs its id
    record_id: int = record.id  # type: ignore[attr-defined]
    owner = (EmailIdentity.record_type == record_type) & (EmailIdentity.record_id == record_id)

    wanted_emails = _wanted_emails(record, record_type)
    existing = [] if fresh else (await session.scalars(select(EmailIdentity).where(owner))).all()
    by_address = {row.address: row for row in existing}
    for address, field in wanted_emails.items():
        row = by_address.get(address)
        if row is None:
            session.add(
                EmailIdentity(
                    address=address, record_type=record_type, record_id=record_id, field=field
                )
            )
        else:
            row.field = field
    own_fields = EMAIL_FIELDS.get(record_type, ())
    for row in existing:
        if row.field in own_fields and row.address not in wanted_emails:
            await session.delete(row)

    phone_owner = (PhoneIdentity.record_type == record_type) & (
        PhoneIdentity.record_id == record_id
    )
    wanted_phones = _wanted_phones(record, record_type, region)
    phones = (
        [] if fresh else (await session.scalars(select(PhoneIdentity).where(phone_owner))).all()
    )
    by_key = {row.match_key: row for row in phones}
    for match_key, (field, e164, raw) in wanted_phones.items():
        phone_row = by_key.get(match_key)
        if phone_row is None:
            session.add(
                PhoneIdentity(
                    e164=e164,
                    raw=raw,
                    match_key=match_key,
                    record_type=record_type,
                    record_id=record_id,
                    field=field,
                )
            )
        else:
            phone_row.field, phone_row.raw = field, raw
    own_phone_fields = PHONE_FIELDS.get(record_type, ())
    for phone_row in phones:
        if phone_row.field in own_phone_fields and phone_row.match_key not in wanted_phones:
            await session.delete(phone_row)
    await session.flush()


async def drop_identities(session: AsyncSession, record_type: str, record_id: int) -> None:
    """Forget every identity of a record (when it is purged for good)."""
    for model in (EmailIdentity, PhoneIdentity):
        await session.execute(
            delete(model).where(
                and_(model.record_type == record_type, model.record_id == record_id)
            )
        )


@dataclass(frozen=True)
class IdentityMatch:
    record_type: str
    record_id: int
    via: str


async def lookup_email(
    session: AsyncSession, address: str, record_types: Sequence[str] | None = None
) -> list[IdentityMatch]:
    """Every record an address belongs to (several are returned as several)."""
    normalised = normalise_email(address)
    if normalised is None:
        return []
    query = select(EmailIdentity.record_type, EmailIdentity.record_id).where(
        EmailIdentity.address == normalised
    )
    if record_types:
        query = query.where(EmailIdentity.record_type.in_(record_types))
    rows = (await session.execute(query.order_by(EmailIdentity.id))).all()
    return [IdentityMatch(rt, rid, normalised) for rt, rid in rows]


async def lookup_phone(
    session: AsyncSession,
    number: str,
    region: PhoneRegion = DEFAULT_REGION,
    record_types: Sequence[str] | None = None,
) -> list[IdentityMatch]:
    """Every record a number belongs to, matched on the whole number."""
    key = normalise_phone(number, region)
    if key is None:
        return []
    query = select(PhoneIdentity.record_type, PhoneIdentity.record_id).where(
        PhoneIdentity.match_key == key.match_key
    )
    if record_types:
        query = query.where(PhoneIdentity.record_type.in_(record_types))
    rows = (await session.execute(query.order_by(PhoneIdentity.id))).all()
    return [IdentityMatch(rt, rid, key.match_key) for rt, rid in rows]
