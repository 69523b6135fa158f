"""Identity indexes: which records an email address or phone number belongs to."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from store.base import Base, BigId, IdMixin, utcnow


class EmailIdentity(IdMixin, Base):
    """A normalised (lower-cased) address, one row per (address, owner record)."""

    __tablename__ = "email_identities"

    address: Mapped[str] = mapped_column(String(320))
    record_type: Mapped[str] = mapped_column(String(24))
    record_id: Mapped[int] = mapped_column(BigId)
    field: Mapped[str] = mapped_column(String(32), default="email")
    undeliverable: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("address", "record_type", "record_id"),
        Index("ix_email_identities_record", "record_type", "record_id"),
    )


class PhoneIdentity(IdMixin, Base):
    """A phone number in E.164 (when it has one) with the raw form beside it.

    Short service numbers (10086, 95588) have no E.164 form and match on ``raw``.
    """

    __tablename__ = "phone_identities"

    e164: Mapped[str | None] = mapped_column(String(32), index=True)
    raw: Mapped[str] = mapped_column(String(64))
    # The key matched on: the E.164 number, else the digits of a short/unparseable number.
    match_key: Mapped[str] = mapped_column(String(64))
    record_type: Mapped[str] = mapped_column(String(24))
    record_id: Mapped[int] = mapped_column(BigId)
    field: Mapped[str] = mapped_column(String(32), default="phone")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("match_key", "record_type", "record_id"),
        Index("ix_phone_identities_record", "record_type", "record_id"),
        Index("ix_phone_identities_match_key", "match_key"),
    )
