"""Mail templates: Jinja2 in a sandbox, merge fields from the CRM, one text per language.

A template cannot reach Python's internals (the sandbox refuses), an unknown
merge field is an error rather than an empty gap in a customer's mail, and
the HTML part escapes what it merges.  A template that fails to render never
reaches the outbox: the error is raised as a ``ValidationError`` naming the
part and the line, for the form to show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import RecordRef
from store.db import Store
from store.errors import NotFound, ValidationError
from store.models import Account, Contact, Lead, MailTemplate, Opportunity, User
from tracking.compose import Sender
from tracking.outbox import Draft, queue_mail

FALLBACK_LANGUAGES = ("zh-CN", "en")
_TEXT = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_HTML = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
# The fields of each record a template may merge (also what the admin page samples).
MERGE_FIELDS: dict[type[Any], tuple[str, ...]] = {
    Contact: ("first_name", "last_name", "title", "email", "phone", "mobile"),
    Lead: ("first_name", "last_name", "company", "title", "email", "phone", "mobile"),
    Account: ("name", "website", "industry", "email", "phone", "city"),
    Opportunity: ("name", "amount", "currency", "expected_close"),
    User: ("display_name", "email", "username"),
}


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None


def _template_line(err: BaseException) -> int | None:
    """The template line a render-time error came from (Jinja2 maps its frames to lines)."""
    line = None
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _render(
    part: str, source: str, env: ImmutableSandboxedEnvironment, fields: Mapping[str, Any]
) -> str:
    try:
        return env.from_string(source).render(**fields)
    except TemplateError as err:
        line = getattr(err, "lineno", None) or _template_line(err)
        where = f" (line {line})" if line else ""
        raise ValidationError({part: f"{type(err).__name__}{where}: {err.message or err}"}) from err


def render(template: MailTemplate, fields: Mapping[str, Any]) -> Rendered:
    """The template with ``fields`` merged in; ``ValidationError`` if any part fails."""
    errors: dict[str, str] = {}
    parts: dict[str, str | None] = {}
    for part, source, env in (("subject", template.subject, _TEXT), ("text", template.text, _TEXT),
                              ("html", template.html, _HTML)):  # fmt: skip
        if source is None:
            parts[part] = None
            continue
        try:
            parts[part] = _render(part, source, env, fields)
        except ValidationError as err:
            errors.update(err.errors)
    if errors:
        raise ValidationError(errors)
    subject = " ".join((parts["subject"] or "").split())  # one line, whatever the template did
    return Rendered(subject=subject, text=parts["text"] or "", html=parts["html"])


def _as_fields(record: Any) -> dict[str, Any]:
    names = MERGE_FIELDS[type(record)]
    return {name: getattr(record, name, None) for name in names}


async def merge_fields(
    session: AsyncSession,
    *,
    contact_id: int | None = None,
    lead_id: int | None = None,
    account_id: int | None = None,
    opportunity_id: int | None = None,
    sender_id: int | None = None,
) -> dict[str, Any]:
    """``contact``, ``lead``, ``account``, ``opportunity`` and ``sender`` for a template."""
    fields: dict[str, Any] = {}
    for name, model, record_id in (("contact", Contact, contact_id), ("lead", Lead, lead_id),
                                   ("account", Account, account_id),
                                   ("opportunity", Opportunity, opportunity_id),
                                   ("sender", User, sender_id)):  # fmt: skip
        if record_id is None:
            continue
        record = await session.get(model, record_id)
        if record is None:
            raise NotFound(f"no {name} {record_id}")
        fields[name] = _as_fields(record)
    return fields


async def find_template(session: AsyncSession, name: str, language: str) -> MailTemplate:
    """The template in ``language``, else in Chinese, else in English."""
    for wanted in dict.fromkeys((language, *FALLBACK_LANGUAGES)):
        found = await session.scalar(
            select(MailTemplate).where(MailTemplate.name == name, MailTemplate.language == wanted)
        )
        if found is not None:
            return found
    raise NotFound(f"no mail template {name!r}")


async def queue_from_template(
    store: Store, name: str, language: str, to: list[str], sender: Sender, *,
    records: Sequence[RecordRef] = (), user_id: int | None = None, bulk: bool = False,
    **ids: int | None,
) -> int:  # fmt: skip
    """Render a template for its recipient and queue it; a render error queues nothing."""
    async with store.session() as session:
        template = await find_template(session, name, language)
        fields = await merge_fields(session, sender_id=user_id, **ids)
    rendered = render(template, fields)
    draft = Draft(to=to, subject=rendered.subject, text=rendered.text, html=rendered.html,
                  records=records, bulk=bulk)  # fmt: skip
    return await queue_mail(store, draft, sender, user_id=user_id)
