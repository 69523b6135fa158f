"""Recording what a sent mail can be tracked by: one row per recipient, one per link."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.bulk import insert_rows
from store.identity import normalise_email
from store.models import SentRecipient, TrackedLink


async def record_sent(
    session: AsyncSession,
    email_id: int,
    recipients: Sequence[tuple[str, str]],
    urls: Sequence[str] = (),
) -> dict[str, int]:
    """Recipients ``(role, address)`` and link ``urls`` (positions 0, 1, ...) of an email.

    Returns each normalised address's recipient id, which its tracking token names.
    """
    rows: dict[str, dict[str, object]] = {}
    for role, address in recipients:
        normal = normalise_email(address)
        if normal and normal not in rows:
            rows[normal] = {"email_id": email_id, "address": normal, "role": role}
    await insert_rows(session, SentRecipient, list(rows.values()))
    await insert_rows(
        session,
        TrackedLink,
        [{"email_id": email_id, "position": n, "url": url} for n, url in enumerate(urls)],
    )
    found = await session.execute(
        select(SentRecipient.address, SentRecipient.id).where(SentRecipient.email_id == email_id)
    )
    return {address: recipient_id for address, recipient_id in found}
