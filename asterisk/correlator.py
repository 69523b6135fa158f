"""CallCorrelator: AMI events in, one call record per customer leg out.

Asterisk describes a call as channels (``Uniqueid``) grouped by ``Linkedid``,
bridges that channels enter and leave, and Local channel pairs that join two
bridges.  The correlator keeps just that picture:

- a *group* is the channels of one Linkedid; when a bridge joins two groups
  (Asterisk then adopts the oldest Linkedid) they merge;
- the *customer leg* is a trunk channel (see ``ChannelPlan``); each one is a
  call, keyed by (PBX, its Uniqueid).  A group with agents but no trunk is an
  internal call;
- an agent is *connected* with the customer when a path of shared bridges and
  Local pairs joins their channels.  The first connection is the answer; the
  last disconnection ends the talk time.  Nothing else (a Cdr that says
  ANSWERED, a queue's Answer()) counts as an answer.

Times are the event's ``Timestamp`` when Asterisk sends one, else the time it
was received.  State only moves forward: an ended group is remembered for a
while and late or repeated events about it change nothing.  After a reconnect,
``rebuild`` takes the live channels from ``CoreShowChannels``; groups whose
channels are all gone ended during the gap and are closed as such.

The correlator is synchronous and does no I/O: updates go to ``on_update``,
and the service writes them to the store and the bus.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from asterisk.plan import ChannelPlan, Role
from store.phones import normalise_phone

Update = Literal["ringing", "ring_ended", "answered", "ended"]
Direction = Literal["inbound", "outbound", "internal"]
UNKNOWN = "<unknown>"
FORGET_AFTER = 20_000  # ended groups and channels remembered to ignore late events

# DialStatus of the dial towards a party, as an end reason when it never talked.
_DIAL_REASONS = {
    "BUSY": "busy",
    "NOANSWER": "no_answer",
    "CANCEL": "cancelled",
    "CONGESTION": "failed",
    "CHANUNAVAIL": "failed",
    "DONTCALL": "rejected",
    "TORTURE": "rejected",
    "INVALIDARGS": "failed",
}


@dataclass(slots=True)
class Channel:
    uniqueid: str
    name: str
    role: Role
    ext: str | None
    created_at: float
    state: str
    linkedid: str
    caller_num: str = ""
    exten: str = ""
    partner: str | None = None
    bridge: str | None = None
    hungup_at: float | None = None
    cause: int | None = None
    dial_status: str | None = None
    dial_number: str | None = None


@dataclass(slots=True)
class Segment:
    """One agent's part in a call."""

    uniqueid: str
    channel: str
    extension: str | None
    ring_at: float
    answered_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    ring_announced: bool = False
    ring_withdrawn: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "extension": self.extension,
            "channel": self.channel,
            "ring_at": iso(self.ring_at),
            "answered_at": iso(self.answered_at),
            "ended_at": iso(self.ended_at),
            "end_reason": self.end_reason,
        }


@dataclass(slots=True)
class CallState:
    """A call as the correlator knows it; final once ``ended_at`` is set."""

    pbx: str
    uniqueid: str
    linkedid: str
    direction: Direction
    started_at: float
    external_number: str | None = None
    external_e164: str | None = None
    did: str | None = None
    queue: str | None = None
    answered_at: float | None = None
    talk_ended_at: float | None = None
    ended_at: float | None = None
    disposition: str = "ringing"
    hangup_cause: int | None = None
    recording: str | None = None
    transfer: str | None = None
    origin: str | None = None
    linked: list[str] = field(default_factory=list)  # records tied to it during the call
    voicemail: bool = False
    ended_in_gap: bool = False
    segments: dict[str, Segment] = field(default_factory=dict)
    connected: set[str] = field(default_factory=set)
    agents_connected: list[str] = field(default_factory=list)

    @property
    def agents(self) -> list[str]:
        """Extensions that talked with the customer, in order; the last is the final agent."""
        return [ext for ext in self.agents_connected if ext]

    @property
    def ring_seconds(self) -> float:
        until = self.answered_at if self.answered_at is not None else self.ended_at
        return _seconds(self.started_at, until)

    @property
    def talk_seconds(self) -> float:
        if self.answered_at is None:
            return 0.0
        return _seconds(self.answered_at, self.talk_ended_at or self.ended_at)

    def as_dict(self) -> dict[str, Any]:
        """The call as ``rapport calls replay --json`` prints it."""
        return {
            "pbx": self.pbx,
            "linkedid": self.linkedid,
            "uniqueid": self.uniqueid,
            "direction": self.direction,
            "external_number": self.external_number,
            "external_e164": self.external_e164,
            "did": self.did,
            "queue": self.queue,
            "agents": self.agents,
            "agents_rung": list(
                dict.fromkeys(s.extension for s in self.segments.values() if s.extension)
            ),
            "started_at": iso(self.started_at),
            "answered_at": iso(self.answered_at),
            "ended_at": iso(self.ended_at),
            "ring_seconds": self.ring_seconds,
            "talk_seconds": self.talk_seconds,
            "disposition": self.disposition,
            "hangup_cause": self.hangup_cause,
            "recording": self.recording,
            "transfer": self.transfer,
            "origin": self.origin,
            "segments": [s.as_dict() for s in self.segments.values()],
        }


def event_time(message: Mapping[str, Any], received_at: float) -> float:
    """When an event happened: its ``Timestamp`` (``timestampevents=yes``), else its arrival."""
    stamp = message.get("Timestamp")
    if stamp:
        try:
            return float(stamp)
        except ValueError:
            pass
    return received_at


def _seconds(start: float, end: float | None) -> float:
    return 0.0 if end is None else round(max(0.0, end - start), 1)


def iso(epoch: float | None) -> str | None:
    """UTC ISO 8601 with milliseconds, as the replay output and the bus carry times."""
    if epoch is None:
        return None
    moment = dt.datetime.fromtimestamp(round(epoch, 3), dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _older(a: str, b: str) -> bool:
    """Linkedids are ``<epoch>.<sequence>``: the smaller pair is the older one."""
    try:
        sa, _, na = a.partition(".")
        sb, _, nb = b.partition(".")
        return (int(sa), int(na or 0)) < (int(sb), int(nb or 0))
    except ValueError:
        return a < b


def _number(value: str | None) -> str | None:
    if not value or value == UNKNOWN:
        return None
    return value


@dataclass(slots=True)
class _Group:
    linkedid: str
    channels: list[str] = field(default_factory=list)
    calls: dict[str, CallState] = field(default_factory=dict)
    live: int = 0
    first_at: float = 0.0
    last_hangup_at: float | None = None
    recording: str | None = None
    queue: str | None = None
    transfers: dict[str, str] = field(default_factory=dict)  # agent uniqueid -> kind
    voicemail: bool = False


Listener = Callable[[Update, CallState, Segment | None], None]


class CallCorrelator:
    """Feed it AMI events with ``feed``; it reports calls through ``on_update``."""

    def __init__(self, plan: ChannelPlan, on_update: Listener | None = None) -> None:
        self.plan = plan
        self.on_update = on_update
        self.channels: dict[str, Channel] = {}
        self.groups: dict[str, _Group] = {}
        self._parent: dict[str, str] = {}
        self._bridges: dict[str, set[str]] = {}
        self._names: dict[str, str] = {}  # live channel name -> uniqueid
        self._tags: dict[str, str] = {}  # originated channel id -> origin record
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._handlers: dict[str, Callable[[Mapping[str, Any], float], None]] = {
            "Newchannel": self._newchannel,
            "NewCallerid": self._callerid,
            "Newstate": self._newstate,
            "Rename": self._rename,
            "LocalBridge": self._local_bridge,
            "DialBegin": self._dial_begin,
            "DialEnd": self._dial_end,
            "BridgeEnter": self._bridge_enter,
            "BridgeLeave": self._bridge_leave,
            "BridgeMerge": self._bridge_merge,
            "Hangup": self._hangup,
            "QueueCallerJoin": self._queue_join,
            "AgentRingNoAnswer": self._agent_no_answer,
            "BlindTransfer": self._blind_transfer,
            "AttendedTransfer": self._attended_transfer,
            "VarSet": self._varset,
            "Newexten": self._newexten,
            "Cdr": self._cdr,
        }

    # -- input -------------------------------------------------------------------------

    def feed(self, message: Mapping[str, Any], received_at: float) -> None:
        """Apply one AMI event; ``received_at`` is used unless it carries a ``Timestamp``."""
        handler = self._handlers.get(message.get("Event", ""))
        if handler is not None:
            handler(message, event_time(message, received_at))

    def tag(self, channel_id: str, origin: str) -> None:
        """Tie the call that an Originate with this ChannelId starts to a record."""
        self._tags[channel_id] = origin

    def link(self, uniqueid: str, record: str) -> bool:
        """Tie a live call to a record (one the agent created from the screen-pop)."""
        for group in self.groups.values():
            call = group.calls.get(uniqueid)
            if call is not None and call.ended_at is None:
                if record not in call.linked:
                    call.linked.append(record)
                return True
        return False

    def live_calls(self) -> list[CallState]:
        return [call for group in self.groups.values() for call in group.calls.values()]

    # -- groups ------------------------------------------------------------------------

    def _root(self, linkedid: str) -> str:
        parent = self._parent.get(linkedid, linkedid)
        while parent != linkedid:
            grand = self._parent.get(parent, parent)
            self._parent[linkedid] = grand
            linkedid, parent = parent, grand
        return linkedid

    def _merge(self, a: str, b: str) -> _Group | None:
        ra, rb = self._root(a), self._root(b)
        if ra == rb:
            return self.groups.get(ra)
        older, newer = (ra, rb) if _older(ra, rb) else (rb, ra)
        self._parent[newer] = older
        keep, gone = self.groups.get(older), self.groups.pop(newer, None)
        if gone is None:
            return keep
        if keep is None:
            gone.linkedid = older
            self.groups[older] = gone
            return gone
        keep.channels.extend(gone.channels)
        keep.live += gone.live
        keep.first_at = min(keep.first_at, gone.first_at)
        keep.calls.update(gone.calls)
        keep.transfers.update(gone.transfers)
        keep.recording = keep.recording or gone.recording
        keep.queue = keep.queue or gone.queue
        keep.voicemail = keep.voicemail or gone.voicemail
        for call in keep.calls.values():
            call.linkedid = older
        return keep

    def _group_of(self, channel: Channel) -> _Group | None:
        return self.groups.get(self._root(channel.linkedid))

    def _channel(self, message: Mapping[str, Any], key: str = "Uniqueid") -> Channel | None:
        chan = self.channels.get(message.get(key, ""))
        if chan is not None and key == "Uniqueid":
            linkedid = message.get("Linkedid")
            if linkedid and linkedid != chan.linkedid:
                self._merge(chan.linkedid, linkedid)
        return chan

    # -- channel life ------------------------------------------------------------------

    def _newchannel(self, m: Mapping[str, Any], t: float) -> None:
        uid = m.get("Uniqueid", "")
        linkedid = m.get("Linkedid") or uid
        if not uid or uid in self.channels or uid in self._ended:
            return
        if self._root(linkedid) in self._ended:
            return
        name = m.get("Channel", "")
        role, ext = self.plan.classify(name)
        chan = Channel(
            uniqueid=uid, name=name, role=role, ext=ext, created_at=t,
            state=m.get("ChannelStateDesc", ""), linkedid=linkedid,
            caller_num=m.get("CallerIDNum", ""), exten=m.get("Exten", ""),
        )  # fmt: skip
        self._add_channel(chan, t)

    def _add_channel(self, chan: Channel, t: float) -> None:
        self.channels[chan.uniqueid] = chan
        self._names[chan.name] = chan.uniqueid
        root = self._root(chan.linkedid)
        group = self.groups.get(root)
        if group is None:
            group = self.groups[root] = _Group(linkedid=root, first_at=chan.created_at)
        group.channels.append(chan.uniqueid)
        group.live += 1
        if chan.name.startswith("Local/") and chan.name[-2:] in (";1", ";2"):
            other = chan.name[:-1] + ("2" if chan.name.endswith("1") else "1")
            partner = self._names.get(other)
            if partner is not None:
                chan.partner = partner
                self.channels[partner].partner = chan.uniqueid
        if chan.role == "trunk" and chan.state in ("Ring", "Up"):
            self._open_call(group, chan, "inbound")
        elif chan.role == "agent":
            self._agent_appeared(group, chan, t)

    def _callerid(self, m: Mapping[str, Any], t: float) -> None:
        chan = self._channel(m)
        if chan is None:
            return
        chan.caller_num = m.get("CallerIDNum", "")
        group = self._group_of(chan)
        if group is not None and (call := group.calls.get(chan.uniqueid)):
            if call.direction == "inbound":
                self._set_number(call, chan.caller_num)

    def _newstate(self, m: Mapping[str, Any], t: float) -> None:
        chan = self._channel(m)
        if chan is None:
            return
        chan.state = m.get("ChannelStateDesc", chan.state)
        if chan.role == "agent" and chan.state == "Ringing":
            self._announce_ringing(chan)
        elif chan.role == "trunk" and (group := self._group_of(chan)) is not None:
            # An Originate straight to a trunk: no Dial names it, its state says it is live.
            self._open_call(group, chan, "outbound")

    def _rename(self, m: Mapping[str, Any], t: float) -> None:
        chan = self._channel(m)
        if chan is not None:
            self._names.pop(chan.name, None)
            chan.name = m.get("Newname", chan.name)
            self._names[chan.name] = chan.uniqueid

    def _local_bridge(self, m: Mapping[str, Any], t: float) -> None:
        one = m.get("LocalOneUniqueid") or self._names.get(m.get("LocalOneChannel", ""))
        two = m.get("LocalTwoUniqueid") or self._names.get(m.get("LocalTwoChannel", ""))
        a, b = self.channels.get(one or ""), self.channels.get(two or "")
        if a is not None and b is not None:
            a.partner, b.partner = b.uniqueid, a.uniqueid

    def _hangup(self, m: Mapping[str, Any], t: float) -> None:
        chan = self._channel(m)
        if chan is None or chan.hungup_at is not None:
            return
        chan.hungup_at = t
        try:
            chan.cause = int(m.get("Cause", ""))
        except ValueError:
            chan.cause = None
        group = self._group_of(chan)
        if chan.bridge is not None:
            self._bridges.get(chan.bridge, set()).discard(chan.uniqueid)
            chan.bridge = None
        self._names.pop(chan.name, None)
        if group is None:
            return
        group.live -= 1
        group.last_hangup_at = t
        self._reconnect(group, t)
        if chan.role == "agent":
            self._agent_gone(group, chan, t)
        if call := group.calls.get(chan.uniqueid):
            call.hangup_cause = chan.cause
        if group.live <= 0:
            self._finish(group, t)

    # -- dialling, queues, transfers ---------------------------------------------------

    def _dial_begin(self, m: Mapping[str, Any], t: float) -> None:
        dest = self._channel(m, "DestUniqueid")
        if dest is None:
            return
        dest.dial_number = _number(m.get("DestCallerIDNum")) or _dial_string_number(
            m.get("DialString", "")
        )
        group = self._group_of(dest)
        if group is None:
            return
        if dest.role == "trunk" and dest.uniqueid not in group.calls:
            self._open_call(group, dest, "outbound")
        elif dest.role == "agent":
            self._announce_ringing(dest)

    def _dial_end(self, m: Mapping[str, Any], t: float) -> None:
        dest = self._channel(m, "DestUniqueid")
        if dest is None:
            return
        # The first DialEnd is the outcome; a queue follows NOANSWER with a CANCEL.
        dest.dial_status = dest.dial_status or m.get("DialStatus") or None

    def _queue_join(self, m: Mapping[str, Any], t: float) -> None:
        chan = self._channel(m)
        group = self._group_of(chan) if chan else None
        if group is not None and group.queue is None:
            group.queue = m.get("Queue") or None
            for call in group.calls.values():
                if call.direction == "inbound" and call.queue is None:
                    call.queue = group.queue

    def _agent_no_answer(self, m: Mapping[str, Any], t: float) -> None:
        dest = self._channel(m, "DestUniqueid")
        if dest is not None:
            dest.dial_status = "NOANSWER"  # the queue gave up on this member, not the caller

    def _blind_transfer(self, m: Mapping[str, Any], t: float) -> None:
        if m.get("Result", "Success") != "Success":
            return
        self._mark_transfer(m.get("TransfererUniqueid", ""), "blind_transfer")

    def _attended_transfer(self, m: Mapping[str, Any], t: float) -> None:
        if m.get("Result", "Success") != "Success":
            return
        for key in ("OrigTransfererUniqueid", "SecondTransfererUniqueid"):
            self._mark_transfer(m.get(key, ""), "attended_transfer")

    def _mark_transfer(self, uniqueid: str, kind: str) -> None:
        chan = self.channels.get(uniqueid)
        group = self._group_of(chan) if chan else None
        if chan is None or group is None:
            return
        group.transfers[uniqueid] = kind
        for call in group.calls.values():
            call.transfer = "BlindTransfer" if kind == "blind_transfer" else "AttendedTransfer"

    def _varset(self, m: Mapping[str, Any], t: float) -> None:
        if m.get("Variable") != "MIXMONITOR_FILENAME":
            return
        chan = self._channel(m)
        group = self._group_of(chan) if chan else None
        if group is not None and m.get("Value"):
            group.recording = m["Value"]

    def _cdr(self, m: Mapping[str, Any], t: float) -> None:
        recording = m.get("RecordingFile")
        if not recording:
            return
        chan = self.channels.get(m.get("UniqueID", ""))
        group = self._group_of(chan) if chan else None
        if group is not None and group.recording is None:
            group.recording = recording

    def _newexten(self, m: Mapping[str, Any], t: float) -> None:
        if m.get("Application") != "VoiceMail":
            return
        chan = self._channel(m)
        group = self._group_of(chan) if chan else None
        if group is not None:
            group.voicemail = True

    # -- bridges -----------------------------------------------------------------------

    def _bridge_enter(self, m: Mapping[str, Any], t: float) -> None:
        chan = self._channel(m)
        if chan is None:
            return
        bridge = m.get("BridgeUniqueid", "")
        if chan.bridge is not None and chan.bridge != bridge:
            self._bridges.get(chan.bridge, set()).discard(chan.uniqueid)
        chan.bridge = bridge
        members = self._bridges.setdefault(bridge, set())
        for other in members:
            peer = self.channels.get(other)
            if peer is not None and self._root(peer.linkedid) != self._root(chan.linkedid):
                self._merge(peer.linkedid, chan.linkedid)
        members.add(chan.uniqueid)
        if swap := self.channels.get(m.get("SwapUniqueid", "")):
            members.discard(swap.uniqueid)
            if swap.bridge == bridge:
                swap.bridge = None
        group = self._group_of(chan)
        if group is not None:
            self._reconnect(group, t)

    def _bridge_leave(self, m: Mapping[str, Any], t: float) -> None:
        chan = self._channel(m)
        if chan is None:
            return
        bridge = m.get("BridgeUniqueid", "")
        self._bridges.get(bridge, set()).discard(chan.uniqueid)
        if not self._bridges.get(bridge, True):
            del self._bridges[bridge]
        if chan.bridge == bridge:
            chan.bridge = None
        group = self._group_of(chan)
        if group is not None:
            self._reconnect(group, t)

    def _bridge_merge(self, m: Mapping[str, Any], t: float) -> None:
        to, gone = m.get("ToBridgeUniqueid", ""), m.get("FromBridgeUniqueid", "")
        moved = self._bridges.pop(gone, set())
        if not moved:
            return
        target = self._bridges.setdefault(to, set())
        for uid in moved:
            chan = self.channels.get(uid)
            if chan is not None:
                chan.bridge = to
                target.add(uid)
        groups = {self._root(self.channels[u].linkedid) for u in target if u in self.channels}
        first = next(iter(groups))
        for other in groups:
            self._merge(first, other)
        if group := self.groups.get(self._root(first)):
            self._reconnect(group, t)

    def _reachable_agents(self, start: Channel) -> set[str]:
        """Agent channels joined to ``start`` by shared bridges and Local pairs."""
        seen = {start.uniqueid}
        todo = [start]
        found: set[str] = set()
        while todo:
            chan = todo.pop()
            neighbours: list[str] = []
            if chan.bridge is not None:
                neighbours.extend(self._bridges.get(chan.bridge, ()))
            if chan.partner is not None and chan.role == "other" and chan.hungup_at is None:
                neighbours.append(chan.partner)
            for uid in neighbours:
                if uid in seen:
                    continue
                seen.add(uid)
                peer = self.channels.get(uid)
                if peer is None or peer.hungup_at is not None:
                    continue
                if peer.role == "agent":
                    found.add(uid)
                elif peer.role == "other":
                    todo.append(peer)
        return found

    def _reconnect(self, group: _Group, t: float) -> None:
        """Recompute who talks with each customer leg after a bridge changed."""
        for call in group.calls.values():
            if call.ended_at is not None:
                continue
            anchor = self.channels.get(call.uniqueid)
            if anchor is None:
                continue
            now = set() if anchor.hungup_at is not None else self._reachable_agents(anchor)
            if call.direction == "internal":
                now.discard(call.uniqueid)
            for uid in now - call.connected:
                self._connect(group, call, uid, t)
            if call.connected and not now:
                call.talk_ended_at = t
            call.connected = now

    def _connect(self, group: _Group, call: CallState, uid: str, t: float) -> None:
        agent = self.channels[uid]
        segment = self._segment(call, agent)
        if segment.answered_at is None:
            segment.answered_at = t
        if agent.ext and (not call.agents_connected or call.agents_connected[-1] != agent.ext):
            if agent.ext in call.agents_connected:
                call.agents_connected.remove(agent.ext)
            call.agents_connected.append(agent.ext)
        if call.answered_at is None:
            call.answered_at = t
            call.disposition = "answered"
            if call.direction == "internal":
                own = call.segments.get(call.uniqueid)
                if own is not None and own.answered_at is None:
                    own.answered_at = t
            self._emit("answered", call, segment)
            for other in call.segments.values():
                if other is not segment and other.answered_at is None:
                    self._withdraw(call, other)

    # -- calls -------------------------------------------------------------------------

    def _open_call(self, group: _Group, chan: Channel, direction: Direction) -> None:
        if chan.uniqueid in group.calls:
            return
        call = CallState(
            pbx=self.plan.pbx, uniqueid=chan.uniqueid, linkedid=group.linkedid,
            direction=direction, started_at=group.first_at, queue=group.queue,
        )  # fmt: skip
        if direction == "inbound":
            # The trunk's extension is the number dialled in; with DIDs configured, only those.
            dids = self.plan.dids
            call.did = chan.exten if chan.exten and (not dids or chan.exten in dids) else None
            self._set_number(call, chan.caller_num)
        else:
            self._set_number(call, chan.dial_number or _outbound_number(chan))
        call.origin = next((self._tags[u] for u in group.channels if u in self._tags), None)
        group.calls[chan.uniqueid] = call
        for uid in group.channels:
            other = self.channels.get(uid)
            if other is not None and other.role == "agent":
                self._segment(call, other)
        self._reconnect(group, chan.created_at)

    def _set_number(self, call: CallState, raw: str | None) -> None:
        number = _number(raw)
        if number is None:
            return
        call.external_number = number
        key = normalise_phone(number, self.plan.region)
        call.external_e164 = key.e164 if key else None

    def _segment(self, call: CallState, agent: Channel) -> Segment:
        segment = call.segments.get(agent.uniqueid)
        if segment is None:
            segment = call.segments[agent.uniqueid] = Segment(
                uniqueid=agent.uniqueid, channel=agent.name, extension=agent.ext,
                ring_at=agent.created_at,
            )  # fmt: skip
        return segment

    def _agent_appeared(self, group: _Group, chan: Channel, t: float) -> None:
        for call in group.calls.values():
            self._segment(call, chan)
        if not group.calls:
            agents = [
                c for u in group.channels if (c := self.channels.get(u)) and c.role == "agent"
            ]
            trunks = any((c := self.channels.get(u)) and c.role == "trunk" for u in group.channels)
            if len(agents) >= 2 and not trunks:
                first = agents[0]
                call = CallState(
                    pbx=self.plan.pbx, uniqueid=first.uniqueid, linkedid=group.linkedid,
                    direction="internal", started_at=group.first_at,
                )  # fmt: skip
                group.calls[first.uniqueid] = call
                for agent in agents:
                    self._segment(call, agent)

    def _announce_ringing(self, agent: Channel) -> None:
        group = self._group_of(agent)
        if group is None:
            return
        for call in group.calls.values():
            if call.direction != "inbound" or call.ended_at is not None:
                continue
            segment = self._segment(call, agent)
            if not segment.ring_announced and segment.answered_at is None:
                segment.ring_announced = True
                self._emit("ringing", call, segment)

    def _agent_gone(self, group: _Group, agent: Channel, t: float) -> None:
        for call in group.calls.values():
            segment = call.segments.get(agent.uniqueid)
            if segment is None or segment.ended_at is not None:
                continue
            segment.ended_at = t
            if segment.answered_at is None:
                self._withdraw(call, segment)

    def _withdraw(self, call: CallState, segment: Segment) -> None:
        """Take a screen-pop back: the phone stopped ringing without this agent answering."""
        if segment.ring_announced and not segment.ring_withdrawn:
            segment.ring_withdrawn = True
            self._emit("ring_ended", call, segment)

    def _finish(self, group: _Group, t: float) -> None:
        end = group.last_hangup_at if group.last_hangup_at is not None else t
        for uid in group.channels:
            chan = self.channels.get(uid)
            if chan is not None and chan.role == "trunk" and uid not in group.calls:
                self._open_call(group, chan, "outbound")  # dialled out, never rang
        for call in group.calls.values():
            if call.ended_at is not None:
                continue
            self._close(group, call, end)
            self._emit("ended", call, None)
        self._forget(group)

    def _close(self, group: _Group, call: CallState, end: float) -> None:
        call.ended_at = end
        if call.connected:
            call.talk_ended_at = end
            call.connected = set()
        call.recording = group.recording
        call.queue = call.queue or (group.queue if call.direction == "inbound" else None)
        call.voicemail = group.voicemail
        trunk = self.channels.get(call.uniqueid)
        if trunk is not None and call.hangup_cause is None:
            call.hangup_cause = trunk.cause
        call.disposition = self._disposition(call, trunk)
        if call.transfer is None and len(call.agents_connected) > 1:
            call.transfer = "Redirect"  # moved to another agent with no transfer event
        final = call.agents_connected[-1] if call.agents_connected else None
        for uid, segment in call.segments.items():
            agent = self.channels.get(uid)
            if segment.ended_at is None:
                segment.ended_at = agent.hungup_at if agent and agent.hungup_at else end
            if segment.end_reason is None:
                segment.end_reason = self._end_reason(group, call, segment, agent, final)

    def _disposition(self, call: CallState, trunk: Channel | None) -> str:
        if call.answered_at is not None:
            return "answered"
        if call.direction == "outbound":
            status = trunk.dial_status if trunk else None
            if status == "BUSY" or (trunk is not None and trunk.cause == 17):
                return "busy"
            if status in ("CONGESTION", "CHANUNAVAIL"):
                return "failed"
            return "noanswer"
        if call.voicemail:
            return "voicemail"
        statuses = [
            agent.dial_status
            for uid in call.segments
            if (agent := self.channels.get(uid)) is not None
        ]
        if statuses and all(s == "BUSY" for s in statuses):
            return "busy"
        if not statuses and trunk is not None and trunk.cause == 17:
            return "busy"
        return "missed" if call.direction == "inbound" else "noanswer"

    def _end_reason(
        self,
        group: _Group,
        call: CallState,
        segment: Segment,
        agent: Channel | None,
        final: str | None,
    ) -> str:
        if call.direction == "internal" and segment.uniqueid == call.uniqueid:
            return "completed"  # the colleague who called
        if segment.answered_at is not None:
            if transfer := group.transfers.get(segment.uniqueid):
                return transfer
            if segment.extension != final:
                return "redirect"
            return "completed"
        if agent is not None and agent.cause == 26:
            return "answered_elsewhere"
        status = agent.dial_status if agent else None
        if status == "CANCEL":
            return "answered_elsewhere" if call.answered_at is not None else "caller_hangup"
        if status in _DIAL_REASONS:
            return _DIAL_REASONS[status]
        return "no_answer" if call.answered_at is None else "answered_elsewhere"

    def _forget(self, group: _Group) -> None:
        self.groups.pop(group.linkedid, None)
        self._ended[group.linkedid] = None
        for uid in group.channels:
            chan = self.channels.pop(uid, None)
            self._ended[uid] = None
            self._tags.pop(uid, None)
            if chan is not None:
                if self._names.get(chan.name) == uid:
                    del self._names[chan.name]
                if chan.bridge is not None:
                    self._bridges.get(chan.bridge, set()).discard(uid)
        while len(self._ended) > FORGET_AFTER:
            self._ended.popitem(last=False)
        for key in [
            k for k, v in self._parent.items() if v == group.linkedid or k == group.linkedid
        ]:
            self._parent.pop(key, None)

    def _emit(self, update: Update, call: CallState, segment: Segment | None) -> None:
        if self.on_update is not None:
            self.on_update(update, call, segment)

    # -- reconnects --------------------------------------------------------------------

    def rebuild(self, live: Iterable[Mapping[str, Any]], now: float, lost_at: float) -> None:
        """Trust ``CoreShowChannels`` after a reconnect: close what ended in the gap.

        ``live`` is the CoreShowChannel events; ``lost_at`` is when the link went down,
        the last moment anything known was seen alive.
        """
        present = {m.get("Uniqueid", ""): m for m in live}
        for uid, chan in list(self.channels.items()):
            if uid not in present and chan.hungup_at is None:
                group = self._group_of(chan)
                if group is not None:
                    for call in group.calls.values():
                        call.ended_in_gap = True
                self._hangup({"Uniqueid": uid, "Cause": ""}, lost_at)
        for uid, m in present.items():
            known = self.channels.get(uid)
            if known is None and uid and uid not in self._ended:
                seconds = _duration(m.get("Duration", ""))
                fields = dict(m)
                if m.get("Application") == "AppDial":
                    fields["ChannelStateDesc"] = "Down"  # an outgoing leg, not a caller
                self._newchannel(fields, now - seconds)
                known = self.channels.get(uid)
            if known is None:
                continue
            known.state = m.get("ChannelStateDesc", known.state)
            bridge = m.get("BridgeId") or None
            if bridge != known.bridge:
                if bridge:
                    self._bridge_enter({"Uniqueid": uid, "BridgeUniqueid": bridge}, now)
                elif known.bridge:
                    self._bridge_leave({"Uniqueid": uid, "BridgeUniqueid": known.bridge}, now)


def _duration(text: str) -> float:
    try:
        hours, minutes, seconds = (int(p) for p in text.split(":"))
    except ValueError:
        return 0.0
    return float(hours * 3600 + minutes * 60 + seconds)


def _dial_string_number(dial_string: str) -> str | None:
    """``+8613812345678@trunk`` or ``trunk/13812345678`` -> the number dialled."""
    text = dial_string.split("@", 1)[0]
    text = text.rsplit("/", 1)[-1]
    return text if any(ch.isdigit() for ch in text) else None


def _outbound_number(chan: Channel) -> str | None:
    if chan.exten and chan.exten != "s" and any(ch.isdigit() for ch in chan.exten):
        return chan.exten
    return _number(chan.caller_num)
