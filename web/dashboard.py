"""The home page: what needs the user today, and how the pipeline stands.

My open tasks (overdue first, missed-call callbacks among them), today's calls
and missed calls, new leads of the last week, deals closing within 30 days,
deals at the proposal and negotiation stages (there is no quotes module yet),
and two charts drawn on the server: the open pipeline by stage, and the amount
won in each of the last six months.  Everything is limited to the user's scope.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from typing import Any

from aiohttp import web
from markupsafe import Markup
from sqlalchemy import func, or_, select

from store.base import utcnow
from store.db import Store
from store.models import (
    Account,
    Activity,
    ActivityKind,
    ActivityStatus,
    Call,
    CallDisposition,
    Contact,
    Lead,
    Opportunity,
    PipelineStage,
)
from web.auth import VIEWER
from web.charts import Bar, bars
from web.render import render

DASHBOARD_STORE_KEY = web.AppKey("dashboard_store", Store)
MISSED = (CallDisposition.MISSED, CallDisposition.ABANDONED, CallDisposition.NOANSWER)
QUOTE_STAGES = ("Proposal", "Negotiation")
SHOWN = 10


async def dashboard(request: web.Request) -> web.Response:
    viewer = request[VIEWER]
    access, t = viewer.access, viewer.t
    now = utcnow()
    local_now = t.local(now)
    day_start = local_now.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(dt.UTC)
    data: dict[str, Any] = {}
    async with request.app[DASHBOARD_STORE_KEY].session() as session:
        counts = {}
        for key, model in (("leads", Lead), ("contacts", Contact), ("accounts", Account),
                           ("opportunities", Opportunity)):  # fmt: skip
            if access.can(key):
                counts[key] = int(await session.scalar(
                    select(func.count()).select_from(model)
                    .where(model.deleted_at.is_(None), access.visible(model))
                ) or 0)  # fmt: skip
        data["counts"] = counts
        data["tasks"] = (await session.scalars(
            select(Activity).where(
                Activity.owner_id == viewer.user_id, Activity.deleted_at.is_(None),
                Activity.kind == ActivityKind.TASK, Activity.status == ActivityStatus.PLANNED,
            ).order_by(Activity.due_at.is_(None), Activity.due_at, Activity.id).limit(SHOWN)
        )).all()  # fmt: skip
        calls = (await session.scalars(
            select(Call).where(Call.started_at >= day_start,
                               or_(Call.agent_id == viewer.user_id,
                                   Call.agent_id.is_(None) & Call.disposition.in_(MISSED)))
            .order_by(Call.started_at.desc()).limit(50)
        )).all()  # fmt: skip
        data["calls"] = [c for c in calls if c.disposition not in MISSED][:SHOWN]
        data["missed"] = [c for c in calls if c.disposition in MISSED][:SHOWN]
        if access.can("leads"):
            data["leads"] = (await session.scalars(
                select(Lead).where(Lead.deleted_at.is_(None), access.visible(Lead),
                                   Lead.created_at >= now - dt.timedelta(days=7))
                .order_by(Lead.created_at.desc()).limit(SHOWN)
            )).all()  # fmt: skip
        stages = {s.id: s for s in await session.scalars(select(PipelineStage))}
        open_ids = [s.id for s in stages.values() if s.is_active and not s.is_closed]
        if access.can("opportunities"):
            live = select(Opportunity).where(Opportunity.deleted_at.is_(None),
                                             access.visible(Opportunity))  # fmt: skip
            today = local_now.date()
            data["closing"] = (await session.scalars(
                live.where(Opportunity.stage_id.in_(open_ids),
                           Opportunity.expected_close <= today + dt.timedelta(days=30))
                .order_by(Opportunity.expected_close).limit(SHOWN)
            )).all()  # fmt: skip
            quote_ids = [s.id for s in stages.values() if s.name in QUOTE_STAGES]
            data["quotes"] = (await session.scalars(
                live.where(Opportunity.stage_id.in_(quote_ids))
                .order_by(Opportunity.amount.desc()).limit(SHOWN)
            )).all()  # fmt: skip
            data["pipeline_chart"] = Markup(await _pipeline_chart(session, access, stages, t))  # noqa: S704
            data["won_chart"] = Markup(await _won_chart(session, access, stages, t, local_now))  # noqa: S704
    data["stages"] = stages
    data["now"] = now
    return render(request, "dashboard.html", data)


async def _pipeline_chart(
    session: Any, access: Any, stages: dict[int, PipelineStage], t: Any
) -> str:
    rows = await session.execute(
        select(Opportunity.stage_id, func.sum(Opportunity.amount))
        .where(Opportunity.deleted_at.is_(None), access.visible(Opportunity))
        .group_by(Opportunity.stage_id)
    )
    amounts = {stage_id: Decimal(total or 0) for stage_id, total in rows}
    ordered = sorted((s for s in stages.values() if s.is_active and not s.is_closed),
                     key=lambda s: s.position)  # fmt: skip
    return bars(
        [Bar(t.gettext(s.name), float(amounts.get(s.id, 0)), t.money(amounts.get(s.id, 0), "CNY"))
         for s in ordered],
        t.gettext("Open pipeline by stage"),
    )  # fmt: skip


async def _won_chart(
    session: Any, access: Any, stages: dict[int, PipelineStage], t: Any, local_now: dt.datetime
) -> str:
    won = [s.id for s in stages.values() if s.is_won]
    first = (local_now.replace(day=1) - dt.timedelta(days=150)).replace(day=1)
    rows = await session.execute(
        select(Opportunity.closed_at, Opportunity.amount).where(
            Opportunity.deleted_at.is_(None), access.visible(Opportunity),
            Opportunity.stage_id.in_(won), Opportunity.closed_at >= first.astimezone(dt.UTC),
        )
    )  # fmt: skip
    months: dict[str, Decimal] = defaultdict(Decimal)
    for closed_at, amount in rows:
        months[t.local(closed_at).strftime("%Y-%m")] += Decimal(amount or 0)
    keys = []
    cursor = first
    for _ in range(6):
        keys.append(cursor.strftime("%Y-%m"))
        cursor = (cursor + dt.timedelta(days=32)).replace(day=1)
    return bars(
        [Bar(k, float(months[k]), t.money(months[k], "CNY")) for k in keys],
        t.gettext("Won in each of the last six months"),
    )


def add_dashboard_routes(app: web.Application, store: Store) -> None:
    app[DASHBOARD_STORE_KEY] = store
    app.router.add_get("/", dashboard)
