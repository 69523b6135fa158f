"""Hits through the writer process: written once each, across a killed writer and a stop."""

from __future__ import annotations

import os
import signal

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from store.base import utcnow
from store.db import Store
from store.models import Direction, Email, SentRecipient, TrackingHit
from tracking.hit_pipe import HitPipe
from tracking.hits import Hit, now_us, write_hits
from tracking.listener import create_app
from tracking.sent import record_sent
from tracking.tokens import TokenSigner

KEY = b"the-current-signing-key-0123"
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"


async def a_recipient(store: Store) -> int:
    async with store.session() as session, session.begin():
        email = Email(direction=Direction.OUTBOUND, subject="报价", sent_at=utcnow())
        session.add(email)
        await session.flush()
        ids = await record_sent(session, email.id, [("to", "wang.fang@jinlong.cn")])
    return ids["wang.fang@jinlong.cn"]


async def stored(store: Store) -> tuple[int, int]:
    async with store.session() as session:
        hits = await session.scalar(select(func.count()).select_from(TrackingHit))
        opens = await session.scalar(select(func.sum(SentRecipient.human_opens)))
    return int(hits or 0), int(opens or 0)


async def test_hits_cross_the_pipe_and_all_are_written_on_stop(store: Store) -> None:
    rid = await a_recipient(store)
    pipe = HitPipe(store, flush_every_s=60)  # nothing leaves by itself for a minute
    app = create_app(store, TokenSigner([KEY]), pipe)
    token = TokenSigner([KEY]).sign(rid)
    began = utcnow()
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        for _ in range(300):
            answer = await client.get(f"/o/{token}.gif", headers={"User-Agent": BROWSER})
            assert answer.status == 200
        assert pipe.pending == 300 and pipe.writer_pid is not None
    assert await stored(store) == (300, 300)
    assert pipe.written == 300 and pipe.pending == 0
    async with store.session() as session:
        earliest, latest = (
            await session.execute(select(func.min(TrackingHit.at), func.max(TrackingHit.at)))
        ).one()
        recipient = await session.get(SentRecipient, rid)
    # The writer computes times and counters in SQL: the same instants on both engines.
    assert began <= earliest <= latest <= utcnow()
    assert recipient is not None
    assert recipient.first_human_open_at == earliest and recipient.last_activity_at == latest


async def test_a_killed_writer_is_replaced_and_nothing_is_lost_or_doubled(store: Store) -> None:
    rid = await a_recipient(store)
    pipe = HitPipe(store, flush_every_s=0.02, restart_delay_s=0.05)
    pipe.start()
    try:
        for _ in range(100):
            assert pipe.add_nowait(tuple(Hit(rid, "open", "human", now_us())))
        await pipe.flush()
        assert await stored(store) == (100, 100)
        first = pipe.writer_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        for _ in range(150):
            await pipe.add(tuple(Hit(rid, "open", "human", now_us())))
        await pipe.flush()
        assert pipe.writer_starts == 2 and pipe.writer_pid != first
    finally:
        await pipe.stop()
    assert await stored(store) == (250, 250)


async def test_a_batch_sent_again_under_its_key_counts_once(store: Store) -> None:
    rid = await a_recipient(store)
    batch = [Hit(rid, "open", "human", now_us()), Hit(rid, "click", "human", now_us())]
    assert await write_hits(store.session, batch, "k1") is True
    assert await write_hits(store.session, batch, "k1") is False  # its ack was lost
    async with store.session() as session:
        recipient = await session.get(SentRecipient, rid)
    assert recipient is not None and (recipient.human_opens, recipient.clicks) == (1, 1)
    assert await stored(store) == (2, 1)
