"""HitWriter: tracking hits are answered at once and written in batches, none lost.

The pixel handler must not wait for the store, so hits queue in memory and a
flusher writes them every ``flush_every_s`` with two statements whatever
their number, both reading the batch as one JSON array: the hit rows with one
INSERT ... SELECT, and every recipient's counters with one UPDATE ... FROM the
same rows summed by recipient.
(An executemany would pass the GIL between the event loop and SQLite's driver
thread for every row: measured, it cut the pixel's rate by more than half.)  The queue
is bounded: when the store stalls and it fills, handlers wait for room (slower
answers) rather than dropping hits.  A failed write keeps its hits for the
next attempt.  ``stop`` sets a flag and waits for the flush in progress and a
last one, never cancelling a flush half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from sqlalchemy import (
    BigInteger,
    Select,
    String,
    Table,
    and_,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from store.db import Store
from store.dialect import epoch_us_timestamp, json_array_rows
from store.models import SentRecipient, TrackingHit, TrackingHitBatch
from tracking.classes import HUMAN_CLASSES, MACHINE_CLASSES

log = logging.getLogger(__name__)
FLUSH_EVERY_S = 0.2
MAX_PENDING = 100_000


class Hit(NamedTuple):
    """One hit, in the order its JSON array is written (a tuple dumps as an array)."""

    recipient_id: int
    kind: str  # open | click
    hit_class: str
    at_us: int  # microseconds since 1970, UTC
    link_id: int | None = None
    ip: str | None = None
    user_agent: str | None = None  # at most 500 characters


def now_us() -> int:
    return time.time_ns() // 1000


_RECIPIENTS: Table = SentRecipient.__table__  # type: ignore[assignment]
_HITS: Table = TrackingHit.__table__  # type: ignore[assignment]
HIT_COLUMNS = {"recipient_id": BigInteger(), "kind": String(), "hit_class": String(),
               "at_us": BigInteger(), "link_id": BigInteger(), "ip": String(),
               "user_agent": String()}  # fmt: skip


def _statements(session: AsyncSession) -> tuple[Any, Any]:
    """The two statements of a flush: the hits from one JSON parameter, then the counters.

    The batch goes to the database as the text it came as, and the counters
    are summed in SQL, so the writer does no work per hit in Python.  SQLite
    sums the rows just inserted (ids above ``after``: the batch's key took the
    write lock, so no other writer can interleave); PostgreSQL, where another
    transaction could, sums the JSON again.
    """
    hits = json_array_rows(session, bindparam("hits", type_=String()), HIT_COLUMNS)
    at = epoch_us_timestamp(session, hits.c.at_us)
    insert_hits = insert(_HITS).from_select(
        ["recipient_id", "kind", "hit_class", "at", "link_id", "ip", "user_agent"],
        select(hits.c.recipient_id, hits.c.kind, hits.c.hit_class, at, hits.c.link_id,
               hits.c.ip, hits.c.user_agent),
    )  # fmt: skip
    if session.get_bind().dialect.name == "postgresql":
        tally = _tally(hits.c, at, select())
    else:
        tally = _tally(_HITS.c, _HITS.c.at, select().where(_HITS.c.id > bindparam("after")))
    table = _RECIPIENTS.c
    bump = (
        update(_RECIPIENTS)
        .where(table.id == tally.c.rid)
        .values(
            human_opens=table.human_opens + tally.c.human,
            machine_opens=table.machine_opens + tally.c.machine,
            clicks=table.clicks + tally.c.clicks,
            first_human_open_at=func.coalesce(table.first_human_open_at, tally.c.first),
            last_activity_at=func.coalesce(tally.c.last, table.last_activity_at),
        )
    )
    return insert_hits, bump


def _tally(hits: Any, at: Any, base: Select[Any]) -> Any:
    """Per recipient in ``hits``: human and machine opens, clicks, first and last times."""
    human = hits.hit_class.in_(sorted(HUMAN_CLASSES))
    machine = hits.hit_class.in_(sorted(MACHINE_CLASSES))
    opened = hits.kind == "open"

    def count(condition: Any) -> Any:
        return func.sum(case((condition, 1), else_=0))

    return (
        base.add_columns(
            hits.recipient_id.label("rid"),
            count(and_(opened, human)).label("human"),
            count(and_(opened, machine)).label("machine"),
            count(and_(hits.kind == "click", human)).label("clicks"),
            # A person's click proves an open as much as the pixel does.
            func.min(case((human, at))).label("first"),
            func.max(case((or_(human, machine), at))).label("last"),
        )
        .group_by(hits.recipient_id)
        .subquery()
    )


async def write_hits(
    sessions: Callable[[], AsyncSession], batch: str, hits: int, key: str | None = None
) -> bool:
    """Write ``batch`` (a JSON array of ``hits`` Hit arrays) and its counters in one transaction.

    A batch is written at most once under its ``key`` (one is made up when
    none is given): a key already written (a batch sent again after its
    acknowledgement was lost) writes nothing and returns False.
    """
    async with sessions() as session, session.begin():
        if key is not None and await session.get(TrackingHitBatch, key) is not None:
            return False
        session.add(TrackingHitBatch(key=key or uuid.uuid4().hex, hits=hits))
        await session.flush()  # on SQLite, this takes the write lock
        after = await session.scalar(select(func.coalesce(func.max(_HITS.c.id), 0)))
        insert_hits, bump = _statements(session)
        await session.execute(insert_hits, {"hits": batch})
        await session.execute(bump, {"hits": batch, "after": after})
    return True


class HitQueue(Protocol):
    """What the listener needs of whatever writes its hits (``HitWriter``, ``HitPipe``)."""

    written: int

    @property
    def pending(self) -> int: ...
    def start(self) -> None: ...
    def add_nowait(self, hit: Hit) -> bool: ...
    async def add(self, hit: Hit) -> None: ...
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
        self._pending: deque[Hit] = deque()
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

    def add_nowait(self, hit: Hit) -> bool:
        """Queue one hit if there is room (the hot path); False when the queue is full."""
        if len(self._pending) >= self.max_pending:
            return False
        self._pending.append(hit)
        return True

    async def add(self, hit: Hit) -> None:
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
        await write_hits(self.store.session, json.dumps(batch, ensure_ascii=False), len(batch))
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
