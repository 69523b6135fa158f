"""The home page: what needs the user today, and how the pipeline stands.

My open tasks (overdue marked), today's calls and missed calls with their
callback tasks, new leads of the last week, deals closing within 30 days,
deals at the proposal and negotiation stages (there is no quotes module yet),
and two charts drawn on the server: the funnel (``web.pipeline``) and the
amount won in each of the last six months.  Records are limited to the user's
scope; tasks and calls are the user's own.  Days and months are the user's,
in their time zone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from aiohttp import web
from markupsafe import Markup
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.access import RECORD_MODULES, Access
from store.base import utcnow
from store.calendar import occurrences
from store.db import Store
from store.models import (
    Account,
    Activity,
    ActivityKind,
    ActivityLink,
    ActivityStatus,
    Call,
    CallBack,
    CallDisposition,
    CallSegment,
    Contact,
    Lead,
    Opportunity,
    PipelineStage,
    RecordScope,
    User,
)
from web.auth import VIEWER, Viewer
from web.charts import Bar, bars
from web.i18n import Translator
from web.pipeline import HOUSE_CURRENCY, board_stages, funnel_chart, stage_totals
from web.render import render

DASHBOARD_STORE_KEY = web.AppKey("dashboard_store", Store)
# Calls that never reached a person: missed or abandoned inbound, unanswered outbound.
MISSED = (CallDisposition.MISSED, CallDisposition.NOANSWER, CallDisposition.ABANDONED,
          CallDisposition.VOICEMAIL, CallDisposition.BUSY)  # fmt: skip
# The seeded stages where a quote is out (store/migrations/versions/0002_seed_roles_and_stages.py).
QUOTE_STAGES = ("Proposal", "Negotiation")
CLOSING_DAYS = 30
NEW_LEAD_DAYS = 7
WON_MONTHS = 6
SHOWN = 10
CALLS_READ = 100


async def dashboard(request: web.Request) -> web.Response:
    viewer = request[VIEWER]
    access, t = viewer.access, viewer.t
    now = utcnow()
    today = t.local(now).date()
    day_start = _local_midnight(t, today)
    data: dict[str, Any] = {"now": now}
    async with request.app[DASHBOARD_STORE_KEY].session() as session:
        data["counts"] = await _counts(session, access)
        data["tasks"], data["task_links"] = await _my_tasks(session, viewer.user_id)
        data.update(await _my_calls(session, viewer, day_start))
        # Today's appointments as the calendar shows them (repetitions included), not tasks.
        data["agenda"] = [
            o for o in await occurrences(session, [viewer.user_id], day_start,
                                         _local_midnight(t, today + dt.timedelta(days=1)))
            if o.kind != ActivityKind.TASK.value
        ] if access.can("activities") else []  # fmt: skip
        if access.can("leads"):
            data["leads"] = (await session.scalars(
                select(Lead).where(Lead.deleted_at.is_(None), access.visible(Lead),
                                   Lead.created_at >= now - dt.timedelta(days=NEW_LEAD_DAYS))
                .order_by(Lead.created_at.desc(), Lead.id.desc()).limit(SHOWN)
            )).all()  # fmt: skip
        if access.can("opportunities"):
            stages = await board_stages(session)
            data["stages"] = {s.id: s for s in stages}
            data.update(await _deals(session, access, stages, today))
            data["funnel"] = funnel_chart(
                t, stages, await stage_totals(session, access, stages, now)
            )
            data["won_chart"] = await _won_chart(session, access, stages, t, today)
    return render(request, "dashboard.html", data)


def _local_midnight(t: Translator, day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=t.zone).astimezone(dt.UTC)


async def _counts(session: AsyncSession, access: Access) -> dict[str, int]:
    counts = {}
    for key, model in (("leads", Lead), ("contacts", Contact), ("accounts", Account),
                       ("opportunities", Opportunity)):  # fmt: skip
        if access.can(key):
            counts[key] = int(await session.scalar(
                select(func.count()).select_from(model)
                .where(model.deleted_at.is_(None), access.visible(model))
            ) or 0)  # fmt: skip
    return counts


async def _my_tasks(
    session: AsyncSession, user_id: int
) -> tuple[Sequence[Activity], dict[int, str]]:
    """My open tasks, due soonest first (undated last), each with a link to what it is about."""
    tasks = (await session.scalars(
        select(Activity).where(
            Activity.owner_id == user_id, Activity.deleted_at.is_(None),
            Activity.kind == ActivityKind.TASK, Activity.status == ActivityStatus.PLANNED,
        ).order_by(Activity.due_at.is_(None), Activity.due_at, Activity.id).limit(SHOWN)
    )).all()  # fmt: skip
    links: dict[int, str] = {}
    rows = await session.execute(
        select(ActivityLink.activity_id, ActivityLink.record_type, ActivityLink.record_id)
        .where(ActivityLink.activity_id.in_([a.id for a in tasks]),
               ActivityLink.record_type.in_(list(RECORD_MODULES)))
        .order_by(ActivityLink.id)
    )  # fmt: skip
    for activity_id, record_type, record_id in rows:
        # The record's own page checks its scope.
        links.setdefault(activity_id, f"/{RECORD_MODULES[record_type]}/{record_id}")
    return tasks, links


async def _my_calls(
    session: AsyncSession, viewer: Viewer, day_start: dt.datetime
) -> dict[str, Any]:
    """Today's calls I took or was rung for; the missed ones with their callback tasks.

    A missed call is mine when it rang me or its callback task is mine.  Whoever
    sees every record (scope "all") also sees missed calls that rang nobody.
    """
    me = viewer.user_id
    callbacks = (await session.execute(
        select(CallBack, Activity).join(Activity, Activity.id == CallBack.activity_id)
        .where(CallBack.last_missed_at >= day_start, Activity.deleted_at.is_(None))
    )).all()  # fmt: skip
    mine = [(cb, task) for cb, task in callbacks if task.owner_id == me]
    keys = sorted({cb.match_key for cb, _ in mine})
    ids = sorted({i for cb, task in mine for i in (cb.last_call_id, task.call_id) if i})
    rang_me = select(CallSegment.call_id).where(CallSegment.agent_id == me)
    missed = Call.disposition.in_(MISSED)
    involved = [Call.agent_id == me, Call.id.in_(rang_me),
                missed & or_(Call.external_number_e164.in_(keys), Call.id.in_(ids))]  # fmt: skip
    access = viewer.access
    if access.is_admin or access.scope == RecordScope.ALL:
        rang_someone = select(CallSegment.call_id).where(CallSegment.agent_id.is_not(None))
        involved.append(missed & Call.agent_id.is_(None) & Call.id.not_in(rang_someone))
    calls = (await session.scalars(
        select(Call).where(Call.started_at >= day_start, or_(*involved))
        .order_by(Call.started_at.desc(), Call.id.desc()).limit(CALLS_READ)
    )).all()  # fmt: skip
    # A call that rang me but someone else took is theirs.
    talked = [c for c in calls if c.disposition not in MISSED and c.agent_id == me][:SHOWN]
    unanswered = [c for c in calls if c.disposition in MISSED][:SHOWN]
    callback_of: dict[int, tuple[CallBack, Activity]] = {}
    for call in unanswered:
        for cb, task in callbacks:
            if call.id in (cb.last_call_id, task.call_id) or (
                call.external_number_e164 == cb.match_key
                and cb.first_missed_at <= call.started_at <= cb.last_missed_at
            ):
                callback_of[call.id] = (cb, task)
                break
    owners = {task.owner_id for _, task in callback_of.values() if task.owner_id}
    names = {
        uid: name or username
        for uid, name, username in await session.execute(
            select(User.id, User.display_name, User.username).where(User.id.in_(sorted(owners)))
        )
    }
    return {"calls": talked, "missed": unanswered, "callback_of": callback_of, "names": names}


async def _deals(
    session: AsyncSession, access: Access, stages: Sequence[PipelineStage], today: dt.date
) -> dict[str, Any]:
    live = select(Opportunity).where(Opportunity.deleted_at.is_(None), access.visible(Opportunity))
    open_ids = [s.id for s in stages if not s.is_closed]
    quote_ids = [s.id for s in stages if s.name in QUOTE_STAGES]
    closing = (await session.scalars(
        live.where(Opportunity.stage_id.in_(open_ids), Opportunity.expected_close >= today,
                   Opportunity.expected_close <= today + dt.timedelta(days=CLOSING_DAYS))
        .order_by(Opportunity.expected_close, Opportunity.id).limit(SHOWN)
    )).all()  # fmt: skip
    quotes = (await session.scalars(
        live.where(Opportunity.stage_id.in_(quote_ids))
        .order_by(Opportunity.amount.is_(None), Opportunity.amount.desc(), Opportunity.id)
        .limit(SHOWN)
    )).all()  # fmt: skip
    return {"closing": closing, "quotes": quotes}


def month_starts(today: dt.date, months: int = WON_MONTHS) -> list[dt.date]:
    """The first day of this month and of the ``months - 1`` before it, oldest first."""
    index = today.year * 12 + today.month - 1
    return [dt.date((index - n) // 12, (index - n) % 12 + 1, 1) for n in range(months - 1, -1, -1)]


async def _won_chart(
    session: AsyncSession, access: Access, stages: Sequence[PipelineStage], t: Translator,
    today: dt.date,
) -> Markup:  # fmt: skip
    """Won in each of the last six months (the user's months), in the house currency."""
    starts = month_starts(today)
    rows = await session.execute(
        select(Opportunity.closed_at, Opportunity.amount).where(
            Opportunity.deleted_at.is_(None), access.visible(Opportunity),
            Opportunity.stage_id.in_([s.id for s in stages if s.is_won]),
            Opportunity.currency == HOUSE_CURRENCY,
            Opportunity.closed_at >= _local_midnight(t, starts[0]),
        )
    )  # fmt: skip
    won = dict.fromkeys(starts, Decimal(0))
    for closed_at, amount in rows:
        month = t.local(closed_at).date().replace(day=1) if closed_at else None
        if month in won:
            won[month] += Decimal(amount or 0).quantize(Decimal("0.01"))
    svg = bars(
        [Bar(t.date(m, "MMM"), float(v), t.money(v, HOUSE_CURRENCY)) for m, v in won.items()],
        t.gettext("Won in each of the last six months"),
    )
    return Markup(svg)  # noqa: S704 (every text in it is escaped by web.charts)


def add_dashboard_routes(app: web.Application, store: Store) -> None:
    app[DASHBOARD_STORE_KEY] = store
    app.router.add_get("/", dashboard)
