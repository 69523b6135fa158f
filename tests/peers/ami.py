"""A real AMI server on a loopback socket that replays Asterisk traces, for the client's tests.

The traces in ``../shared/fixtures/ami/`` are the bytes a client received from
Asterisk 22, with the time and size of every TCP read.  ``AmiTraceServer``
speaks the protocol (banner, Login, Ping, CoreSettings, Originate,
CoreShowChannels, Logoff) and, after a login, replays a trace's events with
their recorded segmentation: a read may split a message or hold several.  It
can also misbehave on purpose: go silent (a half-open peer), drop the link and
lose a stretch of events, never answer an Originate, cut a UTF-8 character in
two.  The PBX's event stream is one for the whole server: a new connection
continues where the last one stopped, as Asterisk's would.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from asterisk.client import AmiSettings

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "ami"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
EOM = b"\r\n\r\n"

# A rechunk hook gets this connection's messages (receive time, bytes) and returns the
# writes (time, bytes) to make; their concatenation must be the messages' concatenation.
Rechunk = Callable[[list[tuple[float, bytes]]], Iterable[tuple[float, bytes]]]
OriginateMode = Literal["answer", "ignore", "drop"]

# Channel events whose unprefixed fields describe one channel (its snapshot).
_CHANNEL_EVENTS = {
    "Newchannel",
    "Newstate",
    "NewCallerid",
    "NewConnectedLine",
    "Newexten",
    "BridgeEnter",
    "BridgeLeave",
    "Rename",
    "Hangup",
}
_SNAPSHOT_FIELDS = (
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
)


# -- traces --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceMessage:
    i: int
    t: float
    kind: str  # banner, response, event
    name: str
    actionid: str | None
    offset: int
    raw: bytes


@dataclass(frozen=True)
class AmiTrace:
    scenario: str
    raw: bytes
    t0_epoch: float
    messages: list[TraceMessage]
    chunks: list[tuple[float, int, int]]  # each TCP read: (t, offset, length)

    @property
    def events(self) -> list[TraceMessage]:
        return [m for m in self.messages if m.kind == "event"]

    def timed(self) -> list[tuple[float, bytes]]:
        """Every message but the banner as (receive time, raw bytes)."""
        return [(m.t, m.raw) for m in self.messages if m.kind != "banner"]


def load_trace(scenario: str) -> AmiTrace:
    """A recorded trace: its bytes, messages and TCP reads (see the fixtures' README)."""
    raw = (FIXTURES / f"{scenario}.ami").read_bytes()
    meta: dict[str, Any] = json.loads((FIXTURES / f"{scenario}.json").read_text("utf-8"))
    messages = [
        TraceMessage(
            i=int(m["i"]),
            t=float(m["t"]),
            kind=str(m["kind"]),
            name=str(m.get("name") or ""),
            actionid=m.get("actionid"),
            offset=int(m["offset"]),
            raw=raw[int(m["offset"]) : int(m["offset"]) + int(m["length"])],
        )
        for m in meta["messages"]
    ]
    chunks = [(float(c["t"]), int(c["offset"]), int(c["length"])) for c in meta["chunks"]]
    return AmiTrace(scenario, raw, float(meta["t0_epoch"]), messages, chunks)


def trace_messages(scenario: str) -> list[tuple[float, bytes]]:
    """A trace's messages as (seconds since connect, raw bytes), banner left out."""
    return load_trace(scenario).timed()


def headers(raw: bytes) -> list[tuple[str, str]]:
    """A message's ``Key: Value`` lines in order: a reference parse, independent of the client."""
    pairs = []
    for line in raw.decode("utf-8").split("\r\n"):
        key, sep, value = line.partition(": ")
        if sep:
            pairs.append((key, value))
    return pairs


def message(*fields: tuple[str, str]) -> bytes:
    """One AMI message's bytes from its headers."""
    return "".join(f"{k}: {v}\r\n" for k, v in fields).encode("utf-8") + b"\r\n"


def split_each_message_at(*cuts: int) -> Rechunk:
    """A rechunk hook writing every message in pieces cut at these byte offsets."""

    def rechunk(messages: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
        writes = []
        for t, raw in messages:
            edges = [0, *(c for c in cuts if 0 < c < len(raw)), len(raw)]
            writes += [(t, raw[a:b]) for a, b in itertools.pairwise(edges)]
        return writes

    return rechunk


def live_channels(trace: AmiTrace, upto: int) -> list[dict[str, str]]:
    """The channels alive before message ``upto``, as CoreShowChannel would list them."""
    alive: dict[str, dict[str, str]] = {}
    created: dict[str, float] = {}
    now = 0.0
    for m in trace.messages:
        if m.i >= upto:
            now = m.t
            break
        now = m.t
        if m.kind != "event" or m.name not in _CHANNEL_EVENTS:
            continue
        fields = dict(headers(m.raw))
        uid = fields.get("Uniqueid", "")
        if m.name == "Newchannel":
            alive[uid] = {"Application": "", "ApplicationData": "", "BridgeId": ""}
            created[uid] = m.t
        channel = alive.get(uid)
        if channel is None:
            continue
        if m.name == "Hangup":
            del alive[uid]
            continue
        channel.update((k, fields[k]) for k in _SNAPSHOT_FIELDS if k in fields)
        if m.name == "Rename":
            channel["Channel"] = fields.get("Newname", channel["Channel"])
        elif m.name == "Newexten":
            channel["Application"] = fields.get("Application", "")
            channel["ApplicationData"] = fields.get("AppData", "")
        elif m.name == "BridgeEnter":
            channel["BridgeId"] = fields.get("BridgeUniqueid", "")
        elif m.name == "BridgeLeave":
            channel["BridgeId"] = ""
    out = []
    for uid, channel in alive.items():
        seconds = max(0, int(now - created[uid]))
        duration = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        listed = {k: channel.get(k, "") for k in _SNAPSHOT_FIELDS}
        listed["Application"] = channel["Application"]
        listed["ApplicationData"] = channel["ApplicationData"]
        listed["Duration"] = duration
        listed["BridgeId"] = channel["BridgeId"]
        out.append(listed)
    return out


# -- the server ----------------------------------------------------------------------------


@dataclass
class _Link:
    """One client connection as the server sees it."""

    number: int
    writer: asyncio.StreamWriter
    logged_in: bool = False
    silent: bool = False
    mid_message: bool = False  # the replay stopped inside a message: answers must wait
    held: list[bytes] = field(default_factory=list)
    snapshot_at: int = 0

    def send(self, data: bytes) -> None:
        if self.silent or self.writer.is_closing():
            return
        if self.mid_message:
            self.held.append(data)
        else:
            self.writer.write(data)

    def flush(self) -> None:
        held, self.held = self.held, []
        for data in held:
            self.send(data)


class AmiTraceServer:
    """An AMI server on 127.0.0.1 that replays a trace's events after each login."""

    def __init__(
        self,
        trace: AmiTrace | None = None,
        *,
        username: str = "crm",
        secret: str = "crmsecret",
        system_name: str = "",
        stamp_events: bool = True,
        port: int = 0,
        time_scale: float = 0.0,
        gap_s: float = 0.0,
        rechunk: Rechunk | None = None,
        drop_at: int | None = None,
        resume_at: int | None = None,
        originate: OriginateMode = "answer",
        replay_after: str = "Login",
        timestamps: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``drop_at=i``: the connection replaying message i drops just before sending it;
        messages i..``resume_at``-1 are lost (they happened while the client was away),
        and the next connection lists the channels alive before ``resume_at`` in its
        CoreShowChannels answer, then replays from there.  ``system_name`` is CoreSettings'
        SystemName and, with ``stamp_events``, a header on every replayed event (as
        Asterisk adds it when asterisk.conf sets one).  ``replay_after`` names the action
        whose answer starts a connection's replay (say ``CoreShowChannels``, to replay only
        once the client has taken its snapshot).
        """
        self.trace = trace
        self.username = username
        self.secret = secret
        self.system_name = system_name
        self.stamp_events = stamp_events
        self.requested_port = port
        self.time_scale = time_scale
        self.gap_s = gap_s
        self.rechunk = rechunk
        self.drop_at = drop_at
        self.resume_at = resume_at
        self.originate_mode: OriginateMode = originate
        self.replay_after = replay_after.lower()
        self.timestamps = timestamps
        self.tls = tls
        self.connections = 0
        self.logins = 0
        self.actions: list[list[tuple[str, str]]] = []
        self.originates: list[dict[str, str]] = []
        self.replay_done = asyncio.Event()
        self._cursor = self._first_event_index()
        self._links: dict[int, _Link] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    def _first_event_index(self) -> int:
        """Replays start after the recorded Login response (the banner and it are ours)."""
        if self.trace is None:
            return 0
        login = next(m.i for m in self.trace.messages if m.kind == "response")
        return login + 1

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> AmiTraceServer:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.requested_port, ssl=self.tls
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for link in list(self._links.values()):
            link.writer.transport.abort()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2.0)
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def settings(self, name: str = "pbx", **overrides: Any) -> AmiSettings:
        """Client settings pointing here, with this server's credentials."""
        base: dict[str, Any] = {
            "name": name,
            "host": "127.0.0.1",
            "port": self.port,
            "username": self.username,
            "secret": self.secret,
        }
        return AmiSettings(**{**base, **overrides})

    # -- misbehaviour on demand -------------------------------------------------------

    def silence(self) -> None:
        """Every connection open now stops sending and answering, its socket left open."""
        for link in self._links.values():
            link.silent = True

    def drop(self) -> None:
        """Close every connection open now."""
        for link in list(self._links.values()):
            link.writer.transport.abort()

    async def inject(self, raw: bytes, cuts: Sequence[int] = (), gap_s: float = 0.05) -> None:
        """Send raw bytes to every logged-in connection, in pieces cut at these offsets.

        The pause between pieces lets the client read each piece on its own.
        """
        edges = [0, *cuts, len(raw)]
        links = [link for link in self._links.values() if link.logged_in and not link.silent]
        assert links, "no logged-in connection to inject into"
        assert not any(link.mid_message for link in links), "a replay is inside a message"
        for n, (a, b) in enumerate(itertools.pairwise(edges)):
            for link in links:
                link.writer.write(raw[a:b])
                link.mid_message = b < len(raw)
                await link.writer.drain()
            if n < len(edges) - 2:
                await asyncio.sleep(gap_s)
        for link in links:
            link.flush()

    # -- one connection ---------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        link = _Link(self.connections, writer)
        self._links[link.number] = link
        try:
            async with asyncio.TaskGroup() as group:
                writer.write(BANNER)
                replay: asyncio.Task[None] | None = None
                while True:
                    try:
                        data = await reader.readuntil(EOM)
                    except (asyncio.IncompleteReadError, ConnectionError):
                        break
                    if link.silent:
                        continue
                    fields = headers(data)
                    self.actions.append(fields)
                    action = self._answer(link, fields)
                    if action == "login":
                        link.snapshot_at = self._cursor
                    if (
                        action == self.replay_after
                        and link.logged_in
                        and replay is None
                        and self.trace is not None
                    ):
                        replay = group.create_task(
                            self._replay(link), name=f"ami-replay-{link.number}"
                        )
                    if writer.is_closing():
                        break
                if replay is not None:
                    replay.cancel()
        finally:
            del self._links[link.number]
            writer.transport.abort()
            self._handlers.discard(task)

    def _answer(self, link: _Link, fields: list[tuple[str, str]]) -> str:
        """Answer one action; its name in lower case, "" when refused."""
        action = {k.lower(): v for k, v in fields}
        name = action.get("action", "").lower()
        tail = f"ActionID: {action['actionid']}\r\n" if "actionid" in action else ""

        def respond(status: str, *lines: str) -> None:
            body = "".join(f"{line}\r\n" for line in lines)
            link.send(f"Response: {status}\r\n{tail}{body}\r\n".encode())

        if name == "login":
            if action.get("username") != self.username or action.get("secret") != self.secret:
                respond("Error", "Message: Authentication failed")
                link.writer.close()
                return ""
            respond("Success", "Message: Authentication accepted")
            link.logged_in = True
            self.logins += 1
            return name
        if name == "logoff":
            respond("Goodbye", "Message: Thanks for all the fish.")
            link.writer.close()
        elif not link.logged_in:
            respond("Error", "Message: Authentication Required")
            return ""
        elif name == "ping":
            respond("Success", "Ping: Pong", "Timestamp: 1795341075.000000")
        elif name == "coresettings":
            respond(
                "Success",
                "AMIversion: 11.0.0",
                "AsteriskVersion: 22.10.1",
                f"SystemName: {self.system_name}",
                "CoreMaxCalls: 0",
                "CoreRunUser: asterisk",
                "CoreRunGroup: asterisk",
            )
        elif name == "originate":
            self.originates.append({k: v for k, v in fields if k.lower() != "variable"})
            if self.originate_mode == "answer":
                respond("Success", "Message: Originate successfully queued")
            elif self.originate_mode == "drop":
                link.writer.close()
        elif name == "coreshowchannels":
            link.send(self._core_show_channels(link.snapshot_at, tail))
        else:
            respond("Error", "Message: Invalid/unknown command")
        return name

    def _core_show_channels(self, upto: int, tail: str) -> bytes:
        channels = live_channels(self.trace, upto) if self.trace is not None else []
        parts = [
            message(("Response", "Success"), *_id(tail), ("EventList", "start"),
                    ("Message", "Channels will follow"))
        ]  # fmt: skip
        for channel in channels:
            parts.append(message(("Event", "CoreShowChannel"), *_id(tail), *channel.items()))
        parts.append(
            message(("Event", "CoreShowChannelsComplete"), *_id(tail), ("EventList", "Complete"),
                    ("ListItems", str(len(channels))))
        )  # fmt: skip
        return b"".join(parts)

    # -- replay -----------------------------------------------------------------------

    def _stamp(self, message: TraceMessage) -> tuple[bytes, int, int]:
        """The event with SystemName and Timestamp headers after Privilege, where they go,
        and their size; ``timestamps`` stamps the recorded time as ``timestampevents=yes``."""
        raw = message.raw
        extra = ""
        if self.system_name and self.stamp_events:
            extra += f"SystemName: {self.system_name}\r\n"
        if self.timestamps and self.trace is not None:
            extra += f"Timestamp: {self.trace.t0_epoch + message.t:.6f}\r\n"
        if not extra:
            return raw, len(raw), 0
        at = raw.find(b"\r\n", max(0, raw.find(b"Privilege: "))) + 2
        return raw[:at] + extra.encode() + raw[at:], at, len(extra.encode())

    def _plan(
        self, start: int, stop: int
    ) -> tuple[list[tuple[float, bytes]], list[int], list[int]]:
        """The writes replaying events start..stop-1, the byte offsets where messages end,
        and the trace index that follows each of those ends."""
        assert self.trace is not None
        chosen = [m for m in self.trace.events if start <= m.i < stop]
        stamped = [self._stamp(m) for m in chosen]
        ends, following, total = [], [], 0
        for m, (raw, _, _) in zip(chosen, stamped, strict=True):
            total += len(raw)
            ends.append(total)
            following.append(m.i + 1)
        if self.rechunk is not None:
            writes = list(self.rechunk([(m.t, s[0]) for m, s in zip(chosen, stamped, strict=True)]))
            assert b"".join(w for _, w in writes) == b"".join(s[0] for s in stamped)
            return writes, ends, following
        writes = []
        starts = [m.offset for m in chosen]
        for t, offset, length in self.trace.chunks:
            piece = b""
            first = max(0, bisect.bisect_right(starts, offset) - 1)
            for m, (raw, at, extra) in zip(chosen[first:], stamped[first:], strict=True):
                if m.offset >= offset + length:
                    break
                a = max(offset, m.offset) - m.offset
                b = min(offset + length, m.offset + len(m.raw)) - m.offset
                if a < b:
                    piece += raw[a + (extra if a > at else 0) : b + (extra if b > at else 0)]
            if piece:
                writes.append((t, piece))
        return writes, ends, following

    async def _replay(self, link: _Link) -> None:
        assert self.trace is not None
        start = self._cursor
        stop = len(self.trace.messages)
        dropping = self.drop_at is not None and start <= self.drop_at < stop
        if dropping:
            assert self.drop_at is not None
            stop = self.drop_at
        writes, ends, following = self._plan(start, stop)
        loop = asyncio.get_running_loop()
        began = loop.time()
        t_first = writes[0][0] if writes else 0.0
        written = 0
        with contextlib.suppress(ConnectionError):
            for t, data in writes:
                if self.time_scale:
                    await asyncio.sleep(
                        max(0.0, began + (t - t_first) * self.time_scale - loop.time())
                    )
                elif self.gap_s:
                    await asyncio.sleep(self.gap_s)
                if link.silent or link.writer.is_closing():
                    return
                link.writer.write(data)
                written += len(data)
                done = bisect.bisect_right(ends, written)
                if done:
                    self._cursor = following[done - 1]
                link.mid_message = done == 0 or ends[done - 1] != written
                if not link.mid_message:
                    link.flush()
                await link.writer.drain()
        if dropping:
            self.drop_at = None
            self._cursor = self.resume_at if self.resume_at is not None else stop
            link.writer.close()  # after what was written, as a PBX restart would
        else:
            self._cursor = stop
            self.replay_done.set()


def _id(tail: str) -> list[tuple[str, str]]:
    """The ActionID header line of an answer, as a field list (empty without one)."""
    return [("ActionID", tail[len("ActionID: ") : -2])] if tail else []
