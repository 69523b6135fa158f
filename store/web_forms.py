"""Web forms: a company site posts leads with a per-form key; one submission, one lead.

A form's key is shown once, when it is made or replaced (rotated); the store
keeps its SHA-256 and last few characters only.  A revoked form's key is
refused like a wrong one; rotating gives a form a new key at once (the old one
dies in the same commit) and switches a revoked form back on.
A submission becomes a lead (source "web") with a note of what was sent,
unless its email address or phone number is known already: then the note goes
to the lead or contact that has it (``store.dedupe``), so a customer who fills
in the form twice is one lead, and an existing customer is not a new lead.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

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


KEY_HINT_CHARS = 4
MAX_NAME = 120
MAX_URL = 500


def _new_key(form: WebForm) -> str:
    """A fresh key for ``form``: only its hash and last characters are kept; the old one is dead."""
    key = PREFIX + secrets.token_urlsafe(24)
    form.key_sha256 = _digest(key)
    form.key_hint = key[-KEY_HINT_CHARS:]
    form.key_made_at = utcnow()
    return key


def origin_of(text: str) -> str | None:
    """``text`` as a browser sends it in ``Origin`` (scheme://host[:port]), else None."""
    text = text.strip().rstrip("/")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname or ""
    if (
        parts.scheme.lower() not in ("http", "https")
        or not host
        or parts.path or parts.query or parts.fragment or "#" in text or "?" in text
        or parts.username is not None or parts.password is not None
        or any(c.isspace() for c in text)
    ):  # fmt: skip
        return None
    host = f"[{host}]" if ":" in host else host.lower()  # an IPv6 address keeps its brackets
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port is not None else "")


def bad_origins(origins: Iterable[str]) -> list[str]:
    """The given origins that are not scheme://host[:port]."""
    return [o.strip() for o in origins if origin_of(o) is None]


def is_thank_you_url(url: str) -> bool:
    """An absolute http(s) address a browser can be sent to."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and bool(parts.hostname) and len(url) <= MAX_URL
            and not any(c.isspace() or ord(c) < 32 for c in url))  # fmt: skip


async def _owner_id(session: AsyncSession, owner: str | None) -> int | None:
    if owner is None:
        return None
    owner_id = await session.scalar(select(User.id).where(User.username == owner))
    if owner_id is None:
        raise NotFound(f"no user {owner!r}")
    return owner_id


def _settings(origins: Sequence[str], thank_you_url: str | None) -> list[str]:
    """The origins as kept; ``ValidationError`` for a bad origin or thank-you page."""
    errors = {}
    bad = bad_origins(origins)
    if bad:
        errors["origins"] = f"not an origin like https://www.example.cn: {bad}"
    if thank_you_url is not None and not is_thank_you_url(thank_you_url):
        errors["thank_you_url"] = "not an http(s) address"
    if errors:
        raise ValidationError(errors)
    return list(dict.fromkeys(origin_of(o) or "" for o in origins))


async def create_web_form(
    session: AsyncSession,
    name: str,
    *,
    owner: str | None = None,
    origins: Sequence[str] = (),
    thank_you_url: str | None = None,
) -> str:
    """A new form; returns its key, the only time its text exists outside the caller."""
    owner_id = await _owner_id(session, owner)
    kept = _settings(origins, thank_you_url)
    if not name or len(name) > MAX_NAME:
        raise ValidationError({"name": f"between 1 and {MAX_NAME} characters"})
    if await session.scalar(select(WebForm.id).where(WebForm.name == name)) is not None:
        raise ValidationError({"name": f"a form named {name!r} exists"})
    form = WebForm(name=name, key_sha256="", owner_id=owner_id, allowed_origins=kept,
                   thank_you_url=thank_you_url)  # fmt: skip
    key = _new_key(form)
    session.add(form)
    await session.flush()
    return key


async def web_form_named(session: AsyncSession, name: str) -> WebForm:
    """The form called ``name``, locked for change until commit; ``NotFound`` otherwise."""
    form = await session.scalar(select(WebForm).where(WebForm.name == name).with_for_update())
    if form is None:
        raise NotFound(f"no web form {name!r}")
    return form


async def update_web_form(
    session: AsyncSession,
    form: WebForm,
    *,
    owner: str | None,
    origins: Sequence[str],
    thank_you_url: str | None,
) -> None:
    """Change where a form's leads go, which sites may post it and its thank-you page."""
    owner_id = await _owner_id(session, owner)
    form.allowed_origins = _settings(origins, thank_you_url)
    form.owner_id, form.thank_you_url = owner_id, thank_you_url
    await session.flush()


async def revoke_web_form(session: AsyncSession, form: WebForm) -> None:
    """Switch a form off: its key is refused from now on (401, nothing stored)."""
    if form.revoked_at is None:
        form.revoked_at = utcnow()
        await session.flush()


async def rotate_web_form_key(session: AsyncSession, form: WebForm) -> str:
    """Replace a form's key (the old one is refused at once) and switch it on; the new key."""
    key = _new_key(form)
    form.revoked_at = None
    await session.flush()
    return key


@dataclass(frozen=True)
class WebFormRow:
    """A form as the admin page and ``rapport webform list`` show it."""

    id: int
    name: str
    owner: str | None  # user name
    origins: tuple[str, ...]
    thank_you_url: str | None
    active: bool
    key_hint: str | None
    key_made_at: dt.datetime | None
    created_at: dt.datetime
    last_used_at: dt.datetime | None


async def list_web_forms(session: AsyncSession) -> list[WebFormRow]:
    """Every form, by name, with its owner's user name."""
    rows = await session.execute(
        select(WebForm, User.username)
        .outerjoin(User, User.id == WebForm.owner_id)
        .order_by(WebForm.name)
    )
    return [
        WebFormRow(
            form.id,
            form.name,
            username,
            tuple(form.allowed_origins or ()),
            form.thank_you_url,
            form.revoked_at is None,
            form.key_hint,
            form.key_made_at,
            form.created_at,
            form.last_used_at,
        )
        for form, username in rows
    ]


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
