"""Who fetched a pixel or followed a link: a person, or a machine acting for one.

Mail clients and gateways fetch on their own: Apple Mail Privacy Protection
loads every image through Apple's proxy whether the mail is read or not;
security gateways open links to scan them, often seconds after delivery;
browsers prefetch.  Gmail's image proxy fetches when the mail is opened, so it
counts as a person.  The CRM's own preview never counts.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

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
# A link followed this soon after sending was followed by a gateway, not a reader.
SCANNER_CLICK_WINDOW_S = 10.0


def _in(ip: str | None, networks: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(ip or "")
    except ValueError:
        return False
    return any(address in net for net in networks)


def classify_hit(
    *,
    method: str,
    headers: Mapping[str, str],
    ip: str | None,
    kind: str,
    preview: bool = False,
    seconds_since_sent: float | None = None,
) -> str:
    """The class of one request for a pixel (``kind="open"``) or a link (``"click"``)."""
    if preview:
        return PREVIEW
    purpose = " ".join(headers.get(h, "") for h in ("Purpose", "Sec-Purpose", "X-Purpose", "X-Moz"))
    if method == "HEAD" or "prefetch" in purpose.lower() or "preview" in purpose.lower():
        return PREFETCH
    agent = headers.get("User-Agent", "").strip()
    if "GoogleImageProxy" in agent:
        return GMAIL_PROXY
    if _in(ip, APPLE_NETWORKS) or agent == "Mozilla/5.0":
        return APPLE_MPP
    if not agent or SCANNER_AGENTS.search(agent):
        return SCANNER
    if kind == "click" and seconds_since_sent is not None:
        if seconds_since_sent < SCANNER_CLICK_WINDOW_S:
            return SCANNER
    return HUMAN
