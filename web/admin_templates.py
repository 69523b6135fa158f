"""Admin: mail templates — one per name and language, each part checked before it is kept.

A template is rendered with sample merge fields by the daemon's
``TemplateChecker`` (the mail-out package's own sandboxed renderer) before it
is saved: one that fails — a syntax error, an unknown merge field — is refused
with the renderer's message and line beside the part it is in, so a broken
template never reaches a customer.  Without a checker nothing is saved.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select

from store.models import MailTemplate
from web.admin_base import TemplateCheck, admin_viewer, editor, id_of, services_of, store_of
from web.auth import VIEWER
from web.i18n import Translator
from web.render import render

PARTS = ("subject", "text", "html")
MAX_PART = 200_000


def languages(t: Translator) -> dict[str, str]:
    """The languages a template is written in (the outbox falls back to zh-CN, then en)."""
    return {"zh-CN": t.gettext("Simplified Chinese"), "en": t.gettext("English")}


async def templates_list(request: web.Request) -> web.Response:
    viewer = admin_viewer(request)
    async with store_of(request).session() as session:
        rows = (
            await session.scalars(
                select(MailTemplate).order_by(MailTemplate.name, MailTemplate.language)
            )
        ).all()
    return render(
        request, "admin/templates.html", {"templates": rows, "languages": languages(viewer.t)}
    )


def _check(request: web.Request, values: dict[str, str]) -> TemplateCheck | None:
    checker = services_of(request).templates
    if checker is None:
        return None
    return checker.check(values["subject"], values["text"], values["html"] or None)


def _form(
    request: web.Request,
    template: MailTemplate | None,
    values: dict[str, str],
    errors: dict[str, str],
    status: int = 200,
) -> web.Response:
    sample = _check(request, values) if template is not None and not errors else None
    return render(
        request,
        "admin/template_form.html",
        {
            "template": template,
            "values": values,
            "errors": errors,
            "sample": sample,
            "languages": languages(request[VIEWER].t),
            "checkable": services_of(request).templates is not None,
        },
        status=status,
    )


async def new_template_form(request: web.Request) -> web.Response:
    editor(request)
    values = {"name": "", "language": "zh-CN", "subject": "", "text": "", "html": ""}
    return _form(request, None, values, {})


def _values_of(template: MailTemplate) -> dict[str, str]:
    return {
        "name": template.name,
        "language": template.language,
        "subject": template.subject,
        "text": template.text,
        "html": template.html or "",
    }


async def template_page(request: web.Request) -> web.Response:
    admin_viewer(request)
    async with store_of(request).session() as session:
        template = await session.get(MailTemplate, id_of(request))
    if template is None:
        raise web.HTTPNotFound()
    return _form(request, template, _values_of(template), {})


async def save_template(request: web.Request) -> web.Response:
    viewer = editor(request)
    t = viewer.t
    form = await request.post()
    values: dict[str, Any] = {k: str(form.get(k, "")) for k in ("name", "language", *PARTS)}
    values["name"] = values["name"].strip()
    new = request.match_info.get("id") is None
    errors: dict[str, str] = {}
    if not values["name"] or len(values["name"]) > 120:
        errors["name"] = t.gettext("Between 1 and {n} characters.", n=120)
    if values["language"] not in languages(t):
        errors["language"] = t.gettext("Choose one of the offered values.")
    if not values["subject"].strip():
        errors["subject"] = t.gettext("Required.")
    for part in PARTS:
        if len(values[part]) > MAX_PART:
            errors[part] = t.gettext("At most {n} characters.", n=MAX_PART)
    checked = _check(request, values)
    if checked is None:
        errors["template"] = t.gettext(
            "Templates cannot be checked here (the daemon provides the check), so none is saved."
        )
    else:
        for part, message in checked.errors.items():
            errors.setdefault(part, message)
    async with store_of(request).session() as session, session.begin():
        template = None if new else await session.get(MailTemplate, id_of(request))
        if not new and template is None:
            raise web.HTTPNotFound()
        if await session.scalar(
            select(MailTemplate.id).where(
                MailTemplate.name == values["name"],
                MailTemplate.language == values["language"],
                MailTemplate.id != (template.id if template else 0),
            )
        ):
            errors["name"] = t.gettext("A template of this name exists in this language.")
        if not errors:
            if template is None:
                template = MailTemplate(name=values["name"], subject="")
                session.add(template)
            template.name, template.language = values["name"], values["language"]
            template.subject, template.text = values["subject"], values["text"]
            template.html = values["html"] if values["html"].strip() else None
            await session.flush()
            template_id = template.id
    if errors:
        return _form(request, template, values, errors, status=422)
    raise web.HTTPSeeOther(f"/admin/templates/{template_id}?saved=1")


async def delete_template(request: web.Request) -> web.Response:
    editor(request)
    async with store_of(request).session() as session, session.begin():
        template = await session.get(MailTemplate, id_of(request))
        if template is None:
            raise web.HTTPNotFound()
        await session.delete(template)
    raise web.HTTPSeeOther("/admin/templates")


def add_template_routes(app: web.Application) -> None:
    app.router.add_get("/admin/templates", templates_list)
    app.router.add_get("/admin/templates/new", new_template_form)
    app.router.add_post("/admin/templates/new", save_template)
    app.router.add_get(r"/admin/templates/{id}", template_page)
    app.router.add_post(r"/admin/templates/{id}", save_template)
    app.router.add_post(r"/admin/templates/{id}/delete", delete_template)
