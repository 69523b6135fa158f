"""Who fetched a pixel or followed a link: a person, or a machine acting for one.

Mail clients and gateways fetch on their own: Apple Mail Privacy Protection
loads every image through Apple's proxy whether the mail is read or not;
security gateways open links to scan them, often seconds after delivery;
browsers prefetch.  Gmail's image proxy fetches when the mail is opened, so it
counts as a person.  The CRM's own preview never counts.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping

from aiohttp import hdrs
from multidict import istr

HUMAN = "human"
GMAIL_PROXY = "gmail_proxy"
APPLE_MPP = "apple_mpp"
SCANNER = "scanner"
PREFETCH = "prefetch"
PREVIEW = "preview"
# Classes that count as the recipient having looked at the mail.
HUMAN_CLASSES = frozenset({HUMAN, GMAIL_PROXY})
# Classes that are counted, but as machine opens.
MACHINE_CLASSES = frozenset({APPLE_MPP, SCANNER, PREFETCH})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
APPLE_NETWORKS: tuple[Network, ...] = (ipaddress.ip_network("17.0.0.0/8"),)
SCANNER_AGENTS = re.compile(
    r"barracuda|mimecast|proofpoint|urldefense|messagelabs|symantec|forcepoint|trendmicro|"
    r"sophos|fortinet|fortiguard|cisco|ironport|safelinks|microsoft office|ms-office|"
    r"microsoft defender|bingpreview|google-safety|googlebot|bot\b|spider|crawler|scanner|"
    r"python-requests|python-urllib|aiohttp|go-http-client|curl/|wget/|java/|okhttp|"
    r"headlesschrome|phantomjs|slackbot|facebookexternalhit|skypeuripreview",
    re.IGNORECASE,
)
# Headers by which browsers and proxies say a fetch is a prefetch or a preview
# (multidict's own case-insensitive strings: a look-up need not fold the case).
PURPOSE_HEADERS = tuple(istr(name) for name in ("Purpose", "Sec-Purpose", "X-Purpose", "X-Moz"))
# A link followed this soon after sending was followed by a gateway, not a reader.
SCANNER_CLICK_WINDOW_S = 10.0


@functools.lru_cache(maxsize=4096)
def _apple(ip: str | None) -> bool:
    try:
        address = ipaddress.ip_address(ip or "")
    except ValueError:
        return False
    return any(address in net for net in APPLE_NETWORKS)


@functools.lru_cache(maxsize=4096)
def _by_agent(agent: str) -> str:
    """The class a User-Agent alone gives (the same few agents come again and again)."""
    if "GoogleImageProxy" in agent:
        return GMAIL_PROXY
    if agent == "Mozilla/5.0":
        return APPLE_MPP
    if not agent or SCANNER_AGENTS.search(agent):
        return SCANNER
    return HUMAN


@functools.lru_cache(maxsize=4096)
def _by_client(agent: str, ip: str | None) -> str:
    """The class a User-Agent and an address give (one cache look-up on the pixel's path)."""
    by_agent = _by_agent(agent.strip())
    if by_agent == GMAIL_PROXY:
        return GMAIL_PROXY
    if _apple(ip):
        return APPLE_MPP
    return by_agent


def classify_hit(
    *,
    method: str,
    headers: Mapping[str, str],
    ip: str | None,
    kind: str,
    preview: bool = False,
    seconds_since_sent: float | None = None,
    user_agent: str | None = None,
) -> str:
    """The class of one request for a pixel (``kind="open"``) or a link (``"click"``).

    ``user_agent`` saves looking the header up again when the caller has it.
    """
    if preview:
        return PREVIEW
    if method == "HEAD":
        return PREFETCH
    for header in PURPOSE_HEADERS:
        value = headers.get(header)
        if value and ("prefetch" in value.lower() or "preview" in value.lower()):
            return PREFETCH
    if user_agent is None:
        user_agent = headers.get(hdrs.USER_AGENT, "")
    by_client = _by_client(user_agent, ip)
    if by_client != HUMAN:
        return by_client
    if kind == "click" and seconds_since_sent is not None:
        if seconds_since_sent < SCANNER_CLICK_WINDOW_S:
            return SCANNER
    return HUMAN
