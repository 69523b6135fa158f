"""The web UI's aiohttp application (server-rendered with Jinja2)."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web
from sqlalchemy import func, select

from store.context import correlated
from store.db import Store
from store.models import Account, Contact, Lead, Opportunity
from web.api import MailApi, add_api_routes, bearer_auth
from web.phone import PhoneConfig, add_phone_routes

STORE_KEY = web.AppKey("store", Store)
TEMPLATES = Path(__file__).parent / "templates"


@aiohttp_jinja2.template("home.html")
async def home(request: web.Request) -> dict[str, object]:
    """The front page: how much the store holds."""
    store = request.app[STORE_KEY]
    counts: dict[str, int] = {}
    async with store.session() as session:
        for label, model in (
            ("leads", Lead),
            ("contacts", Contact),
            ("accounts", Account),
            ("opportunities", Opportunity),
        ):
            query = select(func.count()).select_from(model).where(model.deleted_at.is_(None))
            counts[label] = int(await session.scalar(query) or 0)
    return {"counts": counts}


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


def create_app(
    store: Store, phone: PhoneConfig | None = None, mail: MailApi | None = None
) -> web.Application:
    app = web.Application(middlewares=[request_id, bearer_auth])
    app[STORE_KEY] = store
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html"]),
    )
    app.router.add_get("/", home)
    # Without a configured secret, links signed by this process are valid in it only.
    add_phone_routes(app, store, phone or PhoneConfig(secret=secrets.token_bytes(32)))
    add_api_routes(app, store, mail)
    return app
