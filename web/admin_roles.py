"""Admin: roles — the per-module permission matrix, record scope, dialling, administrator.

The seeded roles (admin, manager, agent) keep their names, since the first
start and ``rapport user create`` name them; their permissions can change like
any other role's.  A custom role without users can be deleted.  A role stops
being an administrator role only while another active administrator remains.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from store.models import RecordScope, Role, User
from store.models.admin import ACTIONS, MODULES
from web.admin_base import (
    admin_viewer,
    editor,
    id_of,
    lock_admin_roles,
    other_active_admins,
    store_of,
)
from web.auth import VIEWER
from web.i18n import Translator
from web.render import render

SEEDED_ROLES = ("admin", "manager", "agent")


def module_labels(t: Translator) -> dict[str, str]:
    return {
        "leads": t.gettext("Leads"),
        "contacts": t.gettext("Contacts"),
        "accounts": t.gettext("Accounts"),
        "opportunities": t.gettext("Opportunities"),
        "activities": t.gettext("Activities"),
        "emails": t.gettext("Emails"),
        "calls": t.gettext("Calls"),
        "campaigns": t.gettext("Campaigns"),
        "reports": t.gettext("Reports"),
        "admin": t.gettext("Administration"),
    }


def action_labels(t: Translator) -> dict[str, str]:
    return {
        "view": t.gettext("View"),
        "create": t.gettext("Create"),
        "edit": t.gettext("Edit"),
        "delete": t.gettext("Delete"),
        "export": t.gettext("Export"),
    }


def scope_labels(t: Translator) -> dict[str, str]:
    return {
        "own": t.gettext("Own records"),
        "team": t.gettext("Their team's records"),
        "all": t.gettext("All records"),
    }


def _context(t: Translator, **more: Any) -> dict[str, Any]:
    return {
        "modules": MODULES,
        "actions": ACTIONS,
        "module_labels": module_labels(t),
        "action_labels": action_labels(t),
        "scopes": scope_labels(t),
        **more,
    }


async def roles_list(request: web.Request) -> web.Response:
    viewer = admin_viewer(request)
    async with store_of(request).session() as session:
        roles = (await session.scalars(select(Role).order_by(Role.name))).all()
        members = dict(
            (
                await session.execute(
                    select(User.role_id, func.count())
                    .where(User.is_active.is_(True))
                    .group_by(User.role_id)
                )
            ).all()
        )
    return render(request, "admin/roles.html", _context(viewer.t, roles=roles, members=members))


def _values_of(role: Role | None) -> dict[str, Any]:
    if role is None:
        return {
            "name": "",
            "description": "",
            "scope": "own",
            "can_dial": True,
            "is_admin": False,
            "perms": set(),
        }
    return {
        "name": role.name,
        "description": role.description,
        "scope": role.scope.value,
        "can_dial": role.can_dial,
        "is_admin": role.is_admin,
        "perms": {f"{m}:{a}" for m, acts in (role.permissions or {}).items() for a in acts},
    }


def _form(
    request: web.Request,
    role: Role | None,
    values: dict[str, Any],
    errors: dict[str, str],
    status: int = 200,
) -> web.Response:
    return render(
        request,
        "admin/role_form.html",
        _context(
            request[VIEWER].t,
            role=role,
            values=values,
            errors=errors,
            seeded=role is not None and role.name in SEEDED_ROLES,
        ),
        status=status,
    )


async def new_role_form(request: web.Request) -> web.Response:
    editor(request)
    return _form(request, None, _values_of(None), {})


async def role_page(request: web.Request) -> web.Response:
    admin_viewer(request)
    async with store_of(request).session() as session:
        role = await session.get(Role, id_of(request))
    if role is None:
        raise web.HTTPNotFound()
    return _form(request, role, _values_of(role), {})


def _read(form: Any) -> dict[str, Any]:
    perms = {str(p) for p in form.getall("perm", [])}
    return {
        "name": str(form.get("name", "")).strip(),
        "description": str(form.get("description", "")).strip(),
        "scope": str(form.get("scope", "")),
        "can_dial": bool(form.get("can_dial")),
        "is_admin": bool(form.get("is_admin")),
        "perms": {
            p for p in perms if p.partition(":")[0] in MODULES and p.partition(":")[2] in ACTIONS
        },
    }


def _permissions(perms: set[str]) -> dict[str, list[str]]:
    """``{"leads": ["view", "edit"]}`` in the matrix's order."""
    return {
        m: [a for a in ACTIONS if f"{m}:{a}" in perms]
        for m in MODULES
        if any(f"{m}:{a}" in perms for a in ACTIONS)
    }


async def save_role(request: web.Request) -> web.Response:
    viewer = editor(request)
    t = viewer.t
    values = _read(await request.post())
    new = request.match_info.get("id") is None
    errors: dict[str, str] = {}
    if values["scope"] not in {s.value for s in RecordScope}:
        errors["scope"] = t.gettext("Choose one of the offered values.")
    if len(values["description"]) > 255:
        errors["description"] = t.gettext("At most {n} characters.", n=255)
    async with store_of(request).session() as session, session.begin():
        await lock_admin_roles(session)
        role = None if new else await session.get(Role, id_of(request))
        if not new and role is None:
            raise web.HTTPNotFound()
        if role is not None and role.name in SEEDED_ROLES:
            values["name"] = role.name  # the first start and the CLI name these
        name = values["name"]
        if not name or len(name) > 80:
            errors["name"] = t.gettext("Between 1 and {n} characters.", n=80)
        elif await session.scalar(
            select(Role.id).where(Role.name == name, Role.id != (role.id if role else 0))
        ):
            errors["name"] = t.gettext("A role with this name exists.")
        was_admin = role is not None and role.is_admin
        if values["is_admin"] != was_admin and not viewer.access.is_admin:
            errors["is_admin"] = t.gettext("Only an administrator may make administrators.")
        elif (
            was_admin
            and not values["is_admin"]
            and role is not None
            and not await other_active_admins(session, except_role=role.id)
        ):
            errors["is_admin"] = t.gettext("The last administrator cannot be removed.")
        if not errors:
            if role is None:
                role = Role(name=name)
                session.add(role)
            role.name = name
            role.description = values["description"]
            role.scope = RecordScope(values["scope"])
            role.can_dial = values["can_dial"]
            role.is_admin = values["is_admin"]
            role.permissions = _permissions(values["perms"])
            await session.flush()
            role_id = role.id
    if errors:
        return _form(request, role, values, errors, status=422)
    raise web.HTTPSeeOther(f"/admin/roles/{role_id}?saved=1")


async def delete_role(request: web.Request) -> web.Response:
    viewer = editor(request)
    async with store_of(request).session() as session, session.begin():
        role = await session.get(Role, id_of(request))
        if role is None:
            raise web.HTTPNotFound()
        users = await session.scalar(select(func.count()).where(User.role_id == role.id))
        if role.name in SEEDED_ROLES or users:
            errors = {
                "delete": viewer.t.gettext("Only a custom role that no user has can be deleted.")
            }
        else:
            errors = {}
            await session.delete(role)
    if errors:
        return _form(request, role, _values_of(role), errors, status=422)
    raise web.HTTPSeeOther("/admin/roles")


def add_role_routes(app: web.Application) -> None:
    app.router.add_get("/admin/roles", roles_list)
    app.router.add_get("/admin/roles/new", new_role_form)
    app.router.add_post("/admin/roles/new", save_role)
    app.router.add_get(r"/admin/roles/{id}", role_page)
    app.router.add_post(r"/admin/roles/{id}", save_role)
    app.router.add_post(r"/admin/roles/{id}/delete", delete_role)
