"""The event bus: in-process on SQLite, across processes over PostgreSQL LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from store.bus import (
    BUS_RECONNECTED,
    BusClosed,
    Event,
    EventBus,
    InProcessBus,
    Subscription,
    open_bus,
)
from store.bus_pg import PgBus, asyncpg_dsn
from store.errors import TransientError

WAIT_S = 5.0
ROOT = Path(__file__).resolve().parents[2]


async def next_event(sub: Subscription) -> Event:
    return await asyncio.wait_for(sub.get(), WAIT_S)


async def events_until(sub: Subscription, last_type: str, origin: str) -> list[Event]:
    """Every event up to and including the first of ``last_type`` from ``origin``."""
    seen = [await next_event(sub)]
    while (seen[-1].type, seen[-1].origin) != (last_type, origin):
        seen.append(await next_event(sub))
    return seen


# In-process -------------------------------------------------------------------------


async def test_in_process_publish_and_filter() -> None:
    async with InProcessBus("node-1") as bus:
        async with bus.subscribe("LeadCreated") as leads, bus.subscribe() as everything:
            await bus.publish("CallRinging", call_id=1)
            sent = await bus.publish("LeadCreated", lead_id=7, name="张伟")
            got = await next_event(leads)
            assert got == sent and got.data == {"lead_id": 7, "name": "张伟"}
            assert got.origin == "node-1" and len(got.id) == 32
            assert leads.pending() == 0
            assert [(await next_event(everything)).type for _ in range(2)] == [
                "CallRinging",
                "LeadCreated",
            ]
        assert not bus._subscriptions  # leaving the block unsubscribed both


async def test_event_json_round_trip_and_rejects() -> None:
    event = Event("DialRequested", {"number": "+8613800138000", "ids": [1, 2]}, origin="n")
    back = Event.from_json(event.to_json())
    assert back == event and hash(back) == hash(event)
    for bad in ("[]", '{"type": "X"}', '{"type":1,"data":{},"id":"i","origin":"o","at":1}'):
        with pytest.raises(ValueError):
            Event.from_json(bad)


async def test_data_must_be_small_json_and_nothing_is_delivered_otherwise() -> None:
    async with InProcessBus() as bus, bus.subscribe() as sub:
        with pytest.raises(TypeError):
            await bus.publish("Bad", when=object())
        with pytest.raises(ValueError, match="never bodies"):
            await bus.publish("Huge", body="邮" * 3000)  # 9000 bytes in UTF-8
        # The event delivered locally is what a remote node would decode.
        sent = await bus.publish("Tuple", ids=(1, 2))
        assert sent.data == {"ids": [1, 2]}
        assert (await next_event(sub)).type == "Tuple" and sub.pending() == 0


async def test_slow_subscriber_loses_oldest_never_blocks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="store.bus")
    async with InProcessBus() as bus, bus.subscribe("Tick", maxsize=3) as sub:
        for n in range(10):
            await bus.publish("Tick", n=n)
        assert sub.dropped == 7
        assert [(await next_event(sub)).data["n"] for _ in range(3)] == [7, 8, 9]
        # A second episode after catching up warns again, once.
        for n in range(5):
            await bus.publish("Tick", n=n)
        assert sub.dropped == 9
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "too slow" in warnings[0].getMessage()
    assert any("caught up after dropping 7" in r.getMessage() for r in caplog.records)


async def test_a_lossy_subscriber_drains_in_batches_and_drops_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="store.bus")
    async with InProcessBus() as bus, bus.subscribe("Tick", maxsize=3, lossy=True) as sub:
        for n in range(5):
            await bus.publish("Tick", n=n)
        assert [e.data["n"] for e in sub.drain()] == [2, 3, 4]
        assert sub.dropped == 2 and sub.pending() == 0 and sub.drain() == []
    assert not [r for r in caplog.records if r.name == "store.bus"]


async def test_closing_the_bus_ends_iteration() -> None:
    bus = InProcessBus()
    async with bus:
        sub = bus.subscribe()
        await bus.publish("Last", n=1)

        async def read_all() -> list[str]:
            return [event.type async for event in sub]

        reader = asyncio.create_task(read_all(), name="reader")
        await asyncio.sleep(0)
    assert await asyncio.wait_for(reader, WAIT_S) == ["Last"]
    with pytest.raises(BusClosed):
        await sub.get()
    with pytest.raises(BusClosed):
        await bus.publish("TooLate")


async def test_sqlite_url_gives_the_in_process_bus(tmp_path: Path) -> None:
    async with open_bus(f"sqlite+aiosqlite:///{tmp_path}/x.db", node_id="n") as bus:
        assert type(bus) is InProcessBus and bus.node_id == "n"


def test_asyncpg_dsn_from_a_sqlalchemy_url() -> None:
    url = "postgresql+asyncpg://r%40t:p%2Fw@db:5433/crm?prepared_statement_cache_size=0"
    assert asyncpg_dsn(url) == "postgresql://r%40t:p%2Fw@db:5433/crm"


async def test_unreachable_postgres_is_transient() -> None:
    with pytest.raises(TransientError):
        async with open_bus("postgresql+asyncpg://root@127.0.0.1:1/test"):
            pass


# PostgreSQL -------------------------------------------------------------------------


@pytest.fixture
async def two_buses(pg_url: str) -> AsyncIterator[tuple[EventBus, EventBus]]:
    async with open_bus(pg_url, node_id="a") as a, open_bus(pg_url, node_id="b") as b:
        assert isinstance(a, PgBus) and isinstance(b, PgBus)
        yield a, b


async def test_two_buses_see_each_other_exactly_once(
    two_buses: tuple[EventBus, EventBus], pg_url: str
) -> None:
    a, b = two_buses
    async with a.subscribe() as at_a, b.subscribe() as at_b:
        from_a = await a.publish("Ping", n=1)
        assert at_a.pending() == 1  # delivered locally at once, before any NOTIFY
        from_b = await b.publish("Ping", n=2)
        # NOTIFY reaches every listener in commit order: once a third bus's "Done",
        # sent last, has arrived, any echo of a bus's own event would be queued too.
        async with open_bus(pg_url, node_id="c") as c:
            await c.publish("Done")
        for sub, mine, theirs in ((at_a, from_a, from_b), (at_b, from_b, from_a)):
            got = await events_until(sub, "Done", "c")
            # Each event exactly once (the own one never echoed back); the other bus's
            # NOTIFY may arrive before this bus published, so no order between the two.
            assert len(got) == 3 and {e.id for e in got[:2]} == {mine.id, theirs.id}
            assert mine in got and theirs in got and sub.pending() == 0


async def test_payloads_too_large_for_notify_are_refused(
    two_buses: tuple[EventBus, EventBus],
) -> None:
    a, b = two_buses
    async with a.subscribe() as at_a, b.subscribe() as at_b:
        with pytest.raises(ValueError, match="over the bus limit"):
            await a.publish("Huge", body="x" * 9000)
        await a.publish("Small")
        assert (await next_event(at_a)).type == "Small"
        assert (await next_event(at_b)).type == "Small"


CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from store.bus import open_bus

    async def main(url, mode):
        async with open_bus(url, node_id="child") as bus:
            if mode == "publish":
                await bus.publish("FromChild", text="你好")
                return
            async with bus.subscribe("FromParent") as sub:
                print("READY", flush=True)
                event = await asyncio.wait_for(sub.get(), 10)
                print(event.to_json(), flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_events_cross_processes(pg_url: str) -> None:
    async with open_bus(pg_url, node_id="parent") as bus, bus.subscribe("FromChild") as sub:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, pg_url, "publish", cwd=ROOT
        )
        assert await asyncio.wait_for(child.wait(), 20) == 0
        got = await next_event(sub)
        assert got.data == {"text": "你好"} and got.origin == "child"

        listener = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, pg_url, "listen", cwd=ROOT, stdout=subprocess.PIPE
        )
        try:
            assert listener.stdout is not None
            assert (await asyncio.wait_for(listener.stdout.readline(), 20)).strip() == b"READY"
            sent = await bus.publish("FromParent", n=42)
            out, _ = await asyncio.wait_for(listener.communicate(), 20)
        finally:
            if listener.returncode is None:
                listener.kill()
                await listener.wait()
        assert listener.returncode == 0
        assert Event.from_json(out.decode()) == sent
        assert json.loads(out)["origin"] == "parent"


async def _terminate(pg_url: str, application_name: str) -> None:
    admin = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1 AND datname = current_database()",
            application_name,
        )
    finally:
        await admin.close()
    assert killed == 1


async def test_lost_listen_connection_reconnects(
    two_buses: tuple[EventBus, EventBus], pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="store.bus_pg")
    a, b = two_buses
    async with a.subscribe() as at_a:
        await _terminate(pg_url, "rapport-bus listen a")
        reconnected = await next_event(at_a)
        assert reconnected.type == BUS_RECONNECTED and reconnected.origin == "a"
        await b.publish("AfterGap", n=1)
        assert (await next_event(at_a)).data == {"n": 1}
    assert isinstance(a, PgBus) and a.reconnects == 1
    levels = [r.levelno for r in caplog.records if r.name == "store.bus_pg"]
    assert levels == [logging.WARNING, logging.INFO]


async def test_lost_send_connection_is_replaced(
    two_buses: tuple[EventBus, EventBus], pg_url: str
) -> None:
    a, b = two_buses
    async with b.subscribe("Ping") as at_b:
        await a.publish("Ping", n=1)
        assert (await next_event(at_b)).data == {"n": 1}
        await _terminate(pg_url, "rapport-bus send a")
        await a.publish("Ping", n=2)
        assert (await next_event(at_b)).data == {"n": 2}
    assert isinstance(a, PgBus) and a.unsent == 0


async def test_publishing_during_an_outage_reaches_this_process_only(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="store.bus_pg")
    async with PgBus(pg_url, node_id="a", reconnect_cap_s=0.01) as bus, bus.subscribe() as sub:
        await bus.publish("Before")
        # The server "goes away" for sends: its connection dies and no new one can be made.
        good_dsn, bus._dsn = bus._dsn, asyncpg_dsn("postgresql://root@127.0.0.1:1/test")
        await _terminate(pg_url, "rapport-bus send a")
        for n in range(3):
            assert (await bus.publish("During", n=n)).data == {"n": n}  # never raises
        assert bus.unsent == 3
        bus._dsn = good_dsn
        await asyncio.sleep(0.02)  # past the send backoff
        await bus.publish("After")
        assert [(await next_event(sub)).type for _ in range(5)] == ["Before"] + ["During"] * 3 + [
            "After"
        ]
    assert [(r.levelno, r.getMessage()[:40]) for r in caplog.records] == [
        (logging.WARNING, "event bus cannot announce events to othe"),
        (logging.INFO, "event bus can announce events to other n"),
    ]


async def test_a_healthy_link_survives_its_pings(pg_url: str) -> None:
    async with (
        PgBus(pg_url, node_id="a", ping_every_s=0.02) as a,
        PgBus(pg_url, node_id="b") as b,
        a.subscribe() as at_a,
    ):
        await asyncio.sleep(0.15)
        await b.publish("StillHere")
        assert (await next_event(at_a)).type == "StillHere"
        assert a.reconnects == 0
