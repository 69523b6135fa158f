"""What happened to sent mail: recipients with their read counts, tracked links, hits, opt-outs."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from store.base import Base, BigId, IdMixin, utcnow


class SentRecipient(IdMixin, Base):
    """One recipient of one sent mail, and what they did with it.

    Tracking tokens name this row.  Opens are split into human ones (a person
    looked, as far as can be told) and machine ones (Apple Mail Privacy
    Protection, scanners, prefetching); a click or a reply proves an open.
    """

    __tablename__ = "sent_recipients"

    email_id: Mapped[int] = mapped_column(BigId, ForeignKey("emails.id", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(8), default="to")
    first_human_open_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    human_opens: Mapped[int] = mapped_column(Integer, default=0)
    machine_opens: Mapped[int] = mapped_column(Integer, default=0)
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    last_activity_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    replied_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Delivery through the outbox: queued | sending | sent | failed | skipped.
    delivery: Mapped[str] = mapped_column(String(12), default="queued")
    delivery_error: Mapped[str | None] = mapped_column(Text, default=None)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    send_attempts: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        UniqueConstraint("email_id", "address"),
        Index("ix_sent_recipients_address", "address"),
    )


class TrackedLink(IdMixin, Base):
    """A link of a sent mail, recorded at send time: the only places its clicks may go."""

    __tablename__ = "tracked_links"

    email_id: Mapped[int] = mapped_column(BigId, ForeignKey("emails.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("email_id", "position"),)


class TrackingHit(IdMixin, Base):
    """One request for a pixel or a click link, with how it was classed."""

    __tablename__ = "tracking_hits"

    recipient_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("sent_recipients.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(12))  # open | click
    link_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("tracked_links.id", ondelete="SET NULL"), default=None
    )
    # human | apple_mpp | gmail_proxy | scanner | prefetch | preview
    hit_class: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(64), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(500), default=None)

    # One index, not two: every hit written updates it (a recipient's hits in time order).
    __table_args__ = (Index("ix_tracking_hits_recipient_at", "recipient_id", "at"),)


class TrackingHitBatch(Base):
    """A batch of hits already written, by the key its writer gave it.

    Hits cross a pipe to a writer process and are acknowledged per batch; a
    batch sent again after the writer died between its commit and its
    acknowledgement is recognised here and not counted twice.
    """

    __tablename__ = "tracking_hit_batches"

    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)
    written_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class MailOptOut(IdMixin, Base):
    """An address that must not receive bulk mail again (unsubscribed, or bounced)."""

    __tablename__ = "mail_opt_outs"

    address: Mapped[str] = mapped_column(String(320), unique=True)
    reason: Mapped[str] = mapped_column(String(32))  # unsubscribed | bounced | manual
    email_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("emails.id", ondelete="SET NULL"), default=None
    )
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class OutboxEntry(IdMixin, Base):
    """A mail waiting in (or gone through) the shared outbox; one per outbound email."""

    __tablename__ = "outbox"

    email_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("emails.id", ondelete="CASCADE"), unique=True
    )
    state: Mapped[str] = mapped_column(
        String(12), default="queued", index=True
    )  # queued|sent|failed
    bulk: Mapped[bool] = mapped_column(default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    queued_by_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class MailTemplate(IdMixin, Base):
    """A mail template (Jinja2, sandboxed) in one language: subject, HTML and text."""

    __tablename__ = "mail_templates"

    name: Mapped[str] = mapped_column(String(120))
    language: Mapped[str] = mapped_column(String(16), default="zh-CN")
    subject: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text, default="")
    html: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (UniqueConstraint("name", "language"),)
