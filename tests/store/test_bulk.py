"""Bulk writing on both engines: ids handed out in one statement, rows written without objects."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from store.activities import ActivityDraft, log_activities, timeline
from store.base import utcnow
from store.bulk import allocate_ids, assign_ids, insert_rows, lock_rows
from store.db import Store
from store.journal import journal_inbound
from store.models import ActivityKind, EmailThread, InboundJournal, Lead


async def test_ids_for_several_tables_in_one_go_are_the_ones_written(store: Store) -> None:
    async with store.session() as session, session.begin():
        session.add(Lead(last_name="已有"))  # an id the database handed out
        await session.flush()
    receipts = [
        await journal_inbound(store, f"smtp:{n}", f"Subject: {n}\r\n\r\nx".encode())
        for n in range(3)
    ]
    async with store.session() as session, session.begin():
        locked = await lock_rows(
            session, InboundJournal, [r.journal_id for r in reversed(receipts)]
        )
        assert [row.id for row in locked] == sorted(r.journal_id for r in receipts)
        ids = await allocate_ids(session, {Lead: 3, EmailThread: 2, InboundJournal: 0})
        assert (
            len(set(ids[Lead])) == 3
            and len(set(ids[EmailThread])) == 2
            and ids[InboundJournal] == []
        )
        leads = [Lead(id=i, last_name=f"新{i}") for i in ids[Lead]]
        session.add_all(leads)
        now = utcnow()
        await insert_rows(session, EmailThread, [{"id": i, "subject": "s", "started_at": now, "last_at": now}
                                                  for i in ids[EmailThread]])  # fmt: skip
        await session.flush()
        more = [Lead(last_name="再来一个")]
        await assign_ids(session, more)
        session.add_all(more)
    async with store.session() as session:
        stored = set(await session.scalars(select(Lead.id)))
        assert set(ids[Lead]) | {more[0].id} < stored and len(stored) == 5
        assert set(await session.scalars(select(EmailThread.id))) == set(ids[EmailThread])
    # Ids keep counting after what was written, whoever wrote it.
    async with store.session() as session, session.begin():
        await lock_rows(session, InboundJournal, [receipts[0].journal_id])
        (after,) = (await allocate_ids(session, {Lead: 1}))[Lead]
        assert after not in stored


async def test_many_activities_each_on_its_records_timeline(store: Store) -> None:
    receipt_id = (await journal_inbound(store, "smtp:x", b"Subject: x\r\n\r\nx")).journal_id
    async with store.session() as session, session.begin():
        await lock_rows(session, InboundJournal, [receipt_id])
        leads = [Lead(last_name=f"客户{n}") for n in range(2)]
        session.add_all(leads)
        await session.flush()
        drafts = [
            ActivityDraft(kind=ActivityKind.NOTE, subject="两人都有", records=[("lead", leads[0].id), ("lead", leads[1].id)]),
            ActivityDraft(kind=ActivityKind.CALL, subject="只有一人", records=[("lead", leads[1].id), ("lead", leads[1].id)],
                          fields={"body": "通话"}),
        ]  # fmt: skip
        ids = await log_activities(session, drafts)
    async with store.session() as session:
        first = await timeline(session, "lead", leads[0].id)
        second = await timeline(session, "lead", leads[1].id)
    assert [a.id for a in first] == [ids[0]]
    assert sorted(a.id for a in second) == sorted(ids)
    assert {a.subject for a in second} == {"两人都有", "只有一人"}


async def test_a_second_writer_waits_for_the_sqlite_write_lock(store: Store) -> None:
    """Two batches allocating at once never hand out the same ids."""
    receipt = await journal_inbound(store, "smtp:lock", b"Subject: x\r\n\r\nx")

    async def write(tag: str) -> list[int]:
        async with store.session() as session, session.begin():
            await lock_rows(session, InboundJournal, [receipt.journal_id])
            ids = (await allocate_ids(session, {Lead: 5}))[Lead]
            await asyncio.sleep(0.05)  # the other writer tries meanwhile
            session.add_all(Lead(id=i, last_name=tag) for i in ids)
        return ids

    a, b = await asyncio.gather(write("甲"), write("乙"))
    assert not set(a) & set(b)
