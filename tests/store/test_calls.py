"""Finished calls land once, on the right timelines, and missed ones become callbacks."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import timeline
from store.calls import CallFacts, SegmentFacts, record_call
from store.identity import index_record
from store.models import (
    Activity,
    ActivityKind,
    ActivityStatus,
    Call,
    CallBack,
    CallDisposition,
    Contact,
    Direction,
)
from store.phones import PhoneRegion
from store.users import create_user

CHENGDU = PhoneRegion(country="CN", area_code="028")
T0 = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC)


def _at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def _missed(uniqueid: str, number: str, start: float) -> CallFacts:
    return CallFacts(
        pbx="hq", uniqueid=uniqueid, linkedid=uniqueid, direction=Direction.INBOUND,
        started_at=_at(start), ended_at=_at(start + 12), disposition=CallDisposition.MISSED,
        external_number=number, ring_seconds=12.0,
        segments=(SegmentFacts("1001", "PJSIP/1001-1", _at(start), None, _at(start + 12),
                               "caller_hangup"),),
    )  # fmt: skip


def _answered(uniqueid: str, number: str, start: float, ext: str = "1002") -> CallFacts:
    return CallFacts(
        pbx="hq", uniqueid=uniqueid, linkedid=uniqueid, direction=Direction.INBOUND,
        started_at=_at(start), answered_at=_at(start + 3), ended_at=_at(start + 60),
        disposition=CallDisposition.ANSWERED, external_number=number, ring_seconds=3.0,
        talk_seconds=57.0,
        segments=(SegmentFacts(ext, f"PJSIP/{ext}-1", _at(start), _at(start + 3),
                               _at(start + 60), "completed"),),
    )  # fmt: skip


async def _contact(session: AsyncSession, name: str, mobile: str, owner: int | None) -> Contact:
    contact = Contact(first_name=name, mobile=mobile, owner_id=owner)
    session.add(contact)
    await session.flush()
    await index_record(session, contact, CHENGDU)
    return contact


async def test_a_call_is_written_once_on_every_matching_timeline(session: AsyncSession) -> None:
    bob = await create_user(session, "bob", None)
    zhang = await _contact(session, "张伟", "138 1234 5678", None)
    twin = await _contact(session, "张伟(家)", "+86 13812345678", None)
    facts = _answered("1795341075.1", "+8613812345678", 0)
    first = await record_call(session, facts, CHENGDU, {"1002": bob.id})
    assert first.created and first.activity_id is not None
    again = await record_call(session, dataclasses.replace(facts, talk_seconds=1.0), CHENGDU, {})
    assert not again.created and again.call_id == first.call_id
    assert await session.scalar(select(func.count()).select_from(Call)) == 1
    call = await session.get_one(Call, first.call_id)
    assert call.agent_id == bob.id and call.talk_seconds == 57.0
    assert [(s.extension, s.agent_id, s.end_reason) for s in call.segments] == [
        ("1002", bob.id, "completed")
    ]
    # Both contacts holding the number see the call: two matches are never one.
    for contact in (zhang, twin):
        items = await timeline(session, "contact", contact.id)
        assert [(a.kind, a.call_id) for a in items] == [(ActivityKind.CALL, call.id)]


async def test_internal_calls_are_kept_but_filed_against_no_customer(
    session: AsyncSession,
) -> None:
    facts = CallFacts(
        pbx="hq", uniqueid="9.1", linkedid="9.1", direction=Direction.INTERNAL,
        started_at=_at(0), answered_at=_at(2), ended_at=_at(9),
        disposition=CallDisposition.ANSWERED,
    )  # fmt: skip
    result = await record_call(session, facts, CHENGDU, {})
    assert result.created and result.activity_id is None
    assert await session.scalar(select(func.count()).select_from(Activity)) == 0


async def test_missed_calls_merge_into_one_callback_closed_by_an_answered_call(
    session: AsyncSession,
) -> None:
    alice = await create_user(session, "alice", None)
    bob = await create_user(session, "bob", None)
    owner_contact = await _contact(session, "王芳", "13900001111", alice.id)
    # Three missed calls in a few minutes, dialled in three shapes: one task.
    first = await record_call(session, _missed("1.1", "+8613900001111", 0), CHENGDU, {})
    second = await record_call(session, _missed("2.1", "013900001111", 120), CHENGDU, {})
    third = await record_call(session, _missed("3.1", "8613900001111", 300), CHENGDU, {})
    assert first.callback_id == second.callback_id == third.callback_id is not None
    callback = await session.get_one(CallBack, first.callback_id)
    assert callback.missed_calls == 3
    task = await session.get_one(Activity, callback.activity_id)
    assert task.kind == ActivityKind.TASK and task.status == ActivityStatus.PLANNED
    assert task.owner_id == alice.id  # nobody talked with them yet: the record's owner
    assert "3 missed calls" in task.subject
    kinds = [(a.kind, a.id) for a in await timeline(session, "contact", owner_contact.id)]
    assert kinds.count((ActivityKind.TASK, task.id)) == 1
    assert [k for k, _ in kinds].count(ActivityKind.CALL) == 3

    # A day later the window has passed: a new task, now for the agent who last talked.
    answered = await record_call(session, _answered("4.1", "13900001111", 400), CHENGDU,
                                 {"1002": bob.id})  # fmt: skip
    assert answered.closed_callbacks == 1
    await session.refresh(callback)
    await session.refresh(task)
    assert callback.closed_by_call_id == answered.call_id and task.status == ActivityStatus.DONE
    later = await record_call(session, _missed("5.1", "13900001111", 2 * 86400), CHENGDU, {})
    assert later.callback_id not in (None, first.callback_id)
    new_task = await session.get_one(
        Activity, (await session.get_one(CallBack, later.callback_id)).activity_id
    )
    assert new_task.owner_id == bob.id


async def test_anonymous_missed_calls_open_no_callback(session: AsyncSession) -> None:
    result = await record_call(session, _missed("7.1", "anonymous", 0), CHENGDU, {})
    assert result.created and result.callback_id is None
