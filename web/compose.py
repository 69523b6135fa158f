"""Mail from a record's page: write or fill from a template, attach its documents, send.

``/<module>/<id>/mail`` shows the form and sends through the same outbox as
the JSON API (the ``MailApi`` the daemon hands in; ``web`` does not import the
mail-out package).  Composing needs the module's view right and the emails
create right, and the record in the viewer's scope (else 404, as everywhere).
A template fills the subject and body through a preview: compose.js asks
``/<module>/<id>/mail/preview``; without script the "Preview" button renders
it here.  Every bad value is shown beside its field with everything typed
kept, the outbox's own refusals included.  Without a ``MailApi`` the page says
that sending is not set up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.access import Access
from store.documents import documents_of
from store.errors import ValidationError
from store.identity import normalise_email
from store.models import Account, AccountContact, Contact, Document, MailTemplate
from web.admin_templates import languages
from web.api import MAIL_KEY, MailApi
from web.auth import Viewer, permitted
from web.modules import Module
from web.record_query import load_visible, module_of, records_store
from web.render import render

MAX_SUBJECT = 998  # RFC 5322 2.1.1: a header line's limit
MAX_BODY = 200_000
MAX_PICKS = 200  # an account's contacts offered as recipients
# A page's mail is a person's mail: many more recipients is bulk mail, which has its own
# rules (opt-outs, unsubscribe headers) that one person's mail does not follow.
MAX_RECIPIENTS = 50
# Addresses are separated by commas or semicolons, Chinese ones too, or by lines.
_LIST = re.compile(r"[,;，；、\r\n]+")
_ANGLE = re.compile(r"<([^<>]*)>\s*$")
# The outbox's refusals that belong beside one of the form's fields.
_FIELDS = ("to", "cc", "subject", "text", "html", "documents")


def may_compose(viewer: Viewer, module: Module) -> bool:
    """Whether the viewer's role may write mail from this module's records."""
    return viewer.access.can(module.key, "view") and viewer.access.can("emails", "create")


def compose_offered(request: web.Request, module: Module, viewer: Viewer) -> bool:
    """Whether a record's page offers "Compose mail": a permitted role and an outbox."""
    return request.app.get(MAIL_KEY) is not None and may_compose(viewer, module)


@dataclass(frozen=True)
class Target:
    """The record mail is written from, and what the form offers for it."""

    module: Module
    record: Any
    # Who the To box starts with: the record's address (an opportunity's contact's).
    address: str
    # An account's contacts with an address, to tick as recipients.
    contacts: list[Contact]
    documents: list[Document]
    # Template names with the languages each is written in.
    templates: dict[str, list[str]]
    # The records a template's merge fields come from (``contact_id``: 12, ...).
    merge: dict[str, int]


async def _linked_contacts(session: AsyncSession, account_id: int, access: Access) -> list[Contact]:
    rows = await session.scalars(
        select(Contact)
        .join(AccountContact, AccountContact.contact_id == Contact.id)
        .where(AccountContact.account_id == account_id, Contact.deleted_at.is_(None),
               access.visible(Contact), Contact.email.is_not(None), Contact.email != "")
        .order_by(AccountContact.is_primary.desc(), Contact.last_name, Contact.id)
        .limit(MAX_PICKS)
    )  # fmt: skip
    return list(rows)


async def _visible(session: AsyncSession, model: Any, record_id: int | None, access: Access) -> Any:
    found: Any = await session.get(model, record_id) if record_id else None
    if found is None or found.deleted_at is not None or not access.may_see(found):
        return None
    return found


async def _merge_and_address(
    session: AsyncSession, module: Module, record: Any, access: Access
) -> tuple[dict[str, int], str]:
    """The records a template may merge (only ones the viewer may see) and the To address."""
    merge = {f"{module.record_type}_id": record.id}
    address = getattr(record, "email", None) or ""
    if module.record_type == "opportunity":
        account = await _visible(session, Account, record.account_id, access)
        contact = await _visible(session, Contact, record.contact_id, access)
        if account is not None:
            merge["account_id"] = account.id
        if contact is not None:
            merge["contact_id"] = contact.id
            address = contact.email or ""
    elif module.record_type == "contact":
        account_id = await session.scalar(
            select(Account.id)
            .join(AccountContact, AccountContact.account_id == Account.id)
            .where(AccountContact.contact_id == record.id, Account.deleted_at.is_(None),
                   access.visible(Account))
            .order_by(AccountContact.is_primary.desc(), Account.name, Account.id)
            .limit(1)
        )  # fmt: skip
        if account_id is not None:
            merge["account_id"] = account_id
    return merge, address


async def _templates(session: AsyncSession) -> dict[str, list[str]]:
    rows = await session.execute(
        select(MailTemplate.name, MailTemplate.language).order_by(
            MailTemplate.name, MailTemplate.language
        )
    )
    found: dict[str, list[str]] = {}
    for name, language in rows:
        found.setdefault(name, []).append(language)
    return found


async def _target(request: web.Request) -> tuple[Viewer, Target]:
    """The record in the URL, if the viewer may write mail from it (403, or 404 out of scope)."""
    module, viewer = module_of(request, "view")
    permitted(request, ("emails", "create"))
    async with records_store(request).session() as session:
        record = await load_visible(session, module, viewer.access, request.match_info["id"])
        merge, address = await _merge_and_address(session, module, record, viewer.access)
        contacts = (
            await _linked_contacts(session, record.id, viewer.access)
            if module.record_type == "account"
            else []
        )
        documents = await documents_of(session, (module.record_type, record.id))
        templates = await _templates(session)
    return viewer, Target(module, record, address, contacts, documents, templates, merge)


def _default_language(viewer: Viewer) -> str:
    return "zh-CN" if viewer.t.locale == "zh_CN" else "en"


def _values(form: Mapping[str, Any], getall: Any) -> dict[str, Any]:
    """What the form sent, as text, to check and to show again."""
    values: dict[str, Any] = {
        key: str(form.get(key, "") or "")
        for key in ("to", "cc", "subject", "text", "html", "template", "language")
    }
    values["contacts"] = [str(v) for v in getall("contact", [])]
    values["documents"] = [str(v) for v in getall("document", [])]
    return values


def addresses(text: str) -> tuple[list[str], list[str]]:
    """The addresses typed in a To or Cc box, and the pieces that are not addresses.

    Commas, semicolons (also Chinese ones), lines or spaces separate them; ``王芳
    <wang.fang@jinlong.cn>`` gives the address in the brackets.
    """
    good: list[str] = []
    bad: list[str] = []
    for piece in _LIST.split(text):
        piece = piece.strip()
        if not piece:
            continue
        bracketed = _ANGLE.search(piece)
        found = [normalise_email(c) for c in ([bracketed.group(1)] if bracketed else piece.split())]
        if all(found):
            good.extend(a for a in found if a)
        else:
            bad.append(piece)  # named as typed: "not an address", not "not", "an", "address"
    return good, bad


def _picked_contacts(target: Target, values: Mapping[str, Any]) -> list[Contact] | None:
    """The ticked contacts, in the order offered; None if one is not among those offered."""
    offered = {str(c.id): c for c in target.contacts}
    if any(v not in offered for v in values["contacts"]):
        return None
    return [c for c in target.contacts if str(c.id) in values["contacts"]]


def _merge_for(target: Target, values: Mapping[str, Any]) -> dict[str, int]:
    merge = dict(target.merge)
    picked = _picked_contacts(target, values) or []
    if target.module.record_type == "account" and picked:
        merge["contact_id"] = picked[0].id  # an account's template greets the first one ticked
    return merge


async def _preview(
    mail: MailApi, viewer: Viewer, target: Target, values: Mapping[str, Any]
) -> tuple[dict[str, str], dict[str, str]]:
    """The template's subject, text and HTML for this record, or the template's error."""
    t = viewer.t
    name = values["template"]
    if name not in target.templates:
        return {}, {"template": t.gettext("Choose a template.")}
    language = values["language"]
    if language not in languages(t):
        language = _default_language(viewer)
    template = {"name": name, "language": language, **_merge_for(target, values)}
    try:
        shown = await mail.preview(viewer.user_id, {"template": template})
    except ValidationError as err:
        parts = {"subject": t.gettext("Subject"), "text": t.gettext("Text"), "html": "HTML"}
        problem = "; ".join(f"{parts.get(k, k)}: {v}" for k, v in err.errors.items())
        message = t.gettext("The template could not be rendered: {problem}", problem=problem)
        return {}, {"template": message}
    return {k: v or "" for k, v in shown.items()}, {}


def _mail_body(
    viewer: Viewer, target: Target, values: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``MailApi`` body the form describes, or a message per bad field."""
    t = viewer.t
    errors: dict[str, str] = {}
    to, bad_to = addresses(values["to"])
    picked = _picked_contacts(target, values)
    if picked is None:
        errors["to"] = t.gettext("Choose among the account's contacts.")
        picked = []
    to = list(dict.fromkeys([*(c.email or "" for c in picked), *to]))
    cc, bad_cc = addresses(values["cc"])
    if bad_to:
        errors["to"] = t.gettext("Not an email address: {address}", address=", ".join(bad_to))
    elif not to and "to" not in errors:
        errors["to"] = t.gettext("Give at least one recipient.")
    if bad_cc:
        errors["cc"] = t.gettext("Not an email address: {address}", address=", ".join(bad_cc))
    if len(set(to) | set(cc)) > MAX_RECIPIENTS:
        errors.setdefault("to", t.gettext("At most {n} recipients.", n=MAX_RECIPIENTS))
    subject = values["subject"].strip()
    if not subject:
        errors["subject"] = t.gettext("Write a subject.")
    elif len(subject) > MAX_SUBJECT:
        errors["subject"] = t.gettext("At most {n} characters.", n=MAX_SUBJECT)
    for key in ("text", "html"):
        if len(values[key]) > MAX_BODY:
            errors[key] = t.gettext("At most {n} characters.", n=MAX_BODY)
    offered = {str(d.id): d.id for d in target.documents}
    if any(v not in offered for v in values["documents"]):
        errors["documents"] = t.gettext("Choose among the record's documents.")
    body = {
        "to": to, "cc": cc, "subject": subject, "text": values["text"],
        "html": values["html"] if values["html"].strip() else None,
        "records": [f"{target.module.record_type}:{target.record.id}"],
        "documents": [offered[v] for v in dict.fromkeys(values["documents"]) if v in offered],
    }  # fmt: skip
    return body, errors


def _page(
    request: web.Request, viewer: Viewer, target: Target, values: Mapping[str, Any],
    errors: Mapping[str, str], *, status: int = 200, filled: bool = False,
) -> web.Response:  # fmt: skip
    named = languages(viewer.t)
    templates = [
        (name, f"{name} ({', '.join(named.get(code, code) for code in codes)})")
        for name, codes in target.templates.items()
    ]
    return render(request, "records/compose.html", {
        "module": target.module, "record": target.record,
        "title": target.module.display(target.record), "values": values, "errors": errors,
        "contacts": target.contacts, "documents": target.documents, "templates": templates,
        "languages": named, "configured": request.app.get(MAIL_KEY) is not None,
        "filled": filled,
    }, status=status)  # fmt: skip


async def compose_form(request: web.Request) -> web.Response:
    viewer, target = await _target(request)
    values = {"to": target.address, "cc": "", "subject": "", "text": "", "html": "",
              "template": "", "language": _default_language(viewer), "contacts": [],
              "documents": []}  # fmt: skip
    return _page(request, viewer, target, values, {})


async def compose_post(request: web.Request) -> web.Response:
    """Send the mail, or (the "Preview" button) fill the form from the chosen template."""
    viewer, target = await _target(request)
    form = await request.post()
    values = _values(form, form.getall)
    mail = request.app.get(MAIL_KEY)
    if mail is None:
        return _page(request, viewer, target, values, {}, status=503)
    if form.get("action") == "preview":
        shown, errors = await _preview(mail, viewer, target, values)
        values.update(shown)
        return _page(request, viewer, target, values, errors, status=422 if errors else 200,
                     filled=bool(shown))  # fmt: skip
    body, errors = _mail_body(viewer, target, values)
    if not errors:
        try:
            await mail.send(viewer.user_id, body)
        except ValidationError as err:
            # What only the outbox knows (a document gone, 20 MB passed), in its words.
            for key, problem in err.errors.items():
                where = key if key in _FIELDS else "form"
                errors[where] = viewer.t.gettext("The outbox refused this: {problem}",
                                                 problem=problem)  # fmt: skip
    if errors:
        return _page(request, viewer, target, values, errors, status=422)
    raise web.HTTPSeeOther(f"/{target.module.key}/{target.record.id}?mailed=1")


async def preview_json(request: web.Request) -> web.Response:
    """The chosen template for this record as JSON, for compose.js to fill the form with."""
    viewer, target = await _target(request)
    mail = request.app.get(MAIL_KEY)
    if mail is None:
        message = viewer.t.gettext("Mail sending is not configured.")
        return web.json_response({"errors": {"template": message}}, status=503)
    try:
        sent = await request.json()
    except ValueError:
        sent = None
    if not isinstance(sent, dict):
        return web.json_response({"errors": {"body": "a JSON object"}}, status=400)
    contacts = sent.get("contacts", [])
    values = {
        "template": str(sent.get("template", "")),
        "language": str(sent.get("language", "")),
        "contacts": [str(c) for c in contacts] if isinstance(contacts, list) else [],
    }
    shown, errors = await _preview(mail, viewer, target, values)
    if errors:
        return web.json_response({"errors": errors}, status=422)
    return web.json_response(shown)


def add_compose_routes(app: web.Application, module_pattern: str) -> None:
    app.router.add_get(f"/{module_pattern}/{{id:\\d+}}/mail", compose_form)
    app.router.add_post(f"/{module_pattern}/{{id:\\d+}}/mail", compose_post)
    app.router.add_post(f"/{module_pattern}/{{id:\\d+}}/mail/preview", preview_json)
