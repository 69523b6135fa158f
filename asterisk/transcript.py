"""Raw AMI transcripts, as support engineers capture them from a customer's PBX.

A transcript is the bytes an AMI client received: a banner line, then messages
of ``Key: Value`` lines each ended by a blank line.  Asterisk stamps events
only with ``timestampevents=yes``; without that, a sidecar ``TRACE.json``
recorded beside the capture gives each message's receive time (``t0_epoch``
plus ``messages[].t``), as the live daemon uses the time it received an event.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from panoramisk.message import Message

from asterisk.correlator import event_time

EOM = b"\r\n\r\n"


def parse_message(raw: bytes) -> Message | None:
    """One AMI message's bytes as a panoramisk ``Message``; None for the banner or noise."""
    text = raw.decode("utf-8", "replace").strip()
    return Message.from_line(text) if text else None


def _split(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Messages with their byte offsets; the banner (one line, no blank line) is skipped."""
    offset = 0
    if data.startswith(b"Asterisk Call Manager/"):
        offset = data.index(b"\r\n") + 2 if b"\r\n" in data else len(data)
    data_len = len(data)
    while offset < data_len:
        end = data.find(EOM, offset)
        if end < 0:
            end = data_len
        yield offset, data[offset:end]
        offset = end + len(EOM)


def read_transcript(path: Path) -> Iterator[tuple[Message, float]]:
    """Every message of a transcript with the time it was received (epoch seconds).

    With a sidecar ``.json`` the recorded receive times are used; without one, a
    message's ``Timestamp`` header when present, else the time of the previous one.
    """
    data = path.read_bytes()
    sidecar = path.with_suffix(".json")
    if sidecar.exists():
        meta: dict[str, Any] = json.loads(sidecar.read_text(encoding="utf-8"))
        t0 = float(meta["t0_epoch"])
        for item in meta.get("messages", []):
            if item.get("kind") == "banner":
                continue
            start, length = int(item["offset"]), int(item["length"])
            message = parse_message(data[start : start + length])
            if message is not None:
                yield message, t0 + float(item["t"])
        return
    last = 0.0
    for _, raw in _split(data):
        message = parse_message(raw)
        if message is None:
            continue
        last = event_time(message, last)
        yield message, last
