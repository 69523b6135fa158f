"""The AMI fixtures and their ground truth: every field of every call, compared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from asterisk.plan import ChannelPlan
from store.phones import PhoneRegion

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "ami"
# The lab PBX of the fixtures' README: China, area code 028.
LAB_PLAN = ChannelPlan(pbx="lab", region=PhoneRegion(country="CN", area_code="028"))


def scenarios() -> list[str]:
    if not FIXTURES.is_dir():
        return []
    return sorted(p.name.removesuffix(".truth.json") for p in FIXTURES.glob("*.truth.json"))


def need_fixtures() -> None:
    if not FIXTURES.is_dir():
        pytest.skip(f"the AMI fixtures are not at {FIXTURES}")


def truth_of(scenario: str) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = json.loads(
        (FIXTURES / f"{scenario}.truth.json").read_text(encoding="utf-8")
    )["calls"]
    return calls


def expected_fields(truth: dict[str, Any]) -> dict[str, Any]:
    """A truth record in the replay output's names."""
    return {
        "direction": truth["direction"],
        "external_number": truth["external_number"] or None,
        "did": truth["did"] or None,
        "queue": truth["queue"],
        "agents": truth["agents_connected"],
        "agents_rung": sorted(truth["agents_rung"]),
        "disposition": truth["disposition"],
        "transfer": truth["transfer"],
        "started_at": truth["start_utc"],
        "answered_at": truth["answer_utc"],
        "ended_at": truth["end_utc"],
        "ring_seconds": truth["ring_s"],
        "talk_seconds": truth["talk_s"],
        "recording": truth["recording"],
        "linkedid": truth["linkedids"][0],
    }


def differences(got: dict[str, Any], truth: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Fields where a derived call and the truth disagree: (got, expected)."""
    mine = dict(got, agents_rung=sorted(got["agents_rung"]))
    return {k: (mine.get(k), v) for k, v in expected_fields(truth).items() if mine.get(k) != v}
