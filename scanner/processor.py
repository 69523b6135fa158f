"""MailProcessor: the service that runs the pipeline over every journalled message.

It sweeps what is pending at start (so a crash loses nothing: raw mail was
journalled before it was acknowledged), then sweeps again whenever
``MailJournalled`` events arrive, and now and then in case one was missed.  A
sweep takes the pending entries in journal order, a batch at a time, and reads
(parses) the next batch while the current one is filed, so the parsing
processes and the store work side by side.  One sweep at a time: lead
de-duplication needs no lock.
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
                done += len(ids)
                ids = following
        finally:
            if not reading.done():
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading
        return done

    async def run(self, status: ServiceStatus) -> None:
        try:
            async with self.pipeline.store.bus.subscribe(MAIL_JOURNALLED) as events:
                backlog = await self.sweep()
                status.ready(f"{backlog} waiting message(s) processed" if backlog else "")
                while True:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(events.get(), self.sweep_every_s)
                        events.drain()  # the sweep below takes whatever they announce
                    await self.sweep()
        finally:
            self.pipeline.close()
