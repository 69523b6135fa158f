"""Web forms: a company site posts leads with a per-form key; one submission, one lead.

A form's key is shown once, when it is made; the store keeps its SHA-256 only.
A submission becomes a lead (source "web") with a note of what was sent,
unless its email address or phone number is known already: then the note goes
to the lead or contact that has it (``store.dedupe``), so a customer who fills
in the form twice is one lead, and an existing customer is not a new lead.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import log_activity
from store.base import utcnow
from store.dedupe import MERGE_FIELDS, find_known
from store.errors import NotFound, ValidationError
from store.identity import index_record
from store.models import ActivityKind, Contact, Lead, LeadStatus, User, WebForm
from store.records import acting_as

PREFIX = "rpf_"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_web_form(
    session: AsyncSession,
    name: str,
    *,
    owner: str | None = None,
    origins: Sequence[str] = (),
    thank_you_url: str | None = None,
) -> str:
    """A new form; returns its key, the only time its text exists outside the caller."""
    owner_id = None
    if owner is not None:
        owner_id = await session.scalar(select(User.id).where(User.username == owner))
        if owner_id is None:
            raise NotFound(f"no user {owner!r}")
    origins = [o.strip().rstrip("/") for o in origins]
    # An origin is a scheme and a host (and port): what a browser sends in ``Origin``.
    bad = [o for o in origins if not o.startswith(("https://", "http://")) or o.count("/") != 2]
    if bad:
        raise ValidationError({"origins": f"not an origin like https://www.example.cn: {bad}"})
    if await session.scalar(select(WebForm.id).where(WebForm.name == name)) is not None:
        raise ValidationError({"name": f"a form named {name!r} exists"})
    key = PREFIX + secrets.token_urlsafe(24)
    session.add(
        WebForm(name=name, key_sha256=_digest(key), owner_id=owner_id,
                allowed_origins=list(origins), thank_you_url=thank_you_url)
    )  # fmt: skip
    await session.flush()
    return key


async def form_for_key(session: AsyncSession, key: str) -> WebForm | None:
    """The live form a key belongs to, else None."""
    if not key.startswith(PREFIX) or len(key) > 100:
        return None
    return await session.scalar(
        select(WebForm).where(WebForm.key_sha256 == _digest(key), WebForm.revoked_at.is_(None))
    )


async def allowed_origins(session: AsyncSession) -> set[str]:
    """Every origin some live form accepts (what a CORS preflight, which has no key, may know)."""
    rows = await session.scalars(
        select(WebForm.allowed_origins).where(WebForm.revoked_at.is_(None))
    )
    return {origin for origins in rows for origin in origins or ()}


@dataclass(frozen=True)
class Captured:
    record_type: str  # "lead", or "contact" for a known customer
    record_id: int
    new: bool  # a new lead, rather than a note on a known record


async def capture_lead(
    session: AsyncSession, form: WebForm, values: Mapping[str, Any], message: str
) -> Captured:
    """File one submission: a new lead, or a note on the lead or contact already known.

    A known open lead gets the empty fields the submission fills (as a merge
    would); a known contact keeps its fields, the customer's record being theirs.
    """
    now = utcnow()
    form.last_used_at = now
    phones = [values[n] for n in ("phone", "mobile") if values.get(n)]
    known = await _known(session, values.get("email"), phones)
    with acting_as(session, None):
        if known is None:
            team_id = None
            if form.owner_id is not None:
                team_id = await session.scalar(select(User.team_id).where(User.id == form.owner_id))
            record: Lead | Contact = Lead(**values, source="web", status=LeadStatus.NEW,
                                          owner_id=form.owner_id, team_id=team_id)  # fmt: skip
            session.add(record)
            await session.flush()
        else:
            found: Lead | Contact | None = await session.get(
                Lead if known[0] == "lead" else Contact, known[1], with_for_update=True
            )
            assert found is not None  # live: find_known said so, and we hold it now
            record = found
            if isinstance(record, Lead):
                for name in MERGE_FIELDS["lead"]:
                    if getattr(record, name) in (None, "") and values.get(name) not in (None, ""):
                        setattr(record, name, values[name])
        await index_record(session, record)
        await log_activity(session, kind=ActivityKind.NOTE, subject=f"Web form: {form.name}",
                           body=message, records=[record], occurred_at=now,
                           owner_id=form.owner_id)  # fmt: skip
    return Captured("lead" if isinstance(record, Lead) else "contact", record.id, known is None)


async def _known(
    session: AsyncSession, email: str | None, phones: Sequence[str]
) -> tuple[str, int] | None:
    """The oldest live contact, else the oldest open lead, that has this address or a number."""
    matches = await find_known(session, email=email, phones=phones)
    contacts = sorted(m.record_id for m in matches if m.record_type == "contact")
    if contacts:
        return "contact", contacts[0]
    lead_ids = sorted(m.record_id for m in matches if m.record_type == "lead")
    if lead_ids:
        open_ids = await session.scalars(
            select(Lead.id).where(Lead.id.in_(lead_ids), Lead.status != LeadStatus.CONVERTED)
        )
        found = sorted(open_ids)
        if found:
            return "lead", found[0]
    return None
