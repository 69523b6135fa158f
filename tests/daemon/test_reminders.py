"""The reminder mailer: a due reminder is queued once, in its owner's language, through the outbox."""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import select

from daemon.reminders import ReminderMailer
from store.activities import log_activity
from store.db import Store
from store.models import Activity, ActivityStatus, Contact, Email, OutboxEntry
from store.reminders import set_reminder
from store.users import create_user
from tracking.compose import Sender

AT = dt.datetime(2026, 12, 8, 2, 0, tzinfo=dt.UTC)  # 10:00 in Shanghai


class Status:
    def __init__(self) -> None:
        self.said: list[str] = []

    def ready(self, detail: str = "") -> None:
        self.said.append("ready")

    def progress(self, detail: str) -> None:
        self.said.append(detail)

    def degraded(self, detail: str) -> None:
        self.said.append("degraded")


async def _meeting(store: Store, locale: str) -> int:
    async with store.session() as session, session.begin():
        owner = await create_user(session, f"u-{locale}", None, role="agent",
                                  email=f"{locale}@rapport.test", locale=locale)  # fmt: skip
        contact = Contact(last_name="王", first_name="芳")
        session.add(contact)
        await session.flush()
        meeting = await log_activity(
            session, kind="meeting", subject="拜访金龙贸易", records=[contact], owner_id=owner.id,
            occurred_at=AT, status=ActivityStatus.PLANNED, location="上海",
        )  # fmt: skip
        set_reminder(meeting, 30)
        return meeting.id


async def test_a_due_reminder_is_mailed_once_in_its_owners_language(store: Store) -> None:
    chinese = await _meeting(store, "zh_CN")
    english = await _meeting(store, "en")
    now = [AT - dt.timedelta(minutes=45)]
    mailer = ReminderMailer(store, Sender("crm@rapport.test", "Rapport"),
                            "https://crm.example.cn/", clock=lambda: now[0])  # fmt: skip
    assert await mailer.round() == 0  # not yet
    now[0] = AT - dt.timedelta(minutes=29)
    assert await mailer.round() == 2
    assert await mailer.round() == 0  # claimed: never twice
    async with store.session() as session:
        mails = {e.to[0]["address"]: e for e in await session.scalars(select(Email))}
        queued = len(list(await session.scalars(select(OutboxEntry.id))))
        sent_at = set(await session.scalars(select(Activity.reminder_sent_at).where(
            Activity.id.in_([chinese, english]))))  # fmt: skip
    assert queued == 2 and sent_at == {now[0]}
    zh, en = mails["zh_cn@rapport.test"], mails["en@rapport.test"]
    assert zh.subject.startswith("提醒：拜访金龙贸易（2026年12月8日 10:00")
    assert "地点：上海" in zh.text_body and f"https://crm.example.cn/activities/{chinese}" in zh.text_body
    assert en.subject.startswith("Reminder: 拜访金龙贸易 at Dec 8, 2026, 10:00")
    assert "/contacts/" in en.text_body


async def test_the_service_mails_each_minute_until_stopped(store: Store) -> None:
    await _meeting(store, "zh_CN")
    mailer = ReminderMailer(store, Sender("crm@rapport.test"), None, every_s=0.05,
                            clock=lambda: AT)  # fmt: skip
    status = Status()
    task = asyncio.create_task(mailer.run(status))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if mailer.mailed:
            break
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert mailer.mailed == 1 and status.said[0] == "ready"
