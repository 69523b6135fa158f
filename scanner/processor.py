"""MailProcessor: the service that runs the pipeline over every journalled message.

It sweeps what is pending at start (so a crash loses nothing: raw mail was
journalled before it was acknowledged), then files what ``MailJournalled``
events announce as they come (a lone SMTP mail goes straight through), and
sweeps when events pile up or were dropped, and now and then in case one went
astray.  A sweep takes the pending entries in journal order, a batch at a time,
and reads (parses) the next batch while the current one is filed, so the
parsing processes and the store work side by side.  One sweep at a time: lead
de-duplication needs no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from scanner.pipeline import MailPipeline
from store.bus import Event, Subscription
from store.journal import MAIL_JOURNALLED
from store.service import ServiceStatus

log = logging.getLogger(__name__)
SWEEP_EVERY_S = 30.0
BATCH_SIZE = 100


class MailProcessor:
    name = "mail-processor"

    def __init__(
        self,
        pipeline: MailPipeline,
        sweep_every_s: float = SWEEP_EVERY_S,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.pipeline = pipeline
        self.sweep_every_s = sweep_every_s
        self.batch_size = batch_size
        self.processed = 0
        self._events: Subscription | None = None
        self._dropped_seen = 0

    async def sweep(self) -> int:
        """Process everything pending; returns how many were handled."""
        done = 0
        while handled := await self._pass():
            done += handled
        self.processed += done
        return done

    async def _pass(self) -> int:
        """One pass over the pending entries in id order, reading ahead by one batch."""
        pipeline = self.pipeline
        ids = await pipeline.pending_ids(self.batch_size)
        if not ids:
            return 0
        done = 0
        reading = asyncio.create_task(pipeline.read_many(ids))
        try:
            while ids:
                read = await reading
                following = await pipeline.pending_ids(self.batch_size, after=ids[-1])
                if following:
                    reading = asyncio.create_task(pipeline.read_many(following))
                await pipeline.file_read(read)
                if self._events is not None:
                    self._events.drain()  # what they announce is in hand already
                done += len(ids)
                ids = following
        finally:
            if not reading.done():
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading
        return done

    async def _announced(self, announced: list[Event], events: Subscription) -> None:
        """File what the events name, at once; a sweep when there is more than a batch or
        events were dropped (a busy backlog: the sweep reads ahead)."""
        dropped = events.dropped
        ids = sorted({int(e.data["journal_id"]) for e in announced if "journal_id" in e.data})
        if len(ids) <= self.batch_size and dropped == self._dropped_seen:
            await self.pipeline.process_many(ids)
            self.processed += len(ids)
        else:
            self._dropped_seen = dropped
            await self.sweep()

    async def run(self, status: ServiceStatus) -> None:
        try:
            async with self.pipeline.store.bus.subscribe(MAIL_JOURNALLED, lossy=True) as events:
                self._events = events
                await self.pipeline.reader.start()
                backlog = await self.sweep()
                status.ready(f"{backlog} waiting message(s) processed" if backlog else "")
                while True:
                    try:
                        first = await asyncio.wait_for(events.get(), self.sweep_every_s)
                    except TimeoutError:
                        await self.sweep()  # in case an event went astray
                        continue
                    await self._announced([first, *events.drain()], events)
        finally:
            self._events = None
            self.pipeline.close()
