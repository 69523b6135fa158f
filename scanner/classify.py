"""What kind of mail this is: a bounce, an auto-reply, bulk, or mail from a person.

Bounces are read from standard DSNs (RFC 3464 ``multipart/report``) and from
the common non-standard ones (qmail, Exchange, Sina/163/QQ and other Chinese
providers' ``退信`` notices): the failed recipients and, where the original is
attached, its Message-ID, so the sent mail can be marked bounced.
"""

from __future__ import annotations

import email.message
import re
from dataclasses import dataclass, field

from scanner.headers import message_ids
from scanner.parse import ParsedMail

BOUNCE_SENDERS = frozenset(
    {"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "mdaemon"}
)
BOUNCE_SENDER_NAMES = re.compile(
    r"mailer[- ]daemon|mail delivery (system|subsystem)|postmaster", re.I
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery status notification(?: \(fail|: (?:error|fail))|delivery fail|"
    r"mail delivery failed|"
    r"returned mail|failure notice|delivery has failed|could not be delivered|not delivered|"
    r"nondeliverable|non-delivery|unzustellbar|non remis|"
    r"退信|投递失败|發送失敗|发送失败|邮件被退回|无法投递|未能送达|退回|无法送达|递送失败",
    re.IGNORECASE,
)
_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|autoreply|out of (the )?office|"
    r"\[?automatyczna odpowied|vacation|away from|abwesen|réponse automatique|"
    r"自动回复|自動回覆|自动答复|休假|不在办公室|外出)",
    re.IGNORECASE,
)
_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
_DSN_FIELD = re.compile(r"^([A-Za-z-]+):\s*(.*)$")


@dataclass
class Classification:
    kind: str  # normal | bounce | auto_reply | bulk
    reason: str = ""
    bounced_recipients: list[str] = field(default_factory=list)
    bounced_message_id: str | None = None


def _dsn_blocks(part: email.message.Message) -> list[dict[str, str]]:
    """The per-message and per-recipient field groups of a message/delivery-status part."""
    payload = part.get_payload()
    if isinstance(payload, list):  # the stdlib parses each group as a headers-only message
        return [
            {k.lower(): str(v) for k, v in block.items()}
            for block in payload
            if isinstance(block, email.message.Message)
        ]
    blocks: list[dict[str, str]] = [{}]
    for line in str(payload or "").splitlines():
        if not line.strip():
            blocks.append({})
        elif match := _DSN_FIELD.match(line):
            blocks[-1][match.group(1).lower()] = match.group(2)
    return [b for b in blocks if b]


def _address_in(field_value: str) -> str | None:
    # "rfc822; user@example.com" or just the address
    match = _ADDRESS.search(field_value.rpartition(";")[2] or field_value)
    return match.group(0).lower() if match else None


def _original(message: email.message.Message) -> tuple[str | None, list[str]]:
    """The Message-ID and recipients of the original mail a bounce carries, if any."""
    for part in message.walk():
        ctype = part.get_content_type()
        headers: email.message.Message | None = None
        if ctype == "message/rfc822":
            inner = part.get_payload()
            first = inner[0] if isinstance(inner, list) and inner else None
            headers = first if isinstance(first, email.message.Message) else None
        elif ctype == "text/rfc822-headers":
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                headers = email.message_from_bytes(raw)
        if isinstance(headers, email.message.Message) and headers.get("message-id"):
            recipients = [
                a.lower()
                for a in _ADDRESS.findall(" ".join(str(v) for v in headers.get_all("to") or []))
            ]
            ids = message_ids(headers.get("message-id"))
            return (ids[0] if ids else None), recipients
    return None, []


def _standard_dsn(message: email.message.Message) -> tuple[list[str], bool] | None:
    if message.get_content_type() != "multipart/report":
        return None
    failed: list[str] = []
    delayed = False
    for part in message.walk():
        if part.get_content_type() not in (
            "message/delivery-status",
            "message/global-delivery-status",
        ):
            continue
        for block in _dsn_blocks(part):
            recipient = _address_in(
                block.get("final-recipient") or block.get("original-recipient") or ""
            )
            action = block.get("action", "").strip().lower()
            status = block.get("status", "").strip()
            if recipient is None:
                continue
            if action == "failed" or status.startswith("5"):
                failed.append(recipient)
            elif action == "delayed" or status.startswith("4"):
                delayed = True
    return failed, delayed


# qmail, Postfix and Sina write each failed recipient as "<user@example.com>:" on its own line.
_RECIPIENT_LINE = re.compile(r"^\s*<([^<>\s]+@[^<>\s]+)>:?", re.MULTILINE)


def _nonstandard_recipients(mail: ParsedMail, original_to: list[str]) -> list[str]:
    listed = [a.lower() for a in _RECIPIENT_LINE.findall(mail.text[:20_000])]
    if listed:
        return list(dict.fromkeys(listed))
    mentioned = [a.lower() for a in _ADDRESS.findall(mail.text[:20_000])]
    if original_to:
        hits = [a for a in original_to if a in mentioned]
        return hits or original_to
    own = {mail.from_addr.lower() if mail.from_addr else ""} | {a.lower() for _, a in mail.to}
    return [
        a for a in dict.fromkeys(mentioned)
        if a not in own and a.partition("@")[0] not in BOUNCE_SENDERS
    ]  # fmt: skip


def classify(mail: ParsedMail) -> Classification:
    """Decide the mail's kind; bounces come first, then auto-replies, then bulk."""
    message = mail.message
    sender_local = (mail.from_addr or "").partition("@")[0].lower()
    original_id, original_to = _original(message) if message is not None else (None, [])

    dsn = _standard_dsn(message) if message is not None else None
    if dsn is not None:
        failed, delayed = dsn
        if failed:
            return Classification("bounce", "DSN", list(dict.fromkeys(failed)), original_id)
        if delayed:
            return Classification("auto_reply", "DSN delay notice")
    from_daemon = sender_local in BOUNCE_SENDERS or bool(
        BOUNCE_SENDER_NAMES.search(mail.from_name or "")
    )
    subject_says = bool(_BOUNCE_SUBJECT.search(mail.subject))
    if from_daemon or (subject_says and (mail.header("auto-submitted") or not mail.from_name)):
        recipients = _nonstandard_recipients(mail, original_to)
        if recipients or subject_says:
            return Classification("bounce", "non-standard bounce", recipients, original_id)

    auto_submitted = (mail.header("auto-submitted") or "").strip().lower()
    precedence = (mail.header("precedence") or "").strip().lower()
    if auto_submitted.startswith("auto-replied"):
        return Classification("auto_reply", "Auto-Submitted: auto-replied")
    for header in ("x-autoreply", "x-autorespond", "x-auto-response-suppress"):
        if mail.header(header) is not None and header != "x-auto-response-suppress":
            return Classification("auto_reply", header)
    if precedence == "auto_reply":
        return Classification("auto_reply", "Precedence: auto_reply")
    if _AUTO_SUBJECT.search(mail.subject):
        return Classification("auto_reply", "subject")
    if auto_submitted.startswith("auto-generated") and not mail.reply_to:
        return Classification("auto_reply", "Auto-Submitted: auto-generated")
    if (
        precedence in ("bulk", "list", "junk")
        or mail.header("list-id")
        or mail.header("list-unsubscribe")
    ):
        return Classification("bulk", "list or bulk headers")
    return Classification("normal")
