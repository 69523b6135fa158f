"""Activity pages: tasks, meetings, calls and visits made, changed, finished and listed.

An activity is made from a record's page (linked to it) or on its own; it
may repeat (``store.recurrence``) and remind its owner (``store.reminders``).
Finishing a repeating one makes its next occurrence.  Who sees an activity
follows ``store.calendar.may_see_activity``: one of someone in the viewer's
scope, or one on a record the viewer sees; anything else is 404.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import log_activity
from store.base import utcnow
from store.calendar import calendar_users, may_see_activity, shown_at
from store.db import Store
from store.models import Activity, ActivityKind, ActivityLink, ActivityStatus
from store.records import acting_as
from store.recurrence import finish, rule_of, start_series
from store.reminders import due_soon, set_reminder, time_of
from web.activity_form import (
    KINDS,
    PRIORITIES,
    REMIND_CHOICES,
    REPEAT_ENDS,
    STATUSES,
    Parsed,
    activity_values,
    blank_values,
    form_values,
    parse,
)
from web.auth import VIEWER, Viewer, permitted
from web.modules import BY_TYPE, MODULES, Module, db_int
from web.record_query import assignable, load_visible, user_names
from web.render import render

ACTIVITIES_STORE_KEY = web.AppKey("activities_store", Store)
LISTED = 200


def _viewer(request: web.Request, action: str = "view") -> Viewer:
    return permitted(request, ("activities", action))


def _store(request: web.Request) -> Store:
    return request.app[ACTIVITIES_STORE_KEY]


async def _visible(session: AsyncSession, viewer: Viewer, activity_id: str) -> Activity:
    wanted = db_int(activity_id)
    activity = await session.get(Activity, wanted) if wanted is not None else None
    if activity is None or activity.kind.value not in KINDS:
        raise web.HTTPNotFound()
    if not await may_see_activity(session, viewer.access, activity):
        raise web.HTTPNotFound()
    return activity


async def _record_of(
    session: AsyncSession, viewer: Viewer, ref: str
) -> tuple[Module, Any] | None:
    """The record a ``leads:12`` reference names, if the viewer may see it; else 404."""
    if not ref:
        return None
    key, _, number = ref.partition(":")
    module = MODULES.get(key)
    if module is None or not viewer.access.can(module.key):
        raise web.HTTPNotFound()
    return module, await load_visible(session, module, viewer.access, number)


async def _links(session: AsyncSession, viewer: Viewer, activity_id: int) -> list[dict[str, Any]]:
    """The records an activity is on, those the viewer may see named and linked."""
    rows = await session.execute(
        select(ActivityLink.record_type, ActivityLink.record_id)
        .where(ActivityLink.activity_id == activity_id)
        .order_by(ActivityLink.id)
    )
    found = []
    for record_type, record_id in rows:
        module = BY_TYPE.get(record_type)
        if module is None:
            continue
        record: Any = await session.get(module.model, record_id)
        if record is None or record.deleted_at is not None:
            continue
        seen = viewer.access.can(module.key) and viewer.access.may_see(record)
        found.append({"module": module, "id": record_id,
                      "name": module.display(record) if seen else None})  # fmt: skip
    return found


def _form_context(
    viewer: Viewer, values: dict[str, str], errors: dict[str, str], users: list[tuple[int, str]],
    *, activity: Activity | None = None, record: tuple[Module, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "values": values, "errors": errors, "users": users, "activity": activity,
        "record": {"module": record[0], "id": record[1].id, "name": record[0].display(record[1])}
        if record else None,
        "kinds": KINDS, "statuses": STATUSES, "priorities": PRIORITIES,
        "remind_choices": REMIND_CHOICES, "repeat_ends": REPEAT_ENDS,
    }  # fmt: skip


def _apply(activity: Activity, parsed: Parsed) -> None:
    """Everything the form sets but the status, which ``finish`` moves."""
    activity.kind = parsed.kind
    activity.subject = parsed.subject
    activity.body = parsed.body
    activity.occurred_at = parsed.occurred_at
    activity.ends_at = parsed.ends_at
    activity.due_at = parsed.due_at
    activity.priority = parsed.priority
    activity.location = parsed.location
    activity.owner_id = parsed.owner_id


async def new_form(request: web.Request) -> web.Response:
    viewer = _viewer(request, "create")
    kind = request.query.get("kind", "task")
    values = blank_values(kind if kind in KINDS else "task", viewer.user_id)
    start = request.query.get("start", "")
    if start:
        values["due" if values["kind"] == "task" else "start"] = start[:16]
    async with _store(request).session() as session:
        record = await _record_of(session, viewer, request.query.get("record", ""))
        users = await assignable(session, viewer)
    return render(request, "activities/form.html", _form_context(viewer, values, {}, users,
                                                                 record=record))  # fmt: skip


async def create(request: web.Request) -> web.Response:
    viewer = _viewer(request, "create")
    form = await request.post()
    values = form_values(form)
    async with _store(request).session() as session, session.begin():
        record = await _record_of(session, viewer, str(form.get("record", "")))
        users = await assignable(session, viewer)
        parsed, errors = parse(values, viewer.t, {uid for uid, _ in users}, now=utcnow())
        if parsed is None:
            context = _form_context(viewer, values, errors, users, record=record)
            return render(request, "activities/form.html", context, status=422)
        with acting_as(session, viewer.user_id):
            activity = await log_activity(
                session, kind=parsed.kind, subject=parsed.subject, body=parsed.body,
                records=[(record[0].record_type, record[1].id)] if record else [],
                occurred_at=parsed.occurred_at, owner_id=parsed.owner_id, status=parsed.status,
                ends_at=parsed.ends_at, due_at=parsed.due_at, priority=parsed.priority,
                location=parsed.location,
            )  # fmt: skip
            start_series(activity, parsed.rule)
            set_reminder(activity, parsed.remind_minutes)
    if record is not None:
        raise web.HTTPSeeOther(f"/{record[0].key}/{record[1].id}")
    raise web.HTTPSeeOther(f"/activities/{activity.id}")


async def detail(request: web.Request) -> web.Response:
    viewer = _viewer(request)
    async with _store(request).session() as session:
        activity = await _visible(session, viewer, request.match_info["id"])
        links = await _links(session, viewer, activity.id)
        names = await user_names(session, {i for i in (activity.owner_id,
                                                       activity.created_by_id) if i})  # fmt: skip
    now = utcnow()
    when = time_of(activity)
    return render(request, "activities/detail.html", {
        "activity": activity, "links": links, "rule": rule_of(activity),
        "owner": names.get(activity.owner_id or 0, ""),
        "creator": names.get(activity.created_by_id or 0, ""),
        "overdue": activity.status == ActivityStatus.PLANNED and when is not None and when < now,
    })  # fmt: skip


async def edit_form(request: web.Request) -> web.Response:
    viewer = _viewer(request, "edit")
    async with _store(request).session() as session:
        activity = await _visible(session, viewer, request.match_info["id"])
        users = await assignable(session, viewer)
    values = activity_values(viewer.t, activity)
    context = _form_context(viewer, values, {}, users, activity=activity)
    return render(request, "activities/form.html", context)


async def save(request: web.Request) -> web.Response:
    viewer = _viewer(request, "edit")
    form = await request.post()
    values = form_values(form)
    async with _store(request).session() as session, session.begin():
        activity = await _visible(session, viewer, request.match_info["id"])
        users = await assignable(session, viewer)
        owners = {uid for uid, _ in users} | {activity.owner_id or 0}
        parsed, errors = parse(values, viewer.t, owners, now=utcnow(), was=activity)
        if parsed is None:
            context = _form_context(viewer, values, errors, users, activity=activity)
            return render(request, "activities/form.html", context, status=422)
        moved = parsed.occurred_at != activity.occurred_at or parsed.rule != rule_of(activity)
        with acting_as(session, viewer.user_id):
            _apply(activity, parsed)
            if moved:
                # A new time or rule: the series counts again from this occurrence.
                start_series(activity, parsed.rule)
            # The timeline is ordered by the links' copy of the time.
            await session.execute(
                update(ActivityLink)
                .where(ActivityLink.activity_id == activity.id)
                .values(occurred_at=activity.occurred_at)
            )
            set_reminder(activity, parsed.remind_minutes)
            # Finished from the form as from the button: a repeating one's next is made.
            await finish(session, activity, parsed.status)
    raise web.HTTPSeeOther(f"/activities/{activity.id}")


def _back(request: web.Request, form: Any, fallback: str) -> str:
    """Where a button on a list, a record or the calendar sends the user back to (this site)."""
    wanted = str(form.get("next", ""))
    return wanted if wanted.startswith("/") and not wanted.startswith("//") else fallback


async def set_status(request: web.Request) -> web.Response:
    """Done or cancelled (a repeating one's next occurrence is made), or planned again."""
    viewer = _viewer(request, "edit")
    form = await request.post()
    wanted = str(form.get("status", ""))
    if wanted not in STATUSES:
        raise web.HTTPBadRequest(text=viewer.t.gettext("Choose one of the offered values."))
    async with _store(request).session() as session, session.begin():
        activity = await _visible(session, viewer, request.match_info["id"])
        with acting_as(session, viewer.user_id):
            await finish(session, activity, ActivityStatus(wanted))
    raise web.HTTPSeeOther(_back(request, form, f"/activities/{activity.id}"))


async def remove(request: web.Request) -> web.Response:
    viewer = _viewer(request, "delete")
    form = await request.post()
    async with _store(request).session() as session, session.begin():
        activity = await _visible(session, viewer, request.match_info["id"])
        with acting_as(session, viewer.user_id):
            activity.deleted_at = utcnow()
            activity.deleted_by_id = viewer.user_id
    raise web.HTTPSeeOther(_back(request, form, "/activities"))


async def list_page(request: web.Request) -> web.Response:
    """One person's activities: the planned ones soonest first, or the finished newest first."""
    viewer = _viewer(request)
    status = request.query.get("status", "planned")
    status = status if status in (*STATUSES, "all") else "planned"
    kind = request.query.get("kind", "")
    kind = kind if kind in KINDS else ""
    async with _store(request).session() as session:
        people = await calendar_users(session, viewer.access)
        owner_id = db_int(request.query.get("owner", "")) or viewer.user_id
        if owner_id not in {u.id for u in people}:
            owner_id = viewer.user_id
        at = func.coalesce(Activity.due_at, Activity.occurred_at)
        query = select(Activity).where(
            Activity.owner_id == owner_id, Activity.deleted_at.is_(None),
            Activity.kind.in_([ActivityKind(k) for k in ([kind] if kind else KINDS)]),
        )  # fmt: skip
        if status != "all":
            query = query.where(Activity.status == ActivityStatus(status))
        order = (at, Activity.id) if status == "planned" else (at.desc(), Activity.id.desc())
        rows = list(await session.scalars(query.order_by(*order).limit(LISTED)))
        reminders = await due_soon(session, viewer.user_id) if owner_id == viewer.user_id else []
    now = utcnow()
    entries = [{"activity": a, "at": shown_at(a),
                "overdue": a.status == ActivityStatus.PLANNED and (time_of(a) or now) < now}
               for a in rows]  # fmt: skip
    return render(request, "activities/list.html", {
        "entries": entries, "people": people, "owner_id": owner_id, "status": status,
        "kind": kind, "kinds": KINDS, "statuses": STATUSES, "reminders": reminders,
        "limited": len(rows) == LISTED,
    })  # fmt: skip


async def reminders_json(request: web.Request) -> web.Response:
    """The viewer's reminders that have come, for the page's reminder panel."""
    viewer = request[VIEWER]
    if not viewer.access.can("activities"):
        return web.json_response({"reminders": []})
    async with _store(request).session() as session:
        due = await due_soon(session, viewer.user_id)
    t = viewer.t
    return web.json_response({"reminders": [
        {"id": a.id, "key": f"{a.id}@{a.remind_at.isoformat() if a.remind_at else ''}",
         "kind": t.gettext(a.kind.value), "subject": a.subject,
         "at": t.datetime(time_of(a)), "location": a.location or "",
         "url": f"/activities/{a.id}"}
        for a in due
    ]}, headers={"Cache-Control": "no-store"})  # fmt: skip


def add_activity_routes(app: web.Application, store: Store) -> None:
    app[ACTIVITIES_STORE_KEY] = store
    app.router.add_get("/activities", list_page)
    app.router.add_get("/activities/new", new_form)
    app.router.add_post("/activities/new", create)
    app.router.add_get("/activities/reminders.json", reminders_json)
    app.router.add_get("/activities/{id:\\d+}", detail)
    app.router.add_get("/activities/{id:\\d+}/edit", edit_form)
    app.router.add_post("/activities/{id:\\d+}/edit", save)
    app.router.add_post("/activities/{id:\\d+}/status", set_status)
    app.router.add_post("/activities/{id:\\d+}/delete", remove)

