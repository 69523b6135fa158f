"""Accounts, contacts, leads, campaigns, opportunities and the pipeline."""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Enum,
    ForeignKey,
    Index,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from store.base import Base, BigId, IdMixin, OwnedMixin, SoftDeleteMixin, TimestampMixin


def _enum(cls: type[enum.Enum], length: int = 16) -> Enum:
    # Stored as plain strings with a CHECK, so adding a value is a small migration.
    return Enum(
        cls, native_enum=False, length=length, values_callable=lambda e: [m.value for m in e]
    )


def person_name(first: str | None, last: str | None) -> str:
    """A display name; Chinese names are family name first with no space."""
    first, last = (first or "").strip(), (last or "").strip()
    if not first or not last:
        return first or last
    if any("\u4e00" <= ch <= "\u9fff" for ch in first + last):
        return f"{last}{first}"
    return f"{first} {last}"


class Account(IdMixin, TimestampMixin, SoftDeleteMixin, OwnedMixin, Base):
    """A customer or prospect organisation."""

    __tablename__ = "accounts"
    __record_type__ = "account"

    name: Mapped[str] = mapped_column(String(255), index=True)
    website: Mapped[str | None] = mapped_column(String(255), default=None)
    industry: Mapped[str | None] = mapped_column(String(80), default=None)
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    phone: Mapped[str | None] = mapped_column(String(64), default=None)
    street: Mapped[str | None] = mapped_column(String(255), default=None)
    city: Mapped[str | None] = mapped_column(String(120), default=None)
    region: Mapped[str | None] = mapped_column(String(120), default=None)
    postal_code: Mapped[str | None] = mapped_column(String(20), default=None)
    country: Mapped[str | None] = mapped_column(String(2), default=None)
    parent_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="SET NULL"), default=None
    )
    description: Mapped[str] = mapped_column(Text, default="")

    @property
    def display_name(self) -> str:
        return self.name


class Contact(IdMixin, TimestampMixin, SoftDeleteMixin, OwnedMixin, Base):
    """A person; works for zero, one or several accounts (see ``AccountContact``)."""

    __tablename__ = "contacts"
    __record_type__ = "contact"

    first_name: Mapped[str] = mapped_column(String(120), default="")
    last_name: Mapped[str] = mapped_column(String(120), default="", index=True)
    title: Mapped[str | None] = mapped_column(String(120), default=None)
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    phone: Mapped[str | None] = mapped_column(String(64), default=None)
    mobile: Mapped[str | None] = mapped_column(String(64), default=None)
    source: Mapped[str | None] = mapped_column(String(40), default=None)
    description: Mapped[str] = mapped_column(Text, default="")

    @property
    def display_name(self) -> str:
        return person_name(self.first_name, self.last_name)


class AccountContact(Base):
    """A contact's place at an account (a contact may work for several)."""

    __tablename__ = "account_contacts"

    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    contact_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str | None] = mapped_column(String(120), default=None)
    is_primary: Mapped[bool] = mapped_column(default=False)


class CampaignStatus(enum.StrEnum):
    PLANNED = "planned"
    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class Campaign(IdMixin, TimestampMixin, SoftDeleteMixin, OwnedMixin, Base):
    __tablename__ = "campaigns"
    __record_type__ = "campaign"

    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(40), default="email")
    status: Mapped[CampaignStatus] = mapped_column(
        _enum(CampaignStatus), default=CampaignStatus.PLANNED
    )
    starts_on: Mapped[dt.date | None] = mapped_column(default=None)
    ends_on: Mapped[dt.date | None] = mapped_column(default=None)
    budget: Mapped[Decimal | None] = mapped_column(Numeric(18, 2), default=None)
    description: Mapped[str] = mapped_column(Text, default="")

    @property
    def display_name(self) -> str:
        return self.name


class LeadStatus(enum.StrEnum):
    NEW = "new"
    CONTACTED = "contacted"
    QUALIFIED = "qualified"
    UNQUALIFIED = "unqualified"
    CONVERTED = "converted"
    JUNK = "junk"


class Lead(IdMixin, TimestampMixin, SoftDeleteMixin, OwnedMixin, Base):
    """Someone who may become a customer; converted into account + contact (+ deal)."""

    __tablename__ = "leads"
    __record_type__ = "lead"

    first_name: Mapped[str] = mapped_column(String(120), default="")
    last_name: Mapped[str] = mapped_column(String(120), default="", index=True)
    company: Mapped[str | None] = mapped_column(String(255), default=None)
    title: Mapped[str | None] = mapped_column(String(120), default=None)
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    phone: Mapped[str | None] = mapped_column(String(64), default=None)
    mobile: Mapped[str | None] = mapped_column(String(64), default=None)
    website: Mapped[str | None] = mapped_column(String(255), default=None)
    source: Mapped[str | None] = mapped_column(String(40), default=None, index=True)
    status: Mapped[LeadStatus] = mapped_column(
        _enum(LeadStatus), default=LeadStatus.NEW, index=True
    )
    campaign_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("campaigns.id", ondelete="SET NULL"), default=None, index=True
    )
    description: Mapped[str] = mapped_column(Text, default="")
    converted_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    converted_by_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    converted_account_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="SET NULL"), default=None
    )
    converted_contact_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="SET NULL"), default=None
    )
    converted_opportunity_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("opportunities.id", ondelete="SET NULL", use_alter=True), default=None
    )

    @property
    def display_name(self) -> str:
        return person_name(self.first_name, self.last_name) or self.company or self.email or ""


class PipelineStage(IdMixin, TimestampMixin, Base):
    """A configurable step of a sales pipeline with its default probability."""

    __tablename__ = "pipeline_stages"

    pipeline: Mapped[str] = mapped_column(String(40), default="default")
    name: Mapped[str] = mapped_column(String(80))
    position: Mapped[int] = mapped_column(default=0)
    probability: Mapped[int] = mapped_column(default=0)
    is_won: Mapped[bool] = mapped_column(default=False)
    is_lost: Mapped[bool] = mapped_column(default=False)
    is_active: Mapped[bool] = mapped_column(default=True)
    # Opportunity fields that must be filled to enter this stage, e.g. ["amount", "expected_close"].
    required_fields: Mapped[list[str]] = mapped_column(default=list)

    __table_args__ = (
        UniqueConstraint("pipeline", "name"),
        CheckConstraint("probability >= 0 AND probability <= 100", name="probability_range"),
    )

    @property
    def is_closed(self) -> bool:
        return self.is_won or self.is_lost


class Opportunity(IdMixin, TimestampMixin, SoftDeleteMixin, OwnedMixin, Base):
    """A deal in the pipeline."""

    __tablename__ = "opportunities"
    __record_type__ = "opportunity"

    name: Mapped[str] = mapped_column(String(255))
    account_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="SET NULL"), default=None, index=True
    )
    contact_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="SET NULL"), default=None, index=True
    )
    lead_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("leads.id", ondelete="SET NULL"), default=None
    )
    campaign_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("campaigns.id", ondelete="SET NULL"), default=None
    )
    amount: Mapped[Decimal | None] = mapped_column(Numeric(18, 2), default=None)
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    stage_id: Mapped[int] = mapped_column(BigId, ForeignKey("pipeline_stages.id"), index=True)
    probability: Mapped[int] = mapped_column(default=0)
    probability_overridden: Mapped[bool] = mapped_column(default=False)
    expected_close: Mapped[dt.date | None] = mapped_column(default=None, index=True)
    next_step: Mapped[str | None] = mapped_column(String(255), default=None)
    source: Mapped[str | None] = mapped_column(String(40), default=None)
    closed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    lost_reason: Mapped[str | None] = mapped_column(String(255), default=None)
    description: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (
        CheckConstraint("probability >= 0 AND probability <= 100", name="probability_range"),
    )

    @property
    def display_name(self) -> str:
        return self.name

    @property
    def weighted_amount(self) -> Decimal | None:
        return None if self.amount is None else self.amount * self.probability / 100


class StageHistory(IdMixin, Base):
    """One stay of an opportunity in a stage: entered, left, by whom."""

    __tablename__ = "stage_history"

    opportunity_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("opportunities.id", ondelete="CASCADE")
    )
    stage_id: Mapped[int] = mapped_column(BigId, ForeignKey("pipeline_stages.id"))
    entered_at: Mapped[dt.datetime]
    left_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    entered_by_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    left_by_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    amount: Mapped[Decimal | None] = mapped_column(Numeric(18, 2), default=None)
    probability: Mapped[int] = mapped_column(default=0)

    __table_args__ = (
        Index("ix_stage_history_opportunity_entered", "opportunity_id", "entered_at"),
    )

    def duration(self, now: dt.datetime) -> dt.timedelta:
        """How long the opportunity stayed (or has stayed so far) in this stage."""
        return (self.left_at or now) - self.entered_at


def copy_fields(source: Any, target: Any, fields: tuple[str, ...]) -> None:
    """Copy the named attributes that the target has not set yet."""
    for name in fields:
        if getattr(target, name, None) in (None, "") and getattr(source, name, None) not in (
            None,
            "",
        ):
            setattr(target, name, getattr(source, name))


# Lists sort newest first by default, or by last change: each record table's creation
# and change times are indexed (with the id the index carries, it serves the keyset
# order without a sort).
for _model in (Account, Contact, Lead, Opportunity):
    Index(f"ix_{_model.__tablename__}_created_at", _model.created_at)
    Index(f"ix_{_model.__tablename__}_updated_at", _model.updated_at)
# A search term is matched as a prefix of these names (web/modules.py names): an OR
# with one unindexed branch would read the whole table.
Index("ix_opportunities_name", Opportunity.name)
Index("ix_contacts_first_name", Contact.first_name)
Index("ix_leads_company", Lead.company)
