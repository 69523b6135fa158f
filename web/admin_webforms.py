"""Admin: web forms — a company site's lead forms, their keys shown once, revoked and rotated.

A form's key is shown on the page that follows its creation or rotation, with
an HTML form to paste into the site, and never again (the store keeps its hash
and last characters).  Revoking switches a form off at once; rotating replaces
its key (the old one is refused from that commit on) and switches it on again.
Posts themselves are ``web/api_webforms.py``'s.
"""

from __future__ import annotations

from html import escape
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.errors import NotFound, ValidationError
from store.models import User, WebForm
from store.web_forms import (
    MAX_NAME,
    MAX_URL,
    bad_origins,
    create_web_form,
    is_thank_you_url,
    list_web_forms,
    revoke_web_form,
    rotate_web_form_key,
    update_web_form,
)
from web.admin_base import admin_viewer, editor, id_of, store_of
from web.api_webforms import FORM_KEY_FIELD, HONEYPOT
from web.auth import PUBLIC_URL_KEY, VIEWER, Viewer
from web.i18n import Translator
from web.render import render

MAX_ORIGINS = 20


async def webforms_list(request: web.Request) -> web.Response:
    admin_viewer(request)
    async with store_of(request).session() as session:
        forms = await list_web_forms(session)
    return render(request, "admin/webforms.html", {"forms": forms})


async def _owners(session: AsyncSession, current: int | None) -> list[tuple[str, str]]:
    """(user name, shown name) of active users, and the current owner even if deactivated."""
    rows = await session.execute(
        select(User.id, User.username, User.display_name, User.is_active).order_by(User.username)
    )
    return [
        (name, f"{shown} ({name})" if shown and shown != name else name)
        for uid, name, shown, active in rows
        if active or uid == current
    ]


async def _form(
    request: web.Request,
    form: WebForm | None,
    values: dict[str, str],
    errors: dict[str, str],
    status: int = 200,
) -> web.Response:
    async with store_of(request).session() as session:
        owners = await _owners(session, form.owner_id if form else None)
    return render(
        request,
        "admin/webform_form.html",
        {"form": form, "values": values, "errors": errors, "owners": owners},
        status=status,
    )


async def new_webform_form(request: web.Request) -> web.Response:
    editor(request)
    values = {"name": "", "owner": "", "origins": "", "thank_you_url": ""}
    return await _form(request, None, values, {})


async def _loaded(request: web.Request, session: AsyncSession, *, lock: bool = False) -> WebForm:
    query = select(WebForm).where(WebForm.id == id_of(request))
    form: WebForm | None = await session.scalar(query.with_for_update() if lock else query)
    if form is None:
        raise web.HTTPNotFound()
    return form


async def webform_page(request: web.Request) -> web.Response:
    admin_viewer(request)
    async with store_of(request).session() as session:
        form = await _loaded(request, session)
        owner = await session.scalar(select(User.username).where(User.id == form.owner_id))
    values = {
        "name": form.name,
        "owner": owner or "",
        "origins": "\n".join(form.allowed_origins or ()),
        "thank_you_url": form.thank_you_url or "",
    }
    return await _form(request, form, values, {})


def _checked(viewer: Viewer, values: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The origins typed (one a line) and every problem of the form, in the viewer's words."""
    t = viewer.t
    errors: dict[str, str] = {}
    origins = [line.strip() for line in values["origins"].splitlines() if line.strip()]
    bad = bad_origins(origins)
    if bad:
        shown = ", ".join(bad[:3])
        errors["origins"] = t.gettext("Not like https://www.example.cn[:port]: {bad}", bad=shown)
    elif len(origins) > MAX_ORIGINS:
        errors["origins"] = t.gettext("At most {n} sites.", n=MAX_ORIGINS)
    url = values["thank_you_url"]
    if url and not is_thank_you_url(url):
        errors["thank_you_url"] = t.gettext(
            "An address starting with http:// or https://, of at most {n} characters.", n=MAX_URL
        )
    return origins, errors


def _values(posted: Any, *names: str) -> dict[str, str]:
    values = {k: str(posted.get(k, "")) for k in names}
    for k in ("name", "owner", "thank_you_url"):
        if k in values:
            values[k] = values[k].strip()
    return values


async def _owner_problem(
    viewer: Viewer, session: AsyncSession, owner: str, current: int | None
) -> str:
    """Why ``owner`` cannot own the form's leads, or "" (active, or already its owner)."""
    if not owner:
        return ""
    found = (
        await session.execute(select(User.id, User.is_active).where(User.username == owner))
    ).first()
    if found is None or not (found.is_active or found.id == current):
        return viewer.t.gettext("Choose one of the offered values.")
    return ""


async def create_webform(request: web.Request) -> web.Response:
    viewer = editor(request)
    t = viewer.t
    values = _values(await request.post(), "name", "owner", "origins", "thank_you_url")
    origins, errors = _checked(viewer, values)
    if not values["name"] or len(values["name"]) > MAX_NAME:
        errors["name"] = t.gettext("Between 1 and {n} characters.", n=MAX_NAME)
    form: WebForm | None = None
    key = ""
    async with store_of(request).session() as session, session.begin():
        if problem := await _owner_problem(viewer, session, values["owner"], None):
            errors["owner"] = problem
        if "name" not in errors and await session.scalar(
            select(WebForm.id).where(WebForm.name == values["name"])
        ):
            errors["name"] = t.gettext("A form of this name exists.")
        if not errors:
            try:
                key = await create_web_form(
                    session, values["name"], owner=values["owner"] or None, origins=origins,
                    thank_you_url=values["thank_you_url"] or None,
                )  # fmt: skip
            except (ValidationError, NotFound):  # checked above; another admin was quicker
                errors["name"] = t.gettext("Please correct the marked fields.")
            else:
                form = await session.scalar(select(WebForm).where(WebForm.name == values["name"]))
    if errors or form is None:
        return await _form(request, None, values, errors, status=422)
    return _key_page(request, form, key, created=True)


async def save_webform(request: web.Request) -> web.Response:
    viewer = editor(request)
    values = _values(await request.post(), "owner", "origins", "thank_you_url")
    origins, errors = _checked(viewer, values)
    async with store_of(request).session() as session, session.begin():
        form = await _loaded(request, session, lock=True)
        values["name"] = form.name
        if problem := await _owner_problem(viewer, session, values["owner"], form.owner_id):
            errors["owner"] = problem
        if not errors:
            await update_web_form(
                session, form, owner=values["owner"] or None, origins=origins,
                thank_you_url=values["thank_you_url"] or None,
            )  # fmt: skip
        form_id = form.id
    if errors:
        return await _form(request, form, values, errors, status=422)
    raise web.HTTPSeeOther(f"/admin/webforms/{form_id}?saved=1")


async def revoke_webform(request: web.Request) -> web.Response:
    editor(request)
    async with store_of(request).session() as session, session.begin():
        form = await _loaded(request, session, lock=True)
        await revoke_web_form(session, form)
        form_id = form.id
    raise web.HTTPSeeOther(f"/admin/webforms/{form_id}?revoked=1")


async def rotate_webform(request: web.Request) -> web.Response:
    editor(request)
    async with store_of(request).session() as session, session.begin():
        form = await _loaded(request, session, lock=True)
        key = await rotate_web_form_key(session, form)
    return _key_page(request, form, key, created=False)


def snippet(t: Translator, action: str, key: str) -> str:
    """An HTML form for the site: the key as a hidden field, the honeypot hidden from people."""
    fields = [
        (t.gettext("Name"), '<input name="name" required>'),
        (t.gettext("Company"), '<input name="company">'),
        (t.gettext("Email"), '<input name="email" type="email">'),
        (t.gettext("Phone"), '<input name="phone" type="tel">'),
        (t.gettext("Message"), '<textarea name="message"></textarea>'),
    ]
    return "\n".join([
        f'<form method="post" action="{escape(action)}">',
        f'  <input type="hidden" name="{FORM_KEY_FIELD}" value="{escape(key)}">',
        # Off the screen, not type=hidden: bots skip hidden fields but fill this one in.
        '  <div style="position:absolute;left:-10000px" aria-hidden="true">'
        f'<input name="{HONEYPOT}" tabindex="-1" autocomplete="off"></div>',
        *(f"  <label>{escape(label)} {control}</label>" for label, control in fields),
        f"  <button type=\"submit\">{escape(t.gettext('Send'))}</button>",
        "</form>",
    ])  # fmt: skip


def _key_page(request: web.Request, form: WebForm, key: str, *, created: bool) -> web.Response:
    """The key, this once, and a form to paste into the site.

    The form posts to ``[web] public_url`` when it is set, else to the address
    this page was reached at (a site whose visitors reach Rapport elsewhere
    changes ``action``).
    """
    public = request.app.get(PUBLIC_URL_KEY, "")
    here = str(request.url.origin().with_path("/forms/lead"))
    action = f"{public}/forms/lead" if public else here
    response = render(
        request,
        "admin/webform_key.html",
        {"form": form, "key": key, "created": created, "honeypot": HONEYPOT,
         "snippet": snippet(request[VIEWER].t, action, key)},
    )  # fmt: skip
    response.headers["Cache-Control"] = "no-store"  # the key must not stay in a cache
    return response


def add_webform_admin_routes(app: web.Application) -> None:
    app.router.add_get("/admin/webforms", webforms_list)
    app.router.add_get("/admin/webforms/new", new_webform_form)
    app.router.add_post("/admin/webforms/new", create_webform)
    app.router.add_get(r"/admin/webforms/{id}", webform_page)
    app.router.add_post(r"/admin/webforms/{id}", save_webform)
    app.router.add_post(r"/admin/webforms/{id}/revoke", revoke_webform)
    app.router.add_post(r"/admin/webforms/{id}/rotate", rotate_webform)
