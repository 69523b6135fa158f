"""The store's event bus: durable facts are written first, then announced here.

Events carry ids and small facts (a JSON object), never bodies.  On SQLite the
bus is in-process; on PostgreSQL it also crosses processes through
LISTEN/NOTIFY (``store.bus_pg``), so the node holding an agent's websocket need
not be the node holding the PBX link.  Each subscriber has a bounded queue: a
slow consumer loses its oldest events (and is told how many), it never blocks
the publisher or grows without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE_SIZE = 1000
# Published when a cross-process bus lost its link: events in the gap are gone, resync.
BUS_RECONNECTED = "BusReconnected"


@dataclass(frozen=True)
class Event:
    type: str
    data: Mapping[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    origin: str = ""
    at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(
            {
                "type": self.type,
                "data": dict(self.data),
                "id": self.id,
                "origin": self.origin,
                "at": self.at,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Event:
        raw = json.loads(text)
        return cls(
            type=raw["type"], data=raw["data"], id=raw["id"], origin=raw["origin"], at=raw["at"]
        )


class Subscription:
    """Events of the chosen types, in order, from a bounded queue (oldest dropped first)."""

    def __init__(self, bus: EventBus, types: frozenset[str], maxsize: int) -> None:
        self._bus = bus
        self.types = types
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.dropped = 0
        self._overflowing = False

    def wants(self, event: Event) -> bool:
        return not self.types or event.type in self.types

    def offer(self, event: Event) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            if not self._overflowing:
                self._overflowing = True
                log.warning(
                    "event subscriber too slow for %s: dropping the oldest events",
                    sorted(self.types) or "all",
                )
        else:
            self._overflowing = False
        self._queue.put_nowait(event)

    async def get(self) -> Event:
        return await self._queue.get()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self._queue.get()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bus.unsubscribe(self)


class EventBus:
    """Publish events and subscribe to them within this process."""

    def __init__(self, node_id: str | None = None) -> None:
        self.node_id = node_id or uuid.uuid4().hex[:12]
        self._subscriptions: set[Subscription] = set()

    def subscribe(self, *types: str, maxsize: int = SUBSCRIBER_QUEUE_SIZE) -> Subscription:
        sub = Subscription(self, frozenset(types), maxsize)
        self._subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)

    def deliver_local(self, event: Event) -> None:
        for sub in list(self._subscriptions):
            if sub.wants(event):
                sub.offer(event)

    async def publish(self, type: str, **data: Any) -> Event:
        event = Event(type=type, data=data, origin=self.node_id)
        self.deliver_local(event)
        await self._send_remote(event)
        return event

    async def _send_remote(self, event: Event) -> None:
        """Carry the event to other processes; the in-process bus has none."""


InProcessBus = EventBus


@contextlib.asynccontextmanager
async def open_bus(url: str, node_id: str | None = None) -> AsyncIterator[EventBus]:
    """The bus for a store URL: LISTEN/NOTIFY on PostgreSQL, in-process otherwise."""
    if make_url(url).get_backend_name() == "postgresql":
        from store.bus_pg import PgBus

        async with PgBus(url, node_id) as bus:
            yield bus
    else:
        yield EventBus(node_id)
