"""Domain operations on both engines: timeline, lead conversion, stage advance, merging."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import log_activity, timeline
from store.dedupe import find_duplicate_groups, find_duplicates, merge_records
from store.errors import NotFound, ValidationError
from store.identity import index_record, lookup_email, lookup_phone
from store.leads import convert_lead
from store.models import (
    AccountContact,
    AuditEntry,
    Contact,
    Lead,
    LeadStatus,
    Opportunity,
    PipelineStage,
    StageHistory,
)
from store.pipeline import advance_stage, stage_durations
from store.tags import tag_record, tags_of

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


async def _lead(session: AsyncSession, **fields: object) -> Lead:
    lead = Lead(**fields)
    session.add(lead)
    await index_record(session, lead)
    return lead


async def _stage(session: AsyncSession, name: str) -> PipelineStage:
    stage = await session.scalar(select(PipelineStage).where(PipelineStage.name == name))
    assert stage is not None
    return stage


async def test_timeline_is_newest_first_filtered_and_paginated(session: AsyncSession) -> None:
    lead = await _lead(session, last_name="Chen")
    for n in range(5):
        await log_activity(
            session,
            kind="note" if n % 2 else "call",
            subject=f"a{n}",
            records=[lead],
            occurred_at=T0 + dt.timedelta(hours=n),
        )
    page = await timeline(session, "lead", lead.id, limit=2)
    assert [a.subject for a in page] == ["a4", "a3"]
    more = await timeline(
        session, "lead", lead.id, limit=2, before=(page[-1].occurred_at, page[-1].id)
    )
    assert [a.subject for a in more] == ["a2", "a1"]
    assert [a.subject for a in await timeline(session, "lead", lead.id, kinds=["note"])] == [
        "a3",
        "a1",
    ]


async def test_convert_lead_moves_history_identities_and_tags(session: AsyncSession) -> None:
    lead = await _lead(
        session,
        first_name="伟",
        last_name="张",
        company="华为技术有限公司",
        email="zhang.wei@example.cn",
        mobile="+86 138 1234 5678",
        source="web",
    )
    mail = await log_activity(session, kind="email", subject="询价", records=[lead], occurred_at=T0)
    await tag_record(session, "lead", lead.id, "展会")

    result = await convert_lead(
        session,
        lead.id,
        user_id=None,
        create_opportunity=True,
        amount=Decimal("120000"),
    )
    assert result.account.name == "华为技术有限公司"
    assert result.contact.display_name == "张伟"
    assert result.opportunity is not None
    prospecting = await _stage(session, "Prospecting")
    assert result.opportunity.stage_id == prospecting.id
    assert result.opportunity.probability == prospecting.probability
    link = await session.scalar(select(AccountContact))
    assert link is not None and (link.account_id, link.contact_id) == (
        result.account.id,
        result.contact.id,
    )

    # The whole history follows; the lead keeps showing it too.
    for record_type, record_id in (
        ("contact", result.contact.id),
        ("account", result.account.id),
        ("opportunity", result.opportunity.id),
        ("lead", lead.id),
    ):
        assert [a.id for a in await timeline(session, record_type, record_id)] == [mail.id]
    # Identities now point at the contact, not the converted lead.
    assert [
        (m.record_type, m.record_id) for m in await lookup_email(session, "Zhang.Wei@example.cn")
    ] == [("contact", result.contact.id)]
    assert [m.record_type for m in await lookup_phone(session, "13812345678")] == ["contact"]
    assert await tags_of(session, "contact", result.contact.id) == ["展会"]

    assert lead.status == LeadStatus.CONVERTED and lead.converted_contact_id == result.contact.id
    history = (await session.scalars(select(StageHistory))).all()
    assert [(h.stage_id, h.left_at) for h in history] == [(prospecting.id, None)]
    actions = await session.scalars(
        select(AuditEntry.action).where(
            AuditEntry.record_type == "lead", AuditEntry.record_id == lead.id
        )
    )
    assert "convert" in set(actions)

    with pytest.raises(ValidationError) as err:
        await convert_lead(session, lead.id, user_id=None)
    assert "lead" in err.value.errors
    with pytest.raises(NotFound):
        await convert_lead(session, 999_999, user_id=None)


async def test_convert_into_an_existing_account(session: AsyncSession) -> None:
    first = await convert_lead(
        session, (await _lead(session, last_name="A", company="Acme")).id, user_id=None
    )
    second = await convert_lead(
        session, (await _lead(session, last_name="B")).id, user_id=None, account_id=first.account.id
    )
    assert second.account.id == first.account.id
    contacts = await session.scalars(
        select(AccountContact.contact_id).where(AccountContact.account_id == first.account.id)
    )
    assert sorted(contacts) == sorted([first.contact.id, second.contact.id])


async def test_advance_stage_enforces_fields_and_keeps_history(session: AsyncSession) -> None:
    qualification = await _stage(session, "Qualification")
    proposal = await _stage(session, "Proposal")
    won = await _stage(session, "Closed won")
    deal = Opportunity(name="ERP", stage_id=qualification.id, probability=qualification.probability)
    session.add(deal)
    await session.flush()
    session.add(StageHistory(opportunity_id=deal.id, stage_id=qualification.id, entered_at=T0))
    await session.flush()

    with pytest.raises(ValidationError) as err:
        await advance_stage(
            session, deal.id, proposal.id, user_id=None, now=T0 + dt.timedelta(days=1)
        )
    assert set(err.value.errors) == {"amount", "expected_close"}
    assert deal.stage_id == qualification.id

    await advance_stage(
        session,
        deal.id,
        proposal.id,
        user_id=None,
        now=T0 + dt.timedelta(days=2),
        values={"amount": Decimal("50000"), "expected_close": dt.date(2026, 12, 31)},
    )
    assert (deal.stage_id, deal.probability) == (proposal.id, proposal.probability)

    # An override sticks through later moves; the stage's default no longer applies.
    await advance_stage(session, deal.id, proposal.id, user_id=None, probability=75)
    await advance_stage(session, deal.id, won.id, user_id=None, now=T0 + dt.timedelta(days=5))
    assert deal.probability == 75 and deal.closed_at == T0 + dt.timedelta(days=5)

    durations = {
        s.name: d for s, d in await stage_durations(session, deal.id, now=T0 + dt.timedelta(days=6))
    }
    assert durations == {
        "Qualification": dt.timedelta(days=2),
        "Proposal": dt.timedelta(days=3),
        "Closed won": dt.timedelta(days=1),
    }
    with pytest.raises(ValidationError):
        await advance_stage(session, deal.id, proposal.id, user_id=None, values={"name": "x"})


async def test_duplicates_found_by_email_and_phone_then_merged(session: AsyncSession) -> None:
    a = await _lead(session, last_name="Liu", email="liu@example.com", description="first")
    b = await _lead(session, last_name="Liu", first_name="Yang", email="LIU@Example.com")
    c = await _lead(session, last_name="Yang", phone="+86 138 0000 1111")
    d = await _lead(session, last_name="Yang", mobile="013800001111", title="CTO")
    contact = Contact(last_name="Liu", email="liu@example.com")
    session.add(contact)
    await index_record(session, contact)
    other = await _lead(session, last_name="Other", email="other@example.com")

    found = await find_duplicates(session, "lead", a.id)
    assert [(m.record_type, m.record_id) for m in found] == [
        ("contact", contact.id),
        ("lead", b.id),
    ]
    assert found[1].reasons == ["email liu@example.com"]
    assert [(m.record_id, m.reasons) for m in await find_duplicates(session, "lead", c.id)] == [
        (d.id, ["phone +8613800001111"])
    ]
    assert await find_duplicates(session, "lead", other.id) == []
    assert sorted(await find_duplicate_groups(session, "lead")) == sorted(
        [[a.id, b.id], [c.id, d.id]]
    )

    note = await log_activity(session, kind="note", subject="called", records=[d])
    await tag_record(session, "lead", d.id, "hot")
    kept = await merge_records(session, "lead", c.id, [d.id], user_id=None)
    assert kept.title == "CTO"  # filled from the merged record
    assert d.deleted_at is not None
    assert [x.id for x in await timeline(session, "lead", c.id)] == [note.id]
    assert await timeline(session, "lead", d.id) == []
    assert await tags_of(session, "lead", c.id) == ["hot"]
    assert [(m.record_type, m.record_id) for m in await lookup_phone(session, "13800001111")] == [
        ("lead", c.id)
    ]
    assert await find_duplicate_groups(session, "lead") == [[a.id, b.id]]

    with pytest.raises(ValidationError):
        await merge_records(session, "lead", a.id, [a.id], user_id=None)
    with pytest.raises(NotFound):
        await merge_records(session, "lead", a.id, [d.id], user_id=None)  # already merged away
