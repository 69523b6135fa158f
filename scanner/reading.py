"""Reading a journalled mail away from the event loop: parse, classify, keep its attachments.

Parsing is the pipeline's costliest step (a few milliseconds of CPU a message), so
it runs in worker processes, one per core by default: the event loop stays free
for the network and the store, and every core parses.  A worker reads the raw
bytes from the blob store itself and writes the attachments there too, so only
the small result crosses the process boundary.  With no workers the same work
runs in a thread of the daemon's own process.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path

from scanner.classify import Classification, classify
from scanner.parse import ParsedMail, parse_mail
from store.blobs import BlobStore
from store.errors import PermanentError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredAttachment:
    filename: str
    content_type: str
    size: int
    digest: str
    content_id: str | None
    inline: bool


@dataclass
class Reading:
    """The pipeline's reading of one mail: attachments are in the blob store, not here."""

    mail: ParsedMail
    verdict: Classification
    attachments: list[StoredAttachment]


def read_mail(blob_root: Path, digest: str) -> Reading:
    """Parse and classify the journalled bytes ``digest``; store the attachments as blobs.

    The attachments are not yet durable: ``BlobStore.sync`` before they are referred to.
    """
    blobs = BlobStore(blob_root)
    mail = parse_mail(blobs.read_blocking(digest))
    verdict = classify(mail)
    stored = [
        StoredAttachment(
            filename=a.filename,
            content_type=a.content_type,
            size=a.size,
            digest=blobs.write_blocking(a.payload, sync=False),
            content_id=a.content_id,
            inline=a.inline,
        )
        for a in mail.attachments
    ]
    # Rules still see the attachments' names; the bytes and the MIME tree stay behind.
    mail.attachments = [replace(a, payload=b"") for a in mail.attachments]
    mail.message = None
    return Reading(mail, verdict, stored)


def _worker_started() -> None:
    # Ctrl-C reaches the whole process group; the daemon stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _ready() -> int:
    """A first job for a new worker: importing this module loads the parser."""
    return os.getpid()


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class MailReader:
    """Runs ``read_mail`` in a pool of ``workers`` processes (started on first use), or a thread.

    A worker that dies (a crash, the OOM killer) breaks the pool: the pool is
    started again and the mails it held are read once more; a mail that breaks
    the new pool too is refused as unreadable (and so quarantined, not retried
    for ever).
    """

    def __init__(self, blob_root: Path, workers: int = 0) -> None:
        self.blob_root = blob_root
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor | None:
        if self.workers and self._pool is None:
            # spawn, not fork: the daemon has threads (IMAP, SQLite) whose locks a fork copies.
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_started,
            )
        return self._pool

    async def start(self) -> None:
        """Start the workers now (they take a moment to import the parser), not on first mail."""
        pool = self._executor()
        if pool is not None:
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(loop.run_in_executor(pool, _ready) for _ in range(self.workers)))

    async def read(self, digest: str) -> Reading:
        for attempt in (1, 2):
            pool = self._executor()
            if pool is None:
                return await asyncio.to_thread(read_mail, self.blob_root, digest)
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    pool, read_mail, self.blob_root, digest
                )
            except BrokenProcessPool:
                if self._pool is pool:
                    log.warning("a mail-reading worker died; starting the pool again")
                    self._pool = None
                    pool.shutdown(wait=False, cancel_futures=True)
                if attempt == 2:
                    raise PermanentError("reading this mail made a worker process die") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
