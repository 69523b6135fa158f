"""Reminders: when they come, whose pages list them, and a mail queued once with its claim."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import func, select

from store.activities import log_activity
from store.db import Store
from store.errors import ValidationError
from store.models import Activity, ActivityKind, ActivityStatus, Contact
from store.reminders import Reminder, due_soon, send_due_reminders, set_reminder
from store.users import create_user

T0 = dt.datetime(2026, 3, 31, 15, 30, tzinfo=dt.UTC)  # 23:30 in Shanghai


async def _planned(
    store: Store, owner: str, *, kind: str = "meeting", at: dt.datetime = T0, minutes: int = 15,
    email: str | None = "li@rapport.test",
) -> tuple[int, int]:  # fmt: skip
    """A planned activity of a new user ``owner`` with a reminder; (activity id, owner id)."""
    async with store.session() as session, session.begin():
        user = await create_user(session, owner, "correct horse battery", role="agent",
                                 email=email)  # fmt: skip
        contact = Contact(last_name="王")
        session.add(contact)
        await session.flush()
        activity = await log_activity(
            session, kind=kind, subject="拜访王总", records=[contact], owner_id=user.id,
            occurred_at=at, due_at=at if kind == "task" else None,
            status=ActivityStatus.PLANNED,
        )  # fmt: skip
        set_reminder(activity, minutes)
        return activity.id, user.id


async def test_a_reminder_comes_before_the_time_and_moves_with_it(store: Store) -> None:
    activity_id, _ = await _planned(store, "li")
    async with store.session() as session, session.begin():
        activity = await session.get_one(Activity, activity_id)
        assert activity.remind_at == T0 - dt.timedelta(minutes=15)
        activity.reminder_sent_at = T0
        set_reminder(activity, 15)  # the same moment: not sent again
        assert activity.reminder_sent_at == T0
        activity.occurred_at = T0 + dt.timedelta(days=1)
        set_reminder(activity, 15)  # a new moment: armed again
        assert activity.reminder_sent_at is None
        assert activity.remind_at == T0 + dt.timedelta(days=1, minutes=-15)
        with pytest.raises(ValidationError):
            set_reminder(activity, -5)
        # A task reminds before its due time; without one there is nothing to remind of.
        activity.kind = ActivityKind.TASK
        set_reminder(activity, 10)
        assert activity.remind_at is None and activity.remind_minutes is None


async def test_due_soon_lists_my_reminders_that_have_come(store: Store) -> None:
    mine, me = await _planned(store, "li")
    _theirs, _ = await _planned(store, "wang", email="wang@rapport.test")
    await _planned(store, "zhao", at=T0 + dt.timedelta(hours=3))
    async with store.session() as session:
        assert await due_soon(session, me, T0 - dt.timedelta(minutes=16)) == []
        assert [a.id for a in await due_soon(session, me, T0 - dt.timedelta(minutes=15))] == [mine]
        assert [a.id for a in await due_soon(session, me, T0 + dt.timedelta(minutes=59))] == [mine]
        assert await due_soon(session, me, T0 + dt.timedelta(hours=2)) == []
    async with store.session() as session, session.begin():
        (await session.get_one(Activity, mine)).status = ActivityStatus.DONE
    async with store.session() as session:
        assert await due_soon(session, me, T0) == []


class Recorder:
    """A queue that writes through the store it is given, as the outbox does, and may fail."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.queued: list[Reminder] = []

    async def __call__(self, store: Store, reminder: Reminder) -> int:
        async with store.session() as session, session.begin():
            note = await log_activity(session, kind="note", subject=f"mail {reminder.subject}",
                                      records=list(reminder.records))  # fmt: skip
        if self.fail is not None:
            raise self.fail
        self.queued.append(reminder)
        return note.id


async def _notes(store: Store) -> int:
    async with store.session() as session:
        count = await session.scalar(
            select(func.count()).select_from(Activity).where(Activity.kind == ActivityKind.NOTE)
        )
        return int(count or 0)


async def test_a_due_reminder_is_queued_once_with_its_claim(store: Store) -> None:
    activity_id, user_id = await _planned(store, "li")
    early = T0 - dt.timedelta(minutes=20)
    queue = Recorder()
    assert await send_due_reminders(store, queue, early) == 0
    # The queueing fails: neither its writes nor the claim are kept, and it is tried again.
    failing = Recorder(RuntimeError("relay table locked"))
    assert await send_due_reminders(store, failing, T0 - dt.timedelta(minutes=14)) == 0
    assert await _notes(store) == 0
    # Two daemons at the same minute: one claims it, the other finds it taken.
    at = T0 - dt.timedelta(minutes=14)
    both = await asyncio.gather(send_due_reminders(store, queue, at),
                                send_due_reminders(store, queue, at))  # fmt: skip
    assert sorted(both) == [0, 1]
    assert await send_due_reminders(store, queue, T0 - dt.timedelta(minutes=13)) == 0
    assert await _notes(store) == 1
    [sent] = queue.queued
    assert (sent.activity_id, sent.owner_id, sent.address) == (activity_id, user_id,
                                                              "li@rapport.test")  # fmt: skip
    assert (sent.at, sent.minutes, sent.kind, sent.locale) == (T0, 15, "meeting", "en")
    async with store.session() as session:
        activity = await session.get_one(Activity, activity_id)
        assert activity.reminder_sent_at == T0 - dt.timedelta(minutes=14)


async def test_reminders_that_cannot_be_mailed_are_dropped_not_retried(store: Store) -> None:
    bad, _ = await _planned(store, "li", email="li@")
    stale, _ = await _planned(store, "wang", email="wang@rapport.test",
                              at=T0 - dt.timedelta(hours=2))  # fmt: skip
    queue = Recorder(ValidationError({"to": "not an email address"}))
    assert await send_due_reminders(store, queue, T0) == 0
    async with store.session() as session:
        handled = await session.scalars(
            select(Activity.id).where(Activity.reminder_sent_at.is_not(None)).order_by(Activity.id)
        )
        assert list(handled) == [bad, stale]
    assert await _notes(store) == 0
