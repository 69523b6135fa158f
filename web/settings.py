"""A user's own settings: name, email, language, time zone, phone extension."""

from __future__ import annotations

from zoneinfo import ZoneInfo, available_timezones

from aiohttp import web
from sqlalchemy import select

from store.db import Store
from store.models import User
from store.users import USERS_CHANGED
from web.auth import VIEWER
from web.i18n import LOCALES
from web.modules import EMAIL
from web.render import render

SETTINGS_STORE_KEY = web.AppKey("settings_store", Store)
COMMON_ZONES = ("Asia/Shanghai", "Asia/Hong_Kong", "Asia/Taipei", "Asia/Singapore",
                "Asia/Tokyo", "Europe/London", "Europe/Berlin", "America/New_York",
                "America/Los_Angeles", "UTC")  # fmt: skip


async def _user(request: web.Request) -> User:
    async with request.app[SETTINGS_STORE_KEY].session() as session:
        user = await session.get(User, request[VIEWER].user_id)
    assert user is not None
    return user


def _page(request: web.Request, values: dict[str, str], errors: dict[str, str], *,
          saved: bool = False, status: int = 200) -> web.Response:  # fmt: skip
    return render(request, "settings.html", {
        "values": values, "errors": errors, "saved": saved, "zones": COMMON_ZONES,
    }, status=status)  # fmt: skip


async def settings_form(request: web.Request) -> web.Response:
    user = await _user(request)
    values = {"display_name": user.display_name, "email": user.email or "", "locale": user.locale,
              "timezone": user.timezone, "phone_extension": user.phone_extension or ""}  # fmt: skip
    return _page(request, values, {})


async def save_settings(request: web.Request) -> web.Response:
    viewer = request[VIEWER]
    t = viewer.t
    form = await request.post()
    values = {k: str(form.get(k, "")).strip() for k in
              ("display_name", "email", "locale", "timezone", "phone_extension")}  # fmt: skip
    errors: dict[str, str] = {}
    if len(values["display_name"]) > 160:
        errors["display_name"] = t.gettext("At most {n} characters.", n=160)
    if values["email"] and not EMAIL.match(values["email"]):
        errors["email"] = t.gettext("Not an email address.")
    if values["locale"] not in LOCALES:
        errors["locale"] = t.gettext("Choose one of the offered values.")
    if values["timezone"] not in available_timezones():
        errors["timezone"] = t.gettext("Not a time zone, e.g. Asia/Shanghai.")
    extension = values["phone_extension"]
    if extension and (not extension.isdigit() or len(extension) > 32):
        errors["phone_extension"] = t.gettext("Digits only.")
    async with request.app[SETTINGS_STORE_KEY].session() as session, session.begin():
        if extension and "phone_extension" not in errors:
            taken = await session.scalar(
                select(User.username).where(User.phone_extension == extension,
                                            User.id != viewer.user_id)
            )  # fmt: skip
            if taken:
                errors["phone_extension"] = t.gettext("Extension {ext} belongs to {user}.",
                                                      ext=extension, user=taken)  # fmt: skip
        if errors:
            return _page(request, values, errors, status=422)
        user = await session.get(User, viewer.user_id)
        assert user is not None
        user.display_name = values["display_name"] or user.username
        user.email = values["email"] or None
        user.locale = values["locale"]
        user.timezone = str(ZoneInfo(values["timezone"]))
        user.phone_extension = extension or None
    await request.app[SETTINGS_STORE_KEY].bus.publish(USERS_CHANGED, user_id=viewer.user_id)
    raise web.HTTPSeeOther("/settings?saved=1")


def add_settings_routes(app: web.Application, store: Store) -> None:
    app[SETTINGS_STORE_KEY] = store
    app.router.add_get("/settings", settings_form)
    app.router.add_post("/settings", save_settings)
