"""The reminder mailer: once a minute, each reminder that has come is mailed to its owner.

``store.reminders.send_due_reminders`` claims a reminder and queues its mail
in one transaction, so a reminder is mailed once whatever the restarts; the
mail leaves through the shared outbox like any other, as the company's sender.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from store.base import utcnow
from store.db import Store
from store.reminders import Reminder, send_due_reminders
from store.service import ServiceStatus
from tracking.compose import Sender
from tracking.outbox import Draft, queue_mail
from web.reminder_mail import reminder_words

log = logging.getLogger(__name__)
EVERY_S = 60.0


class ReminderMailer:
    name = "reminders"

    def __init__(
        self, store: Store, sender: Sender, public_url: str | None, *, every_s: float = EVERY_S,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:  # fmt: skip
        self.store = store
        self.sender = sender
        self.public_url = public_url
        self.every_s = every_s
        self.clock = clock
        self.mailed = 0

    async def _queue(self, store: Store, reminder: Reminder) -> int:
        subject, text = reminder_words(reminder, self.public_url)
        draft = Draft(to=[reminder.address], subject=subject, text=text)
        return await queue_mail(store, draft, self.sender, user_id=reminder.owner_id)

    async def round(self) -> int:
        """Mail every reminder due now; returns how many were queued."""
        sent = await send_due_reminders(self.store, self._queue, self.clock())
        self.mailed += sent
        if sent:
            log.info("%d reminder(s) mailed", sent)
        return sent

    async def run(self, status: ServiceStatus) -> None:
        status.ready()
        away = False
        while True:
            try:
                await self.round()
            except SQLAlchemyError as err:
                # The store is away: said once, and the next minute tries again.
                if not away:
                    status.degraded(f"store unavailable: {type(err).__name__}")
                away = True
            else:
                if away:
                    status.ready()
                away = False
            await asyncio.sleep(self.every_s)
