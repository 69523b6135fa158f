"""Lead conversion on both engines: the history, identities and tags follow the person."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import log_activity, timeline
from store.errors import NotFound, ValidationError
from store.identity import index_record, lookup_email, lookup_phone
from store.leads import convert_lead
from store.models import (
    AccountContact,
    AuditEntry,
    Contact,
    EmailIdentity,
    Lead,
    LeadStatus,
    PipelineStage,
    StageHistory,
    Team,
    User,
)
from store.tags import tag_record, tags_of

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


async def _lead(session: AsyncSession, **fields: object) -> Lead:
    lead = Lead(**fields)
    session.add(lead)
    await index_record(session, lead)
    return lead


async def _stage(
    session: AsyncSession, name: str, position: int, **fields: object
) -> PipelineStage:
    # In the default pipeline, ahead of (or among) the stages the migration seeds.
    stage = PipelineStage(pipeline="default", name=name, position=position, **fields)
    session.add(stage)
    await session.flush()
    return stage


def _refs(matches: list[object]) -> list[tuple[str, int]]:
    return sorted((m.record_type, m.record_id) for m in matches)  # type: ignore[attr-defined]


async def test_conversion_moves_history_identities_and_tags(session: AsyncSession) -> None:
    team = Team(name="华东")
    user = User(username="wang")
    session.add_all([team, user])
    await session.flush()
    first = await _stage(session, "Inbox (test)", position=-1, probability=15)
    lead = await _lead(
        session,
        first_name="伟",
        last_name="张",
        company="华为技术有限公司",
        title="采购经理",
        email="Zhang.Wei@Example.cn",
        phone="021 6123 4567",
        mobile="+86 138 1234 5678",
        website="https://example.cn",
        source="web",
        owner_id=user.id,
        team_id=team.id,
    )
    # An address learnt from mail belongs to the person too.
    session.add(
        EmailIdentity(address="zw@private.cn", record_type="lead", record_id=lead.id, field="alias")
    )
    bystander = await _lead(session, last_name="Bystander")
    mail = await log_activity(session, kind="email", subject="询价", records=[lead], occurred_at=T0)
    visit = await log_activity(
        session, kind="visit", subject="拜访", records=[lead, bystander], occurred_at=T0
    )
    elsewhere = await log_activity(session, kind="note", subject="x", records=[bystander])
    await tag_record(session, "lead", lead.id, "展会")

    result = await convert_lead(
        session,
        lead.id,
        user_id=user.id,
        create_opportunity=True,
        amount=Decimal("120000"),
        expected_close=dt.date(2026, 12, 31),
        now=T0,
    )
    account, contact, deal = result.account, result.contact, result.opportunity
    assert (account.name, account.website, account.email, account.phone) == (
        "华为技术有限公司",
        "https://example.cn",
        "Zhang.Wei@Example.cn",
        "021 6123 4567",
    )
    assert (account.owner_id, account.team_id) == (user.id, team.id)
    assert contact.display_name == "张伟"
    assert (contact.title, contact.email, contact.phone, contact.mobile, contact.source) == (
        "采购经理",
        "Zhang.Wei@Example.cn",
        "021 6123 4567",
        "+86 138 1234 5678",
        "web",
    )
    assert (contact.owner_id, contact.team_id) == (user.id, team.id)
    links = (await session.scalars(select(AccountContact))).all()
    assert [(r.account_id, r.contact_id, r.is_primary) for r in links] == [
        (account.id, contact.id, True)
    ]

    assert deal is not None
    assert (deal.stage_id, deal.probability, deal.amount, deal.expected_close) == (
        first.id,
        15,
        Decimal("120000"),
        dt.date(2026, 12, 31),
    )
    assert (deal.account_id, deal.contact_id, deal.lead_id, deal.closed_at) == (
        account.id,
        contact.id,
        lead.id,
        None,
    )
    history = (await session.scalars(select(StageHistory))).all()
    assert [(h.stage_id, h.entered_at, h.entered_by_id, h.left_at) for h in history] == [
        (first.id, T0, user.id, None)
    ]

    # The lead's whole history follows, and the lead keeps showing it.
    for record_type, record_id in (
        ("contact", contact.id),
        ("account", account.id),
        ("opportunity", deal.id),
        ("lead", lead.id),
    ):
        shown = await timeline(session, record_type, record_id)
        assert sorted(a.id for a in shown) == sorted([mail.id, visit.id])
    assert sorted(a.id for a in await timeline(session, "lead", bystander.id)) == sorted(
        [visit.id, elsewhere.id]
    )

    # The person's addresses and numbers are the contact's now; the account owns
    # only what is in its own columns; the lead owns nothing any more.
    assert _refs(await lookup_email(session, "zhang.wei@example.cn")) == sorted(
        [("contact", contact.id), ("account", account.id)]
    )
    assert _refs(await lookup_email(session, "ZW@private.cn")) == [("contact", contact.id)]
    assert _refs(await lookup_phone(session, "13812345678")) == [("contact", contact.id)]
    assert _refs(await lookup_phone(session, "+86 21 6123 4567")) == sorted(
        [("contact", contact.id), ("account", account.id)]
    )
    own = await session.scalars(
        select(EmailIdentity.field).where(
            EmailIdentity.record_id == contact.id, EmailIdentity.record_type == "contact"
        )
    )
    assert sorted(own) == ["alias", "email"]
    assert await tags_of(session, "contact", contact.id) == ["展会"]
    assert await tags_of(session, "lead", lead.id) == ["展会"]

    assert lead.status == LeadStatus.CONVERTED
    assert (lead.converted_at, lead.converted_by_id) == (T0, user.id)
    assert (
        lead.converted_account_id,
        lead.converted_contact_id,
        lead.converted_opportunity_id,
    ) == (account.id, contact.id, deal.id)
    trail = (
        await session.execute(
            select(AuditEntry.action, AuditEntry.field, AuditEntry.user_id).where(
                AuditEntry.record_type == "lead", AuditEntry.record_id == lead.id
            )
        )
    ).all()
    # Attributed to the converting user although the session names no one.
    assert ("convert", None, user.id) in trail
    assert ("update", "status", user.id) in trail
    assert "user_id" not in session.info

    with pytest.raises(ValidationError) as err:
        await convert_lead(session, lead.id, user_id=user.id)
    assert set(err.value.errors) == {"lead"}
    assert await session.scalar(select(func.count()).select_from(Contact)) == 1
    with pytest.raises(NotFound):
        await convert_lead(session, 999_999, user_id=None)
    binned = await _lead(session, last_name="Gone", deleted_at=T0)
    with pytest.raises(ValidationError) as err:
        await convert_lead(session, binned.id, user_id=None)
    assert set(err.value.errors) == {"lead"}


async def test_conversion_into_an_existing_account_and_its_refusals(
    session: AsyncSession,
) -> None:
    proposal = await _stage(
        session, "Proposal (test)", position=50, probability=60,
        required_fields=["amount", "expected_close"],
    )  # fmt: skip
    retired = await _stage(session, "Retired (test)", position=0, is_active=False)

    # A lead without a company is a private customer: the account is named after them.
    private = await convert_lead(
        session, (await _lead(session, first_name="Fang", last_name="Li")).id, user_id=None
    )
    assert private.account.name == "Fang Li" and private.opportunity is None
    assert await session.scalar(select(func.count()).select_from(StageHistory)) == 0

    acme = await convert_lead(
        session,
        (await _lead(session, last_name="A", company="Acme", email="a@acme.example")).id,
        user_id=None,
    )
    second = await _lead(session, first_name="Bo", last_name="B", email="b@acme.example")
    contacts_before = await session.scalar(select(func.count()).select_from(Contact))

    refusals: list[tuple[dict[str, object], set[str]]] = [
        ({"stage_id": proposal.id}, {"amount", "expected_close"}),
        ({"stage_id": proposal.id, "amount": Decimal(1)}, {"expected_close"}),
        ({"stage_id": retired.id}, {"stage_id"}),
    ]
    for options, fields in refusals:
        with pytest.raises(ValidationError) as err:
            await convert_lead(
                session,
                second.id,
                user_id=None,
                account_id=acme.account.id,
                create_opportunity=True,
                **options,  # type: ignore[arg-type]
            )
        assert set(err.value.errors) == fields
    with pytest.raises(ValidationError) as err:
        await convert_lead(session, second.id, user_id=None, account_id=999_999)
    assert set(err.value.errors) == {"account_id"}
    # A refusal leaves no trace.
    assert await session.scalar(select(func.count()).select_from(Contact)) == contacts_before
    assert second.status == LeadStatus.NEW

    result = await convert_lead(
        session,
        second.id,
        user_id=None,
        account_id=acme.account.id,
        create_opportunity=True,
        opportunity_name="Acme ERP",
        stage_id=proposal.id,
        amount=Decimal("5000"),
        expected_close=dt.date(2027, 1, 31),
    )
    assert result.account.id == acme.account.id
    assert result.opportunity is not None
    assert (result.opportunity.name, result.opportunity.stage_id) == ("Acme ERP", proposal.id)
    rows = await session.execute(
        select(AccountContact.contact_id, AccountContact.is_primary).where(
            AccountContact.account_id == acme.account.id
        )
    )
    # The account's first contact stays its primary one.
    assert sorted(tuple(r) for r in rows) == sorted(
        [(acme.contact.id, True), (result.contact.id, False)]
    )
    # An existing account is not re-indexed with the newcomer's address.
    assert _refs(await lookup_email(session, "b@acme.example")) == [("contact", result.contact.id)]
