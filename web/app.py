"""The web UI's aiohttp application (server-rendered with Jinja2)."""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from store.context import correlated
from store.db import Store
from web.activities import add_activity_routes
from web.admin import add_admin_routes
from web.admin_base import AdminServices
from web.api import MailApi, add_api_routes, bearer_auth
from web.api_records import add_records_api_routes
from web.api_webforms import add_webform_routes
from web.auth import add_auth_routes, session_auth
from web.calendar import add_calendar_routes
from web.dashboard import add_dashboard_routes
from web.i18n import LOCALES
from web.openapi import add_openapi_route
from web.phone import PhoneConfig, add_phone_routes
from web.pipeline import add_pipeline_routes
from web.records import add_records_routes
from web.settings import add_settings_routes
from web.timeline import add_timeline_routes

STORE_KEY = web.AppKey("store", Store)
TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


@functools.cache
def static_url(name: str) -> str:
    """A static file's URL, versioned by its content so browsers never keep a stale one."""
    version = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:10]
    return f"/static/{name}?v={version}"


REQUEST_ID_HEADER = "X-Request-Id"


@web.middleware
async def request_id(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every request runs under a correlation id, echoed to the client for bug reports."""
    wanted = request.headers.get(REQUEST_ID_HEADER, "")
    given = wanted if wanted.isalnum() and len(wanted) <= 64 else None
    with correlated(given) as cid:
        response = await handler(request)
        response.headers[REQUEST_ID_HEADER] = cid
        return response


@web.middleware
async def security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Pages may not be framed elsewhere, run others' scripts, or guess content types."""
    response = await handler(request)
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    if response.content_type == "text/html":
        headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-src 'self'; connect-src 'self'; frame-ancestors 'self'; form-action 'self'",
        )
    return response


def create_app(
    store: Store,
    phone: PhoneConfig | None = None,
    mail: MailApi | None = None,
    admin: AdminServices | None = None,
    *,
    secure_cookies: bool = False,
    public_url: str = "",
) -> web.Application:
    app = web.Application(middlewares=[request_id, security_headers, bearer_auth, session_auth])
    app[STORE_KEY] = store
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    env.globals["LOCALES"] = LOCALES
    env.globals["static"] = static_url
    add_dashboard_routes(app, store)
    app.router.add_static("/static/", STATIC)
    add_auth_routes(app, store, secure_cookies, public_url)
    add_records_routes(app, store)
    add_timeline_routes(app, store)
    add_pipeline_routes(app, store)
    add_activity_routes(app, store)
    add_calendar_routes(app, store)
    add_settings_routes(app, store)
    add_admin_routes(app, store, admin)
    # Without a configured secret, links signed by this process are valid in it only.
    add_phone_routes(app, store, phone or PhoneConfig(secret=secrets.token_bytes(32)))
    add_api_routes(app, store, mail)
    add_records_api_routes(app, store)
    add_openapi_route(app)
    add_webform_routes(app, store)
    return app
