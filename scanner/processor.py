"""MailProcessor: the service that runs the pipeline over every journalled message.

It sweeps what is pending at start (so a crash loses nothing: raw mail was
journalled before it was acknowledged), then follows ``MailJournalled`` events
and sweeps again now and then in case an event was missed.  One message at a
time: lead de-duplication needs no lock, and parsing runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from scanner.pipeline import MailPipeline
from store.journal import MAIL_JOURNALLED
from store.service import ServiceStatus

log = logging.getLogger(__name__)
SWEEP_EVERY_S = 30.0


class MailProcessor:
    name = "mail-processor"

    def __init__(self, pipeline: MailPipeline, sweep_every_s: float = SWEEP_EVERY_S) -> None:
        self.pipeline = pipeline
        self.sweep_every_s = sweep_every_s
        self.processed = 0

    async def sweep(self) -> int:
        """Process everything pending; returns how many were handled."""
        done = 0
        while ids := await self.pipeline.pending_ids():
            for journal_id in ids:
                await self.pipeline.process(journal_id)
                done += 1
        self.processed += done
        return done

    async def run(self, status: ServiceStatus) -> None:
        async with self.pipeline.store.bus.subscribe(MAIL_JOURNALLED) as events:
            backlog = await self.sweep()
            status.ready(f"{backlog} waiting message(s) processed" if backlog else "")
            while True:
                with contextlib.suppress(TimeoutError):
                    event = await asyncio.wait_for(events.get(), self.sweep_every_s)
                    await self.pipeline.process(int(event.data["journal_id"]))
                    self.processed += 1
                await self.sweep()
