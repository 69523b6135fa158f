"""``rapport calls``: the phone side's tools for support engineers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from asterisk.plan import ChannelPlan
from asterisk.replay import replay
from daemon.config import Config, PbxConfig
from store.phones import PhoneRegion


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    calls = sub.add_parser("calls", help="phone tools").add_subparsers(
        dest="calls_command", required=True
    )
    play = calls.add_parser(
        "replay", help="print the calls a captured AMI transcript holds, one JSON object each"
    )
    play.add_argument("trace", type=Path, help="raw AMI transcript (TRACE.json beside it is used)")
    play.add_argument("--json", action="store_true", help="one JSON object per line (the default)")
    play.add_argument("--pbx", help="the [[asterisk.pbx]] whose channel naming applies")


def plan_of(pbx: PbxConfig) -> ChannelPlan:
    """A PBX's configuration as the correlator's channel plan."""
    return ChannelPlan(
        pbx=pbx.name,
        trunks=tuple(pbx.trunks),
        phones=tuple(pbx.phones),
        region=PhoneRegion(
            country=pbx.region, area_code=pbx.area_code, outside_prefix=pbx.outside_prefix
        ),
        dids=frozenset(pbx.dids),
        extensions=dict(pbx.extensions),
    )


def _plan(config: Config, name: str | None) -> ChannelPlan | None:
    pbxs = config.asterisk.pbx
    if name is not None:
        chosen = next((p for p in pbxs if p.name == name), None)
        return plan_of(chosen) if chosen else None
    return plan_of(pbxs[0]) if pbxs else ChannelPlan()


def run(config: Config, args: argparse.Namespace) -> int:
    plan = _plan(config, args.pbx)
    if plan is None:
        raise SystemExit(f"rapport: no [[asterisk.pbx]] named {args.pbx!r}")
    if not args.trace.is_file():
        raise SystemExit(f"rapport: {args.trace}: no such file")
    for call in replay(args.trace, plan):
        print(json.dumps(call, ensure_ascii=False))
    return 0
