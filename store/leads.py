"""Lead conversion: a lead becomes an account, a contact and perhaps a deal, history and all."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import copy_links
from store.audit import record_action
from store.base import utcnow
from store.errors import NotFound, ValidationError
from store.identity import index_record
from store.models.crm import (
    Account,
    AccountContact,
    Contact,
    Lead,
    LeadStatus,
    Opportunity,
)
from store.pipeline import active_stage, enter_stage, first_open_stage, missing_fields
from store.records import acting_as, copy_tags, move_identities


@dataclass(frozen=True)
class ConversionResult:
    account: Account
    contact: Contact
    opportunity: Opportunity | None


async def _convertible_lead(session: AsyncSession, lead_id: int) -> Lead:
    # Locked (FOR UPDATE on PostgreSQL), so two people converting one lead at once
    # cannot both pass the check below and make two contacts.
    lead = await session.get(Lead, lead_id, with_for_update=True, populate_existing=True)
    if lead is None:
        raise NotFound(f"lead {lead_id} does not exist")
    if lead.deleted_at is not None:
        raise ValidationError({"lead": "is in the recycle bin; restore it first"})
    if lead.status == LeadStatus.CONVERTED:
        when = f" on {lead.converted_at:%Y-%m-%d}" if lead.converted_at else ""
        raise ValidationError({"lead": f"was converted already{when}"})
    return lead


async def _account_for(session: AsyncSession, lead: Lead, account_id: int | None) -> Account:
    if account_id is not None:
        account = await session.get(Account, account_id)
        if account is None or account.deleted_at is not None:
            raise ValidationError({"account_id": f"account {account_id} does not exist"})
        return account
    account = Account(
        # A lead without a company is a private customer: the account is the person.
        name=lead.company or lead.display_name or "?",
        website=lead.website,
        email=lead.email,
        phone=lead.phone,
        owner_id=lead.owner_id,
        team_id=lead.team_id,
    )
    session.add(account)
    return account


async def _is_first_contact(session: AsyncSession, account_id: int) -> bool:
    primary = await session.scalar(
        select(AccountContact.contact_id)
        .where(AccountContact.account_id == account_id, AccountContact.is_primary.is_(True))
        .limit(1)
    )
    return primary is None


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
    """Convert a lead; its activities, identities and tags follow it to the new records.

    ``account_id`` attaches the contact to an existing account instead of making
    one.  The lead stays, marked converted, and keeps showing its history.
    """
    now = now or utcnow()
    lead = await _convertible_lead(session, lead_id)
    # Everything is checked before anything is written: a refusal leaves no trace.
    stage = None
    if create_opportunity:
        stage = await (
            first_open_stage(session) if stage_id is None else active_stage(session, stage_id)
        )
        # The deal will have its account and contact; what else the stage wants must be given.
        will_have = {"amount": amount, "expected_close": expected_close, "currency": "CNY"}
        will_have |= {"account_id": "new", "contact_id": "new"}
        errors = missing_fields(stage, will_have)
        if errors:
            raise ValidationError(errors)

    with acting_as(session, user_id):
        account = await _account_for(session, lead, account_id)
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
        primary = account_id is None or await _is_first_contact(session, account.id)
        session.add(
            AccountContact(account_id=account.id, contact_id=contact.id, is_primary=primary)
        )

        opportunity = None
        if stage is not None:
            opportunity = Opportunity(
                name=opportunity_name or account.name,
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
            enter_stage(session, opportunity, stage, user_id=user_id, now=now)

        lead_ref = ("lead", lead.id)
        targets = [("contact", contact.id), ("account", account.id)]
        if opportunity is not None:
            targets.append(("opportunity", opportunity.id))
        await copy_links(session, lead_ref, targets)
        # The person's addresses and numbers (and aliases learnt from mail) go to the
        # contact; a new account is indexed on its own columns only.
        await move_identities(session, lead_ref, ("contact", contact.id))
        await index_record(session, contact)
        if account_id is None:
            await index_record(session, account)
        await copy_tags(session, lead_ref, ("contact", contact.id))

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
