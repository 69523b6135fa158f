"""The message each recipient of a sent mail receives: the same mail, their own tracking.

Every copy carries the same Message-ID (replies thread back to the one email)
and the same To and Cc headers; the HTML part's recorded links point at the
tracking listener under the recipient's token, and a pixel is appended.  The
plain-text part stays untracked.  Bulk mail gets RFC 8058 one-click
unsubscribe headers.
"""

from __future__ import annotations

import email.policy
import email.utils
import html as html_lib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage

_LINK = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"']+)\2""", re.IGNORECASE)


@dataclass(frozen=True)
class Sender:
    """The shared outbox identity mail leaves under (and a person to answer, if any)."""

    address: str
    name: str = ""
    reply_to: str | None = None


def new_message_id(sender_address: str) -> str:
    domain = sender_address.rpartition("@")[2] or "rapport.invalid"
    return f"{secrets.token_hex(16)}@{domain}"


def links_of(html: str | None) -> list[str]:
    """The http(s) links of an HTML body, each once, in order: what clicks may lead to."""
    if not html:
        return []
    return list(dict.fromkeys(html_lib.unescape(m.group(3)) for m in _LINK.finditer(html)))


def tracked_html(html: str, base_url: str, token: str, links: Sequence[str]) -> str:
    """``html`` with its recorded links through the tracking listener, and the open pixel."""
    base = base_url.rstrip("/")
    position = {url: n for n, url in enumerate(links)}

    def swap(match: re.Match[str]) -> str:
        n = position.get(html_lib.unescape(match.group(3)))
        if n is None:
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}{base}/c/{token}/{n}{match.group(2)}"

    pixel = f'<img src="{base}/o/{token}.gif" width="1" height="1" alt="" style="display:none">'
    body = _LINK.sub(swap, html)
    closing = re.search(r"</body\s*>", body, re.IGNORECASE)
    if closing is None:
        return body + pixel
    return body[: closing.start()] + pixel + body[closing.start() :]


def build_message(
    *, sender: Sender, message_id: str, to: Sequence[str], cc: Sequence[str], subject: str,
    text: str, html: str | None, in_reply_to: str | None = None,
    unsubscribe_url: str | None = None, attachments: Sequence[Attached] = (),
) -> EmailMessage:  # fmt: skip
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = email.utils.formataddr((sender.name, sender.address))
    if to:
        message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    if sender.reply_to:
        message["Reply-To"] = sender.reply_to
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        message["In-Reply-To"] = f"<{in_reply_to}>"
        message["References"] = f"<{in_reply_to}>"
    if unsubscribe_url:
        message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text or "")
    if html:
        message.add_alternative(html, subtype="html")
    for item in attachments:
        maintype, _, subtype = item.content_type.partition("/")
        if not subtype:
            maintype, subtype = "application", "octet-stream"
        # A Chinese file name goes out RFC 2231-encoded, which every mail client reads.
        message.add_attachment(
            item.data, maintype=maintype, subtype=subtype, filename=item.filename
        )
    return message


@dataclass(frozen=True)
class Attached:
    """A file going out with a mail: a document of the record it is sent from."""

    filename: str
    content_type: str
    data: bytes
