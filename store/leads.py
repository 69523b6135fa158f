"""Lead conversion: a lead becomes an account, a contact and perhaps a deal, history and all."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import copy_links
from store.audit import record_action
from store.base import utcnow
from store.errors import NotFound, ValidationError
from store.identity import ALIAS_FIELD, index_record
from store.models.crm import (
    Account,
    AccountContact,
    Contact,
    Lead,
    LeadStatus,
    Opportunity,
    PipelineStage,
    StageHistory,
)
from store.models.identity import EmailIdentity, PhoneIdentity
from store.models.meta import Tagging


@dataclass(frozen=True)
class ConversionResult:
    account: Account
    contact: Contact
    opportunity: Opportunity | None


async def first_open_stage(session: AsyncSession, pipeline: str = "default") -> PipelineStage:
    stage = await session.scalar(
        select(PipelineStage)
        .where(
            PipelineStage.pipeline == pipeline,
            PipelineStage.is_active.is_(True),
            PipelineStage.is_won.is_(False),
            PipelineStage.is_lost.is_(False),
        )
        .order_by(PipelineStage.position, PipelineStage.id)
        .limit(1)
    )
    if stage is None:
        raise ValidationError({"stage_id": f"pipeline {pipeline!r} has no open stage"})
    return stage


async def move_identities(
    session: AsyncSession, source: tuple[str, int], target: tuple[str, int]
) -> None:
    """Hand every email and phone identity of ``source`` to ``target`` (as aliases)."""
    models: tuple[tuple[type[EmailIdentity] | type[PhoneIdentity], str], ...] = (
        (EmailIdentity, "address"),
        (PhoneIdentity, "match_key"),
    )
    for model, key in models:
        rows: Sequence[Any] = (
            await session.scalars(
                select(model).where(model.record_type == source[0], model.record_id == source[1])
            )
        ).all()
        owned = set(
            (
                await session.scalars(
                    select(getattr(model, key)).where(
                        model.record_type == target[0], model.record_id == target[1]
                    )
                )
            ).all()
        )
        for row in rows:
            if getattr(row, key) in owned:
                await session.delete(row)
            else:
                row.record_type, row.record_id, row.field = target[0], target[1], ALIAS_FIELD
                owned.add(getattr(row, key))
    await session.flush()


async def copy_tags(
    session: AsyncSession, source: tuple[str, int], target: tuple[str, int]
) -> None:
    tag_ids = (
        await session.scalars(
            select(Tagging.tag_id).where(
                Tagging.record_type == source[0], Tagging.record_id == source[1]
            )
        )
    ).all()
    have = set(
        (
            await session.scalars(
                select(Tagging.tag_id).where(
                    Tagging.record_type == target[0], Tagging.record_id == target[1]
                )
            )
        ).all()
    )
    for tag_id in tag_ids:
        if tag_id not in have:
            session.add(Tagging(tag_id=tag_id, record_type=target[0], record_id=target[1]))
    await session.flush()


async def convert_lead(
    session: AsyncSession,
    lead_id: int,
    *,
    user_id: int | None,
    account_id: int | None = None,
    create_opportunity: bool = False,
    opportunity_name: str | None = None,
    amount: Decimal | None = None,
    stage_id: int | None = None,
    expected_close: dt.date | None = None,
    now: dt.datetime | None = None,
) -> ConversionResult:
    """Convert a lead; its activities, identities and tags follow it to the new records."""
    now = now or utcnow()
    lead = await session.get(Lead, lead_id)
    if lead is None:
        raise NotFound(f"lead {lead_id} does not exist")
    if lead.deleted_at is not None:
        raise ValidationError({"lead": "is in the recycle bin; restore it first"})
    if lead.status == LeadStatus.CONVERTED:
        raise ValidationError({"lead": f"was converted already on {lead.converted_at:%Y-%m-%d}"})

    if account_id is not None:
        account = await session.get(Account, account_id)
        if account is None or account.deleted_at is not None:
            raise ValidationError({"account_id": f"account {account_id} does not exist"})
    else:
        account = Account(
            name=lead.company or lead.display_name or "?",
            website=lead.website,
            phone=lead.phone if lead.company else None,
            owner_id=lead.owner_id,
            team_id=lead.team_id,
        )
        session.add(account)
    contact = Contact(
        first_name=lead.first_name,
        last_name=lead.last_name,
        title=lead.title,
        email=lead.email,
        phone=lead.phone,
        mobile=lead.mobile,
        source=lead.source,
        description=lead.description,
        owner_id=lead.owner_id,
        team_id=lead.team_id,
    )
    session.add(contact)
    await session.flush()
    session.add(AccountContact(account_id=account.id, contact_id=contact.id, is_primary=True))

    opportunity = None
    if create_opportunity:
        stage = (
            await session.get(PipelineStage, stage_id)
            if stage_id
            else await first_open_stage(session)
        )
        if stage is None:
            raise ValidationError({"stage_id": f"stage {stage_id} does not exist"})
        opportunity = Opportunity(
            name=opportunity_name or f"{account.name}",
            account_id=account.id,
            contact_id=contact.id,
            lead_id=lead.id,
            campaign_id=lead.campaign_id,
            amount=amount,
            stage_id=stage.id,
            probability=stage.probability,
            expected_close=expected_close,
            source=lead.source,
            owner_id=lead.owner_id,
            team_id=lead.team_id,
        )
        session.add(opportunity)
        await session.flush()
        session.add(
            StageHistory(
                opportunity_id=opportunity.id,
                stage_id=stage.id,
                entered_at=now,
                entered_by_id=user_id,
                amount=amount,
                probability=stage.probability,
            )
        )

    targets = [("contact", contact.id), ("account", account.id)]
    if opportunity is not None:
        targets.append(("opportunity", opportunity.id))
    await copy_links(session, ("lead", lead.id), targets)
    await move_identities(session, ("lead", lead.id), ("contact", contact.id))
    await index_record(session, contact)
    if account_id is None:
        await index_record(session, account)
    await copy_tags(session, ("lead", lead.id), ("contact", contact.id))

    lead.status = LeadStatus.CONVERTED
    lead.converted_at = now
    lead.converted_by_id = user_id
    lead.converted_account_id = account.id
    lead.converted_contact_id = contact.id
    lead.converted_opportunity_id = opportunity.id if opportunity else None
    await session.flush()
    detail = f"account {account.id}, contact {contact.id}" + (
        f", opportunity {opportunity.id}" if opportunity else ""
    )
    await record_action(session, "lead", lead.id, "convert", detail)
    return ConversionResult(account, contact, opportunity)
