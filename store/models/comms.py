"""Mail and calls as stored facts: blobs, the inbound journal, emails, calls."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import BigInteger, Enum, Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from store.base import Base, BigId, IdMixin, TimestampMixin, utcnow


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


class Blob(Base):
    """Bytes stored once on disk under their SHA-256 (raw mail, attachments, recordings)."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str | None] = mapped_column(String(255), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class JournalState(enum.StrEnum):
    PENDING = "pending"
    PROCESSED = "processed"
    QUARANTINED = "quarantined"


class InboundJournal(IdMixin, Base):
    """Every inbound message, journalled under its source key before any processing.

    The source key is ``imap:<mailbox>/<folder>/<uidvalidity>/<uid>``,
    ``smtp:<queue id>`` or ``import:<path>#<n>``; seeing a key twice is a no-op.
    """

    __tablename__ = "inbound_journal"

    source_key: Mapped[str] = mapped_column(String(700), unique=True)
    blob_sha256: Mapped[str] = mapped_column(String(64), ForeignKey("blobs.sha256"), index=True)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    state: Mapped[JournalState] = mapped_column(
        _enum(JournalState), default=JournalState.PENDING, index=True
    )
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    email_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("emails.id", ondelete="SET NULL"), default=None
    )
    size_exceeded: Mapped[bool] = mapped_column(default=False)
    # Where it was seen: {"mailbox": ..., "folder": ..., "uidvalidity": N, "uid": N}.
    location: Mapped[dict[str, Any]] = mapped_column(default=dict)


class EmailKind(enum.StrEnum):
    NORMAL = "normal"
    BOUNCE = "bounce"
    AUTO_REPLY = "auto_reply"
    BULK = "bulk"


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"


class EmailThread(IdMixin, Base):
    """A conversation: mails joined by Message-ID, In-Reply-To and References."""

    __tablename__ = "email_threads"

    subject: Mapped[str] = mapped_column(String(998), default="")
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Email(IdMixin, TimestampMixin, Base):
    """One email, however many folders or mailboxes it was seen in.

    Its locations and attachments are loaded only when asked for (selectinload):
    the mail-in hot path reads emails often and needs neither.
    """

    __tablename__ = "emails"

    message_id: Mapped[str | None] = mapped_column(String(998), default=None, index=True)
    in_reply_to: Mapped[str | None] = mapped_column(String(998), default=None)
    references: Mapped[list[str]] = mapped_column(default=list)
    thread_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("email_threads.id", ondelete="SET NULL"), default=None, index=True
    )
    direction: Mapped[Direction] = mapped_column(_enum(Direction), default=Direction.INBOUND)
    kind: Mapped[EmailKind] = mapped_column(_enum(EmailKind), default=EmailKind.NORMAL, index=True)
    from_address: Mapped[str | None] = mapped_column(String(320), default=None, index=True)
    from_name: Mapped[str | None] = mapped_column(String(255), default=None)
    # [{"name": "...", "address": "..."}, ...]
    to: Mapped[list[Any]] = mapped_column(default=list)
    cc: Mapped[list[Any]] = mapped_column(default=list)
    bcc: Mapped[list[Any]] = mapped_column(default=list)
    reply_to: Mapped[list[Any]] = mapped_column(default=list)
    subject: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    text_body: Mapped[str] = mapped_column(Text, default="")
    html_body: Mapped[str | None] = mapped_column(Text, default=None)
    raw_sha256: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("blobs.sha256"), default=None, unique=True
    )
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    # Problems met while decoding (undecodable header bytes, bad charset ...), never silent.
    defects: Mapped[list[str]] = mapped_column(default=list)
    # For mail we sent: when a bounce for it came back.
    bounced_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    locations: Mapped[list[EmailLocation]] = relationship(
        back_populates="email",
        cascade="all, delete-orphan",
        lazy="raise_on_sql",
        passive_deletes=True,
    )
    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="email",
        cascade="all, delete-orphan",
        lazy="raise_on_sql",
        passive_deletes=True,
    )


class EmailLocation(IdMixin, Base):
    """Where an email was seen: a mailbox folder UID, an SMTP delivery, an import."""

    __tablename__ = "email_locations"

    email_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("emails.id", ondelete="CASCADE"), index=True
    )
    mailbox: Mapped[str] = mapped_column(String(255))
    folder: Mapped[str] = mapped_column(String(255), default="")
    uidvalidity: Mapped[int] = mapped_column(BigInteger, default=0)
    uid: Mapped[int] = mapped_column(BigInteger, default=0)
    flags: Mapped[list[str]] = mapped_column(default=list)
    seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    email: Mapped[Email] = relationship(back_populates="locations", lazy="raise")

    __table_args__ = (UniqueConstraint("mailbox", "folder", "uidvalidity", "uid"),)


class EmailParticipant(IdMixin, Base):
    """An address on an email (from/to/cc/bcc/reply_to), for search by address."""

    __tablename__ = "email_participants"

    email_id: Mapped[int] = mapped_column(BigId, ForeignKey("emails.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(8))
    address: Mapped[str] = mapped_column(String(320), index=True)
    name: Mapped[str | None] = mapped_column(String(255), default=None)

    __table_args__ = (UniqueConstraint("email_id", "role", "address"),)


class Attachment(IdMixin, Base):
    __tablename__ = "attachments"

    email_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("emails.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(500), default="")
    content_type: Mapped[str] = mapped_column(String(255), default="application/octet-stream")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    blob_sha256: Mapped[str] = mapped_column(String(64), ForeignKey("blobs.sha256"), index=True)
    content_id: Mapped[str | None] = mapped_column(String(998), default=None)
    is_inline: Mapped[bool] = mapped_column(default=False)

    email: Mapped[Email] = relationship(back_populates="attachments", lazy="raise")


class CallDisposition(enum.StrEnum):
    RINGING = "ringing"
    ANSWERED = "answered"
    MISSED = "missed"
    NOANSWER = "noanswer"  # outbound: the customer did not pick up
    ABANDONED = "abandoned"
    BUSY = "busy"
    FAILED = "failed"
    VOICEMAIL = "voicemail"


class Call(IdMixin, TimestampMixin, Base):
    """One call per customer leg, upserted by (PBX system name, customer-leg Uniqueid)."""

    __tablename__ = "calls"

    pbx: Mapped[str] = mapped_column(String(80))
    uniqueid: Mapped[str] = mapped_column(String(64))
    linkedid: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    direction: Mapped[Direction] = mapped_column(_enum(Direction))
    external_number_raw: Mapped[str | None] = mapped_column(String(64), default=None)
    external_number_e164: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    did: Mapped[str | None] = mapped_column(String(64), default=None)
    queue: Mapped[str | None] = mapped_column(String(80), default=None)
    disposition: Mapped[CallDisposition] = mapped_column(
        _enum(CallDisposition), default=CallDisposition.RINGING, index=True
    )
    hangup_cause: Mapped[int | None] = mapped_column(default=None)
    started_at: Mapped[dt.datetime] = mapped_column(index=True)
    answered_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    ended_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    ring_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    talk_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    recording: Mapped[str | None] = mapped_column(String(500), default=None)
    # BlindTransfer, AttendedTransfer or Redirect (moved with no transfer event).
    transfer: Mapped[str | None] = mapped_column(String(24), default=None)
    # The agent who talked last with the customer.
    agent_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="SET NULL"), default=None, index=True
    )
    # The AMI link was down when it ended: the end time is when it was last seen alive.
    ended_in_gap: Mapped[bool] = mapped_column(default=False)
    # Set on a click-to-dial call: the record it was dialled from ("contact:12").
    origin_record: Mapped[str | None] = mapped_column(String(48), default=None)

    segments: Mapped[list[CallSegment]] = relationship(
        back_populates="call",
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="CallSegment.ring_at",
    )

    __table_args__ = (UniqueConstraint("pbx", "uniqueid"),)


class CallSegment(IdMixin, Base):
    """One agent's part in a call: rang, answered or not, ended why."""

    __tablename__ = "call_segments"

    call_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("calls.id", ondelete="CASCADE"), index=True
    )
    agent_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="SET NULL"), default=None, index=True
    )
    channel: Mapped[str | None] = mapped_column(String(120), default=None)
    extension: Mapped[str | None] = mapped_column(String(32), default=None)
    ring_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    answered_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    ended_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    end_reason: Mapped[str | None] = mapped_column(String(40), default=None)

    call: Mapped[Call] = relationship(back_populates="segments", lazy="raise")


class CallBack(IdMixin, TimestampMixin, Base):
    """The one open callback task for a caller whose calls went unanswered.

    Repeat missed calls within the window merge into it; an answered call with the
    same number closes it.
    """

    __tablename__ = "call_backs"

    match_key: Mapped[str] = mapped_column(String(40))
    number: Mapped[str] = mapped_column(String(64))
    activity_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("activities.id", ondelete="CASCADE"), index=True
    )
    missed_calls: Mapped[int] = mapped_column(default=1)
    first_missed_at: Mapped[dt.datetime]
    last_missed_at: Mapped[dt.datetime]
    last_call_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("calls.id", ondelete="SET NULL"), default=None
    )
    closed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    closed_by_call_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("calls.id", ondelete="SET NULL"), default=None
    )

    __table_args__ = (Index("ix_call_backs_open", "match_key", "closed_at"),)


Index("ix_emails_thread_received", Email.thread_id, Email.received_at)
