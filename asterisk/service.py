"""One PBX followed: AMI events to calls, calls to the store, rings to agents' screens.

``PbxService`` is the supervisor's service for one ``[[asterisk.pbx]]``.  It
owns an ``AmiClient`` and a ``CallCorrelator`` and turns the correlator's
updates into:

- ``CallRinging`` on the bus the moment an agent's phone rings, addressed to
  that agent's user (the number, DID and queue, no database work in between),
  then ``CallerIdentified`` with the caller's card once it is looked up;
- ``CallRingEnded`` when it stops ringing for them (answered elsewhere, gone),
  ``CallAnswered`` and, once written, ``CallEnded`` with the call's id;
- one call record per customer leg, written when the call ends (``record_call``).

After every (re)connect the correlator is rebuilt from ``CoreShowChannels``
before any later event is applied.  ``DialRequested`` events from the UI or
API become one asynchronous Originate each (agent leg first), never re-sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from asterisk.client import AmiClient, AmiSettings, OriginateUnknown
from asterisk.correlator import CallCorrelator, CallState, Segment, iso
from asterisk.dialing import dialable
from asterisk.plan import ChannelPlan
from store.bus import Event
from store.callers import CallerLookup, PhoneIndexReader, find_callers
from store.calls import CallFacts, SegmentFacts, record_call
from store.db import Store
from store.errors import RapportError, TransientError
from store.models import CallDisposition, Direction, Role, User
from store.service import ServiceStatus
from store.users import USERS_CHANGED

log = logging.getLogger(__name__)

DIAL_REQUESTED = "DialRequested"
CALL_LINKED = "CallLinked"
SIGNAL_QUEUE = 10_000
SEEN_REQUESTS = 1000
WRITE_RETRY_S = 1.0
USERS_REREAD_S = 300.0
WRITE_RETRY_CAP_S = 60.0


@dataclass(frozen=True)
class PhoneSettings:
    plan: ChannelPlan
    ami: AmiSettings
    dial_context: str = "from-internal"
    dial_timeout_s: float = 30.0


def _utc(epoch: float | None) -> dt.datetime | None:
    return None if epoch is None else dt.datetime.fromtimestamp(epoch, dt.UTC)


def call_facts(call: CallState) -> CallFacts:
    """A finished ``CallState`` as the store records it."""
    return CallFacts(
        pbx=call.pbx, uniqueid=call.uniqueid, linkedid=call.linkedid,
        direction=Direction(call.direction),
        started_at=_utc(call.started_at) or dt.datetime.now(dt.UTC),
        answered_at=_utc(call.answered_at), ended_at=_utc(call.ended_at),
        disposition=CallDisposition(call.disposition),
        external_number=call.external_number, external_e164=call.external_e164,
        did=call.did, queue=call.queue, ring_seconds=call.ring_seconds,
        talk_seconds=call.talk_seconds, hangup_cause=call.hangup_cause,
        recording=call.recording, transfer=call.transfer, origin=call.origin,
        linked=tuple(call.linked), ended_in_gap=call.ended_in_gap,
        segments=tuple(
            SegmentFacts(s.extension, s.channel, _utc(s.ring_at), _utc(s.answered_at),
                         _utc(s.ended_at), s.end_reason)
            for s in call.segments.values()
        ),
    )  # fmt: skip


def caller_card(lookup: CallerLookup, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The matches of a caller lookup as small JSON for the screen-pop.

    A task is overdue when its due time is before ``now`` (the lookup's moment).
    """
    now = now or dt.datetime.now(dt.UTC)
    return [
        {
            "record": f"{m.record_type}:{m.record_id}",
            "name": m.name,
            "account": {"id": m.account.id, "name": m.account.name} if m.account else None,
            "owner": m.owner.display_name if m.owner else None,
            "opportunities": [
                {
                    "id": o.id,
                    "name": o.name[:80],
                    "stage": o.stage,
                    "amount": str(o.amount) if o.amount is not None else None,
                    "currency": o.currency,
                }
                for o in m.open_opportunities[:5]
            ],
            "tickets": [],
            "tasks": [
                {
                    "id": task.id,
                    "subject": task.subject[:80],
                    "due": task.due_at.isoformat() if task.due_at else None,
                    "overdue": task.due_at is not None and task.due_at < now,
                }
                for task in m.open_tasks[:5]
            ],
            "activities": [
                {"kind": a.kind, "subject": a.subject[:80], "at": a.occurred_at.isoformat()}
                for a in m.last_activities[:5]
            ],
        }
        for m in lookup.matches[:4]
    ]


class PbxService:
    """Follows one PBX over AMI; see the module docstring."""

    def __init__(self, store: Store, settings: PhoneSettings) -> None:
        self.store = store
        self.settings = settings
        self.plan = settings.plan
        self.name = f"asterisk:{self.plan.pbx}"
        self.correlator = CallCorrelator(self.plan, self._on_update)
        self.client = AmiClient(
            settings.ami,
            on_event=self.correlator.feed,
            on_connected=self._resync,
            on_disconnected=self._lost,
        )
        self.users: dict[str, int] = {}  # extension -> user id
        # Three lanes, so a ring is never behind a card lookup or a call being written.
        self._signals: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(SIGNAL_QUEUE)
        self._lookups: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SIGNAL_QUEUE)
        # Unbounded: a finished call is the customer's record and is never dropped.
        self._writes: asyncio.Queue[CallFacts] = asyncio.Queue()
        self._cards: dict[str, list[dict[str, Any]]] = {}
        self._lost_at: float | None = None
        self._requests: OrderedDict[str, None] = OrderedDict()

    async def run(self, status: ServiceStatus) -> None:
        self.users = await self._load_users()
        index = PhoneIndexReader(self.store.engine)
        sub = self.store.bus.subscribe(DIAL_REQUESTED, CALL_LINKED)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.client.run(status), name=f"{self.name}:ami")
                group.create_task(self._signal(index), name=f"{self.name}:signals")
                group.create_task(self._identify_callers(), name=f"{self.name}:callers")
                group.create_task(self._write_calls(), name=f"{self.name}:writer")
                group.create_task(self._dial_requests(sub), name=f"{self.name}:dial")
                group.create_task(self._follow_users(), name=f"{self.name}:users")
        finally:
            sub.close()
            await index.aclose()

    async def _follow_users(self) -> None:
        """Re-read who answers which extension when users change (and every few minutes,
        in case an announcement was lost), so a new agent's calls pop without a restart."""
        async with self.store.bus.subscribe(USERS_CHANGED, lossy=True) as changes:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changes.get(), USERS_REREAD_S)
                    changes.drain()
                try:
                    self.users = await self._load_users()
                except SQLAlchemyError as err:
                    log.warning("%s: users not re-read: %s", self.name, type(err).__name__)

    async def _load_users(self) -> dict[str, int]:
        """Extension -> user id: each user's own ``phone_extension``, then the PBX's
        ``extensions`` table (which wins where both name one)."""
        names = dict(self.plan.extensions)
        async with self.store.session() as session:
            own = await session.execute(
                select(User.phone_extension, User.id).where(
                    User.phone_extension.is_not(None), User.is_active
                )
            )
            by_extension = {ext: user_id for ext, user_id in own if ext}
            rows = await session.execute(
                select(User.username, User.id).where(User.username.in_(set(names.values())))
            )
            ids = {name: user_id for name, user_id in rows}
        missing = sorted({n for n in names.values() if n not in ids})
        if missing:
            log.warning("%s: extensions name unknown users: %s", self.name, ", ".join(missing))
        by_extension.update({ext: ids[name] for ext, name in names.items() if name in ids})
        return by_extension

    # -- AMI link ----------------------------------------------------------------------

    async def _resync(self, client: AmiClient) -> None:
        """Rebuild live calls from CoreShowChannels before trusting events again."""
        answer = await client.send_action({"Action": "CoreShowChannels"}, timeout=30.0)
        messages = answer if isinstance(answer, list) else [answer]
        live = [m for m in messages if m.get("Event") == "CoreShowChannel"]
        now = time.time()
        self.correlator.rebuild(live, now=now, lost_at=self._lost_at or now)
        self._lost_at = None
        log.info("%s: %d live channels after connecting", self.name, len(live))

    def _lost(self) -> None:
        self._lost_at = time.time()

    # -- correlator updates (synchronous, in event order) --------------------------------

    def _on_update(self, update: str, call: CallState, segment: Segment | None) -> None:
        try:
            if update == "ended":
                self._writes.put_nowait(call_facts(call))
            else:
                self._signals.put_nowait((update, self._ring_facts(call, segment)))
        except asyncio.QueueFull:
            log.error("%s: queue full, %s for %s dropped", self.name, update, call.uniqueid)

    def _ring_facts(self, call: CallState, segment: Segment | None) -> dict[str, Any]:
        ext = segment.extension if segment else None
        return {
            "pbx": call.pbx,
            "call": call.uniqueid,
            "linkedid": call.linkedid,
            "direction": call.direction,
            "number": call.external_number,
            "e164": call.external_e164,
            "did": call.did,
            "queue": call.queue,
            "extension": ext,
            "user_id": self.users.get(ext) if ext else None,
            "at": iso(time.time()),
        }

    async def _signal(self, index: PhoneIndexReader) -> None:
        """Rings, withdrawals and answers go out as they happen: no database work here."""
        names = {
            "ringing": "CallRinging",
            "ring_ended": "CallRingEnded",
            "answered": "CallAnswered",
        }
        while True:
            update, item = await self._signals.get()
            if update == "ringing":
                # Who it is, as ids, from the phone index in tens of microseconds.
                try:
                    refs = await index.match_ids(item["number"], self.plan.region)
                except RapportError:
                    refs = []
                item["records"] = [f"{kind}:{record_id}" for kind, record_id in refs]
            await self.store.bus.publish(names[update], **item)
            if update == "ringing":
                self._lookups.put_nowait(item)

    async def _identify_callers(self) -> None:
        while True:
            ring = await self._lookups.get()
            try:
                await self._identify(ring)
            except RapportError:
                log.exception("%s: looking up the caller of %s failed", self.name, ring["call"])

    async def _write_calls(self) -> None:
        """Write finished calls in order; while the store is away, wait and try again."""
        delay = WRITE_RETRY_S
        while True:
            facts = await self._writes.get()
            while True:
                try:
                    await self._write(facts)
                    break
                except (TransientError, OperationalError, OSError) as err:
                    log.warning("%s: call %s not written yet (%s); retrying in %.0f s",
                                self.name, facts.uniqueid, type(err).__name__, delay)  # fmt: skip
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, WRITE_RETRY_CAP_S)
                except (RapportError, SQLAlchemyError):
                    log.exception("%s: call %s cannot be written", self.name, facts.uniqueid)
                    break
            delay = WRITE_RETRY_S
            self._cards.pop(facts.uniqueid, None)

    async def _identify(self, ring: dict[str, Any]) -> None:
        """Who is calling: every match, shown as many as there are (never silently one)."""
        card = self._cards.get(ring["call"])
        if card is None:
            async with self.store.session() as session:
                lookup = await find_callers(session, ring["number"], self.plan.region)
            card = self._cards[ring["call"]] = caller_card(lookup)
        # An unknown caller: the pop offers a new lead or contact with the number filled in.
        create = {"phone": ring["number"]} if not card and ring["number"] else None
        await self.store.bus.publish(
            "CallerIdentified",
            call=ring["call"], pbx=ring["pbx"], user_id=ring["user_id"],
            extension=ring["extension"], number=ring["number"], matches=card,
            unknown=not card, create=create,
        )  # fmt: skip

    async def _write(self, facts: CallFacts) -> None:
        async with self.store.session() as session, session.begin():
            result = await record_call(session, facts, self.plan.region, self.users)
        if result.created:
            await self.store.bus.publish(
                "CallEnded",
                pbx=facts.pbx, call=facts.uniqueid, call_id=result.call_id,
                disposition=facts.disposition.value, number=facts.external_number,
                callback_id=result.callback_id, user_id=self._final_agent(facts),
            )  # fmt: skip

    def _final_agent(self, facts: CallFacts) -> int | None:
        """Who had the call last: the pop on their screen closes with it."""
        talked = [s.extension for s in facts.segments if s.answered_at and s.extension]
        return self.users.get(talked[-1]) if talked else None

    # -- click-to-dial -----------------------------------------------------------------

    async def _dial_requests(self, sub: Any) -> None:
        async for event in sub:
            if event.data.get("pbx") not in (None, self.plan.pbx):
                continue
            if event.type == CALL_LINKED:
                # A record made from the screen-pop while the call goes on: file it there too.
                self.correlator.link(str(event.data.get("call")), str(event.data.get("record")))
                continue
            try:
                await self.dial(event)
            except RapportError as err:
                await self.store.bus.publish(
                    "DialFailed", request=event.data.get("request"), reason=str(err)
                )

    async def dial(self, event: Event) -> str | None:
        """Originate one requested call: the agent's phone first, then the customer.

        Returns the ChannelId the call will carry; None for a request seen before.
        """
        data = event.data
        request = str(data.get("request") or event.id)
        if request in self._requests:
            return None
        self._requests[request] = None
        while len(self._requests) > SEEN_REQUESTS:
            self._requests.popitem(last=False)
        user_id = int(data["user_id"])
        ext = await self._extension_allowed(user_id)
        number = dialable(str(data.get("number", "")), self.plan.region)
        if number is None:
            raise RapportError(f"nothing to dial in {data.get('number')!r}")
        channel_id = f"rapport-{uuid.uuid4().hex[:20]}"
        origin = data.get("origin")
        if origin:
            self.correlator.tag(channel_id, str(origin))
        context = self.settings.dial_context
        fields: dict[str, str | list[str]] = {
            "Channel": f"Local/{ext}@{context}",
            "Context": context,
            "Exten": number,
            "Priority": "1",
            "CallerID": f"<{ext}>",
            "Timeout": str(int(self.settings.dial_timeout_s * 1000)),
            "ChannelId": channel_id,
            "OtherChannelId": channel_id + "-2",
            "Variable": [f"RAPPORT_ORIGIN={origin or ''}", f"RAPPORT_REQUEST={request}"],
        }
        try:
            answer = await self.client.originate(fields)
        except OriginateUnknown:
            log.warning(
                "%s: dial request %s: link lost before the PBX answered", self.name, request
            )
            raise
        if answer.get("Response") != "Success":
            raise TransientError(f"the PBX refused the call: {answer.get('Message', '')}")
        await self.store.bus.publish(
            "DialStarted", request=request, channel_id=channel_id, user_id=user_id,
            number=number, origin=origin,
        )  # fmt: skip
        return channel_id

    async def _extension_allowed(self, user_id: int) -> str:
        """The user's extension, if their role lets them call."""
        async with self.store.session() as session:
            row = (
                await session.execute(
                    select(User.username, User.is_active, Role.can_dial)
                    .join(Role, Role.id == User.role_id)
                    .where(User.id == user_id)
                )
            ).first()
        if row is None or not row.is_active or not row.can_dial:
            raise RapportError(f"user {user_id} may not place calls")
        ext = next((e for e, uid in self.users.items() if uid == user_id), None)
        if ext is None:
            raise RapportError(f"user {row.username!r} has no extension on {self.plan.pbx}")
        return ext
