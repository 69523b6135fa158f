"""Duplicates on both engines: found by address or number, merged with their history."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import log_activity, timeline
from store.dedupe import find_duplicate_groups, find_duplicates, merge_records
from store.errors import NotFound, ValidationError
from store.identity import index_record, lookup_email, lookup_phone
from store.leads import convert_lead
from store.models import (
    Account,
    AccountContact,
    ActivityLink,
    AuditEntry,
    Contact,
    Lead,
    Opportunity,
    PipelineStage,
    User,
)
from store.tags import tag_record, tags_of

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


async def _person(session: AsyncSession, model: type[Lead | Contact], **fields: object) -> int:
    record = model(**fields)
    session.add(record)
    await index_record(session, record)
    return record.id


async def test_duplicates_by_address_and_number_across_leads_and_contacts(
    session: AsyncSession,
) -> None:
    a = await _person(session, Lead, last_name="Liu", email="liu@example.com")
    b = await _person(session, Lead, last_name="Liu", email="  <LIU@Example.COM>")
    c = await _person(session, Lead, last_name="Yang", phone="+86 138 1234 5678")
    d = await _person(session, Lead, last_name="Yang", mobile="013812345678")
    e = await _person(
        session, Lead, last_name="Yang", phone="0086-13812345678", email="liu@example.com"
    )
    contact = await _person(session, Contact, last_name="Liu", email="Liu@example.com")
    binned = await _person(session, Lead, last_name="Liu", email="liu@example.com", deleted_at=T0)
    alone = await _person(session, Lead, last_name="Other", email="other@example.com")

    found = await find_duplicates(session, "lead", a)
    assert [(m.record_type, m.record_id, m.reasons) for m in found] == [
        ("contact", contact, ["email liu@example.com"]),
        ("lead", b, ["email liu@example.com"]),
        ("lead", e, ["email liu@example.com"]),
    ]
    by_phone = await find_duplicates(session, "lead", d)
    assert [(m.record_id, m.reasons) for m in by_phone] == [
        (c, ["phone +8613812345678"]),
        (e, ["phone +8613812345678"]),
    ]
    both = await find_duplicates(session, "lead", e)
    assert [(m.record_type, m.record_id, sorted(m.reasons)) for m in both] == [
        ("contact", contact, ["email liu@example.com"]),
        ("lead", a, ["email liu@example.com"]),
        ("lead", b, ["email liu@example.com"]),
        ("lead", c, ["phone +8613812345678"]),
        ("lead", d, ["phone +8613812345678"]),
    ]
    assert [
        (m.record_type, m.record_id) for m in await find_duplicates(session, "contact", contact)
    ] == [
        ("lead", a),
        ("lead", b),
        ("lead", e),
    ]
    assert await find_duplicates(session, "lead", alone) == []
    assert binned not in {m.record_id for m in found}
    with pytest.raises(ValidationError):
        await find_duplicates(session, "account", 1)

    # e ties the email group to the phone group; only leads are grouped for leads.
    assert await find_duplicate_groups(session, "lead") == [sorted([a, b, c, d, e])]
    assert await find_duplicate_groups(session, "contact") == []
    # A record in the recycle bin ties nothing together.
    bridge = await session.get(Lead, e)
    assert bridge is not None
    bridge.deleted_at = T0
    await session.flush()
    assert sorted(await find_duplicate_groups(session, "lead")) == sorted([[a, b], [c, d]])


async def test_merging_leads_moves_history_and_bins_the_rest(session: AsyncSession) -> None:
    user = User(username="sun")
    session.add(user)
    await session.flush()
    keep = await _person(session, Lead, last_name="Yang", phone="+86 138 0000 1111")
    dup = await _person(
        session, Lead, last_name="Yang", first_name="Mei", mobile="013800001111",
        email="mei@example.cn", title="CTO",
    )  # fmt: skip
    third = await _person(session, Lead, last_name="Yang", title="CEO", company="Yang & Co")
    both = await log_activity(
        session, kind="call", subject="both", records=[("lead", keep), ("lead", dup)]
    )
    only_dup = await log_activity(session, kind="note", subject="dup", records=[("lead", dup)])
    from_third = await log_activity(session, kind="note", subject="3rd", records=[("lead", third)])
    await tag_record(session, "lead", dup, "hot")
    await tag_record(session, "lead", keep, "hot")
    await tag_record(session, "lead", third, "展会")

    kept = await merge_records(session, "lead", keep, [dup, third], user_id=user.id, now=T0)
    assert kept.id == keep
    # Empty fields filled from the merged records, the first one given first.
    assert (kept.first_name, kept.title, kept.company, kept.email) == (
        "Mei",
        "CTO",
        "Yang & Co",
        "mei@example.cn",
    )
    assert sorted(a.id for a in await timeline(session, "lead", keep)) == sorted(
        [both.id, only_dup.id, from_third.id]
    )
    links = await session.scalar(
        select(func.count()).select_from(ActivityLink).where(ActivityLink.activity_id == both.id)
    )
    assert links == 1  # moved, not doubled
    assert await timeline(session, "lead", dup) == []
    assert await tags_of(session, "lead", keep) == ["hot", "展会"]
    assert await tags_of(session, "lead", dup) == []
    assert [(m.record_type, m.record_id) for m in await lookup_phone(session, "13800001111")] == [
        ("lead", keep)
    ]
    assert [
        (m.record_type, m.record_id) for m in await lookup_email(session, "MEI@example.cn")
    ] == [("lead", keep)]
    for merged in (dup, third):
        record = await session.get(Lead, merged)
        assert record is not None
        assert (record.deleted_at, record.deleted_by_id) == (T0, user.id)
        actions = await session.execute(
            select(AuditEntry.action, AuditEntry.user_id, AuditEntry.new_value).where(
                AuditEntry.record_type == "lead",
                AuditEntry.record_id == merged,
                AuditEntry.action == "merge",
            )
        )
        assert [tuple(r) for r in actions] == [("merge", user.id, f"merged into lead {keep}")]
    assert await find_duplicate_groups(session, "lead") == []

    with pytest.raises(ValidationError):
        await merge_records(session, "lead", keep, [keep], user_id=None)
    with pytest.raises(ValidationError):
        await merge_records(session, "lead", keep, [], user_id=None)
    with pytest.raises(ValidationError):
        await merge_records(session, "account", keep, [dup], user_id=None)
    with pytest.raises(NotFound):
        await merge_records(session, "lead", keep, [dup], user_id=None)  # already merged away
    converted = await _person(session, Lead, last_name="Done")
    await convert_lead(session, converted, user_id=None)
    with pytest.raises(ValidationError):
        await merge_records(session, "lead", keep, [converted], user_id=None)


async def test_merging_contacts_moves_accounts_deals_and_origin(session: AsyncSession) -> None:
    keep = await _person(session, Contact, last_name="Wu", email="wu@example.com")
    lead = await _person(session, Lead, last_name="Wu", email="wu@corp.example", company="Corp")
    converted = await convert_lead(session, lead, user_id=None)
    dup = converted.contact.id
    shared = Account(name="Shared")
    session.add(shared)
    await session.flush()
    session.add_all(
        [
            AccountContact(account_id=shared.id, contact_id=keep, role="buyer"),
            AccountContact(account_id=shared.id, contact_id=dup, role="user"),
        ]
    )
    stage = PipelineStage(pipeline="test", name="Open")
    session.add(stage)
    await session.flush()
    deal = Opportunity(name="Deal", stage_id=stage.id, contact_id=dup)
    session.add(deal)
    await session.flush()

    await merge_records(session, "contact", keep, [dup], user_id=None)
    rows = await session.execute(
        select(AccountContact.account_id, AccountContact.contact_id, AccountContact.role)
    )
    assert sorted(tuple(r) for r in rows) == sorted(
        [(shared.id, keep, "buyer"), (converted.account.id, keep, None)]
    )
    assert deal.contact_id == keep
    origin = await session.get(Lead, lead)
    assert origin is not None and origin.converted_contact_id == keep
    # The converted lead's address, which the merged contact held, is the kept one's now.
    owners = await lookup_email(session, "wu@corp.example")
    assert sorted((m.record_type, m.record_id) for m in owners) == sorted(
        [("account", converted.account.id), ("contact", keep)]
    )
