"""The store's event bus: durable facts are written first, then announced here.

Events carry ids and small facts (a JSON object), never bodies.  On SQLite the
bus is in-process (``InProcessBus``); on PostgreSQL it also crosses processes
through LISTEN/NOTIFY (``store.bus_pg.PgBus``), so the node holding an agent's
websocket need not be the node holding the PBX link.

Events are notifications, not the record: delivery is at most once, and a
consumer that must not miss anything resyncs from the store when it starts and
whenever it sees ``BusReconnected`` (subscribe to ``BUS_RECONNECTED`` next to
the types you want: it is filtered like any other event).  Each subscriber has a bounded queue: a
slow consumer loses its oldest events (counted in ``Subscription.dropped``);
it never blocks the publisher or grows without bound.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Self

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE_SIZE = 1000
# PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; every bus enforces the
# same limit so an event that works on SQLite cannot fail on PostgreSQL.
MAX_PAYLOAD_BYTES = 7900
# Delivered locally when a cross-process bus regained its link: events in the gap are gone.
BUS_RECONNECTED = "BusReconnected"


def _new_id() -> str:
    return uuid.uuid4().hex


def default_node_id() -> str:
    """A node id unique to one bus: host and pid for the logs, a random tail for uniqueness."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Event:
    """One announcement: its type, small JSON facts, a unique id, who sent it and when."""

    type: str
    data: Mapping[str, Any]
    id: str = field(default_factory=_new_id)
    origin: str = ""
    at: float = field(default_factory=time.time)

    def __hash__(self) -> int:
        # ``data`` is a mapping and not hashable; the id alone identifies an event.
        return hash(self.id)

    def to_json(self) -> str:
        """The event as compact JSON; ``ValueError``/``TypeError`` if ``data`` is not JSON."""
        return json.dumps(
            {"type": self.type, "data": dict(self.data), "id": self.id,
             "origin": self.origin, "at": self.at},
            ensure_ascii=False, allow_nan=False, separators=(",", ":"),
        )  # fmt: skip

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        """Parse ``to_json`` output; ``ValueError`` if it is not a well-formed event."""
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("an event must be a JSON object")
        try:
            type_, data, id_, origin, at = (
                raw["type"], raw["data"], raw["id"], raw["origin"], raw["at"]
            )  # fmt: skip
        except KeyError as err:
            raise ValueError(f"event field missing: {err}") from None
        if not (isinstance(type_, str) and isinstance(data, dict) and isinstance(id_, str)
                and isinstance(origin, str) and isinstance(at, int | float)):  # fmt: skip
            raise ValueError("event fields have the wrong types")
        return cls(type_, MappingProxyType(data), id_, origin, float(at))


class BusClosed(Exception):
    """The bus this subscription belongs to was closed; no more events will come."""


class Subscription:
    """Events of the chosen types, in order, from a bounded queue (oldest dropped first).

    Use as ``async with bus.subscribe("CallRinging") as calls: async for event in calls``.
    The subscription is registered as soon as ``subscribe`` returns, so nothing
    published after that is missed; leaving the ``async with`` unregisters it.
    """

    def __init__(
        self, bus: EventBus, types: frozenset[str], maxsize: int, name: str, lossy: bool = False
    ) -> None:
        if maxsize < 1:
            raise ValueError("a subscription needs room for at least one event")
        self._bus = bus
        self.types = types
        self.name = name
        self.maxsize = maxsize
        self.lossy = lossy
        self.dropped = 0
        self._queue: deque[Event] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._dropped_this_episode = 0

    def wants(self, event: Event) -> bool:
        return not self.types or event.type in self.types

    def pending(self) -> int:
        """How many events wait to be read."""
        return len(self._queue)

    def offer(self, event: Event) -> None:
        """Queue ``event`` without waiting; if full, drop the oldest to make room."""
        if self._closed:
            return
        if len(self._queue) >= self.maxsize:
            self._queue.popleft()
            self.dropped += 1
            self._dropped_this_episode += 1
            if self._dropped_this_episode == 1 and not self.lossy:
                log.warning(
                    "event subscriber %s is too slow (%d queued): dropping the oldest events",
                    self.name, self.maxsize,
                )  # fmt: skip
        self._queue.append(event)
        self._ready.set()

    async def get(self) -> Event:
        """The next event, waiting for one; ``BusClosed`` once closed and drained."""
        while not self._queue:
            if self._closed:
                raise BusClosed(f"subscription {self.name} is closed")
            self._ready.clear()
            await self._ready.wait()
        event = self._queue.popleft()
        if not self._queue:
            self._caught_up()
        return event

    def _caught_up(self) -> None:
        """The queue is empty: an overflow episode is over, and a new one warns again."""
        if self._dropped_this_episode and not self.lossy:
            log.info(
                "event subscriber %s caught up after dropping %d event(s)",
                self.name, self._dropped_this_episode,
            )  # fmt: skip
        self._dropped_this_episode = 0

    def drain(self) -> list[Event]:
        """Every event queued now, without waiting (for consumers that work in batches)."""
        events = list(self._queue)
        self._queue.clear()
        self._caught_up()
        return events

    def close(self) -> None:
        """Stop receiving; queued events can still be read, then iteration ends."""
        self._closed = True
        self._bus._unsubscribe(self)
        self._ready.set()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.get()
        except BusClosed:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventBus(abc.ABC):
    """Publish events and subscribe to them; subclasses decide how far events travel.

    All methods must be called from the event loop the bus was opened in.
    """

    def __init__(self, node_id: str | None = None) -> None:
        self.node_id = node_id or default_node_id()
        self._subscriptions: set[Subscription] = set()
        self._closed = False

    def subscribe(
        self,
        *types: str,
        maxsize: int = SUBSCRIBER_QUEUE_SIZE,
        name: str | None = None,
        lossy: bool = False,
    ) -> Subscription:
        """Receive events of ``types`` (all events if none are given) from now on.

        ``lossy``: the subscriber treats events as wake-ups and looks at the
        store for the rest (it watches ``dropped``), so an overflow is expected
        and not logged.
        """
        if self._closed:
            raise BusClosed("the event bus is closed")
        label = name or ",".join(sorted(types)) or "*"
        sub = Subscription(self, frozenset(types), maxsize, label, lossy)
        self._subscriptions.add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)

    def _deliver(self, event: Event) -> None:
        """Hand ``event`` to every local subscriber that wants it, without waiting."""
        for sub in list(self._subscriptions):
            if sub.wants(event):
                sub.offer(event)

    async def publish(self, type: str, /, **data: Any) -> Event:
        """Announce ``type`` with JSON-serialisable ``data`` to every subscriber.

        ``ValueError`` (or ``TypeError``) if ``data`` is not JSON or its event is
        larger than ``MAX_PAYLOAD_BYTES``; nothing is delivered then.
        """
        if self._closed:
            raise BusClosed("the event bus is closed")
        if not type:
            raise ValueError("an event needs a type")
        draft = Event(type, data, origin=self.node_id)
        payload = draft.to_json()
        size = len(payload.encode())
        if size > MAX_PAYLOAD_BYTES:
            raise ValueError(
                f"event {type} is {size} bytes, over the bus limit of {MAX_PAYLOAD_BYTES}:"
                " announce ids and small facts, never bodies"
            )
        # Local subscribers see exactly what a remote node decodes (tuples become
        # lists, keys strings), and nobody can mutate the data under another's feet.
        event = Event.from_json(payload)
        self._deliver(event)
        await self._send_remote(event, payload)
        return event

    @abc.abstractmethod
    async def _send_remote(self, event: Event, payload: str) -> None:
        """Carry the event (already delivered locally) to other processes, if any."""

    async def aclose(self) -> None:
        """Close every subscription, so their readers stop waiting."""
        self._closed = True
        for sub in list(self._subscriptions):
            sub.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class InProcessBus(EventBus):
    """The bus of a single process (SQLite): subscribers get events synchronously."""

    async def _send_remote(self, event: Event, payload: str) -> None:
        """There are no other processes to tell."""


@contextlib.asynccontextmanager
async def open_bus(url: str, node_id: str | None = None) -> AsyncIterator[EventBus]:
    """The bus for a store URL: LISTEN/NOTIFY on PostgreSQL, in-process otherwise."""
    bus: EventBus
    if make_url(url).get_backend_name() == "postgresql":
        from store.bus_pg import PgBus

        bus = PgBus(url, node_id)
    else:
        bus = InProcessBus(node_id)
    async with bus:
        yield bus
