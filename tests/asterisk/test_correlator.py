"""CallCorrelator against real Asterisk 22 transcripts and their ground truth."""

from __future__ import annotations

import dataclasses
import io
import json
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from asterisk.correlator import CallCorrelator, CallState, Segment
from asterisk.plan import ChannelPlan
from asterisk.replay import correlate, replay
from asterisk.transcript import read_transcript
from daemon.cli import main
from tests.asterisk.truth import (
    FIXTURES,
    LAB_PLAN,
    differences,
    need_fixtures,
    scenarios,
    truth_of,
)


@pytest.mark.parametrize("scenario", scenarios() or ["(missing)"])
def test_every_field_of_every_call_matches_the_truth(scenario: str) -> None:
    need_fixtures()
    got = replay(FIXTURES / f"{scenario}.ami", LAB_PLAN)
    truth = truth_of(scenario)
    assert len(got) == len(truth)
    for call, expected in zip(got, truth, strict=True):
        assert differences(call, expected) == {}
        assert call["pbx"] == "lab"
        assert call["uniqueid"]
        # Every agent who rang has a segment with a reason it ended.
        assert {s["extension"] for s in call["segments"]} == set(expected["agents_rung"])
        assert all(s["end_reason"] for s in call["segments"])


def test_segments_say_why_each_agent_stopped() -> None:
    need_fixtures()

    def reasons(scenario: str) -> list[tuple[str, str]]:
        (call,) = replay(FIXTURES / f"{scenario}.ami", LAB_PLAN)
        return [(s["extension"], s["end_reason"]) for s in call["segments"]]

    assert reasons("queue_answered") == [("1002", "completed"), ("1001", "answered_elsewhere")]
    assert reasons("transfer_blind") == [("1001", "blind_transfer"), ("1003", "completed")]
    assert reasons("transfer_attended") == [("1001", "attended_transfer"), ("1002", "completed")]
    assert reasons("transfer_redirect") == [("1001", "redirect"), ("1002", "completed")]
    assert reasons("inbound_busy") == [("1003", "busy")]
    assert reasons("inbound_missed") == [("1001", "caller_hangup")]
    abandoned = reasons("queue_abandoned")
    assert abandoned[:4] == [("1002", "no_answer"), ("1001", "no_answer")] * 2
    assert abandoned[4:] == [("1002", "caller_hangup"), ("1001", "caller_hangup")]


def test_external_numbers_are_kept_raw_and_in_e164() -> None:
    need_fixtures()
    (landline,) = replay(FIXTURES / "inbound_agent_hangup.ami", LAB_PLAN)
    assert landline["external_number"] == "02887654321"
    assert landline["external_e164"] == "+862887654321"
    (anonymous,) = replay(FIXTURES / "inbound_anonymous.ami", LAB_PLAN)
    assert anonymous["external_number"] == "anonymous" and anonymous["external_e164"] is None
    (internal,) = replay(FIXTURES / "internal.ami", LAB_PLAN)
    assert internal["external_number"] is None and internal["direction"] == "internal"


def _updates(scenario: str) -> list[tuple[str, str | None]]:
    seen: list[tuple[str, str | None]] = []

    def record(update: str, call: CallState, segment: Segment | None) -> None:
        seen.append((update, segment.extension if segment else None))

    correlator = CallCorrelator(LAB_PLAN, record)
    for message, at in read_transcript(FIXTURES / f"{scenario}.ami"):
        correlator.feed(message, at)
    return seen


def test_ringing_is_announced_to_each_agent_and_withdrawn() -> None:
    need_fixtures()
    assert _updates("queue_answered") == [
        ("ringing", "1002"),
        ("ringing", "1001"),
        ("ring_ended", "1001"),  # the queue hangs up 1001's leg as 1002 picks up
        ("answered", "1002"),
        ("ended", None),
    ]
    assert _updates("inbound_missed") == [
        ("ringing", "1001"), ("ring_ended", "1001"), ("ended", None),
    ]  # fmt: skip
    # Click-to-dial rings the agent's own phone first: no screen-pop for that.
    assert _updates("outbound_answered") == [("answered", "1004"), ("ended", None)]


def test_late_and_repeated_events_change_nothing() -> None:
    need_fixtures()
    messages = list(read_transcript(FIXTURES / "transfer_attended.ami"))
    once = [c.as_dict() for c in correlate(messages, LAB_PLAN)]
    # Every event twice, and the whole trace again after the call ended.
    doubled = [pair for pair in messages for _ in range(2)]
    again = [c.as_dict() for c in correlate(doubled + messages, LAB_PLAN)]
    assert again == once


def _event(name: str, **fields: str) -> dict[str, str]:
    return {"Event": name, **fields}


def test_linkedids_merge_when_a_bridge_joins_two_calls() -> None:
    ended: list[CallState] = []
    correlator = CallCorrelator(LAB_PLAN, lambda u, c, s: ended.append(c) if u == "ended" else None)
    trunk = "Local/02885550100@from-pstn-000000aa;2"
    agent = "Local/1001@phones-000000bb;1"
    feed = correlator.feed
    feed(
        _event(
            "Newchannel",
            Channel=trunk,
            Uniqueid="100.1",
            Linkedid="100.1",
            ChannelStateDesc="Ring",
            CallerIDNum="13812345678",
            Exten="02885550100",
        ),
        1.0,
    )
    # The agent's leg started as a call of its own (a pickup), newer Linkedid.
    feed(
        _event(
            "Newchannel",
            Channel=agent,
            Uniqueid="105.7",
            Linkedid="105.7",
            ChannelStateDesc="Down",
            Exten="1001",
        ),
        2.0,
    )
    feed(
        _event(
            "BridgeEnter", Channel=trunk, Uniqueid="100.1", Linkedid="100.1", BridgeUniqueid="b1"
        ),
        3.0,
    )
    feed(
        _event(
            "BridgeEnter", Channel=agent, Uniqueid="105.7", Linkedid="105.7", BridgeUniqueid="b1"
        ),
        3.5,
    )
    # Asterisk now reports the agent's leg under the oldest Linkedid.
    feed(
        _event(
            "BridgeLeave", Channel=agent, Uniqueid="105.7", Linkedid="100.1", BridgeUniqueid="b1"
        ),
        9.0,
    )
    feed(_event("Hangup", Channel=agent, Uniqueid="105.7", Linkedid="100.1", Cause="16"), 9.0)
    assert ended == []  # the customer is still there
    feed(_event("Hangup", Channel=trunk, Uniqueid="100.1", Linkedid="100.1", Cause="16"), 9.5)
    (call,) = ended
    assert call.linkedid == "100.1" and call.uniqueid == "100.1"
    assert call.answered_at == 3.5 and call.talk_seconds == 5.5 and call.ended_at == 9.5
    assert call.agents == ["1001"] and call.disposition == "answered"
    assert call.external_e164 == "+8613812345678"


def test_an_event_timestamp_wins_over_the_receive_time() -> None:
    ended: list[CallState] = []
    correlator = CallCorrelator(LAB_PLAN, lambda u, c, s: ended.append(c) if u == "ended" else None)
    trunk = "PJSIP/trunk-00000001"
    correlator.feed(
        _event(
            "Newchannel",
            Channel=trunk,
            Uniqueid="1.1",
            Linkedid="1.1",
            ChannelStateDesc="Ring",
            CallerIDNum="10086",
            Timestamp="1700000000.250000",
        ),
        5.0,
    )
    correlator.feed(
        _event(
            "Hangup",
            Channel=trunk,
            Uniqueid="1.1",
            Linkedid="1.1",
            Cause="16",
            Timestamp="1700000004.750000",
        ),
        6.0,
    )
    (call,) = ended
    assert (call.started_at, call.ended_at) == (1700000000.25, 1700000004.75)
    assert call.external_number == "10086" and call.external_e164 is None
    assert call.disposition == "missed"


def test_rapport_calls_replay_prints_one_json_object_per_call(tmp_path: Path) -> None:
    need_fixtures()
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(
            [
                "--config",
                str(_empty_config(tmp_path)),
                "calls",
                "replay",
                str(FIXTURES / "queue_answered.ami"),
                "--json",
            ]
        )
    assert code == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    call: dict[str, Any] = json.loads(lines[0])
    wanted = {
        "pbx",
        "linkedid",
        "uniqueid",
        "direction",
        "external_number",
        "did",
        "queue",
        "agents",
        "started_at",
        "answered_at",
        "ended_at",
        "ring_seconds",
        "talk_seconds",
        "disposition",
        "hangup_cause",
        "recording",
        "segments",
    }
    assert wanted <= set(call)
    assert call["queue"] == "support" and call["agents"] == ["1002"]
    assert call["started_at"].endswith("Z")


def _empty_config(tmp_path: Path) -> Path:
    path = tmp_path / "rapport.toml"
    path.write_text("", encoding="utf-8")
    return path


def test_a_click_to_dial_call_carries_its_origin_and_records_linked_meanwhile() -> None:
    ended: list[CallState] = []
    correlator = CallCorrelator(LAB_PLAN, lambda u, c, s: ended.append(c) if u == "ended" else None)
    correlator.tag("rapport-abc", "contact:7")
    feed = correlator.feed
    # Originate's own Local pair carries our ChannelId; the agent's phone and the trunk follow.
    feed(
        _event(
            "Newchannel",
            Channel="Local/1004@from-internal-00000001;1",
            Uniqueid="rapport-abc",
            Linkedid="rapport-abc",
            ChannelStateDesc="Down",
            Exten="1004",
        ),
        1.0,
    )
    feed(
        _event(
            "Newchannel",
            Channel="PJSIP/1004-00000002",
            Uniqueid="200.2",
            Linkedid="rapport-abc",
            ChannelStateDesc="Down",
            Exten="1004",
        ),
        1.1,
    )
    feed(
        _event(
            "Newchannel",
            Channel="PJSIP/trunk-00000003",
            Uniqueid="200.3",
            Linkedid="rapport-abc",
            ChannelStateDesc="Down",
            Exten="s",
        ),
        4.0,
    )
    feed(
        _event(
            "DialBegin",
            DestChannel="PJSIP/trunk-00000003",
            DestUniqueid="200.3",
            DestCallerIDNum="13812345678",
            DialString="13812345678@trunk",
        ),
        4.0,
    )
    assert correlator.link("200.3", "lead:5")
    for uid, name in (
        ("200.3", "PJSIP/trunk-00000003"),
        ("200.2", "PJSIP/1004-00000002"),
        ("rapport-abc", "Local/1004@from-internal-00000001;1"),
    ):
        feed(_event("Hangup", Channel=name, Uniqueid=uid, Linkedid="rapport-abc", Cause="16"), 9.0)
    (call,) = ended
    assert call.direction == "outbound" and call.origin == "contact:7"
    assert call.linked == ["lead:5"] and call.external_e164 == "+8613812345678"
    assert call.disposition == "noanswer"
    assert not correlator.link("200.3", "lead:6")  # over: nothing to link any more


def _ended(plan: ChannelPlan = LAB_PLAN) -> tuple[CallCorrelator, list[CallState]]:
    ended: list[CallState] = []
    return CallCorrelator(plan, lambda u, c, s: ended.append(c) if u == "ended" else None), ended


def test_a_caller_sent_to_voicemail_is_a_voicemail_and_the_did_must_be_configured() -> None:
    plan = dataclasses.replace(LAB_PLAN, dids=frozenset({"02885550100"}))
    correlator, ended = _ended(plan)
    for uid, exten in (("1.1", "02885550100"), ("2.1", "s")):
        trunk = f"PJSIP/trunk-0000000{uid[0]}"
        correlator.feed(_event("Newchannel", Channel=trunk, Uniqueid=uid, Linkedid=uid,
                               ChannelStateDesc="Ring", CallerIDNum="13812345678",
                               Exten=exten), 1.0)  # fmt: skip
        correlator.feed(_event("Newexten", Channel=trunk, Uniqueid=uid, Linkedid=uid,
                               Application="VoiceMail", AppData="1001@default"), 6.0)  # fmt: skip
        correlator.feed(
            _event("Hangup", Channel=trunk, Uniqueid=uid, Linkedid=uid, Cause="16"), 30.0
        )
    first, second = ended
    assert first.disposition == "voicemail" and first.did == "02885550100"
    assert second.did is None  # "s" is no number anyone dialled


def test_a_call_born_while_the_link_was_down_is_picked_up_from_core_show_channels() -> None:
    correlator, ended = _ended()
    live = [
        {"Event": "CoreShowChannel", "Channel": "PJSIP/trunk-0000000a", "Uniqueid": "50.1",
         "Linkedid": "50.1", "ChannelStateDesc": "Up", "CallerIDNum": "+8613900001111",
         "Exten": "02885550100", "Application": "Dial", "BridgeId": "b-9", "Duration": "00:01:05"},
        {"Event": "CoreShowChannel", "Channel": "PJSIP/1002-0000000b", "Uniqueid": "50.2",
         "Linkedid": "50.1", "ChannelStateDesc": "Up", "CallerIDNum": "1002",
         "Exten": "1002", "Application": "AppDial", "BridgeId": "b-9", "Duration": "00:01:00"},
    ]  # fmt: skip
    correlator.rebuild(live, now=1000.0, lost_at=990.0)
    (call,) = correlator.live_calls()
    assert call.direction == "inbound" and call.started_at == 1000.0 - 65
    assert call.answered_at == 1000.0 and call.agents == ["1002"]
    correlator.feed(_event("Hangup", Channel="PJSIP/1002-0000000b", Uniqueid="50.2",
                           Linkedid="50.1", Cause="16"), 1010.0)  # fmt: skip
    correlator.feed(_event("Hangup", Channel="PJSIP/trunk-0000000a", Uniqueid="50.1",
                           Linkedid="50.1", Cause="16"), 1010.5)  # fmt: skip
    (done,) = ended
    assert done.disposition == "answered" and done.talk_seconds == 10.0
    assert done.external_e164 == "+8613900001111" and not done.ended_in_gap
    # A second rebuild that no longer lists it changes nothing: it is over.
    correlator.rebuild([], now=1020.0, lost_at=1015.0)
    assert len(ended) == 1
