"""The event bus across processes: PostgreSQL LISTEN/NOTIFY through asyncpg.

One dedicated connection listens on ``rapport_events``; publishing sends
``pg_notify`` on a second one.  Local subscribers get an event at once when it
is published; notifications from this node are ignored, so nothing arrives
twice.  If the listening connection is lost the bus logs it once, reconnects
with backoff and jitter, logs the recovery once and delivers a local
``BusReconnected`` event: events published elsewhere during the gap are lost,
and consumers that care (screen-pops) resync from the store.
"""

from __future__ import annotations

import asyncio
import logging
import random
from types import TracebackType
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from store.bus import BUS_RECONNECTED, Event, EventBus
from store.errors import TransientError

log = logging.getLogger(__name__)

CHANNEL = "rapport_events"
# PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
MAX_PAYLOAD_BYTES = 7900
RECONNECT_BASE_S = 0.2
RECONNECT_CAP_S = 30.0
CONNECT_TIMEOUT_S = 10.0


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgBus(EventBus):
    """An ``EventBus`` that also reaches every other process on the same database."""

    def __init__(self, url: str, node_id: str | None = None) -> None:
        super().__init__(node_id)
        self._dsn = asyncpg_dsn(url)
        self._listen_conn: asyncpg.Connection | None = None
        self._send_conn: asyncpg.Connection | None = None
        self._send_lock = asyncio.Lock()
        self._lost = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PgBus:
        await self._listen()
        self._watcher = asyncio.create_task(
            self._keep_listening(), name=f"pgbus-listen-{self.node_id}"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        for conn in (self._listen_conn, self._send_conn):
            if conn is not None and not conn.is_closed():
                await conn.close(timeout=2)

    async def _listen(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT_S)
        conn.add_termination_listener(lambda _c: self._lost.set())
        await conn.add_listener(CHANNEL, self._on_notify)
        self._listen_conn = conn
        self._lost.clear()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            event = Event.from_json(payload)
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed event notification")
            return
        if event.origin != self.node_id:
            self.deliver_local(event)

    async def _keep_listening(self) -> None:
        while True:
            await self._lost.wait()
            log.warning("event bus lost its PostgreSQL connection; reconnecting")
            attempt = 0
            while True:
                delay = random.uniform(0, min(RECONNECT_CAP_S, RECONNECT_BASE_S * 2**attempt))  # noqa: S311
                await asyncio.sleep(delay)
                try:
                    await self._listen()
                except (OSError, asyncpg.PostgresError, TimeoutError) as err:
                    attempt += 1
                    log.debug("event bus reconnect failed: %s", err)
                    continue
                break
            log.info("event bus reconnected to PostgreSQL")
            self.deliver_local(Event(type=BUS_RECONNECTED, data={}, origin=self.node_id))

    async def _send_remote(self, event: Event) -> None:
        payload = event.to_json()
        if len(payload.encode()) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"event {event.type} is too large for NOTIFY: send ids, not bodies")
        async with self._send_lock:
            try:
                if self._send_conn is None or self._send_conn.is_closed():
                    self._send_conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT_S)
                await self._send_conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
            except (OSError, asyncpg.PostgresError, TimeoutError) as err:
                self._send_conn = None
                raise TransientError(f"event {event.type} not sent to other nodes: {err}") from err
