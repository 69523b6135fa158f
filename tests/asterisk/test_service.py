"""The phone service end to end: a real AMI socket in, call records and screen-pops out.

Each fixture trace is replayed by ``AmiTraceServer`` on a loopback socket, with
its recorded segmentation, to the real ``AmiClient`` inside ``PbxService``;
the calls it writes are checked field by field against the trace's truth.
The server stamps the recorded times (as ``timestampevents=yes`` would) so
times can be compared exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from asterisk import service as service_module
from asterisk.client import AmiSettings
from asterisk.service import PbxService, PhoneSettings, caller_card
from store.activities import log_activity, timeline
from store.callers import find_callers
from store.calls import CallFacts
from store.db import Store, open_store
from store.identity import index_record
from store.migrate import upgrade_to_head
from store.models import Call, CallDisposition, Contact, Direction, Lead, Role, User
from store.users import USERS_CHANGED, create_user
from tests.asterisk.truth import LAB_PLAN, need_fixtures, scenarios, truth_of
from tests.peers.ami import AmiTraceServer, load_trace
from tests.peers.local import WatchedStatus

AGENTS = {"1001": "alice", "1002": "bob", "1003": "carol", "1004": "dave", "1005": "erin"}
PLAN = dataclasses.replace(LAB_PLAN, extensions=AGENTS)


async def _agents(store: Store) -> dict[str, int]:
    async with store.session() as session, session.begin():
        return {ext: (await create_user(session, name, None)).id for ext, name in AGENTS.items()}


@contextlib.asynccontextmanager
async def _running(store: Store, server: AmiTraceServer) -> AsyncIterator[PbxService]:
    service = PbxService(store, PhoneSettings(plan=PLAN, ami=server.settings("lab")))
    status = WatchedStatus()
    task = asyncio.create_task(service.run(status))
    try:
        await asyncio.wait_for(status.is_ready.wait(), 5)
        yield service
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _calls(store: Store, count: int, wait_s: float = 5.0) -> list[Call]:
    """The calls written once ``count`` of them are there (in start order)."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        async with store.session() as session:
            calls = list(
                (await session.scalars(select(Call).order_by(Call.started_at, Call.id))).all()
            )
        if len(calls) >= count or asyncio.get_running_loop().time() > deadline:
            return calls
        await asyncio.sleep(0.02)


def _utc(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _close(a: dt.datetime | None, b: dt.datetime | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs((a - b).total_seconds()) < 0.001


def _check(call: Call, truth: dict[str, Any], users: dict[str, int]) -> None:
    assert call.pbx == "lab"
    assert call.direction.value == truth["direction"]
    assert call.external_number_raw == (truth["external_number"] or None)
    assert call.did == (truth["did"] or None)
    assert call.queue == truth["queue"]
    assert call.disposition.value == truth["disposition"]
    assert call.transfer == truth["transfer"]
    assert call.linkedid == truth["linkedids"][0]
    assert call.recording == truth["recording"]
    assert _close(call.started_at, _utc(truth["start_utc"]))
    assert _close(call.answered_at, _utc(truth["answer_utc"]))
    assert _close(call.ended_at, _utc(truth["end_utc"]))
    assert (call.ring_seconds, call.talk_seconds) == (truth["ring_s"], truth["talk_s"])
    final = truth["agent"] if truth["agents_connected"] else None
    assert call.agent_id == (users[final] if final else None)
    rung = {s.extension for s in call.segments}
    assert rung == set(truth["agents_rung"])
    assert all(s.agent_id == users[s.extension] for s in call.segments if s.extension)
    assert not call.ended_in_gap


@pytest.mark.parametrize("scenario", scenarios() or ["(missing)"])
async def test_each_trace_over_a_socket_gives_its_true_calls(store: Store, scenario: str) -> None:
    need_fixtures()
    users = await _agents(store)
    truth = truth_of(scenario)
    server = AmiTraceServer(load_trace(scenario), timestamps=True, replay_after="CoreShowChannels")
    async with server, _running(store, server):
        await asyncio.wait_for(server.replay_done.wait(), 10)
        calls = await _calls(store, len(truth))
    assert len(calls) == len(truth)
    for call, expected in zip(calls, truth, strict=True):
        _check(call, expected, users)


async def test_a_link_lost_mid_call_still_gives_exactly_one_true_record(store: Store) -> None:
    need_fixtures()
    users = await _agents(store)
    (truth,) = truth_of("inbound_answered")
    # Dropped during the conversation (after both BridgeEnters), back before the hangups.
    server = AmiTraceServer(load_trace("inbound_answered"), timestamps=True,
                            replay_after="CoreShowChannels", drop_at=145, resume_at=150)  # fmt: skip
    async with server, _running(store, server):
        await asyncio.wait_for(server.replay_done.wait(), 10)
        calls = await _calls(store, 1)
        await asyncio.sleep(0.2)  # nothing more may come
        calls = await _calls(store, 1)
    assert server.connections == 2
    (call,) = calls
    _check(call, truth, users)


async def test_a_call_that_ended_while_the_link_was_down_is_closed_once(store: Store) -> None:
    need_fixtures()
    await _agents(store)
    # Dropped mid-call, back after every hangup: CoreShowChannels no longer lists it.
    server = AmiTraceServer(load_trace("inbound_answered"), timestamps=True,
                            replay_after="CoreShowChannels", drop_at=145, resume_at=186)  # fmt: skip
    async with server, _running(store, server):
        await asyncio.wait_for(server.replay_done.wait(), 10)
        calls = await _calls(store, 1)
        await asyncio.sleep(0.2)
        calls = await _calls(store, 2, wait_s=0.2)
    (call,) = calls
    assert call.ended_in_gap and call.disposition.value == "answered"
    assert call.answered_at is not None and call.ended_at is not None
    assert call.external_number_raw == "+8613812345678"


async def test_the_ringing_agents_get_the_pop_and_see_every_match(store: Store) -> None:
    need_fixtures()
    users = await _agents(store)
    async with store.session() as session, session.begin():
        for name in ("王芳", "王芳(公司)"):
            contact = Contact(first_name=name, mobile="186 0000 3333")
            session.add(contact)
            await session.flush()
            await index_record(session, contact, PLAN.region)
    server = AmiTraceServer(load_trace("queue_answered"), timestamps=True,
                            replay_after="CoreShowChannels")  # fmt: skip
    types = ("CallRinging", "CallerIdentified", "CallRingEnded", "CallAnswered", "CallEnded")
    async with store.bus.subscribe(*types) as events, server, _running(store, server):
        seen = [await asyncio.wait_for(events.get(), 5) for _ in range(7)]
    by = [(e.type, e.data.get("user_id")) for e in seen]
    # Each ringing agent gets the ring first, then the card; 1001's ring is withdrawn.
    for ext in ("1002", "1001"):
        assert by.index(("CallRinging", users[ext])) < by.index(("CallerIdentified", users[ext]))
    assert by.index(("CallRinging", users["1001"])) < by.index(("CallRingEnded", users["1001"]))
    assert ("CallAnswered", users["1002"]) in by and ("CallEnded", users["1002"]) in by
    assert by[0] == ("CallRinging", users["1002"])
    ring = seen[0].data
    assert (ring["number"], ring["e164"], ring["did"], ring["queue"]) == (
        "+8618600003333", "+8618600003333", "02885550200", "support",
    )  # fmt: skip
    assert len(ring["records"]) == 2 and all(r.startswith("contact:") for r in ring["records"])
    card = next(e for e in seen if e.type == "CallerIdentified").data["matches"]
    assert sorted(m["name"] for m in card) == ["王芳", "王芳(公司)"]  # two, never one


async def test_click_to_dial_originates_once_for_allowed_users_only(store: Store) -> None:
    users = await _agents(store)
    async with store.session() as session, session.begin():
        blocked = Role(name="no-phone", can_dial=False)
        session.add(blocked)
        await session.flush()
        erin = await session.get_one(User, users["1005"])
        erin.role_id = blocked.id
        stranger = await create_user(session, "frank", None)  # no extension
    server = AmiTraceServer()
    async with store.bus.subscribe("DialStarted", "DialFailed") as results, server:
        async with _running(store, server):
            await store.bus.publish("DialRequested", request="r1", user_id=users["1004"],
                                    number="+86 138 1234 5678", origin="contact:7")  # fmt: skip
            started = await asyncio.wait_for(results.get(), 5)
            await store.bus.publish("DialRequested", request="r1", user_id=users["1004"],
                                    number="+86 138 1234 5678", origin="contact:7")  # fmt: skip
            await store.bus.publish("DialRequested", request="r2", user_id=users["1005"],
                                    number="13812345678")  # fmt: skip
            await store.bus.publish("DialRequested", request="r3", user_id=stranger.id,
                                    number="13812345678")  # fmt: skip
            refused = [await asyncio.wait_for(results.get(), 5) for _ in range(2)]
    assert started.type == "DialStarted" and started.data["request"] == "r1"
    assert [e.type for e in refused] == ["DialFailed", "DialFailed"]
    assert "may not place calls" in refused[0].data["reason"]
    assert "no extension" in refused[1].data["reason"]
    (originate,) = server.originates  # the repeated request r1 dialled nothing more
    assert originate["Channel"] == "Local/1004@from-internal"
    assert originate["Exten"] == "13812345678" and originate["Async"] == "true"
    assert originate["ChannelId"] == started.data["channel_id"]


async def test_an_unknown_caller_is_offered_as_new_and_a_record_made_meanwhile_gets_the_call(
    store: Store,
) -> None:
    need_fixtures()
    users = await _agents(store)
    server = AmiTraceServer(load_trace("inbound_missed"), timestamps=True,
                            replay_after="CoreShowChannels", time_scale=0.1)  # fmt: skip
    async with store.bus.subscribe("CallerIdentified", "CallEnded") as events, server:
        async with _running(store, server):
            card = await asyncio.wait_for(events.get(), 5)
            assert card.data["unknown"] and card.data["matches"] == []
            assert card.data["create"] == {"phone": "4008352114"}
            assert card.data["user_id"] == users["1001"]
            # The agent makes a lead from the pop (the number typed another way).
            async with store.session() as session, session.begin():
                lead = Lead(last_name="新客户", company="", phone="400-835-2114")
                session.add(lead)
                await session.flush()
            await store.bus.publish("CallLinked", call=card.data["call"], record=f"lead:{lead.id}")
            ended = await asyncio.wait_for(events.get(), 5)
    assert ended.type == "CallEnded" and ended.data["disposition"] == "missed"
    async with store.session() as session:
        items = await timeline(session, "lead", lead.id)
    kinds = sorted(a.kind.value for a in items)
    assert kinds == ["call", "task"]  # the call, and the callback task for the missed call


async def test_a_users_own_extension_counts_unless_the_pbx_table_says_otherwise(
    store: Store,
) -> None:
    async with store.session() as session, session.begin():
        own = await create_user(session, "gina", None, phone_extension="3001")
        overridden = await create_user(session, "hank", None, phone_extension="1001")
        alice = await create_user(session, "alice", None)
    ami = AmiSettings(name="lab", host="127.0.0.1", port=5038, username="crm", secret="x")
    users = await PbxService(store, PhoneSettings(plan=PLAN, ami=ami))._load_users()
    assert users["3001"] == own.id
    assert users["1001"] == alice.id != overridden.id  # the PBX's table names alice for 1001


async def test_a_new_extension_rings_its_user_without_a_restart(store: Store) -> None:
    ami = AmiSettings(name="lab", host="127.0.0.1", port=5038, username="crm", secret="x")
    service = PbxService(store, PhoneSettings(plan=PLAN, ami=ami))
    following = asyncio.create_task(service._follow_users())
    try:
        await asyncio.sleep(0.05)  # subscribed
        async with store.session() as session, session.begin():
            ivy = await create_user(session, "ivy", None, phone_extension="3002")
        assert "3002" not in service.users
        await store.bus.publish(USERS_CHANGED, user_id=ivy.id)
        for _ in range(100):
            if service.users.get("3002") == ivy.id:
                break
            await asyncio.sleep(0.02)
        assert service.users.get("3002") == ivy.id
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following


async def test_a_finished_call_waits_for_the_store_and_is_written_once_it_is_back(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "WRITE_RETRY_S", 0.05)
    await upgrade_to_head(sqlite_url)
    database = sqlite_url.removeprefix("sqlite+aiosqlite:///")
    async with open_store(sqlite_url, tmp_path / "blobs") as store:
        ami = AmiSettings(name="lab", host="127.0.0.1", port=5038, username="crm", secret="x")
        service = PbxService(store, PhoneSettings(plan=PLAN, ami=ami))
        writer = asyncio.create_task(service._write_calls())
        try:
            # The store loses its calls table for a while (a real failure, not a stand-in).
            with sqlite3.connect(database) as raw:
                raw.execute("ALTER TABLE calls RENAME TO calls_away")
            facts = CallFacts(pbx="lab", uniqueid="7.1", linkedid="7.1",
                              direction=Direction.INBOUND, started_at=dt.datetime.now(dt.UTC),
                              ended_at=dt.datetime.now(dt.UTC),
                              disposition=CallDisposition.MISSED, external_number="10086")  # fmt: skip
            service._writes.put_nowait(facts)
            await asyncio.sleep(0.3)
            assert not writer.done()  # still trying, nothing dropped
            with sqlite3.connect(database) as raw:
                raw.execute("ALTER TABLE calls_away RENAME TO calls")
            calls = await _calls(store, 1)
            assert [c.uniqueid for c in calls] == ["7.1"]
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)


async def test_the_card_lists_open_tasks_with_due_time_and_overdue_mark(store: Store) -> None:
    now = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)
    async with store.session() as session, session.begin():
        caller = Contact(last_name="王", mobile="186 0000 3333")
        stranger = Contact(last_name="赵", mobile="186 0000 4444")
        session.add_all([caller, stranger])
        await session.flush()
        for record in (caller, stranger):
            await index_record(session, record, PLAN.region)
        for subject, due, status, record in (
            ("回电话", now - dt.timedelta(hours=2), "planned", caller),
            ("发报价", now + dt.timedelta(days=1), "planned", caller),
            ("已完成", now - dt.timedelta(days=1), "done", caller),
            ("别人的", now - dt.timedelta(days=1), "planned", stranger),
        ):
            await log_activity(session, kind="task", subject=subject, records=[record],
                               due_at=due, status=status, occurred_at=now)  # fmt: skip
        lookup = await find_callers(session, "18600003333", PLAN.region)
    [card] = caller_card(lookup, now=now)
    assert [(t["subject"], t["due"], t["overdue"]) for t in card["tasks"]] == [
        ("回电话", (now - dt.timedelta(hours=2)).isoformat(), True),
        ("发报价", (now + dt.timedelta(days=1)).isoformat(), False),
    ]
    assert card["tickets"] == [] and len(card["activities"]) == 3
