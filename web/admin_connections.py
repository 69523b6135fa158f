"""Admin: the configured connections — mailboxes, the SMTP relay, PBXs — their live state, a test.

What is shown comes from the daemon's ``ConnectionAdmin``, which hands over
only what may be seen (host, port, user name...; never a password, secret or
token).  "Test" logs in to that one peer with a timeout and says what
happened.  The PBX's extensions table (extension -> user name) is shown as
configured, beside the users' own extensions, which the users page edits.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select

from store.models import User
from web.admin_base import ConnectionTest, admin_viewer, editor, services_of, store_of
from web.i18n import Translator
from web.render import render


def setting_labels(t: Translator) -> dict[str, str]:
    return {
        "host": t.gettext("Host"),
        "port": t.gettext("Port"),
        "security": t.gettext("Security"),
        "username": t.gettext("User name"),
        "auth": t.gettext("Sign-in"),
        "password": t.gettext("Password"),
        "folders": t.gettext("Folders"),
        "lead_mailbox": t.gettext("Makes leads"),
        "first_sync": t.gettext("First sync"),
        "from_address": t.gettext("Sends as"),
        "from_name": t.gettext("Sender name"),
        "region": t.gettext("Region"),
        "area_code": t.gettext("Area code"),
        "dial_context": t.gettext("Dial context"),
        "dids": t.gettext("DIDs"),
        "recordings": t.gettext("Recordings"),
    }


def kind_labels(t: Translator) -> dict[str, str]:
    return {
        "imap": t.gettext("Mailbox (IMAP)"),
        "relay": t.gettext("SMTP relay"),
        "pbx": t.gettext("PBX (Asterisk AMI)"),
    }


async def _page(
    request: web.Request, result: tuple[str, str, ConnectionTest] | None = None, status: int = 200
) -> web.Response:
    viewer = admin_viewer(request)
    admin = services_of(request).connections
    connections = list(admin.connections()) if admin else []
    states = dict(admin.service_states()) if admin else {}
    named = {user for conn in connections for _, user in conn.extensions}
    async with store_of(request).session() as session:
        rows = (
            await session.execute(
                select(User.username, User.phone_extension, User.is_active)
                .where(User.phone_extension.is_not(None))
                .order_by(User.phone_extension)
            )
        ).all()
        # Whether each user name the PBX configuration gives exists and may sign in.
        users = dict(
            (
                await session.execute(
                    select(User.username, User.is_active).where(User.username.in_(named or {""}))
                )
            ).all()
        )
    context: dict[str, Any] = {
        "configured": admin is not None,
        "connections": connections,
        "states": states,
        "labels": setting_labels(viewer.t),
        "kinds": kind_labels(viewer.t),
        "user_extensions": [(ext, name, active) for name, ext, active in rows],
        "users": users,
        "result": result,
    }
    return render(request, "admin/connections.html", context, status=status)


async def connections_page(request: web.Request) -> web.Response:
    return await _page(request)


async def test_connection(request: web.Request) -> web.Response:
    viewer = editor(request)
    admin = services_of(request).connections
    form = await request.post()
    kind, name = str(form.get("kind", "")), str(form.get("name", ""))
    if admin is None or not any(c.kind == kind and c.name == name for c in admin.connections()):
        raise web.HTTPNotFound(text=viewer.t.gettext("No such connection is configured."))
    outcome = await admin.test(kind, name)
    return await _page(request, (kind, name, outcome))


def add_connection_routes(app: web.Application) -> None:
    app.router.add_get("/admin/connections", connections_page)
    app.router.add_post("/admin/connections/test", test_connection)
