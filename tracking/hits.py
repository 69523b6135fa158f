"""HitWriter: tracking hits are answered at once and written in batches, none lost.

The pixel handler must not wait for the store, so hits queue in memory and a
flusher writes them every ``flush_every_s`` with two statements whatever
their number: the hit rows with one INSERT ... SELECT from a JSON array, and
every recipient's counters with one UPDATE ... FROM the same kind of array.
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
import datetime as dt
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    String,
    Table,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from store.db import Store
from store.dialect import json_rows, json_timestamps
from store.models import SentRecipient, TrackingHit
from tracking.classes import HUMAN_CLASSES, MACHINE_CLASSES

log = logging.getLogger(__name__)
FLUSH_EVERY_S = 0.2
MAX_PENDING = 100_000


@dataclass(slots=True)
class Hit:
    recipient_id: int
    kind: str  # open | click
    hit_class: str
    at: dt.datetime
    link_id: int | None = None
    ip: str | None = None
    user_agent: str | None = None


@dataclass
class _Tally:
    human_opens: int = 0
    machine_opens: int = 0
    clicks: int = 0
    first_human: dt.datetime | None = None
    last: dt.datetime | None = None
    hits: list[Hit] = field(default_factory=list)

    def add(self, hit: Hit) -> None:
        human = hit.hit_class in HUMAN_CLASSES
        if hit.kind == "open":
            self.human_opens += human
            self.machine_opens += hit.hit_class in MACHINE_CLASSES
        elif hit.kind == "click":
            self.clicks += human
        if human:
            # A person's click proves an open as much as the pixel does.
            self.first_human = min(self.first_human or hit.at, hit.at)
        if human or hit.hit_class in MACHINE_CLASSES:
            self.last = max(self.last or hit.at, hit.at)


_RECIPIENTS: Table = SentRecipient.__table__  # type: ignore[assignment]
_HITS: Table = TrackingHit.__table__  # type: ignore[assignment]
_STAMP = DateTime(timezone=True)
HIT_COLUMNS = {"recipient_id": BigInteger(), "kind": String(), "link_id": BigInteger(),
               "hit_class": String(), "at": _STAMP, "ip": String(),
               "user_agent": String()}  # fmt: skip
BUMP_COLUMNS = {"rid": BigInteger(), "human": Integer(), "machine": Integer(), "clicks": Integer(),
                "first": _STAMP, "last": _STAMP}  # fmt: skip


def _statements(session: AsyncSession) -> tuple[Any, Any]:
    """The two statements of a flush, each with its rows in one JSON parameter."""
    hits = json_rows(session, bindparam("hits", type_=String()), HIT_COLUMNS)
    insert_hits = insert(_HITS).from_select(list(HIT_COLUMNS), select(*hits.c))
    bumps = json_rows(session, bindparam("bumps", type_=String()), BUMP_COLUMNS)
    table = _RECIPIENTS.c
    bump = (
        update(_RECIPIENTS)
        .where(table.id == bumps.c.rid)
        .values(
            human_opens=table.human_opens + bumps.c.human,
            machine_opens=table.machine_opens + bumps.c.machine,
            clicks=table.clicks + bumps.c.clicks,
            first_human_open_at=func.coalesce(table.first_human_open_at, bumps.c.first),
            last_activity_at=func.coalesce(bumps.c.last, table.last_activity_at),
        )
    )
    return insert_hits, bump


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
        tallies: dict[int, _Tally] = {}
        for hit in batch:
            tallies.setdefault(hit.recipient_id, _Tally()).add(hit)
        async with self.store.session() as session, session.begin():
            write = json_timestamps(session)

            def stamp(value: dt.datetime | None) -> str | None:
                return None if value is None else write(value)

            rows = [
                {"recipient_id": h.recipient_id, "kind": h.kind, "link_id": h.link_id,
                 "hit_class": h.hit_class, "at": write(h.at), "ip": h.ip,
                 "user_agent": (h.user_agent or "")[:500] or None}
                for h in batch
            ]  # fmt: skip
            bumps = [
                {"rid": rid, "human": t.human_opens, "machine": t.machine_opens,
                 "clicks": t.clicks, "first": stamp(t.first_human), "last": stamp(t.last)}
                for rid, t in tallies.items()
            ]  # fmt: skip
            insert_hits, bump = _statements(session)
            await session.execute(insert_hits, {"hits": json.dumps(rows, ensure_ascii=False)})
            await session.execute(bump, {"bumps": json.dumps(bumps)})
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
