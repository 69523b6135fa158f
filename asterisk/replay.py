"""``rapport calls replay``: the calls the correlator derives from a captured transcript."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from panoramisk.message import Message

from asterisk.correlator import CallCorrelator, CallState
from asterisk.plan import ChannelPlan
from asterisk.transcript import read_transcript


def correlate(messages: Iterable[tuple[Message, float]], plan: ChannelPlan) -> list[CallState]:
    """Run events through a correlator; the finished calls in the order they ended.

    Calls still live at the end of the capture are reported too, without an end.
    """
    ended: list[CallState] = []

    def collect(update: str, call: CallState, segment: object) -> None:
        if update == "ended":
            ended.append(call)

    correlator = CallCorrelator(plan, collect)
    for message, received_at in messages:
        if "Event" in message:
            correlator.feed(message, received_at)
    return ended + correlator.live_calls()


def replay(path: Path, plan: ChannelPlan) -> list[dict[str, Any]]:
    """The calls in a transcript as JSON-ready dicts, one per call."""
    return [call.as_dict() for call in correlate(read_transcript(path), plan)]
