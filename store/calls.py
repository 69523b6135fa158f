"""Calls as the customer's record: one row per customer leg, its timeline entry, callbacks.

``record_call`` is idempotent: a call is keyed by (PBX, customer-leg Uniqueid)
and a call already written as ended is left as it is, so a replayed or
repeated end changes nothing.  A customer call becomes one activity linked
to every record holding the caller's number (two contacts sharing a number
both get it: a match is never silently one) and to the record it was dialled
from.  An internal call is kept but filed against no customer.

A missed inbound call opens one callback task per caller per window: repeat
calls merge into it.  It is assigned to the last agent who talked with that
number, else the owner of the caller's record.  A later answered call with
the same number closes it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import RecordRef, log_activity
from store.callers import match_ids
from store.models import (
    RECORD_TYPES,
    Activity,
    ActivityKind,
    ActivityStatus,
    Call,
    CallBack,
    CallDisposition,
    CallSegment,
    Direction,
)
from store.phones import PhoneRegion, normalise_phone

CALLBACK_WINDOW = dt.timedelta(hours=24)
CALLBACK_DUE = dt.timedelta(hours=1)
_MISSED = (CallDisposition.MISSED, CallDisposition.VOICEMAIL, CallDisposition.BUSY)


@dataclass(frozen=True)
class SegmentFacts:
    extension: str | None
    channel: str
    ring_at: dt.datetime | None
    answered_at: dt.datetime | None
    ended_at: dt.datetime | None
    end_reason: str | None


@dataclass(frozen=True)
class CallFacts:
    """A finished call as the phone side derived it."""

    pbx: str
    uniqueid: str
    linkedid: str
    direction: Direction
    started_at: dt.datetime
    ended_at: dt.datetime | None
    disposition: CallDisposition
    external_number: str | None = None
    external_e164: str | None = None
    did: str | None = None
    queue: str | None = None
    answered_at: dt.datetime | None = None
    ring_seconds: float = 0.0
    talk_seconds: float = 0.0
    hangup_cause: int | None = None
    recording: str | None = None
    transfer: str | None = None
    origin: str | None = None  # "contact:12": the record a click-to-dial call came from
    linked: tuple[str, ...] = ()  # records tied to the call while it went on
    ended_in_gap: bool = False
    segments: tuple[SegmentFacts, ...] = ()


@dataclass(frozen=True)
class RecordedCall:
    call_id: int
    created: bool
    activity_id: int | None = None
    callback_id: int | None = None
    closed_callbacks: int = 0


def record_ref(origin: str | None) -> RecordRef | None:
    """``"contact:12"`` as a record reference; None unless it names a CRM record."""
    if not origin or ":" not in origin:
        return None
    record_type, _, record_id = origin.partition(":")
    if record_type not in RECORD_TYPES or not record_id.isdigit():
        return None
    return record_type, int(record_id)


def _subject(facts: CallFacts) -> str:
    who = facts.external_number or "?"
    arrow = {"inbound": "from", "outbound": "to", "internal": "with"}[facts.direction.value]
    talk = f", {round(facts.talk_seconds)} s" if facts.talk_seconds else ""
    return f"Call {arrow} {who}: {facts.disposition.value}{talk}"


async def record_call(
    session: AsyncSession,
    facts: CallFacts,
    region: PhoneRegion,
    users_by_extension: Mapping[str, int],
) -> RecordedCall:
    """Write a finished call, its timeline activity and its callback effects; idempotent."""
    existing = await session.scalar(
        select(Call).where(Call.pbx == facts.pbx, Call.uniqueid == facts.uniqueid)
    )
    if existing is not None and existing.ended_at is not None:
        return RecordedCall(existing.id, created=False)
    agent_ext = next(
        (s.extension for s in reversed(facts.segments) if s.answered_at and s.extension), None
    )
    call = existing or Call(pbx=facts.pbx, uniqueid=facts.uniqueid)
    call.linkedid = facts.linkedid
    call.direction = facts.direction
    call.external_number_raw = facts.external_number
    key = normalise_phone(facts.external_number, region)
    call.external_number_e164 = facts.external_e164 or (key.e164 if key else None)
    call.did, call.queue = facts.did, facts.queue
    call.disposition = facts.disposition
    call.hangup_cause = facts.hangup_cause
    call.started_at, call.answered_at, call.ended_at = (
        facts.started_at, facts.answered_at, facts.ended_at,
    )  # fmt: skip
    call.ring_seconds, call.talk_seconds = facts.ring_seconds, facts.talk_seconds
    call.recording, call.transfer = facts.recording, facts.transfer
    call.origin_record = facts.origin
    call.ended_in_gap = facts.ended_in_gap
    call.agent_id = users_by_extension.get(agent_ext) if agent_ext else None
    call.segments = [
        CallSegment(
            agent_id=users_by_extension.get(s.extension) if s.extension else None,
            channel=s.channel[:120], extension=s.extension, ring_at=s.ring_at,
            answered_at=s.answered_at, ended_at=s.ended_at, end_reason=s.end_reason,
        )
        for s in facts.segments
    ]  # fmt: skip
    session.add(call)
    await session.flush()
    if facts.direction == Direction.INTERNAL:
        return RecordedCall(call.id, created=True)

    records: list[RecordRef] = await match_ids(session, facts.external_number, region)
    for text in (facts.origin, *facts.linked):
        if (ref := record_ref(text)) is not None and ref not in records:
            records.append(ref)
    activity = await log_activity(
        session, kind=ActivityKind.CALL, subject=_subject(facts), records=records,
        occurred_at=facts.started_at, ends_at=facts.ended_at, owner_id=call.agent_id,
        call_id=call.id, status=ActivityStatus.DONE,
    )  # fmt: skip
    if key is None:
        return RecordedCall(call.id, created=True, activity_id=activity.id)
    if facts.answered_at is not None:
        closed = await _close_callbacks(session, key.match_key, call)
        return RecordedCall(call.id, True, activity.id, closed_callbacks=closed)
    if facts.direction == Direction.INBOUND and facts.disposition in _MISSED:
        callback = await _open_callback(session, key.match_key, facts, call, records)
        return RecordedCall(call.id, True, activity.id, callback_id=callback.id)
    return RecordedCall(call.id, created=True, activity_id=activity.id)


async def _close_callbacks(session: AsyncSession, match_key: str, call: Call) -> int:
    """An answered call with the caller settles every open callback for that number."""
    rows = (
        await session.execute(
            select(CallBack, Activity)
            .join(Activity, Activity.id == CallBack.activity_id)
            .where(CallBack.match_key == match_key, CallBack.closed_at.is_(None))
        )
    ).all()
    for callback, task in rows:
        callback.closed_at = call.answered_at
        callback.closed_by_call_id = call.id
        task.status = ActivityStatus.DONE
    await session.flush()
    return len(rows)


async def _open_callback(
    session: AsyncSession,
    match_key: str,
    facts: CallFacts,
    call: Call,
    records: Sequence[RecordRef],
) -> CallBack:
    """Merge into the caller's open callback within the window, or open a new one."""
    callback = await session.scalar(
        select(CallBack)
        .where(
            CallBack.match_key == match_key,
            CallBack.closed_at.is_(None),
            CallBack.last_missed_at >= facts.started_at - CALLBACK_WINDOW,
        )
        .order_by(CallBack.last_missed_at.desc())
        .limit(1)
    )
    number = facts.external_number or match_key
    if callback is not None:
        callback.missed_calls += 1
        callback.last_missed_at = max(callback.last_missed_at, facts.started_at)
        callback.last_call_id = call.id
        task = await session.get_one(Activity, callback.activity_id)
        task.subject = f"Call back {number} ({callback.missed_calls} missed calls)"
        await session.flush()
        return callback
    task = await log_activity(
        session, kind=ActivityKind.TASK, subject=f"Call back {number}", records=records,
        occurred_at=facts.started_at, due_at=facts.started_at + CALLBACK_DUE,
        owner_id=await _callback_owner(session, match_key, records),
        status=ActivityStatus.PLANNED, call_id=call.id,
    )  # fmt: skip
    callback = CallBack(
        match_key=match_key, number=number, activity_id=task.id, missed_calls=1,
        first_missed_at=facts.started_at, last_missed_at=facts.started_at, last_call_id=call.id,
    )  # fmt: skip
    session.add(callback)
    await session.flush()
    return callback


async def _callback_owner(
    session: AsyncSession, match_key: str, records: Sequence[RecordRef]
) -> int | None:
    """The last agent who talked with this number, else the owner of the caller's record."""
    e164 = match_key if match_key.startswith("+") else None
    if e164 is not None:
        agent = await session.scalar(
            select(Call.agent_id)
            .where(
                Call.external_number_e164 == e164,
                Call.agent_id.is_not(None),
                Call.answered_at.is_not(None),
            )
            .order_by(Call.started_at.desc())
            .limit(1)
        )
        if agent is not None:
            return int(agent)
    for record_type, record_id in records:
        model = RECORD_TYPES[record_type]
        owner = await session.scalar(
            select(model.owner_id).where(model.id == record_id)  # type: ignore[attr-defined]
        )
        if owner is not None:
            return int(owner)
    return None
