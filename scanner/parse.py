"""Parse raw mail with mail-parser and repair what it gets wrong, losing nothing.

mail-parser gives the MIME tree, bodies and attachments; the headers people
read (subject, names, file names) are decoded again by ``scanner.headers``,
which copes with raw 8-bit bytes and broken charset labels.  Problems become
``defects`` on the result; the raw bytes stay in the blob store regardless.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.message
import email.parser
import email.policy
import email.utils
import logging
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import mailparser

from scanner import charsets
from scanner.headers import decode_addresses, decode_text, message_ids
from scanner.html_text import html_to_text
from store.errors import PermanentError

charsets.install()
log = logging.getLogger(__name__)

Address = tuple[str, str]


@dataclass
class ParsedAttachment:
    filename: str
    content_type: str
    payload: bytes
    content_id: str | None = None
    inline: bool = False

    @property
    def size(self) -> int:
        return len(self.payload)


@dataclass
class ParsedMail:
    message_id: str | None
    from_addr: str | None
    from_name: str | None
    reply_to: list[Address]
    to: list[Address]
    cc: list[Address]
    bcc: list[Address]
    subject: str
    date: dt.datetime | None
    text: str
    html: str | None
    attachments: list[ParsedAttachment]
    in_reply_to: list[str]
    references: list[str]
    headers: dict[str, list[str]]
    size: int
    defects: list[str] = field(default_factory=list)
    message: email.message.Message | None = field(default=None, repr=False)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def addresses(self) -> list[Address]:
        """Every (name, address) on the mail: from, reply-to, to, cc, bcc."""
        own = [(self.from_name or "", self.from_addr)] if self.from_addr else []
        return own + self.reply_to + self.to + self.cc + self.bcc


class _RawHeaders:
    """Header values exactly as sent (8-bit bytes as surrogate escapes, never replaced).

    compat32's ``get`` turns an 8-bit value into a Header of "unknown-8bit" whose
    text is replacement characters; ``raw_items`` keeps the bytes recoverable.
    """

    def __init__(self, message: email.message.Message) -> None:
        self._items = [(str(k).lower(), str(v)) for k, v in message.raw_items()]

    def get_all(self, name: str) -> list[str] | None:
        values = [v for k, v in self._items if k == name]
        return values or None

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)


def _date(value: str | None, defects: list[str]) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        defects.append(f"date: unreadable {str(value)[:60]!r}")
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def _attachment(item: dict[str, Any], defects: list[str]) -> ParsedAttachment:
    payload = item.get("payload") or ""
    name = decode_text(item.get("filename") or "", "attachment name", defects)
    if item.get("binary"):
        try:
            data = base64.b64decode(payload)
        except (binascii.Error, ValueError):
            defects.append(f"attachment {name!r}: broken base64; kept as written")
            data = str(payload).encode("ascii", "replace")
    else:
        codec = charsets.codec_for(item.get("charset")) or "utf-8"
        data = (
            str(payload).encode(codec, "surrogateescape")
            if codec != "utf-8"
            else str(payload).encode("utf-8", "surrogateescape")
        )
    disposition = str(item.get("content-disposition") or "").lower()
    cid = str(item.get("content-id") or "").strip().strip("<>") or None
    return ParsedAttachment(
        filename=name,
        content_type=str(item.get("mail_content_type") or "application/octet-stream").lower(),
        payload=data,
        content_id=cid,
        inline=disposition.startswith("inline"),
    )


def _headers(message: _RawHeaders, defects: list[str]) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in message.items():
        key = str(name).lower()
        text = (
            decode_text(str(value), key, defects)
            if key in ("subject", "thread-topic")
            else str(value)
        )
        if any("\udc80" <= ch <= "\udcff" for ch in text):
            text = decode_text(text, key, defects)
        headers.setdefault(key, []).append(text)
    return headers


def _walk_stdlib(
    message: email.message.Message, defects: list[str]
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Bodies and attachments straight from the stdlib tree, where mail-parser gave up."""
    texts: list[str] = []
    htmls: list[str] = []
    items: list[dict[str, Any]] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if ctype in ("text/plain", "text/html") and not filename:
            label = part.get_content_charset()
            codec = charsets.codec_for(label) or "utf-8"
            try:
                body = data.decode(codec)
            except UnicodeDecodeError:
                defects.append(f"{ctype}: not valid {label or 'utf-8'}; replaced")
                body = data.decode(codec, errors="replace")
            (texts if ctype == "text/plain" else htmls).append(body)
        else:
            items.append(
                {
                    "payload": base64.b64encode(data).decode(),
                    "binary": True,
                    "filename": filename or "",
                    "mail_content_type": ctype,
                    "content-id": part.get("content-id"),
                    "content-disposition": part.get("content-disposition"),
                }
            )
    return texts, htmls, items


_END_OF_HEADERS = re.compile(rb"\r?\n\r?\n")


def header_block(raw: bytes) -> bytes:
    """The header lines of a raw message, up to the blank line (the stdlib's header-only
    parser would still read every line of the body)."""
    end = _END_OF_HEADERS.search(raw)
    return raw if end is None else raw[: end.end()]


def parse_mail(raw: bytes) -> ParsedMail:
    """Read a raw RFC 5322 message; raises ``PermanentError`` only for what is not mail at all."""
    try:
        return _parse_mail(raw)
    except RecursionError as err:
        raise PermanentError("MIME structure nested too deeply to parse") from err


def _parse_mail(raw: bytes) -> ParsedMail:
    if not raw.strip():
        raise PermanentError("empty message")
    defects: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = mailparser.parse_from_bytes(raw)
        message: email.message.Message = parsed.message
        text_parts, html_parts = list(parsed.text_plain or []), list(parsed.text_html or [])
        items = list(parsed.attachments or [])
        for entry in parsed.defects or []:
            for part, problems in entry.items() if isinstance(entry, dict) else [("mime", [entry])]:
                defects.extend(f"{part}: {p}" for p in problems)
    except RecursionError:
        raise
    except Exception as err:
        defects.append(f"mail-parser failed ({type(err).__name__}: {err}); read with the stdlib")
        message = email.message_from_bytes(raw)
        text_parts, html_parts, items = _walk_stdlib(message, defects)

    # Headers are read again from the raw bytes: mail-parser's copy has already lost
    # undeclared 8-bit bytes to replacement characters.
    head = _RawHeaders(
        email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(header_block(raw))
    )
    senders = decode_addresses(head.get_all("from"), "from", defects)
    from_name, from_addr = senders[0] if senders else ("", None)
    if from_addr is None and head.get("from"):
        defects.append("from: no address could be read")
    text_parts = [t for t in text_parts if t and t.strip()]
    html_parts = [h for h in html_parts if h and h.strip()]
    html = "\n".join(html_parts) or None
    text = "\n\n".join(text_parts)
    if not text and html:
        text = html_to_text(html)
    attachments = []
    for item in items:
        try:
            attachments.append(_attachment(item, defects))
        except (UnicodeError, ValueError, TypeError) as err:
            defects.append(f"attachment: unreadable ({err}); the raw message keeps it")
    mail = ParsedMail(
        message_id=next(iter(message_ids(head.get("message-id"))), None),
        from_addr=from_addr,
        from_name=from_name or None,
        reply_to=decode_addresses(head.get_all("reply-to"), "reply-to", defects),
        to=decode_addresses(head.get_all("to"), "to", defects),
        cc=decode_addresses(head.get_all("cc"), "cc", defects),
        bcc=decode_addresses(head.get_all("bcc"), "bcc", defects),
        subject=decode_text(head.get("subject"), "subject", defects),
        date=_date(head.get("date"), defects),
        text=text,
        html=html,
        attachments=attachments,
        in_reply_to=message_ids(head.get("in-reply-to")),
        references=message_ids(" ".join(str(v) for v in head.get_all("references") or [])),
        headers=_headers(head, defects),
        size=len(raw),
        defects=defects,
        message=message,
    )
    _drop_nul_characters(mail)
    mail.defects = list(dict.fromkeys(mail.defects))
    return mail


def _no_nul(value: str, where: str, removed: set[str]) -> str:
    if "\x00" in value:
        removed.add(where)
        return value.replace("\x00", "")
    return value


def _drop_nul_characters(mail: ParsedMail) -> None:
    """Remove NUL characters from every decoded text (PostgreSQL text cannot hold them).

    They come from broken mailers and binary pasted into bodies; the raw message keeps them.
    """
    removed: set[str] = set()
    for name in ("subject", "text"):
        setattr(mail, name, _no_nul(getattr(mail, name), name, removed))
    for name in ("html", "from_name", "from_addr", "message_id"):
        value = getattr(mail, name)
        if value is not None:
            setattr(mail, name, _no_nul(value, name, removed))
    for name in ("reply_to", "to", "cc", "bcc"):
        group: list[Address] = getattr(mail, name)
        setattr(mail, name, [(_no_nul(n, name, removed), _no_nul(a, name, removed))
                             for n, a in group])  # fmt: skip
    mail.in_reply_to = [_no_nul(v, "in-reply-to", removed) for v in mail.in_reply_to]
    mail.references = [_no_nul(v, "references", removed) for v in mail.references]
    mail.headers = {
        _no_nul(k, "headers", removed): [_no_nul(v, "headers", removed) for v in values]
        for k, values in mail.headers.items()
    }
    for attachment in mail.attachments:
        attachment.filename = _no_nul(attachment.filename, "attachment name", removed)
        attachment.content_type = _no_nul(attachment.content_type, "attachment type", removed)
    mail.defects = [d.replace("\x00", "") for d in mail.defects]
    if removed:
        mail.defects.append(f"NUL characters removed from: {', '.join(sorted(removed))}")
