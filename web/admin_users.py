"""Admin: users — list, create (argon2 via ``store.users``), edit, deactivate, reset passwords.

A generated password is shown once, on the page that answers the form, and
kept nowhere but in its argon2 hash.  Deactivating a user, or resetting their
password, ends every session they have.  The last active administrator can be
neither demoted nor deactivated.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.errors import ValidationError
from store.models import Role, Team, User, WebSession
from store.records import acting_as
from store.users import USERS_CHANGED, create_user, generate_password, hash_password
from web.admin_base import (
    admin_viewer,
    editor,
    form_id,
    id_of,
    lock_admin_roles,
    other_active_admins,
    store_of,
    team_paths,
)
from web.auth import MIN_PASSWORD, SESSION_COOKIE, Viewer, digest
from web.i18n import Translator
from web.modules import EMAIL
from web.render import render

FIELDS = ("username", "display_name", "email", "role_id", "team_id", "phone_extension")
MOST_LISTED = 1000


async def _choices(session: AsyncSession) -> dict[str, Any]:
    roles = (await session.scalars(select(Role).order_by(Role.name))).all()
    paths = await team_paths(session)
    return {
        "roles": [(r.id, r.name, r.is_admin) for r in roles],
        "teams": sorted(paths.items(), key=lambda item: item[1]),
    }


async def users_list(request: web.Request) -> web.Response:
    admin_viewer(request)
    q = request.query.get("q", "").strip()
    async with store_of(request).session() as session:
        query = select(User).order_by(User.is_active.desc(), User.username).limit(MOST_LISTED + 1)
        if q:
            like = f"%{q.lower()}%"
            query = query.where(
                User.username.ilike(like)
                | User.display_name.ilike(like)
                | User.email.ilike(like)
                | (User.phone_extension == q)
            )
        users = list((await session.scalars(query)).all())
        paths = await team_paths(session)
    return render(
        request,
        "admin/users.html",
        {
            "users": users[:MOST_LISTED],
            "more": len(users) > MOST_LISTED,
            "teams": paths,
            "q": q,
        },
    )


async def new_user_form(request: web.Request) -> web.Response:
    editor(request)
    async with store_of(request).session() as session:
        choices = await _choices(session)
    agent = next((rid for rid, name, _ in choices["roles"] if name == "agent"), "")
    values = {k: "" for k in FIELDS} | {"role_id": str(agent), "password_mode": "generate"}
    return render(request, "admin/user_new.html", {"values": values, "errors": {}, **choices})


async def _check_common(
    session: AsyncSession,
    t: Translator,
    viewer: Viewer,
    values: dict[str, str],
    errors: dict[str, str],
    user_id: int | None,
) -> tuple[Role | None, int | None]:
    """Checks shared by create and edit; returns the chosen role and team."""
    if len(values["display_name"]) > 160:
        errors["display_name"] = t.gettext("At most {n} characters.", n=160)
    if values["email"] and (not EMAIL.match(values["email"]) or len(values["email"]) > 320):
        errors["email"] = t.gettext("Not an email address.")
    role_id = form_id(values["role_id"])
    role = await session.get(Role, role_id) if role_id is not None else None
    if role is None:
        errors["role_id"] = t.gettext("Choose one of the offered values.")
    elif role.is_admin and not viewer.access.is_admin:
        errors["role_id"] = t.gettext("Only an administrator may make administrators.")
    team_id = form_id(values["team_id"]) if values["team_id"] else None
    if values["team_id"] and (team_id is None or await session.get(Team, team_id) is None):
        errors["team_id"] = t.gettext("Choose one of the offered values.")
    extension = values["phone_extension"]
    if extension and (not extension.isdigit() or len(extension) > 32):
        errors["phone_extension"] = t.gettext("Digits only.")
    elif extension:
        taken = await session.scalar(
            select(User.username).where(User.phone_extension == extension, User.id != user_id)
        )
        if taken is not None:
            errors["phone_extension"] = t.gettext(
                "Extension {ext} belongs to {user}.", ext=extension, user=taken
            )
    return role, team_id


def _password_of(form: Any, t: Translator, errors: dict[str, str]) -> tuple[str, bool]:
    """The chosen password and whether it was generated (to be shown once)."""
    if str(form.get("password_mode", "generate")) == "set":
        password = str(form.get("password", ""))
        if len(password) < MIN_PASSWORD:
            errors["password"] = t.gettext("At least {n} characters.", n=MIN_PASSWORD)
        return password, False
    return generate_password(), True


def _shown_once(request: web.Request, user: User, password: str, created: bool) -> web.Response:
    response = render(
        request,
        "admin/password_shown.html",
        {"user": user, "password": password, "created": created},
    )
    response.headers["Cache-Control"] = "no-store"
    return response


async def create_user_page(request: web.Request) -> web.Response:
    viewer = editor(request)
    t = viewer.t
    form = await request.post()
    values = {k: str(form.get(k, "")).strip() for k in FIELDS}
    values["password_mode"] = "set" if form.get("password_mode") == "set" else "generate"
    errors: dict[str, str] = {}
    username = values["username"]
    if not username:
        errors["username"] = t.gettext("Required.")
    elif len(username) > 80 or any(ch.isspace() for ch in username):
        errors["username"] = t.gettext("Up to 80 characters without spaces.")
    password, generated = _password_of(form, t, errors)
    async with store_of(request).session() as session, session.begin():
        if "username" not in errors and await session.scalar(
            select(User.id).where(User.username == username)
        ):
            errors["username"] = t.gettext("This user name is taken.")
        role, team_id = await _check_common(session, t, viewer, values, errors, None)
        if not errors:
            assert role is not None
            try:
                with acting_as(session, viewer.user_id):
                    user = await create_user(
                        session,
                        username,
                        password,
                        role=role.name,
                        display_name=values["display_name"],
                        email=values["email"] or None,
                        team_id=team_id,
                        phone_extension=values["phone_extension"] or None,
                    )
                    await session.flush()
            except ValidationError as err:
                errors.update(err.errors)
        if errors:
            choices = await _choices(session)
    if errors:
        return render(
            request,
            "admin/user_new.html",
            {"values": values, "errors": errors, **choices},
            status=422,
        )
    await store_of(request).bus.publish(USERS_CHANGED, user_id=user.id)
    if generated:
        return _shown_once(request, user, password, created=True)
    raise web.HTTPSeeOther(f"/admin/users/{user.id}?saved=1")


async def _load(session: AsyncSession, request: web.Request) -> User:
    user = await session.get(User, id_of(request))
    if user is None:
        raise web.HTTPNotFound()
    return user


def _guard_admin_account(viewer: Viewer, user: User) -> None:
    """Only a full administrator changes an administrator's account."""
    if user.role is not None and user.role.is_admin and not viewer.access.is_admin:
        raise web.HTTPForbidden(text=viewer.t.gettext("Only an administrator may do this."))


def _values_of(user: User) -> dict[str, str]:
    return {
        "username": user.username,
        "display_name": user.display_name,
        "email": user.email or "",
        "role_id": str(user.role_id or ""),
        "team_id": str(user.team_id or ""),
        "phone_extension": user.phone_extension or "",
        "is_active": "1" if user.is_active else "",
    }


async def user_page(request: web.Request) -> web.Response:
    admin_viewer(request)
    async with store_of(request).session() as session:
        user = await _load(session, request)
        choices = await _choices(session)
        sessions = await session.scalar(select(func.count()).where(WebSession.user_id == user.id))
    return render(
        request,
        "admin/user_edit.html",
        {
            "user": user,
            "values": _values_of(user),
            "errors": {},
            "password_errors": {},
            "sessions": sessions,
            **choices,
        },
    )


async def save_user(request: web.Request) -> web.Response:
    viewer = editor(request)
    t = viewer.t
    form = await request.post()
    values = {k: str(form.get(k, "")).strip() for k in FIELDS[1:]}
    values["is_active"] = "1" if form.get("is_active") else ""
    errors: dict[str, str] = {}
    async with store_of(request).session() as session, session.begin():
        await lock_admin_roles(session)
        user = await _load(session, request)
        _guard_admin_account(viewer, user)
        values["username"] = user.username
        role, team_id = await _check_common(session, t, viewer, values, errors, user.id)
        active = bool(values["is_active"])
        stays_admin = role is not None and role.is_admin and active
        if (
            not stays_admin
            and user.is_active
            and user.role is not None
            and user.role.is_admin
            and not await other_active_admins(session, except_user=user.id)
        ):
            field = "is_active" if not active else "role_id"
            errors[field] = t.gettext("The last administrator cannot be removed.")
        if not errors:
            assert role is not None
            with acting_as(session, viewer.user_id):
                user.display_name = values["display_name"] or user.username
                user.email = values["email"] or None
                user.role_id = role.id
                user.team_id = team_id
                user.phone_extension = values["phone_extension"] or None
                if user.is_active and not active:
                    # Their browsers are signed out at once, not at the next idle timeout.
                    await session.execute(delete(WebSession).where(WebSession.user_id == user.id))
                user.is_active = active
        else:
            choices = await _choices(session)
            context = {
                "user": user,
                "values": values,
                "errors": errors,
                "password_errors": {},
                "sessions": 0,
                **choices,
            }
    if errors:
        return render(request, "admin/user_edit.html", context, status=422)
    await store_of(request).bus.publish(USERS_CHANGED, user_id=user.id)
    raise web.HTTPSeeOther(f"/admin/users/{user.id}?saved=1")


async def reset_password(request: web.Request) -> web.Response:
    viewer = editor(request)
    form = await request.post()
    errors: dict[str, str] = {}
    password, generated = _password_of(form, viewer.t, errors)
    async with store_of(request).session() as session, session.begin():
        user = await _load(session, request)
        _guard_admin_account(viewer, user)
        if errors:
            choices = await _choices(session)
            context = {
                "user": user,
                "values": _values_of(user),
                "errors": {},
                "password_errors": errors,
                "sessions": 0,
                **choices,
            }
        else:
            user.password_hash = hash_password(password)
            ended = delete(WebSession).where(WebSession.user_id == user.id)
            if user.id == viewer.user_id:  # your own reset keeps this browser signed in
                raw = request.cookies.get(SESSION_COOKIE, "")
                ended = ended.where(WebSession.id_sha256 != digest(raw))
            await session.execute(ended)
    if errors:
        return render(request, "admin/user_edit.html", context, status=422)
    if generated:
        return _shown_once(request, user, password, created=False)
    raise web.HTTPSeeOther(f"/admin/users/{user.id}?saved=password")


def add_user_routes(app: web.Application) -> None:
    app.router.add_get("/admin/users", users_list)
    app.router.add_get("/admin/users/new", new_user_form)
    app.router.add_post("/admin/users/new", create_user_page)
    app.router.add_get(r"/admin/users/{id}", user_page)
    app.router.add_post(r"/admin/users/{id}", save_user)
    app.router.add_post(r"/admin/users/{id}/password", reset_password)
