"""HitWriter: tracking hits are answered at once and written in batches, none lost.

The pixel handler must not wait for the store, so hits queue in memory and a
flusher writes them every ``flush_every_s``.  A batch is written in one
transaction: its key, the rows through the driver's bulk path (COPY on
PostgreSQL, one executemany on SQLite), and one counter update per recipient
in the batch, summed here rather than per hit.  ``HitWriter`` does that in
the listener's own process and is kept for stores that live in its memory;
the daemon otherwise uses ``tracking.hit_pipe``, whose writer process calls
``write_hits`` (on SQLite an executemany in this process would hand the GIL
between the event loop and the driver's thread for every row).  The queue is
bounded: when the store stalls and it fills, handlers wait for room (slower
answers) rather than dropping hits.  A failed write keeps its hits for the
next attempt.  ``stop`` sets a flag and waits for the flush in progress and a
last one, never cancelling a flush half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Table, bindparam, func, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from store.base import UTCDateTime
from store.db import Store
from store.models import SentRecipient, TrackingHit, TrackingHitBatch
from tracking.classes import HUMAN_CLASSES, MACHINE_CLASSES

log = logging.getLogger(__name__)
# A second's hits to a batch: at 0.2 s SQLite's writer spent about a quarter more
# CPU per hit (each commit writes again every index page it touched).  Counts
# show up within about a second.
FLUSH_EVERY_S = 1.0
MAX_PENDING = 100_000


class Hit(NamedTuple):
    """One hit's fields, in the order of a ``HitRow``."""

    recipient_id: int
    kind: str  # open | click
    hit_class: str
    at_us: int  # microseconds since 1970, UTC
    link_id: int | None = None
    ip: str | None = None
    user_agent: str | None = None  # at most 500 characters


# What the listener queues: a plain tuple in the order of ``Hit``.  Making one costs
# a tenth of a ``Hit``, and ``marshal`` (the pipe to the writer) takes plain tuples only.
HitRow = tuple[int, str, str, int, int | None, str | None, str | None]


def now_us() -> int:
    return time.time_ns() // 1000


_RECIPIENTS: Table = SentRecipient.__table__  # type: ignore[assignment]
_HITS: Table = TrackingHit.__table__  # type: ignore[assignment]
_HIT_COLUMNS = ["recipient_id", "kind", "hit_class", "at", "link_id", "ip", "user_agent"]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# The rows go to SQLite's driver as they came off the wire (one executemany run
# by the driver's thread in C, no Python per row); the time is made in SQL, as
# the text SQLAlchemy stores a DATETIME as: 2026-11-23 09:10:11.123456.
_INSERT_SQLITE = (
    f"INSERT INTO {_HITS.name} ({', '.join(_HIT_COLUMNS)}) VALUES (?1, ?2, ?3, "
    "strftime('%Y-%m-%d %H:%M:%S', ?4 / 1000000, 'unixepoch') || printf('.%06d', ?4 % 1000000), "
    "?5, ?6, ?7)"
)
_BUMP = (
    update(_RECIPIENTS)
    .where(_RECIPIENTS.c.id == bindparam("rid"))
    .values(
        human_opens=_RECIPIENTS.c.human_opens + bindparam("human"),
        machine_opens=_RECIPIENTS.c.machine_opens + bindparam("machine"),
        clicks=_RECIPIENTS.c.clicks + bindparam("click"),
        first_human_open_at=func.coalesce(
            _RECIPIENTS.c.first_human_open_at, bindparam("first", type_=UTCDateTime())
        ),
        last_activity_at=func.coalesce(
            bindparam("last", type_=UTCDateTime()), _RECIPIENTS.c.last_activity_at
        ),
    )
)


def _at(at_us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=at_us)


def tally(hits: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Each recipient's counter changes from a batch, one row per recipient (not per hit).

    Opens by people and by machines, people's clicks, the first time a person
    looked (a person's click proves an open as much as the pixel does) and
    the last activity of either.
    """
    by_recipient: dict[int, list[Any]] = {}
    for rid, kind, hit_class, at_us, *_ in hits:
        human = hit_class in HUMAN_CLASSES
        if not human and hit_class not in MACHINE_CLASSES:
            continue  # the CRM's own preview counts nothing
        row = by_recipient.get(rid)
        if row is None:
            row = by_recipient[rid] = [0, 0, 0, None, at_us]
        if human:
            if kind == "open":
                row[0] += 1
            else:
                row[2] += 1
            if row[3] is None or at_us < row[3]:
                row[3] = at_us
        elif kind == "open":
            row[1] += 1
        if at_us > row[4]:
            row[4] = at_us
    return [
        {"rid": rid, "human": human, "machine": machine, "click": clicks,
         "first": None if first is None else _at(first), "last": _at(last)}
        for rid, (human, machine, clicks, first, last) in by_recipient.items()
    ]  # fmt: skip


async def _insert_rows(session: AsyncSession, hits: Sequence[Sequence[Any]]) -> None:
    """The hit rows, through the driver's own bulk path, in the session's transaction."""
    connection = await session.connection()
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    if connection.dialect.name == "postgresql":
        # COPY: no statement per row; the server does the least work per row.
        records = [(r, k, c, _at(us), link, ip, agent) for r, k, c, us, link, ip, agent in hits]
        await driver.copy_records_to_table(_HITS.name, records=records, columns=_HIT_COLUMNS)
    else:
        await driver.executemany(_INSERT_SQLITE, hits)


async def write_hits(
    sessions: Callable[[], AsyncSession], hits: Sequence[Sequence[Any]], key: str | None = None
) -> bool:
    """Write a batch of hits (``HitRow``s) and their counters in one transaction.

    A batch is written at most once under its ``key`` (one is made up when
    none is given): a key already written (a batch sent again after its
    acknowledgement was lost) writes nothing and returns False.
    """
    async with sessions() as session, session.begin():
        if key is not None and await session.get(TrackingHitBatch, key) is not None:
            return False
        session.add(TrackingHitBatch(key=key or uuid.uuid4().hex, hits=len(hits)))
        await session.flush()  # on SQLite, this takes the write lock
        await _insert_rows(session, hits)
        counters = tally(hits)
        if counters:
            await session.execute(_BUMP, counters)
    return True


class HitQueue(Protocol):
    """What the listener needs of whatever writes its hits (``HitWriter``, ``HitPipe``)."""

    written: int

    @property
    def pending(self) -> int: ...
    def start(self) -> None: ...
    def add_nowait(self, hit: HitRow) -> bool: ...
    async def add(self, hit: HitRow) -> None: ...
    async def flush(self) -> Any: ...
    async def stop(self) -> None: ...


class HitWriter:
    def __init__(
        self, store: Store, flush_every_s: float = FLUSH_EVERY_S, max_pending: int = MAX_PENDING
    ) -> None:
        self.store = store
        self.flush_every_s = flush_every_s
        self.max_pending = max_pending
        self.written = 0
        self._pending: deque[HitRow] = deque()
        self._room = asyncio.Event()
        self._room.set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tracking-hit-writer")

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add_nowait(self, hit: HitRow) -> bool:
        """Queue one hit if there is room (the hot path); False when the queue is full."""
        if len(self._pending) >= self.max_pending:
            return False
        self._pending.append(hit)
        return True

    async def add(self, hit: HitRow) -> None:
        """Queue one hit; waits only while the queue is full."""
        if self.add_nowait(hit):
            return
        while len(self._pending) >= self.max_pending:
            self._room.clear()
            self._wake.set()
            await self._room.wait()
        self._pending.append(hit)

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_every_s)
            self._wake.clear()
            try:
                await self.flush()
            except SQLAlchemyError as err:
                log.warning(
                    "tracking hits not written yet (%d waiting): %s", len(self._pending), err
                )
                await asyncio.sleep(self.flush_every_s)
        await self.flush()

    async def flush(self) -> int:
        """Write every queued hit now; returns how many.  On failure they stay queued."""
        async with self._flushing:
            return await self._flush()

    async def _flush(self) -> int:
        if not self._pending:
            return 0
        batch = list(self._pending)
        await write_hits(self.store.session, batch)
        for _ in batch:
            self._pending.popleft()
        self.written += len(batch)
        self._room.set()
        return len(batch)

    async def stop(self) -> None:
        """Write what is queued and stop; the flush in progress is awaited, not cancelled."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        else:
            await self.flush()
