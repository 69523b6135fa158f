"""The activity timeline: one activity linked to every record it concerns."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import Enum, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from store.base import Base, BigId, IdMixin, SoftDeleteMixin, TimestampMixin, utcnow


class ActivityKind(enum.StrEnum):
    EMAIL = "email"
    CALL = "call"
    MEETING = "meeting"
    TASK = "task"
    NOTE = "note"
    VISIT = "visit"


class ActivityStatus(enum.StrEnum):
    PLANNED = "planned"
    DONE = "done"
    CANCELLED = "cancelled"


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


class Activity(IdMixin, TimestampMixin, SoftDeleteMixin, Base):
    """Something that happened or will happen with customers: mail, call, meeting..."""

    __tablename__ = "activities"
    __record_type__ = "activity"

    kind: Mapped[ActivityKind] = mapped_column(_enum(ActivityKind), index=True)
    subject: Mapped[str] = mapped_column(String(500), default="")
    body: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[ActivityStatus] = mapped_column(
        _enum(ActivityStatus), default=ActivityStatus.DONE
    )
    # When it happened (mail received, call started) or is planned to start.
    occurred_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    ends_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    due_at: Mapped[dt.datetime | None] = mapped_column(default=None, index=True)
    priority: Mapped[str] = mapped_column(String(8), default="normal")
    location: Mapped[str | None] = mapped_column(String(255), default=None)
    owner_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="SET NULL"), default=None, index=True
    )
    created_by_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    email_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("emails.id", ondelete="SET NULL"), default=None, index=True
    )
    call_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("calls.id", ondelete="SET NULL"), default=None, index=True
    )

    # A reminder (store/reminders.py): minutes before the activity's time (a task's due time,
    # else its start), the moment that makes, and when it was mailed to the owner.
    remind_minutes: Mapped[int | None] = mapped_column(default=None)
    remind_at: Mapped[dt.datetime | None] = mapped_column(default=None, index=True)
    reminder_sent_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Repetition (store/recurrence.py): the rule ("FREQ=WEEKLY;INTERVAL=2;COUNT=10"), the
    # series (its first occurrence's id; no foreign key, a purged first one ends nothing),
    # this occurrence's number in it, and the series' first time every occurrence counts from.
    recurrence: Mapped[str | None] = mapped_column(String(120), default=None)
    series_id: Mapped[int | None] = mapped_column(BigId, default=None)
    series_index: Mapped[int] = mapped_column(default=0)
    series_start: Mapped[dt.datetime | None] = mapped_column(default=None)

    links: Mapped[list[ActivityLink]] = relationship(
        back_populates="activity",
        cascade="all, delete-orphan",
        lazy="raise_on_sql",
        passive_deletes=True,
    )

    # One row per occurrence: completing an occurrence twice cannot make two next ones.
    __table_args__ = (UniqueConstraint("series_id", "series_index"),)


class ActivityLink(IdMixin, Base):
    """Ties an activity to one record (lead, contact, account, opportunity, ...)."""

    __tablename__ = "activity_links"

    activity_id: Mapped[int] = mapped_column(BigId, ForeignKey("activities.id", ondelete="CASCADE"))
    record_type: Mapped[str] = mapped_column(String(24))
    record_id: Mapped[int] = mapped_column(BigId)
    # Copied from the activity so a record's timeline is one index range scan.
    occurred_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    activity: Mapped[Activity] = relationship(back_populates="links", lazy="raise")

    __table_args__ = (
        UniqueConstraint("activity_id", "record_type", "record_id"),
        Index("ix_activity_links_timeline", "record_type", "record_id", "occurred_at"),
    )
