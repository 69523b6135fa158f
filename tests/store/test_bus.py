"""The event bus: in-process on SQLite, across processes over PostgreSQL LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg
import pytest

from store.bus import BUS_RECONNECTED, Event, EventBus, Subscription, open_bus
from store.bus_pg import asyncpg_dsn

WAIT_S = 5.0


async def _next(sub: Subscription) -> Event:
    return await asyncio.wait_for(sub.get(), WAIT_S)


async def test_in_process_publish_and_filter() -> None:
    bus = EventBus()
    async with bus.subscribe("LeadCreated") as leads, bus.subscribe() as everything:
        await bus.publish("CallRinging", call_id=1)
        sent = await bus.publish("LeadCreated", lead_id=7, name="张伟")
        got = await _next(leads)
        assert got == sent and got.data == {"lead_id": 7, "name": "张伟"}
        assert [(await _next(everything)).type for _ in range(2)] == ["CallRinging", "LeadCreated"]
    assert Event.from_json(sent.to_json()) == sent


async def test_slow_subscriber_loses_oldest_never_blocks() -> None:
    bus = EventBus()
    async with bus.subscribe(maxsize=3) as sub:
        for n in range(10):
            await bus.publish("Tick", n=n)
        assert sub.dropped == 7
        assert [(await _next(sub)).data["n"] for _ in range(3)] == [7, 8, 9]


async def test_sqlite_url_gives_the_in_process_bus(tmp_path: Path) -> None:
    async with open_bus(f"sqlite+aiosqlite:///{tmp_path}/x.db") as bus:
        assert type(bus) is EventBus


async def test_two_buses_on_postgres_see_each_other_once(pg_url: str) -> None:
    async with open_bus(pg_url) as a, open_bus(pg_url) as b:
        async with a.subscribe("Ping") as at_a, b.subscribe("Ping") as at_b:
            sent = await a.publish("Ping", n=1)
            assert await _next(at_a) == sent  # local delivery, at once
            assert await _next(at_b) == sent  # via NOTIFY
            await asyncio.sleep(0.3)
            # Own notifications are ignored: nothing arrives twice.
            assert at_a._queue.empty() and at_b._queue.empty()


async def test_payloads_too_large_for_notify_are_refused(pg_url: str) -> None:
    async with open_bus(pg_url) as bus:
        with pytest.raises(ValueError, match="too large"):
            await bus.publish("Huge", body="x" * 9000)


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from store.bus import open_bus

    async def main(url, mode):
        async with open_bus(url) as bus:
            if mode == "publish":
                await bus.publish("FromChild", text="你好")
            else:
                async with bus.subscribe("FromParent") as sub:
                    print("READY", flush=True)
                    event = await asyncio.wait_for(sub.get(), 10)
                    print("GOT", event.data["n"], event.origin, flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_events_cross_processes(pg_url: str) -> None:
    root = str(Path(__file__).resolve().parents[2])
    async with open_bus(pg_url, node_id="parent") as bus, bus.subscribe("FromChild") as sub:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, pg_url, "publish", cwd=root
        )
        assert await asyncio.wait_for(child.wait(), 20) == 0
        got = await _next(sub)
        assert got.data == {"text": "你好"} and got.origin != "parent"

        listener = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, pg_url, "listen", cwd=root, stdout=subprocess.PIPE
        )
        assert listener.stdout is not None
        assert (await asyncio.wait_for(listener.stdout.readline(), 20)).strip() == b"READY"
        await bus.publish("FromParent", n=42)
        out, _ = await asyncio.wait_for(listener.communicate(), 20)
        assert out.split() == [b"GOT", b"42", b"parent"]


async def test_lost_listen_connection_reconnects(pg_url: str) -> None:
    async with open_bus(pg_url, node_id="a") as a, open_bus(pg_url, node_id="b") as b:
        async with a.subscribe() as at_a:
            listen_pid = a._listen_conn.get_server_pid()  # type: ignore[attr-defined]
            admin = await asyncpg.connect(asyncpg_dsn(pg_url))
            try:
                await admin.execute("SELECT pg_terminate_backend($1)", listen_pid)
            finally:
                await admin.close()
            assert (await _next(at_a)).type == BUS_RECONNECTED
            await b.publish("AfterGap", n=1)
            assert (await _next(at_a)).data == {"n": 1}
