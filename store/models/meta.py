"""Tags and the audit trail of field changes."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from store.base import Base, BigId, IdMixin, SoftDeleteMixin, TimestampMixin, utcnow


class Tag(IdMixin, Base):
    __tablename__ = "tags"

    name: Mapped[str] = mapped_column(String(80), unique=True)
    color: Mapped[str] = mapped_column(String(16), default="#888888")


class Tagging(IdMixin, Base):
    __tablename__ = "taggings"

    tag_id: Mapped[int] = mapped_column(BigId, ForeignKey("tags.id", ondelete="CASCADE"))
    record_type: Mapped[str] = mapped_column(String(24))
    record_id: Mapped[int] = mapped_column(BigId)

    __table_args__ = (
        UniqueConstraint("tag_id", "record_type", "record_id"),
        Index("ix_taggings_record", "record_type", "record_id"),
    )


class AuditEntry(IdMixin, Base):
    """One change to one field of one record (or a whole-record action)."""

    __tablename__ = "audit_trail"

    record_type: Mapped[str] = mapped_column(String(24))
    record_id: Mapped[int] = mapped_column(BigId)
    # create, update, delete, restore, convert, merge
    action: Mapped[str] = mapped_column(String(16))
    field: Mapped[str | None] = mapped_column(String(64), default=None)
    old_value: Mapped[str | None] = mapped_column(Text, default=None)
    new_value: Mapped[str | None] = mapped_column(Text, default=None)
    user_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    correlation_id: Mapped[str | None] = mapped_column(String(64), default=None)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_audit_trail_record", "record_type", "record_id", "at"),)


class Document(IdMixin, TimestampMixin, SoftDeleteMixin, Base):
    """A file kept on a record (a quote's PDF, a contract, a price list).

    The bytes live in the blob store by content hash; a mail sent from the
    record can attach any of its documents.
    """

    __tablename__ = "documents"
    __record_type__ = "document"

    record_type: Mapped[str] = mapped_column(String(24))
    record_id: Mapped[int] = mapped_column(BigId)
    filename: Mapped[str] = mapped_column(String(500))
    content_type: Mapped[str] = mapped_column(String(255), default="application/octet-stream")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    blob_sha256: Mapped[str] = mapped_column(String(64), ForeignKey("blobs.sha256"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="SET NULL"), default=None
    )

    __table_args__ = (Index("ix_documents_record", "record_type", "record_id"),)
