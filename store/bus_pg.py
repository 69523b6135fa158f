"""The event bus across processes: PostgreSQL LISTEN/NOTIFY through asyncpg.

One dedicated connection listens on ``rapport_events``; publishing sends
``pg_notify`` on a second one.  Local subscribers get an event at once when it
is published; notifications from this bus's own node id are ignored, so
nothing arrives twice.

Delivery to other processes is at most once.  If the listening connection is
lost the bus logs it once, reconnects with exponential backoff and jitter, logs
the recovery once and delivers a local ``BusReconnected`` event: **events
published elsewhere during the gap are lost**, and consumers that care
(screen-pops, websockets) resync from the store when they see it.  Likewise an
event that cannot be sent (PostgreSQL down) reaches this process only; the bus
logs the outage once and its end once, and publishing never raises for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Coroutine
from types import MappingProxyType
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from store.bus import BUS_RECONNECTED, Event, EventBus
from store.errors import AuthError, ConfigError, TransientError

log = logging.getLogger(__name__)

CHANNEL = "rapport_events"
RECONNECT_BASE_S = 0.25
RECONNECT_CAP_S = 30.0
CONNECT_TIMEOUT_S = 5.0
SEND_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 2.0
# A half-open TCP link never reports itself lost; a periodic query finds it.
PING_EVERY_S = 30.0
PING_TIMEOUT_S = 5.0
# Ids of our own recent events, to tell our echo from another bus misusing our node id.
OWN_IDS_KEPT = 1024
# Query keys of a SQLAlchemy URL that configure the dialect; asyncpg would send
# them to the server as settings and fail.
SQLALCHEMY_ONLY_QUERY = ("prepared_statement_cache_size", "prepared_statement_name_func")

# A connection the server terminated while idle can fail its next query with
# InternalClientError instead of a connection error (MagicStack/asyncpg#1069).
_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


def asyncpg_dsn(url: str) -> str:
    """An asyncpg DSN for a SQLAlchemy PostgreSQL URL (``postgresql+asyncpg://...``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(f"not a PostgreSQL URL: {parsed.render_as_string()}")
    parsed = parsed.difference_update_query(SQLALCHEMY_ONLY_QUERY)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def backoff_s(attempt: int, base_s: float, cap_s: float) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap_s, base_s * 2 ** min(attempt, 32)))  # noqa: S311 (jitter)


async def connect(dsn: str, role: str, node_id: str) -> Any:
    """An asyncpg connection, named in ``pg_stat_activity``; errors say what happens next."""
    try:
        return await asyncpg.connect(
            dsn,
            timeout=CONNECT_TIMEOUT_S,
            server_settings={"application_name": f"rapport-bus {role} {node_id}"[:63]},
        )
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as err:
        raise AuthError(f"PostgreSQL refused the event bus: {type(err).__name__}") from err
    except asyncpg.InvalidCatalogNameError as err:
        raise ConfigError(f"the event bus's database does not exist: {err}") from err
    except _CONNECTION_ERRORS as err:
        raise TransientError(f"event bus cannot reach PostgreSQL: {type(err).__name__}") from err


class PgBus(EventBus):
    """An ``EventBus`` that also reaches every other process on the same database.

    Use as ``async with PgBus(url) as bus``; leaving closes both connections,
    stops the background watcher and ends every subscription.
    """

    def __init__(
        self,
        url: str,
        node_id: str | None = None,
        *,
        reconnect_base_s: float = RECONNECT_BASE_S,
        reconnect_cap_s: float = RECONNECT_CAP_S,
        ping_every_s: float = PING_EVERY_S,
    ) -> None:
        super().__init__(node_id)
        self._dsn = asyncpg_dsn(url)
        self._reconnect_base_s = reconnect_base_s
        self._reconnect_cap_s = reconnect_cap_s
        self._ping_every_s = ping_every_s
        self._listen_conn: Any = None
        self._send_conn: Any = None
        self._send_lock = asyncio.Lock()
        self._lost = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._own_ids: dict[str, None] = {}
        self._warned_impostor = False
        self._warned_malformed = False
        self._send_failures = 0
        self._send_retry_at = 0.0
        self.reconnects = 0
        self.unsent = 0

    async def __aenter__(self) -> PgBus:
        await self._listen()
        self._spawn(self._watch(), f"pgbus-watch-{self.node_id}")
        return self

    async def aclose(self) -> None:
        self._closed = True  # refuse new publishes, let one in flight finish its NOTIFY
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S), self._send_lock:
                pass
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        conns, self._listen_conn, self._send_conn = (self._listen_conn, self._send_conn), None, None
        for conn in conns:
            if conn is not None and not conn.is_closed():
                try:
                    await conn.close(timeout=CLOSE_TIMEOUT_S)
                except _CONNECTION_ERRORS:
                    conn.terminate()
        await super().aclose()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("event bus task %s died", task.get_name(), exc_info=task.exception())

    async def _listen(self) -> None:
        """Open the listening connection; the watcher is told when it is lost."""
        self._lost.clear()
        conn = await connect(self._dsn, "listen", self.node_id)
        self._listen_conn = conn
        try:
            conn.add_termination_listener(self._on_terminated)
            await conn.add_listener(CHANNEL, self._on_notify)
        except BaseException as err:
            self._listen_conn = None
            conn.terminate()
            if isinstance(err, _CONNECTION_ERRORS):
                raise TransientError(f"event bus cannot LISTEN: {type(err).__name__}") from err
            raise

    def _on_terminated(self, conn: Any) -> None:
        if conn is self._listen_conn and not self._closed:
            self._lost.set()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            event = Event.from_json(payload)
        except ValueError:
            if not self._warned_malformed:
                self._warned_malformed = True
                log.warning("ignored a malformed notification on %s", CHANNEL)
            return
        if event.origin != self.node_id:
            self._deliver(event)
        elif event.id not in self._own_ids and not self._warned_impostor:
            self._warned_impostor = True
            log.warning(
                "another process publishes as node %s: its events are ignored here;"
                " give every node its own id", self.node_id,
            )  # fmt: skip

    async def _watch(self) -> None:
        """Wait for the listening connection to be lost (or found dead), then reconnect."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._ping_every_s):
                    await self._lost.wait()
            if self._lost.is_set() or not await self._alive():
                await self._reconnect()

    async def _alive(self) -> bool:
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                await self._listen_conn.fetchval("SELECT 1")
        except _CONNECTION_ERRORS:
            return False
        return True

    async def _reconnect(self) -> None:
        log.warning(
            "event bus lost its PostgreSQL link; reconnecting"
            " (events other nodes publish meanwhile are lost)"
        )
        lost_at = time.monotonic()
        old, self._listen_conn = self._listen_conn, None
        if old is not None:
            old.terminate()
        attempt = 0
        while True:
            await asyncio.sleep(backoff_s(attempt, self._reconnect_base_s, self._reconnect_cap_s))
            attempt += 1
            try:
                await self._listen()
            except (TransientError, AuthError, ConfigError) as err:
                log.debug("event bus reconnect attempt %d failed: %s", attempt, err)
                continue
            break
        self.reconnects += 1
        gap_s = time.monotonic() - lost_at
        log.info("event bus reconnected to PostgreSQL after %.1f s (%d attempts)", gap_s, attempt)
        data = MappingProxyType({"gap_s": round(gap_s, 3)})
        self._deliver(Event(BUS_RECONNECTED, data, origin=self.node_id))

    async def _send_remote(self, event: Event, payload: str) -> None:
        self._own_ids[event.id] = None
        if len(self._own_ids) > OWN_IDS_KEPT:
            del self._own_ids[next(iter(self._own_ids))]
        async with self._send_lock:
            if self._send_failures and time.monotonic() < self._send_retry_at:
                self.unsent += 1  # PostgreSQL is down: do not stall every publisher on it
                return
            failure = await self._notify(payload)
            if failure is None:
                if self._send_failures:
                    log.info("event bus can announce events to other nodes again")
                    self._send_failures = 0
                return
            self.unsent += 1
            if not self._send_failures:
                log.warning(
                    "event bus cannot announce events to other nodes (%s): they reach"
                    " this process only until PostgreSQL is back", failure,
                )  # fmt: skip
            self._send_failures += 1
            self._send_retry_at = time.monotonic() + backoff_s(
                self._send_failures, self._reconnect_base_s, self._reconnect_cap_s
            )

    async def _notify(self, payload: str) -> Exception | None:
        """Send one NOTIFY (caller holds the lock); the error if it could not be sent."""
        failure: Exception | None = None
        # Two tries: the first may find a connection the server dropped while idle.
        for _ in range(2):
            try:
                if self._send_conn is None or self._send_conn.is_closed():
                    self._send_conn = await connect(self._dsn, "send", self.node_id)
                await self._send_conn.execute(
                    "SELECT pg_notify($1, $2)", CHANNEL, payload, timeout=SEND_TIMEOUT_S
                )
            except (*_CONNECTION_ERRORS, TransientError, AuthError, ConfigError) as err:
                failure = err
                if self._send_conn is not None:
                    self._send_conn.terminate()
                    self._send_conn = None
                continue
            return None
        return failure
