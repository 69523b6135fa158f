"""Administration pages: users, roles, teams, pipeline stages, mail templates and rules,
the inbound quarantine, the configured connections and the web sites' lead forms.

Each section is its own module (``web/admin_*.py``); this one has the
overview and puts them on the application.  Every handler checks the admin
permission itself (``web.admin_base.admin_viewer``).
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import func, select

from store.db import Store
from store.models import (
    InboundJournal,
    JournalState,
    MailRule,
    MailTemplate,
    PipelineStage,
    Role,
    Team,
    User,
    WebForm,
)
from web.admin_base import ADMIN_SERVICES_KEY, ADMIN_STORE_KEY, AdminServices, admin_viewer
from web.admin_connections import add_connection_routes
from web.admin_quarantine import add_quarantine_routes
from web.admin_roles import add_role_routes
from web.admin_rules import add_rule_routes
from web.admin_stages import add_stage_routes
from web.admin_teams import add_team_routes
from web.admin_templates import add_template_routes
from web.admin_users import add_user_routes
from web.admin_webforms import add_webform_admin_routes
from web.render import render


async def overview(request: web.Request) -> web.Response:
    admin_viewer(request)
    counted = {
        "users": User.is_active.is_(True),
        "roles": None,
        "teams": None,
        "stages": PipelineStage.is_active.is_(True),
        "templates": None,
        "rules": None,
        "quarantine": InboundJournal.state == JournalState.QUARANTINED,
        "webforms": WebForm.revoked_at.is_(None),
    }
    models = {
        "users": User,
        "roles": Role,
        "teams": Team,
        "stages": PipelineStage,
        "templates": MailTemplate,
        "rules": MailRule,
        "quarantine": InboundJournal,
        "webforms": WebForm,
    }
    counts: dict[str, int] = {}
    async with request.app[ADMIN_STORE_KEY].session() as session:
        for key, model in models.items():
            query = select(func.count()).select_from(model)
            if (where := counted[key]) is not None:
                query = query.where(where)
            counts[key] = int(await session.scalar(query) or 0)
    connections = request.app[ADMIN_SERVICES_KEY].connections
    states = dict(connections.service_states()) if connections else {}
    troubled = {
        name: s for name, s in states.items() if s.state in ("failed", "backoff", "degraded")
    }
    return render(
        request, "admin/index.html", {"counts": counts, "states": states, "troubled": troubled}
    )


def add_admin_routes(
    app: web.Application, store: Store, services: AdminServices | None = None
) -> None:
    app[ADMIN_STORE_KEY] = store
    app[ADMIN_SERVICES_KEY] = services or AdminServices()
    app.router.add_get("/admin", overview)
    add_user_routes(app)
    add_role_routes(app)
    add_team_routes(app)
    add_stage_routes(app)
    add_template_routes(app)
    add_rule_routes(app)
    add_quarantine_routes(app)
    add_connection_routes(app)
    add_webform_admin_routes(app)
