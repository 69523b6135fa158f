"""The inbound journal: raw mail stored by content hash under its source key, first."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from store.blobs import record_blob
from store.db import Store
from store.errors import TransientError
from store.models.comms import InboundJournal, JournalState

MAIL_JOURNALLED = "MailJournalled"


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
            insert = (
                postgresql.insert
                if session.get_bind().dialect.name == "postgresql"
                else sqlite.insert
            )
            result = await session.execute(
                insert(InboundJournal)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["source_key"])
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
