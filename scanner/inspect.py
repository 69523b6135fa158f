"""The pipeline's reading of a message as JSON, for ``rapport mail inspect``."""

from __future__ import annotations

from typing import Any

from scanner.classify import classify
from scanner.parse import parse_mail
from store.errors import PermanentError


def _pairs(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"name": name, "address": address} for name, address in pairs]


def inspect_message(raw: bytes) -> dict[str, Any]:
    """Everything the pipeline reads from one raw message, as a JSON-ready dict."""
    try:
        mail = parse_mail(raw)
    except PermanentError as err:
        return {"error": str(err), "size": len(raw)}
    verdict = classify(mail)
    return {
        "message_id": mail.message_id,
        "from_addr": mail.from_addr,
        "from_name": mail.from_name,
        "reply_to": _pairs(mail.reply_to),
        "to": _pairs(mail.to),
        "cc": _pairs(mail.cc),
        "subject": mail.subject,
        "date": mail.date.isoformat() if mail.date else None,
        "text": mail.text,
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type, "size": a.size}
            for a in mail.attachments
        ],
        "kind": verdict.kind,
        "kind_reason": verdict.reason,
        "bounced_recipients": verdict.bounced_recipients,
        "bounced_message_id": verdict.bounced_message_id,
        "in_reply_to": mail.in_reply_to,
        "references": mail.references,
        "size": mail.size,
        "defects": mail.defects,
    }
