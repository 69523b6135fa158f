"""Which channel is who on one PBX: trunks, agent phones, and everything else.

AMI names channels, it does not say what they are.  A trunk channel is the
customer's leg; an agent phone channel is a person at a desk; anything else
(Local helper pairs, conference bridges, IVR plumbing) only connects the two.
Each PBX is configured with name patterns; a phone pattern names its extension
with the ``ext`` group.  The defaults cover the usual PJSIP/SIP/IAX2/DAHDI
naming, plus the Local-channel naming of the lab PBX the AMI fixtures were
recorded on (``Local/<ext>@phones-…;1`` phones, ``@from-pstn-…;2`` and
``@pstn-…;1`` trunks), so ``rapport calls replay`` works on those captures
without a configuration.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from store.phones import PhoneRegion

Role = Literal["trunk", "agent", "other"]

DEFAULT_TRUNKS = (
    r"^(?:PJSIP|SIP|IAX2)/(?!\d{2,6}-[0-9a-f]+$)[^/]+-[0-9a-f]+$",
    r"^DAHDI/",
    r"^Local/[^@]+@from-pstn-[0-9a-f]+;2$",
    r"^Local/[^@]+@pstn-[0-9a-f]+;1$",
)
DEFAULT_PHONES = (
    r"^(?:PJSIP|SIP|IAX2)/(?P<ext>\d{2,6})-[0-9a-f]+$",
    r"^Local/(?P<ext>\d{2,6})@phones-[0-9a-f]+;1$",
)


@dataclass(frozen=True)
class ChannelPlan:
    """How one PBX names its channels, and where its trunks are (for caller numbers)."""

    pbx: str = "pbx"
    trunks: tuple[str, ...] = DEFAULT_TRUNKS
    phones: tuple[str, ...] = DEFAULT_PHONES
    region: PhoneRegion = field(default_factory=lambda: PhoneRegion(country="CN"))
    dids: frozenset[str] = frozenset()
    # Extension -> user name, for segments and the screen-pop's addressee.
    extensions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_trunk_res", _compile(self.trunks))
        object.__setattr__(self, "_phone_res", _compile(self.phones))

    def classify(self, channel: str) -> tuple[Role, str | None]:
        """The channel's role and, for an agent phone, its extension."""
        for pattern in self._phone_res:  # type: ignore[attr-defined]
            if match := pattern.search(channel):
                return "agent", match.groupdict().get("ext")
        for pattern in self._trunk_res:  # type: ignore[attr-defined]
            if pattern.search(channel):
                return "trunk", None
        return "other", None


def _compile(patterns: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


def check_patterns(patterns: Iterable[str], what: str) -> list[str]:
    """Problems with configured patterns, for the configuration's error list."""
    problems = []
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as err:
            problems.append(f"{what} pattern {pattern!r} is not a regular expression: {err}")
    return problems
