"""AmiClient: one PBX's Asterisk Manager Interface link, kept up until cancelled.

panoramisk gives the wire format (``Message``) and matches answers to actions
(``Action``); this module wraps its ``AMIProtocol`` and fixes what a CRM cannot
live with (see STYLE.md):

- text is decoded per connection with an incremental UTF-8 decoder, so a
  Chinese caller name split across two TCP reads arrives whole (panoramisk
  decodes each read alone and drops the pieces);
- an exception in the event handler is logged and the stream goes on;
- Ping answers are awaited: a PBX that stops answering (a half-open TCP link)
  is dropped and reconnected instead of staying silently "connected";
- unanswered actions are failed, never re-sent, after a reconnect: an
  Originate re-sent by a library would ring the customer twice.

After every login ``on_connected`` runs before any further event is handed
on, so the correlator can rebuild its state from ``CoreShowChannels`` first.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import unquote

from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from store.errors import AuthError, PermanentError, TransientError
from store.service import ServiceStatus

log = logging.getLogger(__name__)

BANNER_PREFIX = "Asterisk Call Manager/"
# A link that stayed up this long starts its next failure streak from the base delay.
STABLE_AFTER_S = 60.0
MAX_BANNER_CHARS = 1024
CLOSE_WAIT_S = 1.0

EventHandler = Callable[[Message, float], None]
# panoramisk's ``Message`` carries its body as a "content" header; ours stays empty
# (Asterisk 14+ sends command output as ``Output:`` headers, not as a body).
_CONTENT = ("content", "")


class OriginateUnknown(TransientError):
    """The Originate was sent but its answer never came: the call may or may not exist.

    It is not retried: one click must ring the customer at most once.
    """


@dataclass(frozen=True)
class AmiSettings:
    """How to reach one PBX's AMI; durations in seconds, the secret kept out of reprs."""

    name: str
    host: str
    port: int
    username: str
    secret: str = field(repr=False)
    connect_timeout: float = 5.0
    ping_interval: float = 10.0
    ping_timeout: float = 5.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    # AMI over TLS (manager.conf tlsenable, usually port 5039); the CA file for a
    # PBX with its own certificate authority, else the system's.
    tls: bool = False
    ca_file: str | None = None


def reconnect_delay(
    streak: int, base: float, cap: float, jitter: Callable[[], float] = random.random
) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**(streak-1))], so PBX links don't march."""
    return jitter() * min(cap, base * 2.0 ** max(0, streak - 1))


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark an action's outcome as seen, for answers nobody waits for any more."""
    if not future.cancelled():
        future.exception()


class AmiConnection(AMIProtocol):  # type: ignore[misc]  # panoramisk has no types
    """One TCP connection: frames bytes into messages, matches answers, hands events on.

    Of ``AMIProtocol`` only the shape is kept (``responses``, ``version``,
    ``closed``): its ``data_received`` loses split UTF-8, its
    ``handle_message`` lets a handler's exception kill the connection, and its
    ``close`` queues unanswered actions to be re-sent.  Events are held from
    the start until ``release()``, which the client calls once it has logged
    in and ``on_connected`` has run.
    """

    def __init__(
        self,
        on_event: EventHandler,
        clock: Callable[[], float] = time.time,
        on_system_name: Callable[[str], None] | None = None,
        label: str = "asterisk",
    ) -> None:
        super().__init__()
        loop = asyncio.get_running_loop()
        self._on_event = on_event
        self._clock = clock
        self._loop_time = loop.time
        self._on_system_name = on_system_name
        self._label = label
        self._decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        self._buffer = ""
        self._held: deque[tuple[Message, float]] | None = deque()
        self.transport: asyncio.Transport | None = None
        self.version: str | None = None
        self.system_name = ""
        self.closed = False
        self.responses: dict[str, Action] = {}
        self.last_rx = loop.time()
        self.banner: asyncio.Future[str] = loop.create_future()
        self.banner.add_done_callback(_consume)
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self.gone: asyncio.Future[None] = loop.create_future()

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.last_rx = self._loop_time()

    def data_received(self, data: bytes) -> None:
        """Frame decoded text on blank lines; hand each message on as it completes."""
        received_at = self._clock()
        self.last_rx = self._loop_time()
        text = self._decode(data)
        if self._buffer:
            text = self._buffer + text
        if self.version is None:
            rest = self._read_banner(text)
            if rest is None:
                return
            text = rest
        end = text.rfind("\r\n\r\n")
        if end < 0:
            self._buffer = text
            return
        self._buffer = text[end + 4 :]
        # One split into lines for the whole read; a blank line ends a message.
        store: dict[str, tuple[str, Any]] = {}
        for line in text[: end + 2].split("\r\n"):
            if line:
                key, sep, value = line.partition(": ")
                if sep:
                    lower = key.lower()
                    if lower in store:
                        _repeat(store, lower, key, value)
                    else:
                        store[lower] = (key, value)
            elif store:
                self._dispatch(store, received_at)
                store = {}

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(f"connection lost: {exc}" if exc else "the PBX closed the connection")
        if not self.gone.done():
            self.gone.set_result(None)

    # -- framing ------------------------------------------------------------------------

    def _read_banner(self, text: str) -> str | None:
        """The first line names the AMI protocol version; messages follow it."""
        eol = text.find("\r\n")
        if eol < 0:
            self._buffer = text
            if len(text) > MAX_BANNER_CHARS:
                self._drop(f"no AMI banner in the first {MAX_BANNER_CHARS} characters")
            return None
        line = text[:eol]
        if not line.startswith(BANNER_PREFIX):
            self._buffer = ""
            self._drop("the peer does not speak AMI (no 'Asterisk Call Manager/' banner)")
            return None
        self.version = line[len(BANNER_PREFIX) :].strip()
        if not self.banner.done():
            self.banner.set_result(self.version)
        self._buffer = ""
        return text[eol + 2 :]

    def _dispatch(self, store: dict[str, tuple[str, Any]], received_at: float) -> None:
        if "result" in store and isinstance(store["result"][1], str):
            # AsyncAGI results are URL-quoted (panoramisk's ``quoted_keys``).
            store["result"] = (store["result"][0], unquote(store["result"][1]).strip())
        store["content"] = _CONTENT
        message = Message.__new__(Message)
        message.__dict__ = {"_store": store, "manager": None}
        if self.responses:
            action_id = store.get("actionid")
            if action_id is not None:
                action = self.responses.get(action_id[1])
                if action is not None:
                    self._answer(action, message)
                    return
        if "event" not in store:
            return  # the answer to an action of a connection we already gave up
        name = store.get("systemname")
        if name is not None and name[1] != self.system_name and name[1]:
            self.system_name = name[1]
            if self._on_system_name is not None:
                self._on_system_name(name[1])
        if self._held is not None:
            self._held.append((message, received_at))
            return
        try:
            self._on_event(message, received_at)
        except Exception:
            log.exception("%s: the event handler failed on %s", self._label, store["event"][1])

    def _answer(self, action: Action, message: Message) -> None:
        try:
            finished = action.add_message(message)
        except Exception as err:  # panoramisk's list heuristics on an odd answer
            finished = True
            if not action.future.done():
                action.future.set_exception(err)
        if finished or action.future.done():
            self.responses.pop(action.id, None)

    # -- events held while the client rebuilds its state ------------------------------

    def release(self) -> None:
        """Hand on the events held so far, in order; later ones go straight through."""
        held, self._held = self._held, None
        while held:
            message, received_at = held.popleft()
            try:
                self._on_event(message, received_at)
            except Exception:
                log.exception("%s: the event handler failed on %s", self._label, message.event)

    # -- actions ------------------------------------------------------------------------

    def send(self, fields: Mapping[str, str | list[str]], as_list: bool | None = None) -> Action:
        """Write one action; its ``future`` is answered by ``data_received``, never re-sent."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise TransientError(f"{self._label}: not connected")
        action = Action(dict(fields), as_list=as_list)
        for value in action.values():
            for item in value if isinstance(value, list) else [value]:
                if "\r" in str(item) or "\n" in str(item):
                    # A line break would end the header and let the value inject another.
                    raise PermanentError(
                        f"{self._label}: a value of action {action.get('Action')} has a line break"
                    )
        action.future.add_done_callback(_consume)
        self.responses[action.id] = action
        transport.write(str(action).encode("utf-8"))
        return action

    async def answer(self, action: Action, wait_s: float) -> Message | list[Message]:
        """The answer to a sent action; ``TransientError`` on timeout or a lost link.

        After a timeout the action stays registered, so its late answer (and its
        list events) are dropped instead of being taken for events.
        """
        done, _ = await asyncio.wait([action.future], timeout=wait_s)
        if not done:
            raise TransientError(
                f"{self._label}: no answer to {action.get('Action')} within {wait_s:g}s"
            )
        result: Message | list[Message] = action.future.result()
        return result

    async def request(
        self, fields: Mapping[str, str | list[str]], wait_s: float, as_list: bool | None = None
    ) -> Message | list[Message]:
        """``send`` then ``answer``."""
        return await self.answer(self.send(fields, as_list), wait_s)

    # -- closing ------------------------------------------------------------------------

    def close(self, logoff: bool = False) -> None:
        """Close without re-sending anything; ``logoff`` says goodbye first (a clean stop)."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if logoff:
                transport.write(b"Action: Logoff\r\n\r\n")
                transport.close()
            else:
                # A half-open peer never reads: waiting to flush would keep the socket.
                transport.abort()
        self._lose("connection closed")

    def _drop(self, reason: str) -> None:
        self._lose(reason)
        self.close()

    def _lose(self, reason: str) -> None:
        """Mark the connection gone (the first reason wins) and fail what waits on it."""
        if not self.lost.is_set():
            self.lost_reason = reason
            self.lost.set()
        self.closed = True
        if not self.banner.done():
            self.banner.set_exception(TransientError(f"{self._label}: {reason}"))
        pending, self.responses = self.responses, {}
        for action in pending.values():
            if not action.future.done():
                action.future.set_exception(
                    TransientError(
                        f"{self._label}: {reason} before {action.get('Action')} was answered"
                    )
                )


def _repeat(store: dict[str, tuple[str, Any]], lower: str, key: str, value: str) -> None:
    """A repeated header (``Variable``, ``ChanVariable``) becomes a list, as in panoramisk."""
    old = store[lower][1]
    store[lower] = (key, [*old, value] if isinstance(old, list) else [old, value])


class AmiClient:
    """Keeps one PBX's AMI link up, hands its events on, and sends actions over it."""

    def __init__(
        self,
        settings: AmiSettings,
        on_event: EventHandler,
        on_connected: Callable[[AmiClient], Awaitable[None]] | None = None,
        on_disconnected: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.name = f"asterisk:{settings.name}"
        self.on_event = on_event
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self.clock = clock
        self.system_name = settings.name
        self._connection: AmiConnection | None = None

    @property
    def connected(self) -> bool:
        """Logged in, with ``on_connected`` run or running."""
        return self._connection is not None and not self._connection.closed

    async def run(self, status: ServiceStatus) -> None:
        """Connect, log in and serve; reconnect with backoff after any loss, until cancelled."""
        s = self.settings
        loop = asyncio.get_running_loop()
        streak = 0
        while True:
            started = loop.time()
            reason = "the connection ended"
            try:
                await self._serve(status)
            except TransientError as err:
                reason = str(err)
            if started + STABLE_AFTER_S <= loop.time():
                streak = 0
            streak += 1
            delay = reconnect_delay(streak, s.backoff_base, s.backoff_cap)
            status.degraded(reason)
            log.debug("%s: %s; reconnecting in %.2fs", self.name, reason, delay)
            await asyncio.sleep(delay)

    async def _serve(self, status: ServiceStatus) -> None:
        """One connection from connect to loss; raises ``TransientError`` when it ends."""
        s = self.settings
        loop = asyncio.get_running_loop()
        factory = partial(
            AmiConnection, self.on_event, self.clock, self._saw_system_name, self.name
        )
        context = ssl.create_default_context(cafile=s.ca_file) if s.tls else None
        try:
            _transport, conn = await asyncio.wait_for(
                loop.create_connection(factory, s.host, s.port, ssl=context), s.connect_timeout
            )
        except (OSError, TimeoutError) as err:
            raise TransientError(
                f"{self.name}: cannot connect to {s.host}:{s.port}: {err or type(err).__name__}"
            ) from err
        announced = False
        try:
            try:
                await asyncio.wait_for(asyncio.shield(conn.banner), s.connect_timeout)
            except TimeoutError as err:
                raise TransientError(
                    f"{self.name}: no AMI banner within {s.connect_timeout:g}s"
                ) from err
            await self._login(conn)
            self._connection = conn
            self.system_name = await self._read_system_name(conn)
            announced = True
            try:
                if self.on_connected is not None:
                    await self.on_connected(self)
            finally:
                # Events that arrived are facts even when the rebuild failed: never drop them.
                conn.release()
            if conn.lost.is_set():
                raise TransientError(f"{self.name}: {conn.lost_reason}")
            status.ready(f"{s.host}:{s.port} ({self.system_name})")
            await self._watch(conn)
        except asyncio.CancelledError:
            conn.close(logoff=True)
            raise
        finally:
            self._connection = None
            conn.close()
            # Return with the socket closed, not merely scheduled to close.
            await asyncio.wait([conn.gone], timeout=CLOSE_WAIT_S)
            if announced and self.on_disconnected is not None:
                try:
                    self.on_disconnected()
                except Exception:
                    log.exception("%s: on_disconnected failed", self.name)

    async def _login(self, conn: AmiConnection) -> None:
        s = self.settings
        fields = {"Action": "Login", "Username": s.username, "Secret": s.secret, "Events": "on"}
        answer = await conn.request(fields, s.connect_timeout, as_list=False)
        assert isinstance(answer, Message)
        if not answer.success:
            # Asterisk says "Authentication failed" for a wrong user, secret or source address.
            raise AuthError(
                f"{self.name}: {s.host}:{s.port} refused login as {s.username!r}: "
                f"{answer.get('Message') or answer.get('Response')}"
            )

    async def _read_system_name(self, conn: AmiConnection) -> str:
        """``SystemName`` from asterisk.conf when set (it keeps calls of several PBXs apart)."""
        answer = await conn.request(
            {"Action": "CoreSettings"}, self.settings.connect_timeout, False
        )
        assert isinstance(answer, Message)
        return conn.system_name or str(answer.get("SystemName") or "") or self.settings.name

    def _saw_system_name(self, name: str) -> None:
        self.system_name = name

    async def _watch(self, conn: AmiConnection) -> None:
        """Ping every interval and demand the answer; return never, raise on loss."""
        s = self.settings
        loop = asyncio.get_running_loop()
        silence_limit = s.ping_interval + s.ping_timeout
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(s.ping_interval):
                    await conn.lost.wait()
            if conn.lost.is_set():
                raise TransientError(f"{self.name}: {conn.lost_reason}")
            if loop.time() - conn.last_rx > silence_limit:
                raise TransientError(f"{self.name}: nothing received for {silence_limit:g}s")
            try:
                await conn.request({"Action": "Ping"}, s.ping_timeout, as_list=False)
            except TransientError as err:
                if conn.lost.is_set():
                    raise TransientError(f"{self.name}: {conn.lost_reason}") from err
                raise TransientError(
                    f"{self.name}: no answer to Ping within {s.ping_timeout:g}s (half-open link?)"
                ) from err

    def _current(self) -> AmiConnection:
        conn = self._connection
        if conn is None or conn.closed:
            raise TransientError(f"{self.name}: not connected")
        return conn

    # ``timeout`` is not a cancel scope (ASYNC109): an action that times out stays
    # registered so its late answer is swallowed, and an Originate's becomes
    # OriginateUnknown.
    async def send_action(
        self,
        action: Mapping[str, str | list[str]],
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> Message | list[Message]:
        """Send an action and return its answer; a list for list actions (``CoreShowChannels``)."""
        conn = self._current()
        return await conn.request(action, timeout)

    async def originate(
        self,
        fields: Mapping[str, str | list[str]],
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> Message:
        """Send one asynchronous Originate; its answer says it was queued (or refused).

        Sent once only: if the link fails before the answer this raises
        ``OriginateUnknown`` and nothing is re-sent.  The call's outcome comes
        later as an ``OriginateResponse`` event with the same ActionID.
        """
        conn = self._current()
        action = conn.send({**fields, "Action": "Originate", "Async": "true"}, as_list=False)
        try:
            answer = await conn.answer(action, timeout)
        except TransientError as err:
            raise OriginateUnknown(
                f"{self.name}: Originate {action.id} sent but not answered ({err}); "
                "the call may or may not have been placed"
            ) from err
        assert isinstance(answer, Message)
        return answer
