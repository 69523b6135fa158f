"""Documents kept on records: files by content hash, attachable to mail sent from the record."""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import RecordRef
from store.blobs import BlobStore
from store.errors import ValidationError
from store.models import Document

MAX_DOCUMENT_BYTES = 50 * 1024 * 1024


async def add_document(
    session: AsyncSession,
    blobs: BlobStore,
    record: RecordRef,
    filename: str,
    data: bytes,
    *,
    content_type: str | None = None,
    description: str = "",
) -> Document:
    """Keep ``data`` as a document on ``record``; the bytes go to the blob store first."""
    errors = {}
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name:
        errors["filename"] = "a document needs a file name"
    if len(data) > MAX_DOCUMENT_BYTES:
        errors["file"] = f"larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MB"
    if errors:
        raise ValidationError(errors)
    kind = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    digest = await blobs.put(session, data, kind)
    document = Document(
        record_type=record[0], record_id=record[1], filename=name[:500], content_type=kind,
        size=len(data), blob_sha256=digest, description=description,
        created_by_id=session.info.get("user_id"),
    )  # fmt: skip
    session.add(document)
    await session.flush()
    return document


async def documents_of(session: AsyncSession, record: RecordRef) -> list[Document]:
    """A record's live documents, newest first."""
    rows = await session.scalars(
        select(Document)
        .where(
            Document.record_type == record[0],
            Document.record_id == record[1],
            Document.deleted_at.is_(None),
        )
        .order_by(Document.created_at.desc(), Document.id.desc())
    )
    return list(rows)


async def live_documents(session: AsyncSession, ids: Sequence[int]) -> list[Document]:
    """The documents asked for, in the order asked; ``ValidationError`` names any missing."""
    if not ids:
        return []
    found = {
        d.id: d
        for d in await session.scalars(
            select(Document).where(Document.id.in_(set(ids)), Document.deleted_at.is_(None))
        )
    }
    missing = [str(i) for i in ids if i not in found]
    if missing:
        raise ValidationError({"documents": f"no such document: {', '.join(missing)}"})
    return [found[i] for i in dict.fromkeys(ids)]
