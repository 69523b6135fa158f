"""The inbound journal: raw mail stored by content hash under its source key, first."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from store.blobs import record_blob, record_blobs
from store.db import Store
from store.dialect import insert_ignoring
from store.errors import TransientError
from store.models.comms import InboundJournal, JournalState

MAIL_JOURNALLED = "MailJournalled"
KEYS_PER_QUERY = 500


@dataclass(frozen=True)
class JournalReceipt:
    journal_id: int
    blob_sha256: str
    created: bool  # False when the source key was journalled before (a redelivery)


async def journal_inbound(
    store: Store, source_key: str, raw: bytes, *, size_exceeded: bool = False
) -> JournalReceipt:
    """Store the bytes, then journal them under ``source_key`` in one short transaction.

    Seeing a source key again changes nothing and says so.  Any database
    failure is a ``TransientError``: the caller must not acknowledge the
    message (SMTP answers 451, IMAP keeps its cursor) so nothing is lost.
    """
    digest = await store.blobs.write(raw)
    values = {
        "source_key": source_key,
        "blob_sha256": digest,
        "state": JournalState.PENDING.value,
        "size_exceeded": size_exceeded,
    }
    try:
        async with store.session() as session, session.begin():
            await record_blob(session, digest, len(raw), "message/rfc822")
            result = await session.execute(
                insert_ignoring(session, InboundJournal, ["source_key"])
                .values(**values)
                .returning(InboundJournal.id)
            )
            new_id = result.scalar_one_or_none()
            if new_id is None:
                existing = await session.scalar(
                    select(InboundJournal).where(InboundJournal.source_key == source_key)
                )
                assert existing is not None
                return JournalReceipt(existing.id, existing.blob_sha256, created=False)
    except SQLAlchemyError as err:
        raise TransientError(f"the store cannot take mail now: {type(err).__name__}") from err
    await store.bus.publish(MAIL_JOURNALLED, journal_id=new_id, source_key=source_key)
    return JournalReceipt(new_id, digest, created=True)


@dataclass(frozen=True)
class JournalEntry:
    source_key: str
    raw: bytes
    location: dict[str, Any] = field(default_factory=dict)
    size_exceeded: bool = False


async def journal_many(
    store: Store,
    entries: Sequence[JournalEntry],
    also: Callable[[AsyncSession], Awaitable[None]] | None = None,
) -> list[int]:
    """Journal a batch in one transaction (with ``also``, e.g. moving a cursor, in it too).

    The bytes are written and made durable with one flush of the file system,
    and the rows go in with a few statements whatever the batch's size.
    Returns the ids of the entries that were new; keys journalled before are skipped.
    """
    digests = await store.blobs.write_many([entry.raw for entry in entries])
    fresh: dict[str, dict[str, Any]] = {}
    try:
        async with store.session() as session, session.begin():
            await record_blobs(
                session,
                [(d, len(e.raw), "message/rfc822") for e, d in zip(entries, digests, strict=True)],
            )
            keys = [entry.source_key for entry in entries]
            seen: set[str] = set()
            for start in range(0, len(keys), KEYS_PER_QUERY):
                seen.update(
                    await session.scalars(
                        select(InboundJournal.source_key).where(
                            InboundJournal.source_key.in_(keys[start : start + KEYS_PER_QUERY])
                        )
                    )
                )
            for entry, digest in zip(entries, digests, strict=True):
                if entry.source_key not in seen and entry.source_key not in fresh:
                    fresh[entry.source_key] = {
                        "source_key": entry.source_key,
                        "blob_sha256": digest,
                        "state": JournalState.PENDING.value,
                        "size_exceeded": entry.size_exceeded,
                        "location": entry.location,
                    }
            new_ids: list[int] = []
            if fresh:
                await session.execute(
                    insert_ignoring(session, InboundJournal, ["source_key"]),
                    list(fresh.values()),
                )
                wanted = list(fresh)
                for start in range(0, len(wanted), KEYS_PER_QUERY):
                    new_ids.extend(
                        await session.scalars(
                            select(InboundJournal.id).where(
                                InboundJournal.source_key.in_(
                                    wanted[start : start + KEYS_PER_QUERY]
                                )
                            )
                        )
                    )
            if also is not None:
                await also(session)
    except SQLAlchemyError as err:
        raise TransientError(f"the store cannot take mail now: {type(err).__name__}") from err
    new_ids.sort()
    for new_id in new_ids:
        await store.bus.publish(MAIL_JOURNALLED, journal_id=new_id)
    return new_ids
