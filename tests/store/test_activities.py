"""The activity timeline on both engines: one activity, many records, keyset pages."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import link, log_activity, timeline
from store.models import Account, Activity, ActivityKind, ActivityLink, Contact, Lead, User

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


async def test_one_activity_is_linked_to_every_record_it_concerns(session: AsyncSession) -> None:
    agent = User(username="li")
    contact = Contact(first_name="娜", last_name="李")
    account = Account(name="上海贸易有限公司")
    session.add_all([agent, contact, account])
    await session.flush()

    # Records may be given as objects or as (type, id), and the same one twice.
    call = await log_activity(
        session,
        kind="call",
        subject="回访",
        body="客户要报价",
        occurred_at=T0,
        records=[contact, ("account", account.id), ("contact", contact.id)],
        owner_id=agent.id,
        location="上海",
    )
    assert (call.kind, call.owner_id, call.location) == (ActivityKind.CALL, agent.id, "上海")
    links = (
        await session.scalars(select(ActivityLink).where(ActivityLink.activity_id == call.id))
    ).all()
    assert sorted((row.record_type, row.record_id) for row in links) == [
        ("account", account.id),
        ("contact", contact.id),
    ]
    assert {row.occurred_at for row in links} == {T0}  # copied for the timeline index

    # Linking again is a no-op; a new record gets the activity's time.
    assert await link(session, call, "contact", contact.id) is False
    lead = Lead(last_name="Zhao")
    session.add(lead)
    await session.flush()
    assert await link(session, call, "lead", lead.id) is True
    assert await link(session, call, "lead", lead.id) is False
    lead_link = await session.scalar(select(ActivityLink).where(ActivityLink.record_type == "lead"))
    assert lead_link is not None and lead_link.occurred_at == T0
    for record_type, record_id in (
        ("contact", contact.id),
        ("account", account.id),
        ("lead", lead.id),
    ):
        assert [a.id for a in await timeline(session, record_type, record_id)] == [call.id]


async def test_timeline_is_newest_first_filtered_paged_and_skips_the_bin(
    session: AsyncSession,
) -> None:
    lead = Lead(last_name="Chen")
    other = Lead(last_name="Other")
    session.add_all([lead, other])
    await session.flush()
    subjects: dict[int, str] = {}
    # Two activities share each instant, so pages must break ties on the id.
    for n in range(6):
        activity = await log_activity(
            session,
            kind="note" if n % 2 else "call",
            subject=f"a{n}",
            records=[lead],
            occurred_at=T0 + dt.timedelta(hours=n // 2),
        )
        subjects[activity.id] = activity.subject
    await log_activity(session, kind="note", subject="elsewhere", records=[other], occurred_at=T0)
    newest_first = ["a5", "a4", "a3", "a2", "a1", "a0"]

    seen: list[str] = []
    before: tuple[dt.datetime, int] | None = None
    while True:
        page = await timeline(session, "lead", lead.id, limit=4 if not seen else 1, before=before)
        if not page:
            break
        seen.extend(a.subject for a in page)
        before = (page[-1].occurred_at, page[-1].id)
    assert seen == newest_first  # every activity once, in order, across uneven pages

    assert [a.subject for a in await timeline(session, "lead", lead.id, kinds=["note"])] == [
        "a5",
        "a3",
        "a1",
    ]
    assert await timeline(session, "lead", lead.id, kinds=[]) == []
    both = await timeline(session, "lead", lead.id, kinds=[ActivityKind.NOTE, "call"], limit=2)
    assert [a.subject for a in both] == ["a5", "a4"]

    # An activity in the recycle bin leaves the timeline.
    deleted = next(i for i, s in subjects.items() if s == "a5")
    row = await session.get(Activity, deleted)
    assert row is not None
    row.deleted_at = T0
    await session.flush()
    assert [a.subject for a in await timeline(session, "lead", lead.id, limit=2)] == ["a4", "a3"]
