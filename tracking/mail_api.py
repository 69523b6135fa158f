"""Mail from the JSON API: a request body in, a queued mail (or a template preview) out.

The web layer does not import ``tracking``; the daemon hands it an ``OutboxApi``.
A body names the recipients and either the words (``subject``, ``text``,
``html``) or a ``template`` with the records to merge; ``records`` are the CRM
records the mail is filed on and ``documents`` the record documents to attach.
Every problem comes back at once as a ``ValidationError`` (field -> message).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from store.activities import RecordRef
from store.db import Store
from store.errors import NotFound, ValidationError
from store.models import RECORD_TYPES, User
from tracking.compose import Sender
from tracking.outbox import Draft, queue_mail
from tracking.templates import Rendered, find_template, merge_fields, render

TEMPLATE_RECORDS = ("contact", "lead", "account", "opportunity")


def _strings(body: Mapping[str, Any], key: str, errors: dict[str, str]) -> list[str]:
    value = body.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors[key] = "a list of addresses"
        return []
    return value


def _records(body: Mapping[str, Any], errors: dict[str, str]) -> list[RecordRef]:
    refs: list[RecordRef] = []
    for item in body.get("records", []) if isinstance(body.get("records", []), list) else [None]:
        kind, _, number = str(item).partition(":")
        if kind not in RECORD_TYPES or not number.isdigit():
            errors["records"] = f"{item!r} is not a record such as 'contact:12'"
            continue
        refs.append((kind, int(number)))
    return refs


def _documents(body: Mapping[str, Any], errors: dict[str, str]) -> list[int]:
    value = body.get("documents", [])
    if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
        errors["documents"] = "a list of document ids"
        return []
    return value


class OutboxApi:
    """Queue mail and preview templates for API callers, as the shared outbox identity."""

    def __init__(self, store: Store, sender: Sender) -> None:
        self.store = store
        self.sender = sender

    async def _sender_for(self, user_id: int) -> Sender:
        async with self.store.session() as session:
            user = await session.get(User, user_id)
        reply_to = user.email if user is not None and user.email else self.sender.reply_to
        return dataclasses.replace(self.sender, reply_to=reply_to)

    async def _render(self, user_id: int, template: Any, errors: dict[str, str]) -> Rendered | None:
        if not isinstance(template, Mapping) or not isinstance(template.get("name"), str):
            errors["template"] = "needs a name, e.g. {'name': 'quote', 'contact_id': 12}"
            return None
        ids: dict[str, int | None] = {}
        for kind in TEMPLATE_RECORDS:
            value = template.get(f"{kind}_id")
            if value is not None and not isinstance(value, int):
                errors[f"template.{kind}_id"] = "an id"
            ids[f"{kind}_id"] = value if isinstance(value, int) else None
        if errors:
            return None
        try:
            async with self.store.session() as session:
                found = await find_template(session, template["name"], template.get("language", ""))
                fields = await merge_fields(session, sender_id=user_id, **ids)
        except NotFound as err:
            errors["template"] = str(err)
            return None
        return render(found, fields)

    async def preview(self, user_id: int, body: Mapping[str, Any]) -> dict[str, str | None]:
        """What a template gives for the records named, without queueing anything."""
        errors: dict[str, str] = {}
        rendered = await self._render(user_id, body.get("template", body), errors)
        if rendered is None:
            raise ValidationError(errors)
        return {"subject": rendered.subject, "text": rendered.text, "html": rendered.html}

    async def send(self, user_id: int, body: Mapping[str, Any]) -> int:
        """Queue the mail a body describes; returns the email's id."""
        errors: dict[str, str] = {}
        to, cc, bcc = (_strings(body, key, errors) for key in ("to", "cc", "bcc"))
        records = _records(body, errors)
        documents = _documents(body, errors)
        words: dict[str, Any] = {k: body.get(k) for k in ("subject", "text", "html")}
        if "template" in body:
            if any(words.values()):
                errors["template"] = "give a template or subject/text/html, not both"
            rendered = await self._render(user_id, body["template"], errors)
            if rendered is not None:
                words = {"subject": rendered.subject, "text": rendered.text, "html": rendered.html}
        for key in ("subject", "text", "html"):
            if words.get(key) is not None and not isinstance(words[key], str):
                errors[key] = "text"
        if errors:
            raise ValidationError(errors)
        in_reply_to = body.get("in_reply_to") if isinstance(body.get("in_reply_to"), str) else None
        draft = Draft(
            to=to, cc=cc, bcc=bcc, subject=words.get("subject") or "",
            text=words.get("text") or "", html=words.get("html"), records=_unique(records),
            documents=documents, in_reply_to=in_reply_to,
        )  # fmt: skip
        return await queue_mail(self.store, draft, await self._sender_for(user_id), user_id=user_id)


def _unique(refs: Sequence[RecordRef]) -> list[RecordRef]:
    return list(dict.fromkeys(refs))
