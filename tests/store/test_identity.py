"""Identity indexes follow the records and find every owner of an address or number."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.identity import index_record, lookup_email, lookup_phone, normalise_email
from store.models import Contact, EmailIdentity, Lead, PhoneIdentity


def test_normalise_email() -> None:
    assert normalise_email("  <Zhang.Wei@Example.COM> ") == "zhang.wei@example.com"
    assert normalise_email("mailto:a@b.cn") == "a@b.cn"
    assert normalise_email("user@例子.中国") == "user@xn--fsqu00a.xn--fiqs8s"
    for bad in ("", None, "no-at-sign", "a@b", "two words@x.com"):
        assert normalise_email(bad) is None


async def test_index_follows_changes(session: AsyncSession) -> None:
    lead = Lead(first_name="伟", last_name="张", email="Zhang@Example.com", mobile="138 1234 5678")
    session.add(lead)
    await index_record(session, lead)
    assert [m.record_id for m in await lookup_email(session, "zhang@example.com")] == [lead.id]
    assert [m.record_id for m in await lookup_phone(session, "+8613812345678")] == [lead.id]

    lead.email = "wei@example.cn"
    lead.mobile = None
    lead.phone = "0086 139 0000 1111"
    await index_record(session, lead)
    assert await lookup_email(session, "zhang@example.com") == []
    assert await lookup_phone(session, "13812345678") == []
    assert [m.record_id for m in await lookup_phone(session, "13900001111")] == [lead.id]
    rows = (await session.scalars(select(PhoneIdentity))).all()
    assert [(r.field, r.e164) for r in rows] == [("phone", "+8613900001111")]


async def test_alias_rows_survive_reindex_and_ambiguity_is_kept(session: AsyncSession) -> None:
    contact = Contact(first_name="Li", last_name="Na", email="li@example.com")
    lead = Lead(first_name="Li", last_name="Na", email="LI@example.com")
    session.add_all([contact, lead])
    await index_record(session, contact)
    await index_record(session, lead)
    session.add(
        EmailIdentity(
            address="na.li@old.example", record_type="contact", record_id=contact.id, field="alias"
        )
    )
    await session.flush()
    await index_record(session, contact)
    assert [m.record_type for m in await lookup_email(session, "na.li@old.example")] == ["contact"]
    # Two records own one address: both are returned, none silently picked.
    owners = await lookup_email(session, "li@example.com")
    assert sorted((m.record_type, m.record_id) for m in owners) == sorted(
        [("contact", contact.id), ("lead", lead.id)]
    )
    only_leads = await lookup_email(session, "li@example.com", record_types=["lead"])
    assert [(m.record_type, m.record_id) for m in only_leads] == [("lead", lead.id)]
